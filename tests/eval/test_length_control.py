"""Length-controlled win rate (AlpacaEval 2's GLM on the length difference): the constructed extremes,
and the ``alpaca_eval`` package's own numbers on the benchmark's fixed examples."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from alphapo.eval.length_control import fit_length_control, lc_win_rate

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "lc_winrate_reference.py"

# alpaca_eval 0.6.6's get_length_controlled_winrate(glm_name="length_controlled_minimal") on the
# examples of benchmarks/lc_winrate_reference.py (run there against the installed package)
PACKAGE_LC = {
    "length_is_everything": 0.61780910,
    "length_is_nothing": 0.72642933,
    "strength_and_length": 0.64286143,
    "large_sample": 0.55846523,
    "small_sample": 0.38454115,
}


def _examples():
    spec = importlib.util.spec_from_file_location("lc_winrate_reference", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.examples()


def test_length_that_explains_everything_gives_about_half():
    rng = np.random.default_rng(1)
    n = 3000
    base = rng.integers(200, 1200, size=n)
    policy = np.maximum(base + rng.normal(150, 250, size=n).round(), 1)  # mostly longer
    x = np.tanh((policy - base) / np.std(policy - base, ddof=1))
    prefs = (rng.random(n) < 1 / (1 + np.exp(-4 * x))).astype(float)  # no strength beyond length
    assert prefs.mean() > 0.65
    estimate = lc_win_rate(prefs, policy, base, resamples=200)
    assert abs(estimate.mean - 0.5) < 0.05 and estimate.high - estimate.low < 0.1  # raw: 0.69


def test_length_that_explains_nothing_gives_the_raw_win_rate():
    prefs = [1.0, 1.0, 0.5, 0.0, 1.0, 0.0, 1.0, 0.5, 1.0, 1.0]
    same = [120] * 10
    estimate = lc_win_rate(prefs, same, same, resamples=50)
    assert estimate.mean == pytest.approx(np.mean(prefs), abs=1e-12)
    # lengths that vary but carry no information about the verdicts: LC close to the raw rate
    rng = np.random.default_rng(2)
    n = 4000
    base = rng.integers(200, 1200, size=n)
    policy = np.maximum(base + rng.normal(0, 250, size=n).round(), 1)
    y = (rng.random(n) < 0.7).astype(float)
    fit = fit_length_control(y, policy - base)
    assert abs(fit.phi) < 0.15 and fit.win_rate == pytest.approx(y.mean(), abs=0.01)


def test_the_package_numbers_on_fixed_examples():
    examples = _examples()
    large = examples["large_sample"]
    ours = fit_length_control(large[0], np.asarray(large[1]) - np.asarray(large[2])).win_rate
    # a weak penalty chosen by its cross-validation: the same model, to its solver's tolerance (1e-4)
    assert ours == pytest.approx(PACKAGE_LC["large_sample"], abs=1e-4)
    for name, reference in PACKAGE_LC.items():  # elsewhere its L1 penalty shrinks toward 1/2 a little
        prefs, a, b = examples[name]
        ours = fit_length_control(prefs, np.asarray(a) - np.asarray(b)).win_rate
        assert ours == pytest.approx(reference, abs=0.005), name


def test_separable_verdicts_are_flagged():
    delta = [-30, -10, 5, 40, 80, -60]
    fit = fit_length_control([1.0 if d > 0 else 0.0 for d in delta], delta)
    assert fit.separable
    assert not fit_length_control([1.0, 0.0, 1.0, 1.0, 0.0, 0.0], delta).separable


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="one preference per length"):
        fit_length_control([1.0, 0.0], [3.0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fit_length_control([2.0, 0.0], [3.0, 1.0])
