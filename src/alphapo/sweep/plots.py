"""Plots of a sweep: one colour per setting, curves averaged over seeds."""

from __future__ import annotations

import statistics
from pathlib import Path

from alphapo.report.plots import pyplot, save_figure


def _mean_curve(runs: list[list[dict]], x_key: str, y_key: str) -> tuple[list[float], list[float]]:
    """Average ``y_key`` over runs at each ``x_key`` value present in every run."""
    common = None
    for log in runs:
        xs = {r[x_key] for r in log if y_key in r and r[y_key] is not None}
        common = xs if common is None else common & xs
    xs = sorted(common or [])
    ys = [statistics.fmean(next(r[y_key] for r in log if r[x_key] == x) for log in runs) for x in xs]
    return xs, ys


def _smooth(values: list[float], window: int = 5) -> list[float]:
    """Centred moving average (shorter at the ends): logged windows are noisy, the trend is the point."""
    half = window // 2
    return [statistics.fmean(values[max(0, i - half) : i + half + 1]) for i in range(len(values))]


def _colours(plt, n):
    cmap = plt.get_cmap("viridis")
    return [cmap(i / max(n - 1, 1)) for i in range(n)]


def plot_displacement(logs: dict[str, list[list[dict]]], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    colours = _colours(plt, len(logs))
    for (label, runs), colour in zip(logs.items(), colours, strict=True):
        for key, style, ax in (
            ("logps/chosen", "-", axes[0]),
            ("logps/rejected", "--", axes[0]),
            ("displacement/chosen", "-", axes[1]),
            ("displacement/rejected", "--", axes[1]),
        ):
            xs, ys = _mean_curve(runs, "step", key)
            if xs:
                ax.plot(xs, ys, style, color=colour, label=f"{label} {key.split('/')[1]}")
    axes[0].set_title("Log-probs of the training pairs (solid: chosen, dashed: rejected)")
    axes[1].set_title("Displacement: log-prob minus its start value")
    axes[1].axhline(0.0, color="grey", linewidth=0.8)
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    save_figure(fig, path)


def plot_frontier(frontiers: dict[str, list[list[dict]]], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    colours = _colours(plt, len(frontiers))
    for (label, runs), colour in zip(frontiers.items(), colours, strict=True):
        steps, gold = _mean_curve(runs, "step", "gold_reward")
        _, kl = _mean_curve(runs, "step", "kl")
        if steps:
            ax.plot(kl, gold, "o-", color=colour, label=label, markersize=4)
            # only the last evaluation is labelled: labels on every point overprinted each other
            ax.annotate(
                f"step {steps[-1]}",
                (kl[-1], gold[-1]),
                fontsize=7,
                color=colour,
                xytext=(3, 3),
                textcoords="offset points",
            )
    ax.set_xlabel("KL(policy || starting model), nats per answer")
    ax.set_ylabel("held-out gold reward (greedy)")
    ax.set_title("Over-optimisation frontier (points: evaluations during training; the last labelled)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_margin_vs_chosen(logs: dict[str, list[list[dict]]], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    colours = _colours(plt, len(logs))
    for (label, runs), colour in zip(logs.items(), colours, strict=True):
        _, margin = _mean_curve(runs, "step", "rewards/margins")
        _, chosen = _mean_curve(runs, "step", "displacement/chosen")
        n = min(len(margin), len(chosen))
        if n:
            xs, ys = _smooth(chosen[:n]), _smooth(margin[:n])
            ax.plot(xs, ys, "-", color=colour, label=f"{label} (moving average)")
            # the markers are the logged values themselves (as in the tables), not the smoothed ends
            ax.plot(chosen[0], margin[0], "s", color=colour, markersize=4)
            ax.plot(chosen[n - 1], margin[n - 1], "o", color=colour)
    ax.axvline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("chosen log-prob change since the start (displacement)")
    ax.set_ylabel("reward margin (chosen - rejected)")
    ax.set_title(
        "Margin against chosen log-prob change (line: moving average; square: first logged,\n"
        "dot: last logged value; left of 0: displaced)"
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)
