"""``alphapo report RUN_DIR``: a Markdown report with PNG plots, written into the run directory.

On a training run's directory (``alphapo train``): :mod:`alphapo.report.training`. On a pipeline's,
it reads ``summary.json`` (from ``alphapo run``) and each method's ``metrics.jsonl`` and writes
``report.md`` with the results table (every number with its bootstrap interval, and whether each
gain over SFT is beyond the noise) and ``plots/``: training curves (rewards, margins, chosen and
rejected log-probs, likelihood displacement) and the results with their intervals.
"""

from __future__ import annotations

import json
from pathlib import Path

from alphapo.errors import StageError
from alphapo.files import write_text
from alphapo.report.plots import plot_results, plot_training_curves
from alphapo.report.rounds import plot_rounds, rounds_section
from alphapo.report.shape import label, plot_shape, shape_findings, shape_rows
from alphapo.report.training import is_training_run, write_training_report


def read_metrics_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _ci(low_high) -> str:
    return f"[{low_high[0]:.3f}, {low_high[1]:.3f}]"


def _maybe_ci(s: dict, key: str, digits: int = 3) -> str:
    """`` [low, high]`` when the summary has the interval (older summaries lack some)."""
    if key not in s:
        return ""
    low, high = s[key]
    return f" [{low:.{digits}f}, {high:.{digits}f}]"


def settings_table(summary: dict) -> list[str]:
    """One row per method: its loss and the settings that define it (alpha, beta, gamma, ...)."""
    methods = {n: m for n, m in summary["methods"].items() if n != "sft" and "loss" in m}
    if not methods:
        return []
    keys = sorted({k for m in methods.values() for k in m.get("settings", {}) if k != "lr"})
    rows = ["| method | loss | alpha | " + " | ".join(keys) + " | lr |", "|---|---|---|" + "---|" * (len(keys) + 1)]
    for name, m in methods.items():
        settings = m.get("settings", {})
        alpha = "-" if m.get("alpha") is None else f"{m['alpha']:.4g}"
        cells = ["-" if settings.get(k) is None else f"{settings[k]:.4g}" for k in keys]
        lr = "-" if settings.get("lr") is None else f"{settings['lr']:.3g}"
        rows.append(f"| {name} | {m['loss']} | {alpha} | " + " | ".join(cells) + f" | {lr} |")
    return ["## Methods", "", *rows, ""]


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
            f"{_gain(name, s)} | {s['kl_to_sft']:.3f}{_maybe_ci(s, 'kl_ci')} | "
            f"{s['mean_length']:.1f}{_maybe_ci(s, 'length_ci', 1)} |"
        )
    return "\n".join(rows)


def ifeval_section(results: dict | None) -> list[str]:
    """The IFEval table: the four numbers per model and each method's prompt-level strict difference
    from the starting model (paired over the same prompts)."""
    if not results:
        return []

    def cell(e: dict) -> str:
        return f"{e['mean']:.3f} [{e['low']:.3f}, {e['high']:.3f}]"

    n = next(iter(results.values()))["prompts"]
    lines = [
        "## IFEval",
        "",
        f"{n} IFEval prompts, greedy answers; 95% bootstrap intervals over prompts (means over seeds).",
        "",
        "| model | prompt strict | instruction strict | prompt loose | instruction loose | prompt strict vs SFT | "
        "mean length (tokens) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        diff = r.get("prompt_strict_vs_sft")
        versus = "-" if diff is None else f"{diff['mean']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}]"
        numbers = " | ".join(
            cell(r[k]) for k in ("prompt_strict", "instruction_strict", "prompt_loose", "instruction_loose")
        )
        lines.append(f"| {name} | {numbers} | {versus} | {r['mean_length']:.0f} |")
    return [*lines, ""]


def write_report(run_dir: str | Path, summary: dict | None = None) -> Path:
    run_dir = Path(run_dir)
    if summary is None and is_training_run(run_dir):
        return write_training_report(run_dir)
    if summary is None:
        path = run_dir / "summary.json"
        if not path.is_file():
            raise StageError(
                f"report: {run_dir} holds neither summary.json (from `alphapo run` or `alphapo demo`) nor "
                "metrics.jsonl (from `alphapo train`)"
            )
        summary = json.loads(path.read_text())
    plots = run_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    methods = [m for m in summary["methods"] if m != "sft"]
    seeds = summary.get("seeds") or [summary.get("seed")]
    first = "" if len(seeds) == 1 else f"seed{seeds[0]}"
    logs = {m: read_metrics_log(run_dir / m / first / "metrics.jsonl") for m in methods}
    scales = {(m.get("loss"), m.get("settings", {}).get("beta")) for n, m in summary["methods"].items() if n != "sft"}
    curves = plot_training_curves(logs, plots / "training_curves.png", comparable_rewards=len(scales) <= 1)
    results = plot_results(summary, plots / "results.png")
    lines = [f"# alphapo run: {run_dir.name}", ""]
    lines += [
        "Accuracy, gold reward, win rate, KL and length come with 95% bootstrap intervals over prompts",
        "(KL: one sampled answer per prompt and setting `eval.kl_samples`); a gain is *beyond noise* when its",
        "interval excludes zero (paired over the same prompts). Win rates count ties as half.",
    ]
    if len(seeds) > 1:
        lines += [
            f"Each method trained {len(seeds)} times (training seeds {', '.join(map(str, seeds))}) from the same SFT",
            "model and pairs: numbers are means over seeds of per-prompt values, with the spread (sd) over seeds.",
        ]
    lines.append("")
    lines += settings_table(summary)
    for split in summary["methods"]["sft"]["by_split"]:
        lines += [f"## Results: {split} prompts", "", results_table(summary, split), ""]
    lines += ["![results](plots/results.png)", ""]
    lines += ifeval_section(summary.get("ifeval"))
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
    return write_text(run_dir / "report.md", "\n".join(lines) + "\n")


__all__ = ["results_table", "write_report"]
