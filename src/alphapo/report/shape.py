"""The report's reward-shape section: what alpha did on this task, in numbers, plain words and a figure.

From ``summary.json`` (``alphapo run`` / ``alphapo demo``): the starting model's scale on the training
pairs (``reward_scale``), each method's resolved alpha and what training did to the pairs
(``training``: displacement and the share of chosen answers that fell, mean and sd over seeds), and
each method against SimPO (``comparisons``, intervals over prompts and over seeds and prompts).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

from alphapo.losses import get_loss_spec

PAPER = (
    "The AlphaPO paper (Gupta et al. 2025, arXiv:2501.03884) reports, on 7B instruction-tuned models, that "
    "alpha > 0 makes training less aggressive than SimPO: the chosen responses lose less likelihood"
)


def alpha_text(alpha: float) -> str:
    return "0" if alpha == 0 else f"{alpha:+.3g}"


def label(name: str, method: dict) -> str:
    """A table row's name: the method, and its alpha where the loss has a shape."""
    alpha = method.get("alpha")
    return name if alpha is None or name == "sft" else f"{name} (alpha {alpha_text(alpha)})"


def shaped(summary: dict) -> list[tuple[str, dict]]:
    """Reference-free methods with an alpha and a displacement record, ordered by alpha."""
    rows = [
        (name, m)
        for name, m in summary["methods"].items()
        if name != "sft" and m.get("alpha") is not None and "chosen" in m.get("training", {})
    ]
    rows = [(n, m) for n, m in rows if not get_loss_spec(m["loss"]).needs_reference]
    return sorted(rows, key=lambda item: item[1]["alpha"])


def _pm(mean: float, sd: float, digits: int = 3) -> str:
    return f"{mean:+.{digits}f} ± {sd:.{digits}f}"


def shape_rows(summary: dict) -> list[list[str]]:
    """Header and rows: per method, alpha, chosen/rejected displacement, chosen-fell share, vs SimPO."""
    methods = [(n, m) for n, m in summary["methods"].items() if n != "sft" and m.get("training", {}).get("chosen")]
    if not methods:
        return []
    split = summary["primary_split"]
    comparisons = (summary.get("comparisons") or {}).get("methods", {})
    header = ["method", "alpha", "chosen displacement", "rejected displacement", "chosen fell", f"{split} acc vs simpo"]
    rows = [header]
    for name, m in methods:
        t = m["training"]
        versus = comparisons.get(name, {}).get(split)
        vs = "-" if versus is None else _diff(versus, "accuracy")
        alpha = "-" if m.get("alpha") is None else alpha_text(m["alpha"])
        rows.append(
            [
                name,
                alpha,
                _pm(t["chosen"], t["chosen_sd"]),
                _pm(t["rejected"], t["rejected_sd"]),
                f"{t['chosen_fell']:.1%} ± {t['chosen_fell_sd']:.1%}",
                vs,
            ]
        )
    return rows


def _diff(versus: dict, key: str) -> str:
    low, high = versus[f"{key}_diff_ci_seeds_and_prompts"]
    return f"{versus[f'{key}_diff']:+.3f} [{low:+.3f}, {high:+.3f}] {verdict(low, high)}"


def verdict(low: float, high: float) -> str:
    return "beyond noise (better)" if low > 0 else "beyond noise (worse)" if high < 0 else "within noise"


def _trend(values: list[float]) -> str:
    steps = [b - a for a, b in itertools.pairwise(values)]
    if all(s > 0 for s in steps):
        return "rises monotonically"
    if all(s < 0 for s in steps):
        return "falls monotonically"
    return "is not monotone"


SIMPO_LIKE = 1.1
"""Below this largest gradient weight of alpha = 0.25, AlphaPO barely differs from SimPO (the report says so)."""
NEAR_DETERMINISTIC = 0.2
"""A mean chosen log-prob per token closer to 0 than this: answers the model is nearly certain of."""


