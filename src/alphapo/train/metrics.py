"""Training metrics: exact averages over gradient accumulation and processes, and where they go.

Every per-example metric is accumulated as a (sum, count) pair over the micro-batches of a step,
then summed across processes before dividing, so a step's value is the mean over all of its
examples however they were split. Names follow TRL (``loss``, ``rewards/chosen``, ...) plus
``displacement/chosen|rejected``. Each logged step is one line of ``metrics.jsonl`` in the run
directory, also sent to TensorBoard / W&B / MLflow through Accelerate's trackers when requested.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch


class MetricSums:
    """(sum, count) per metric name over one optimiser step's micro-batches."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, float] = {}

    def add(self, name: str, values: torch.Tensor) -> None:
        """Add every element of ``values`` (a per-example tensor, or a 0-d sum with ``count``)."""
        values = values.detach().double()
        self.sums[name] = self.sums.get(name, 0) + values.sum()
        self.counts[name] = self.counts.get(name, 0) + values.numel()

    def add_sum(self, name: str, total: torch.Tensor | float, count: float) -> None:
        total = torch.as_tensor(total, dtype=torch.float64)
        self.sums[name] = self.sums.get(name, 0) + total.detach().double()
        self.counts[name] = self.counts.get(name, 0) + count

    def local_means(self) -> dict[str, float]:
        """Means of what this object holds, without communication (for totals already reduced)."""
        return {name: float(self.sums[name]) / max(self.counts[name], 1) for name in sorted(self.sums)}

    def reduce(self, accelerator) -> dict[str, float]:
        """Means over every example of the step on every process."""
        return {name: total / max(count, 1) for name, (total, count) in self.reduce_totals(accelerator).items()}

    def reduce_totals(self, accelerator) -> dict[str, tuple[float, float]]:
        """(sum, count) per metric over every process. A metric some process did not see this step (a
        KTO micro-batch without a desirable example) counts 0 there: every process reduces the same
        names, in the same order."""
        names = sorted(self.sums)
        if accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            names = sorted(set().union(*gather_object([names])))
        if not names:
            return {}
        device = accelerator.device
        zero = torch.zeros((), dtype=torch.float64)
        sums = torch.stack([torch.as_tensor(self.sums.get(n, zero), dtype=torch.float64).to(device) for n in names])
        counts = torch.tensor([self.counts.get(n, 0) for n in names], dtype=torch.float64, device=device)
        if accelerator.num_processes > 1:
            sums = accelerator.reduce(sums, reduction="sum")
            counts = accelerator.reduce(counts, reduction="sum")
        return {n: (s, c) for n, s, c in zip(names, sums.tolist(), counts.tolist(), strict=True)}


class MetricsLog:
    """Appends one JSON line per logged step to ``metrics.jsonl``; on resume, drops lines past the
    checkpoint's step so the file matches an uninterrupted run."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = path
        if resume_step is None:
            path.write_text("")
        elif path.exists():
            kept = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln).get("step", 0) <= resume_step]
            path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


LINE_LABELS = {  # logged metric -> its label on the progress line ("chosen" alone would be ambiguous)
    "loss": "loss",
    "rewards/accuracies": "acc",
    "rewards/margins": "margin",
    "accuracy": "acc",  # reward models
    "margin": "margin",
    "logps/chosen": "logp_chosen",
    "displacement/chosen": "displ_chosen",
    "grad_norm": "grad_norm",
}


class Progress:
    """A progress bar with ETA and tokens/s on an interactive terminal, plain log lines otherwise."""

    def __init__(self, mode: str, total: int, start: int, enabled: bool, console=None):
        from alphapo.log import quiet

        interactive = sys.stderr.isatty()
        self.mode = "none" if not enabled or quiet() else ("bar" if mode == "auto" and interactive else mode)
        if self.mode == "auto":
            self.mode = "lines"
        self.total, self.start_step, self.t0 = total, start, time.monotonic()
        self.bar = None
        if self.mode == "bar":
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.table import Column

            # A fixed-width bar, and metrics cut short (with an ellipsis) to the terminal's width: at
            # 80 columns rich otherwise squeezed the bar, elapsed time and ETA out of the line.
            self.bar = Progress(
                TextColumn("train"),
                BarColumn(bar_width=16),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}", table_column=Column(no_wrap=True)),
                transient=False,
                console=console,
            )
            self.task = self.bar.add_task("train", total=total, completed=start, info="")
            self.bar.start()

    FIXED_WIDTH = 52
    """Columns the bar line needs besides the metrics: label, bar, steps, elapsed, ETA and gaps."""

    def update(self, step: int, tokens_per_s: float, metrics: dict | None) -> None:
        info = f"{tokens_per_s:,.0f} tok/s"
        if metrics:
            info += " " + " ".join(f"{label}={metrics[k]:.4g}" for k, label in LINE_LABELS.items() if k in metrics)
        if self.bar is not None:
            room = self.bar.console.width - self.FIXED_WIDTH
            if len(info) > room:
                info = info[: max(room - 1, 0)] + "…"
            self.bar.update(self.task, completed=step, info=info)
        elif self.mode == "lines" and metrics is not None:
            elapsed = time.monotonic() - self.t0
            done = max(step - self.start_step, 1)
            eta = elapsed / done * (self.total - step)
            print(f"step {step}/{self.total} | {info} | eta {eta:,.0f}s", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
