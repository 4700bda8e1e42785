"""Progress of a long pass over data (tokenisation, reference log-probs, evaluation).

    with Progress("reference log-probs", total=len(batches), unit="batches") as bar:
        for batch in batches:
            ...
            bar.advance()

On an interactive terminal: a bar with rate and ETA, shown once the pass has run ``delay`` seconds
(short passes print nothing). Otherwise (a log file, CI): one plain line every ``interval`` seconds
and a closing line, so a log never sits silent for minutes. ``ALPHAPO_PROGRESS_INTERVAL`` (seconds)
overrides the interval, ``ALPHAPO_PROGRESS=none`` (or ``alphapo -q``) silences every pass.
"""

from __future__ import annotations

import os
import sys
import time

from alphapo.log import quiet


def _interval() -> float:
    try:
        return float(os.environ.get("ALPHAPO_PROGRESS_INTERVAL", "15"))
    except ValueError:
        return 15.0


class Progress:
    """Counts work done out of ``total`` (None when unknown) and reports it as described above."""

    def __init__(
        self,
        label: str,
        total: int | None = None,
        unit: str = "rows",
        *,
        enabled: bool = True,
        delay: float = 2.0,
        interval: float | None = None,
        stream=None,
    ):
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream or sys.stderr
        self.enabled = enabled and os.environ.get("ALPHAPO_PROGRESS", "") != "none" and not quiet()
        self.delay = delay
        self.interval = _interval() if interval is None else interval
        self.interactive = self.stream.isatty()
        self.done = 0
        self.new_tokens = 0  # generation passes also count the tokens they produced
        self.t0 = time.monotonic()
        self.last_line = None  # monotonic time of the last printed line
        self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close(failed=exc[0] is not None)

    def _status(self) -> str:
        elapsed = time.monotonic() - self.t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        count = f"{self.done:,}/{self.total:,}" if self.total else f"{self.done:,}"
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        eta = ""
        if self.total and rate > 0:
            eta = f", eta {max(self.total - self.done, 0) / rate:,.0f}s"
        tokens = f", {self.new_tokens / elapsed:,.0f} new tokens/s" if self.new_tokens and elapsed > 0 else ""
        return (
            f"{self.label}: {count} {self.unit}{share}, {rate:,.1f} {self.unit}/s{tokens}, {elapsed:,.0f}s elapsed{eta}"
        )

    def advance(self, n: int = 1, new_tokens: int = 0) -> None:
        """``n`` more units done (and, for generation, ``new_tokens`` more tokens generated)."""
        self.done += n
        self.new_tokens += new_tokens
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.t0 < self.delay:  # short passes print nothing
            return
        if self.interactive:
            self._bar_update()
        elif self.last_line is None or now - self.last_line >= self.interval:
            print(self._status(), file=self.stream, flush=True)
            self.last_line = now

    def _bar_update(self) -> None:
        if self.bar is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn(self.label),
                BarColumn(bar_width=None),
                MofNCompleteColumn(),
                TextColumn(self.unit),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
                transient=True,
            )
            self.task = self.bar.add_task(self.label, total=self.total, rate="")
            self.bar.start()
        elapsed = time.monotonic() - self.t0
        rate = f"{self.new_tokens / elapsed:,.0f} new tok/s" if self.new_tokens and elapsed > 0 else ""
        self.bar.update(self.task, completed=self.done, rate=rate)

    def close(self, failed: bool = False) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
        if self.enabled and not failed and (self.last_line is not None or time.monotonic() - self.t0 >= self.delay):
            print(self._status().replace(", eta 0s", "") + " - done", file=self.stream, flush=True)
            self.last_line = None