def shape_findings(summary: dict) -> list[str]:
    """The section's text: the task's scale, what alpha did, the comparison with SimPO and the paper."""
    lines: list[str] = []
    scale = summary.get("reward_scale")
    if scale:
        c, r = scale["chosen"], scale["rejected"]
        heaviest = math.exp(-0.25 * min(c["p5"], r["p5"]))
        verdict = (
            "SimPO in all but name here (`loss.alpha_scale` sets alpha on the task's own scale instead)"
            if heaviest < SIMPO_LIKE
            else "a reweighting that matters, as in the paper's regime"
        )
        lines.append(
            f"Scale: under the starting model the chosen answers' mean log-prob per token is {c['mean_logp']:.3f} "
            f"(5th-95th percentile {c['p5']:.3f} to {c['p95']:.3f}), the rejected answers' {r['mean_logp']:.3f}. "
            "AlphaPO's gradient weight is p^-alpha = exp(-alpha * l), so the paper's alpha = 0.25, tuned where l is "
            f"near -1, weighs these answers by at most {heaviest:.3f}: {verdict}."
        )
        lines.append("")
        for name, m in shaped(summary):
            a = m["alpha"]
            w = [math.exp(-a * c[q]) for q in ("p5", "p95")]
            lines.append(
                f"- {name}: alpha {alpha_text(a)}; chosen answers weighted {min(w):.3g} to {max(w):.3g} (5th-95th pct)"
            )
        lines.append("")
    rows = shaped(summary)
    if len(rows) >= 2:
        alphas = [m["alpha"] for _, m in rows]
        chosen = [m["training"]["chosen"] for _, m in rows]
        fell = [m["training"]["chosen_fell"] for _, m in rows]
        low, high = rows[0][1]["training"], rows[-1][1]["training"]
        gap = high["chosen"] - low["chosen"]
        spread = low["chosen_sd"] + high["chosen_sd"]
        beyond = abs(gap) > spread
        lines.append(
            f"Across alpha {', '.join(alpha_text(a) for a in alphas)}, the chosen answers' displacement "
            f"(log-prob change over every pair, mean over seeds) is {', '.join(f'{v:+.3f}' for v in chosen)}: it "
            f"{_trend(chosen)} with alpha; the share of chosen answers that fell is "
            f"{', '.join(f'{v:.1%}' for v in fell)} ({_trend(fell)}). Between the extreme alphas the displacement "
            f"differs by {gap:+.3f}, {'beyond' if beyond else 'within'} the seed spread (sum of the two sds "
            f"{spread:.3f})."
        )
        more = "more" if gap < 0 else "less"
        model = ""
        if scale and abs(scale["chosen"]["mean_logp"]) < NEAR_DETERMINISTIC:
            model = ", on a model whose answers are near-deterministic (log-prob per token near 0),"
        lines += [
            "",
            f"{PAPER}. Here{model} larger alpha displaced the "
            f"chosen answers {more} ({'consistent with' if gap > 0 else 'the opposite of'} the paper's direction"
            f"{'' if beyond else ', though within the seed spread'}).",
            "",
        ]
    comparisons = summary.get("comparisons")
    if comparisons and comparisons.get("methods"):
        lines.append(
            f"Against {comparisons['reference']} (same SFT model, pairs and seeds; paired bootstrap over seeds "
            "and prompts, 95%):"
        )
        lines.append("")
        for name, by_split in comparisons["methods"].items():
            parts = [f"{split} accuracy {_diff(v, 'accuracy')}" for split, v in by_split.items()]
            lines.append(f"- {name}: " + "; ".join(parts))
        lines.append("")
    return lines


def plot_shape(summary: dict, path: Path) -> Path | None:
    """Four panels side by side: chosen displacement, chosen-fell share, gradient weight vs log-prob,
    and gold reward against KL to SFT (every seed's final model: the frontier)."""
    from alphapo.report.plots import pyplot, save_figure

    methods = [(n, m) for n, m in summary["methods"].items() if n != "sft" and m.get("training", {}).get("chosen")]
    if not methods:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.5))
    names = [n for n, _ in methods]
    for ax, key, title in (
        (axes[0], "chosen", "Chosen displacement (log-prob change)"),
        (axes[1], "chosen_fell", "Share of chosen answers that fell"),
    ):
        means = [m["training"][key] for _, m in methods]
        sds = [m["training"][f"{key}_sd"] for _, m in methods]
        ax.bar(range(len(names)), means, yerr=sds, capsize=4, color="tab:blue")
        for i, (_, m) in enumerate(methods):
            seeds = [r[key] for r in m["training"]["per_seed"] if key in r]
            ax.plot([i] * len(seeds), seeds, "k.", alpha=0.6)
        ax.set_xticks(range(len(names)), names, rotation=20)
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_title(f"{title}\n(mean ± sd over seeds; dots: seeds)")
        ax.grid(axis="y", alpha=0.3)
    scale = summary.get("reward_scale")
    ax = axes[2]
    if scale:
        lo = min(scale["chosen"]["p5"], scale["rejected"]["p5"])
        grid = [lo * 1.1 * i / 100 for i in range(101)]
        for name, m in shaped(summary):
            ax.plot(grid, [math.exp(-m["alpha"] * v) for v in grid], label=label(name, m))
        for side, style in (("chosen", "-"), ("rejected", "--")):
            ax.axvspan(scale[side]["p5"], scale[side]["p95"], alpha=0.12, color="green" if side == "chosen" else "red")
            ax.axvline(scale[side]["mean_logp"], linestyle=style, color="grey", label=f"mean {side} (start)")
        ax.set_xlabel("log-prob per token l")
        ax.set_ylabel("gradient weight p^-alpha (log scale)")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    ax.set_title("Gradient weight on this task's scale\n(shaded: 5th-95th pct of chosen/rejected)")
    ax.grid(alpha=0.3)
    ax = axes[3]
    split = summary["primary_split"]
    sft = summary["methods"]["sft"]["by_split"][split]
    ax.plot([0.0], [sft["gold_reward"]], "k*", markersize=12, label="sft")
    for name, m in methods:
        s = m["by_split"][split]
        ax.plot(s["per_seed"]["kl_to_sft"], s["per_seed"]["gold_reward"], "o", label=name, alpha=0.8)
    ax.set_xlabel(f"KL to SFT ({split})")
    ax.set_ylabel(f"gold reward ({split})")
    ax.set_title("Frontier: gold reward vs KL\n(every seed's final model)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    save_figure(fig, path)
    return path
