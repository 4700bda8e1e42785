"""``alphapo report RUN_DIR``: a Markdown report with PNG plots, written into the run directory.

It reads ``summary.json`` (from ``alphapo run``) and each method's ``metrics.jsonl`` and writes
``report.md`` with the results table (every number with its bootstrap interval, and whether each
gain over SFT is beyond the noise) and ``plots/``: training curves (rewards, margins, chosen and
rejected log-probs, likelihood displacement) and the results with their intervals.
"""

from __future__ import annotations

import json
from pathlib import Path

from alphapo.errors import StageError
from alphapo.report.plots import plot_results, plot_training_curves
from alphapo.report.rounds import plot_rounds, rounds_section
from alphapo.report.shape import label, plot_shape, shape_findings, shape_rows


def read_metrics_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _ci(low_high) -> str:
    return f"[{low_high[0]:.3f}, {low_high[1]:.3f}]"


def _gain(name: str, s: dict) -> str:
    if name == "sft":
        return "-"
    low, high = s["accuracy_gain_ci"]
    verdict = "**beyond noise**" if low > 0 else "(worse)" if high < 0 else "(within noise)"
    return f"{s['accuracy_gain_vs_sft']:+.3f} {_ci(s['accuracy_gain_ci'])} {verdict}"


def results_table(summary: dict, split: str) -> str:
    rows = [
        "| model | accuracy | sd over seeds | gold reward | win rate vs SFT | accuracy gain vs SFT | KL to SFT "
        "| mean length |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in summary["methods"].items():
        s = m["by_split"][split]
        sd = f"{s['accuracy_sd']:.3f}" if "accuracy_sd" in s and name != "sft" else "-"
        rows.append(
            f"| {label(name, m)} | {s['accuracy']:.3f} {_ci(s['accuracy_ci'])} | {sd} | {s['gold_reward']:.3f} "
            f"{_ci(s['gold_reward_ci'])} | {s['win_rate_vs_sft']:.3f} {_ci(s['win_rate_ci'])} | "
            f"{_gain(name, s)} | {s['kl_to_sft']:.3f} | {s['mean_length']:.1f} |"
        )
    return "\n".join(rows)


def write_report(run_dir: str | Path, summary: dict | None = None) -> Path:
    run_dir = Path(run_dir)
    if summary is None:
        path = run_dir / "summary.json"
        if not path.is_file():
            raise StageError(f"report: {path} does not exist (run `alphapo run` or `alphapo demo` first)")
        summary = json.loads(path.read_text())
    plots = run_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    methods = [m for m in summary["methods"] if m != "sft"]
    seeds = summary.get("seeds") or [summary.get("seed")]
    first = "" if len(seeds) == 1 else f"seed{seeds[0]}"
    logs = {m: read_metrics_log(run_dir / m / first / "metrics.jsonl") for m in methods}
    curves = plot_training_curves(logs, plots / "training_curves.png")
    results = plot_results(summary, plots / "results.png")
    lines = [f"# alphapo run: {run_dir.name}", ""]
    lines += [
        "Every number comes with a 95% bootstrap interval over prompts; a gain is *beyond noise* when its",
        "interval excludes zero (paired over the same prompts). Win rates count ties as half.",
    ]
    if len(seeds) > 1:
        lines += [
            f"Each method trained {len(seeds)} times (training seeds {', '.join(map(str, seeds))}) from the same SFT",
            "model and pairs: numbers are means over seeds of per-prompt values, with the spread (sd) over seeds.",
        ]
    lines.append("")
    for split in summary["methods"]["sft"]["by_split"]:
        lines += [f"## Results: {split} prompts", "", results_table(summary, split), ""]
    lines += ["![results](plots/results.png)", ""]
    if summary.get("rounds") and plot_rounds(summary, plots / "rounds.png"):
        lines += rounds_section(summary)
    rows = shape_rows(summary)
    if rows:
        lines += ["## What the reward shape did", "", *shape_findings(summary)]
        lines += ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
        lines.append("")
        if plot_shape(summary, plots / "reward_shape.png"):
            lines += ["![reward shape](plots/reward_shape.png)", ""]
    if curves:
        lines += [
            "## Training curves" + (f" (seed {seeds[0]})" if len(seeds) > 1 else ""),
            "",
            "Rewards, margins and log-probs of the chosen and rejected answers during training, and the",
            "*likelihood displacement*: each log-prob minus its value under the starting model. A chosen",
            "displacement below zero means training pushed the preferred answers down too, which is what",
            "the reward shape (alpha) and an NLL term on the chosen answer control.",
            "",
            "![training curves](plots/training_curves.png)",
            "",
        ]
        lines += [
            "| method | steps | final loss | reward accuracy | margin | chosen displacement | rejected displacement |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, log in logs.items():
            if log:
                last = log[-1]
                lines.append(
                    f"| {name} | {last['step']} | {last['loss']:.4f} | {last['rewards/accuracies']:.3f} | "
                    f"{last['rewards/margins']:.3f} | {last.get('displacement/chosen', float('nan')):+.3f} | "
                    f"{last.get('displacement/rejected', float('nan')):+.3f} |"
                )
        lines.append("")
    if summary.get("pairs"):
        p = summary["pairs"]
        lines += [
            "## Pairs",
            "",
            f"{p['pairs']} pairs from {p['prompts']} prompts (best against worst sample); "
            f"dropped: {p['dropped_all_tied']} with all samples tied, {p['dropped_small_gap']} below the "
            f"minimum score gap, {p['dropped_same_text']} with identical texts.",
            "",
        ]
    timings = summary.get("stage_seconds") or {}
    if timings:
        lines += ["## Time", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in timings.items()]
        lines += [f"| total (wall) | {summary.get('wall_time_s', 0):.1f} |", ""]
    if results is None:
        lines.append("(plots need matplotlib)")
    target = run_dir / "report.md"
    tmp = run_dir / ".tmp-report.md"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(target)
    return target


__all__ = ["results_table", "write_report"]
