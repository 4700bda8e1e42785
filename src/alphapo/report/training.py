"""``alphapo report RUN_DIR`` on a training run (``alphapo train``'s output directory).

Reads ``metrics.jsonl``, the resolved ``config.yaml`` and, when present, ``displacement.json`` and
``reward_scale.json``; writes ``report.md`` and ``plots/training_curves.png`` into the run directory:
the loss and its settings, the first and last logged values of TRL's metrics, and the training curves.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from alphapo.files import write_text
from alphapo.report.plots import plot_training_curves

SHOWN = (
    "loss",
    "rewards/accuracies",
    "rewards/margins",
    "rewards/chosen",
    "rewards/rejected",
    "logps/chosen",
    "logps/rejected",
    "displacement/chosen",
    "displacement/rejected",
    "kl",
    "grad_norm",
    "learning_rate",
)


def is_training_run(run_dir: Path) -> bool:
    return (run_dir / "metrics.jsonl").is_file() and not (run_dir / "summary.json").is_file()


def write_training_report(run_dir: Path) -> Path:
    from alphapo.report import read_metrics_log

    log = read_metrics_log(run_dir / "metrics.jsonl")
    config_file = run_dir / "config.yaml"
    config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else {}
    loss = dict(config.get("loss") or {})
    name = loss.pop("name", "?")
    lines = [f"# alphapo training run: {run_dir.name}", ""]
    settings = ", ".join(f"{k} {v}" for k, v in loss.items() if v is not None) or "the loss's defaults"
    optim, train = config.get("optim") or {}, config.get("train") or {}
    lines += [
        f"Loss **{name}** ({settings}); learning rate {optim.get('lr', '?')}, batch {train.get('batch_size', '?')} "
        f"x {train.get('grad_accum', 1)} accumulation; model `{(config.get('model') or {}).get('path')}`.",
        "",
    ]
    if not log:
        lines += ["No step was logged yet (`metrics.jsonl` is empty).", ""]
    else:
        first, last = log[0], log[-1]
        lines += [f"{len(log)} logged steps, last step {last['step']}.", "", "| metric | first logged | last logged |"]
        lines.append("|---|---|---|")
        for key in SHOWN:
            if key in last:
                start = f"{first[key]:.4g}" if first.get(key) is not None else "-"
                lines.append(f"| {key} | {start} | {last[key]:.4g} |")
        lines.append("")
        plots = run_dir / "plots"
        plots.mkdir(exist_ok=True)
        if plot_training_curves({name: log}, plots / "training_curves.png"):
            lines += ["![training curves](plots/training_curves.png)", ""]
    for file, title in (
        ("displacement.json", "Displacement of every pair at the end"),
        ("reward_scale.json", "Reward scale"),
    ):
        path = run_dir / file
        if path.is_file():
            lines += [f"## {title}", "", "```json", json.dumps(json.loads(path.read_text()), indent=1), "```", ""]
    return write_text(run_dir / "report.md", "\n".join(lines) + "\n")
