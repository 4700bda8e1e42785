"""The sweep report: a table per setting (mean and spread over seeds), the best setting by held-out
gold reward with a paired bootstrap against the runner-up, and three plots:

1. ``displacement.png``: chosen and rejected log-prob trajectories per setting (likelihood displacement),
2. ``frontier.png``: gold reward against KL to the starting model, from the evaluations during
   training (the over-optimisation frontier), one curve per setting,
3. ``margin_vs_chosen.png``: the reward margin against the chosen log-prob's change.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from alphapo.eval.stats import paired_difference
from alphapo.files import write_json, write_text
from alphapo.report import read_metrics_log
from alphapo.sweep.grid import Setting, SweepSpec


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _per_prompt_gold(run_dir: Path, split: str) -> dict[str, float]:
    path = run_dir / "eval" / f"generations-{split}.jsonl"
    return {r["id"]: r["gold_reward"] for r in map(json.loads, path.read_text().splitlines())}


def aggregate(runs: list[tuple[Setting, Path]]) -> dict[str, dict]:
    """Per setting label: per-seed finals and their means/spreads."""
    by_label: dict[str, dict] = {}
    for setting, run_dir in runs:
        metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())["splits"]
        split = next(iter(metrics))
        m = metrics[split]
        log = read_metrics_log(run_dir / "metrics.jsonl")
        last = log[-1] if log else {}
        entry = by_label.setdefault(setting.label, {"values": dict(setting.values), "runs": [], "split": split})
        entry["runs"].append(
            {
                "seed": setting.seed,
                "dir": str(run_dir),
                "gold_reward": m["gold_reward"]["mean"],
                "accuracy": m["accuracy"]["mean"],
                "win_rate": m["win_rate_vs_baseline"]["mean"],
                "kl": m["kl_to_baseline"]["mean"],
                "displacement_chosen": last.get("displacement/chosen"),
                "displacement_rejected": last.get("displacement/rejected"),
                "chosen_fell": last.get("displacement/chosen_fell"),
                "grad_cosine": _last(log, "diagnostics/grad_cosine"),
            }
        )
    for entry in by_label.values():
        for key in (
            "gold_reward",
            "accuracy",
            "win_rate",
            "kl",
            "displacement_chosen",
            "displacement_rejected",
            "chosen_fell",
            "grad_cosine",
        ):
            values = [r[key] for r in entry["runs"] if r[key] is not None]
            if values:
                entry[key], entry[f"{key}_sd"] = _mean_sd(values)
    return by_label


def _last(log: list[dict], key: str):
    values = [r[key] for r in log if key in r]
    return values[-1] if values else None


def best_and_noise(settings: dict[str, dict]) -> dict:
    """The best setting by mean held-out gold reward, and a paired bootstrap against the runner-up
    (per-prompt gold reward averaged over seeds, same prompts)."""
    ranked = sorted(settings, key=lambda label: -settings[label]["gold_reward"])
    best = ranked[0]
    verdict = {"best": best, "gold_reward": settings[best]["gold_reward"]}
    if len(ranked) > 1:
        runner = ranked[1]
        split = settings[best]["split"]

        def averaged(label):
            per_seed = [_per_prompt_gold(Path(r["dir"]), split) for r in settings[label]["runs"]]
            ids = sorted(per_seed[0])
            return ids, [statistics.fmean(p[i] for p in per_seed) for i in ids]

        ids, best_scores = averaged(best)
        ids2, runner_scores = averaged(runner)
        if ids == ids2:
            diff = paired_difference(best_scores, runner_scores)
            verdict.update(runner_up=runner, difference=diff.to_json(), beyond_noise=diff.excludes(0.0))
    return verdict


def write_sweep_report(
    root: Path, runs: list[tuple[Setting, Path]], spec: SweepSpec, method: str, timings: dict
) -> dict:
    from alphapo.sweep.plots import plot_displacement, plot_frontier, plot_margin_vs_chosen

    settings = aggregate(runs)
    verdict = best_and_noise(settings)
    plots = root / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    logs = {
        label: [read_metrics_log(Path(r["dir"]) / "metrics.jsonl") for r in s["runs"]] for label, s in settings.items()
    }
    frontiers = {
        label: [read_metrics_log(Path(r["dir"]) / "frontier.jsonl") for r in s["runs"]] for label, s in settings.items()
    }
    plot_displacement(logs, plots / "displacement.png")
    plot_frontier(frontiers, plots / "frontier.png")
    plot_margin_vs_chosen(logs, plots / "margin_vs_chosen.png")
    seconds = sum(v for k, v in timings.items() if k.startswith(f"sweep-{root.name}-"))
    summary = {
        "method": method,
        "axes": spec.axes,
        "fixed": spec.fixed,
        "seeds": spec.seeds,
        "settings": settings,
        "verdict": verdict,
        "train_eval_seconds": seconds,
    }
    write_json(root / "sweep_summary.json", summary)
    write_text(root / "report.md", _markdown(root, summary))
    return summary


def _fmt(entry: dict, key: str, digits: int = 3) -> str:
    if key not in entry:
        return "-"
    sd = entry.get(f"{key}_sd", 0.0)
    return f"{entry[key]:.{digits}f} ± {sd:.{digits}f}" if len(entry["runs"]) > 1 else f"{entry[key]:.{digits}f}"


def _markdown(root: Path, summary: dict) -> str:
    settings, verdict = summary["settings"], summary["verdict"]
    seeds = summary["seeds"]
    lines = [
        f"# Sweep: {summary['method']} over {', '.join(summary['axes']) or 'no axis'}",
        "",
        f"{len(settings)} settings x {seeds} seed(s); values are the mean ± standard deviation over seeds"
        if seeds > 1
        else f"{len(settings)} settings, one seed each",
        "",
        "| setting | gold reward | accuracy | win rate vs SFT | KL to SFT | chosen displacement | "
        "rejected displacement | chosen fell | grad cosine |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, e in settings.items():
        lines.append(
            f"| {label} | {_fmt(e, 'gold_reward')} | {_fmt(e, 'accuracy')} | {_fmt(e, 'win_rate')} | "
            f"{_fmt(e, 'kl')} | {_fmt(e, 'displacement_chosen', 2)} | {_fmt(e, 'displacement_rejected', 2)} | "
            f"{_fmt(e, 'chosen_fell', 2)} | {_fmt(e, 'grad_cosine', 2)} |"
        )
    lines += ["", f"**Best by held-out gold reward: {verdict['best']}** ({verdict['gold_reward']:.3f})."]
    if "difference" in verdict:
        d = verdict["difference"]
        word = "beyond the noise" if verdict["beyond_noise"] else "within the noise"
        lines.append(
            f"Against the runner-up ({verdict['runner_up']}): {d['mean']:+.3f} "
            f"[{d['low']:+.3f}, {d['high']:+.3f}] gold reward per prompt (paired bootstrap, 95%): {word}."
        )
    lines += [
        "",
        "Displacement is the log-prob of the training pairs' answers minus its value under the starting",
        "model (summed over the answer's tokens); *chosen fell* is the share of pairs whose chosen answer",
        "lost probability; *grad cosine* is the cosine between the gradients of the chosen and rejected",
        "log-probs (gradient entanglement).",
        "",
        "## Likelihood displacement",
        "",
        "![displacement](plots/displacement.png)",
        "",
        "## Over-optimisation frontier",
        "",
        "![frontier](plots/frontier.png)",
        "",
        "## Margin against the chosen answer's log-prob",
        "",
        "![margin](plots/margin_vs_chosen.png)",
        "",
        f"Training and evaluation time: {summary['train_eval_seconds']:.0f}s.",
    ]
    return "\n".join(lines) + "\n"
