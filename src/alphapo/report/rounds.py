"""The report's per-round section (``rounds: N``): whether more rounds still help, and where
over-optimisation begins.

From ``summary["rounds"]``: per method and round, accuracy and gold reward per split with intervals,
KL to the SFT model and to the previous round's policy, the pairs kept, the chosen and rejected
displacement, and each round's held-out difference against round 1 (intervals over seeds and prompts).
"""

from __future__ import annotations

from pathlib import Path

from alphapo.report.shape import verdict


def _ci(pair) -> str:
    return f"[{pair[0]:.3f}, {pair[1]:.3f}]"


def rounds_section(summary: dict) -> list[str]:
    rounds = summary.get("rounds")
    if not rounds:
        return []
    split = summary["primary_split"]
    lines = [
        "## Rounds",
        "",
        "Round r samples from round r-1's policy (round 1 from the SFT model), judges, pairs and trains from",
        f"it. Per round ({split} prompts; KL to the previous round on {split} prompts; differences against",
        "round 1 paired over seeds and prompts):",
        "",
    ]
    for name, entries in rounds.items():
        lines += [
            f"### {name}",
            "",
            "| round | pairs | accuracy | gold reward | KL to SFT | KL to previous | chosen displ. | rejected displ. "
            "| gold reward vs round 1 |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for e in entries:
            s = e["by_split"][split]
            t = e.get("training", {})
            versus = e.get("vs_round1")
            previous = f"{e['kl_to_previous']:.3f}" if "kl_to_previous" in e else "-"
            against = "-"
            if versus:
                low, high = versus["gold_reward_diff_ci_seeds_and_prompts"]
                against = f"{versus['gold_reward_diff']:+.3f} [{low:+.3f}, {high:+.3f}] {verdict(low, high)}"
            lines.append(
                f"| {e['round']} | {e['pairs']:.0f} | {s['accuracy']:.3f} {_ci(s['accuracy_ci'])} | "
                f"{s['gold_reward']:.3f} {_ci(s['gold_reward_ci'])} | {s['kl_to_sft']:.3f} | "
                f"{previous} | {t.get('chosen', float('nan')):+.3f} | "
                f"{t.get('rejected', float('nan')):+.3f} | {against} |"
            )
        lines.append("")
    lines += ["![rounds](plots/rounds.png)", ""]
    return lines


def plot_rounds(summary: dict, path: Path) -> Path | None:
    """Six panels against the round: accuracy and gold reward (with intervals), KL to SFT, KL to the
    previous round, chosen/rejected displacement, pairs kept."""
    rounds = summary.get("rounds")
    if not rounds:
        return None
    from alphapo.report.plots import pyplot, save_figure

    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    split = summary["primary_split"]
    fig, axes = plt.subplots(2, 3, figsize=(16, 8))
    panels = [
        ("accuracy", f"Accuracy ({split})"),
        ("gold_reward", f"Gold reward ({split})"),
        ("kl_to_sft", "KL to SFT"),
        ("kl_to_previous", "KL to the previous round"),
        ("displacement", "Displacement (solid chosen, dashed rejected)"),
        ("pairs", "Pairs kept"),
    ]
    for ax, (key, title) in zip(axes.flat, panels, strict=True):
        for name, entries in rounds.items():
            xs = [e["round"] for e in entries]
            if key in ("accuracy", "gold_reward"):
                ys = [e["by_split"][split][key] for e in entries]
                cis = [e["by_split"][split][f"{key}_ci"] for e in entries]
                err = [
                    [y - c[0] for y, c in zip(ys, cis, strict=True)],
                    [c[1] - y for y, c in zip(ys, cis, strict=True)],
                ]
                ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name)
            elif key == "kl_to_sft":
                ax.plot(xs, [e["by_split"][split]["kl_to_sft"] for e in entries], "o-", label=name)
            elif key == "displacement":
                line = ax.plot(xs, [e["training"].get("chosen") for e in entries], "o-", label=name)[0]
                ax.plot(xs, [e["training"].get("rejected") for e in entries], "o--", color=line.get_color())
            else:  # KL to the previous round starts at round 2
                kept = [e for e in entries if key in e]
                ax.plot([e["round"] for e in kept], [e[key] for e in kept], "o-", label=name)
        ax.set_title(title)
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path)
    return path
