"""Statistics for evaluation: win rate with ties as half, and bootstrap confidence intervals.

All intervals are percentile bootstraps over prompts (resampling prompts with replacement), seeded
so that a report is reproducible. ``paired_difference`` resamples the same prompts for both models,
which is what tells whether a policy beats its baseline beyond the noise of a finite prompt set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A mean with its bootstrap interval (``low``, ``high``) at ``level`` over ``n`` prompts."""

    mean: float
    low: float
    high: float
    n: int
    level: float = 0.95

    def to_json(self) -> dict:
        return asdict(self)

    def excludes(self, value: float) -> bool:
        """Whether ``value`` lies outside the interval (a difference 'beyond the noise' excludes 0)."""
        return value < self.low or value > self.high

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


def percentile_interval(draws, level: float) -> tuple[float, float]:
    """The central ``level`` interval of bootstrap ``draws`` (percentile method)."""
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap(values: Sequence[float], *, resamples: int = 2000, level: float = 0.95, seed: int = 0) -> Estimate:
    """Mean of ``values`` with a percentile bootstrap interval."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("bootstrap of an empty sample")
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    low, high = percentile_interval(means, level)
    return Estimate(float(data.mean()), float(low), float(high), int(data.size), level)


def bootstrap_ratio(
    numerators: Sequence[float],
    denominators: Sequence[float],
    *,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """``sum(numerators) / sum(denominators)`` (e.g. instructions followed over instructions given) with
    a percentile bootstrap interval that resamples the units (prompts) the pairs belong to."""
    num, den = np.asarray(numerators, dtype=np.float64), np.asarray(denominators, dtype=np.float64)
    if num.size == 0 or num.shape != den.shape:
        raise ValueError(f"bootstrap_ratio needs two samples of one non-zero size, got {num.shape} and {den.shape}")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, num.size, size=(resamples, num.size))
    ratios = num[picks].sum(axis=1) / np.maximum(den[picks].sum(axis=1), 1e-300)
    low, high = percentile_interval(ratios, level)
    return Estimate(float(num.sum() / den.sum()), float(low), float(high), int(num.size), level)


def win_outcomes(policy: Sequence[float], baseline: Sequence[float]) -> list[float]:
    """Per prompt: 1 if the policy's score is higher, 0.5 on a tie, 0 if lower."""
    if len(policy) != len(baseline):
        raise ValueError(f"win rate over different prompt counts: {len(policy)} vs {len(baseline)}")
    return [1.0 if p > b else 0.5 if p == b else 0.0 for p, b in zip(policy, baseline, strict=True)]


def win_rate(policy: Sequence[float], baseline: Sequence[float], **kwargs) -> Estimate:
    """Win rate of ``policy`` against ``baseline`` per prompt (ties as half), with its interval."""
    return bootstrap(win_outcomes(policy, baseline), **kwargs)


def paired_difference(policy: Sequence[float], baseline: Sequence[float], **kwargs) -> Estimate:
    """Mean of ``policy - baseline`` over the same prompts, with its interval."""
    if len(policy) != len(baseline):
        raise ValueError(f"paired difference over different prompt counts: {len(policy)} vs {len(baseline)}")
    return bootstrap([p - b for p, b in zip(policy, baseline, strict=True)], **kwargs)


def seed_and_prompt_difference(
    policy: Sequence[Sequence[float]],
    baseline: Sequence[Sequence[float]],
    *,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Mean of ``policy - baseline`` with an interval over both training seeds and prompts.

    ``policy`` and ``baseline`` are [S, N]: per training seed, a score per prompt (the same prompts in
    the same order; seed ``i`` of both shares its data order, so seeds are paired too). Each resample
    draws S seeds and N prompts with replacement, the same for both, so the interval covers the
    spread between training runs as well as the finite prompt set. ``n`` is the number of prompts."""
    a, b = np.asarray(policy, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"seed-and-prompt difference needs two [seeds, prompts] arrays, got {a.shape} and {b.shape}")
    diff = a - b
    seeds, prompts = diff.shape
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for i in range(resamples):
        rows = diff[rng.integers(0, seeds, size=seeds)]
        means[i] = rows[:, rng.integers(0, prompts, size=prompts)].mean()
    low, high = percentile_interval(means, level)
    return Estimate(float(diff.mean()), float(low), float(high), prompts, level)
