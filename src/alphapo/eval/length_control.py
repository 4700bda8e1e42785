"""Length-controlled win rate: AlpacaEval 2's logistic model of the preference on the length difference.

Dubois et al. (2024), "Length-Controlled AlpacaEval": a judge's preference for the policy's answer over
the baseline's on prompt ``i`` is modelled as ::

    P(policy wins | i) = sigma(theta + phi * tanh(delta_i / sd(delta)))

with ``delta_i`` the policy's answer length minus the baseline's (characters, as AlpacaEval measures
it) and ``sd`` their sample standard deviation over the prompts. The length-controlled win rate is
the model's prediction with the length difference set to zero, ``sigma(theta)``: the win rate the
policy would have if its answers were as long as the baseline's. This is the package's
``length_controlled_minimal`` GLM (``alpaca_eval.metrics.glm_winrate``): AlpacaEval's default model
adds a per-instruction difficulty term fitted on its 805 instructions and its gamed baselines, which
do not exist for another prompt set. Ties count half, and the targets are the preferences themselves
(not rounded), as AlpacaEval fits them.

The package fits with scikit-learn's L1-penalised ``LogisticRegressionCV`` (liblinear, tolerance
1e-4, the penalty chosen by 5-fold cross-validation among ``C`` in 1e-4 .. 1e4); here the
unpenalised maximum-likelihood fit is solved by Newton's method to 1e-12. Where the package's
cross-validation picks a large ``C`` (a sample of reasonable size) the two agree to its tolerance
(``tests/eval/test_length_control.py`` holds the package's own numbers on fixed examples, produced by
``benchmarks/lc_winrate_reference.py``). When the data separate perfectly (every longer answer wins)
the likelihood has no maximum; the fit then stops where the prediction no longer moves (1e-12) with a
ridge of 1e-12 keeping the steps finite; the prediction is then arbitrary (near 0 or 1), as the
package's is, and :attr:`LengthControlFit.separable` says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from alphapo.eval.stats import Estimate, percentile_interval


@dataclass(frozen=True)
class LengthControlFit:
    theta: float  # the policy's strength at equal length (logit)
    phi: float  # the weight of the (tanh-squashed, standardised) length difference
    length_sd: float  # sd of the length differences (0: every difference equal, no length term)
    separable: bool = False  # the verdicts follow the length exactly: no maximum, sigma(theta) arbitrary

    @property
    def win_rate(self) -> float:
        return float(_sigmoid(self.theta))


def _sigmoid(x):
    return np.exp(-np.logaddexp(0.0, -np.asarray(x, dtype=np.float64)))


def length_feature(delta: Sequence[float]) -> tuple[np.ndarray, float]:
    """``tanh(delta / sd(delta))`` (sample sd, as pandas computes it) and the sd; all zeros when the
    differences do not vary."""
    d = np.asarray(delta, dtype=np.float64)
    sd = float(d.std(ddof=1)) if d.size > 1 else 0.0
    if not sd > 0:
        return np.zeros_like(d), 0.0
    return np.tanh(d / sd), sd


def fit_length_control(preferences: Sequence[float], delta: Sequence[float]) -> LengthControlFit:
    """Maximum-likelihood ``(theta, phi)`` of the model above; ``preferences`` in [0, 1] per prompt
    (1: the policy's answer preferred, 0.5: a tie), ``delta`` the length differences."""
    y = np.asarray(preferences, dtype=np.float64)
    if y.size == 0 or y.size != len(delta):
        raise ValueError(f"length control needs one preference per length difference, got {y.size} and {len(delta)}")
    if ((y < 0) | (y > 1)).any():
        raise ValueError("preferences must lie in [0, 1]")
    x, sd = length_feature(delta)
    design = np.stack([np.ones_like(x), x], axis=1) if sd > 0 else np.ones((y.size, 1))
    w = np.zeros(design.shape[1])
    ridge = 1e-12
    last = None
    for _ in range(200):
        p = _sigmoid(design @ w)
        gradient = design.T @ (y - p) - ridge * w
        hessian = (design * (p * (1 - p))[:, None]).T @ design + ridge * np.eye(w.size)
        w = w + np.linalg.solve(hessian, gradient)
        now = float(_sigmoid(w[0]))
        if last is not None and abs(now - last) < 1e-12 and np.abs(gradient).max() < 1e-9 * y.size + 1e-12:
            break
        last = now
    separable = bool(np.abs(w).max() > 30)  # the likelihood kept rising: coefficients ran off
    return LengthControlFit(float(w[0]), float(w[1]) if w.size > 1 else 0.0, sd, separable)


def lc_win_rate(
    preferences: Sequence[float],
    policy_lengths: Sequence[float],
    baseline_lengths: Sequence[float],
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """The length-controlled win rate (in [0, 1]) with a percentile bootstrap interval over prompts
    (each resample refits the model; the length sd is re-estimated with it)."""
    y = np.asarray(preferences, dtype=np.float64)
    delta = np.asarray(policy_lengths, dtype=np.float64) - np.asarray(baseline_lengths, dtype=np.float64)
    if delta.shape != y.shape:
        raise ValueError(f"lc_win_rate: {y.size} preferences but {delta.size} length pairs")
    mean = fit_length_control(y, delta).win_rate
    rng = np.random.default_rng(seed)
    draws = np.empty(resamples)
    for i in range(resamples):
        pick = rng.integers(0, y.size, size=y.size)
        draws[i] = fit_length_control(y[pick], delta[pick]).win_rate
    low, high = percentile_interval(draws, level)
    return Estimate(mean, float(low), float(high), int(y.size), level)
