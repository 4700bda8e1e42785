"""PNG plots for reports (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

PANELS = [
    ("Rewards", [("rewards/chosen", "chosen", "-"), ("rewards/rejected", "rejected", "--")]),
    ("Reward margin (chosen - rejected)", [("rewards/margins", "margin", "-")]),
    ("Log-probs (sum over the answer)", [("logps/chosen", "chosen", "-"), ("logps/rejected", "rejected", "--")]),
    (
        "Likelihood displacement (vs start)",
        [("displacement/chosen", "chosen", "-"), ("displacement/rejected", "rejected", "--")],
    ),
]


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    """Lay out, write as PNG (every report plot at the same resolution) and free the figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)


SCALE_FREE_PANELS = [
    ("Reward accuracy (share of pairs ranked right)", [("rewards/accuracies", "accuracy", "-")]),
    ("Reward margin / its largest size (each loss on its own scale)", [("rewards/margins", "margin", "-")]),
]
"""The first two panels when the methods' rewards are not on one scale (different losses or beta):
a raw reward of SimPO and one of DPO are different quantities, so only scale-free views are compared."""


def plot_training_curves(logs: dict[str, list[dict]], path: Path, comparable_rewards: bool = True) -> Path | None:
    """One panel per metric group, one colour per method (solid: chosen, dashed: rejected). Rewards
    of methods with different losses or beta are shown scale-free (:data:`SCALE_FREE_PANELS`)."""
    logs = {name: log for name, log in logs.items() if log}
    if not logs:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    panels = PANELS if comparable_rewards else [*SCALE_FREE_PANELS, *PANELS[2:]]
    for ax, (title, series) in zip(axes.flat, panels, strict=True):
        for i, (name, log) in enumerate(logs.items()):
            steps = [r["step"] for r in log]
            for key, label, style in series:
                values = [r.get(key) for r in log]
                if "largest size" in title:
                    size = max((abs(v) for v in values if v is not None), default=0.0) or 1.0
                    values = [None if v is None else v / size for v in values]
                if any(v is not None for v in values):
                    ax.plot(steps, values, style, color=colours[i % len(colours)], label=f"{name} {label}")
        if "displacement" in title or "margin" in title:
            ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    save_figure(fig, path)
    return path


def plot_results(summary: dict, path: Path) -> Path | None:
    """Accuracy and gold reward per model and split, with 95% bootstrap intervals."""
    plt = pyplot()
    names = list(summary["methods"])
    splits = list(summary["methods"][names[0]]["by_split"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(splits)
    for ax, (key, title) in zip(axes, [("accuracy", "Accuracy"), ("gold_reward", "Gold reward")], strict=True):
        for j, split in enumerate(splits):
            means = [summary["methods"][n]["by_split"][split][key] for n in names]
            cis = [summary["methods"][n]["by_split"][split][f"{key}_ci"] for n in names]
            err = [
                [m - c[0] for m, c in zip(means, cis, strict=True)],
                [c[1] - m for m, c in zip(means, cis, strict=True)],
            ]
            xs = [i + (j - (len(splits) - 1) / 2) * width for i in range(len(names))]
            ax.bar(xs, means, width, yerr=err, capsize=3, label=split)
        ax.set_xticks(range(len(names)), names)
        ax.set_title(f"{title} (95% bootstrap interval)")
        ax.legend()
        ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)
    return path
