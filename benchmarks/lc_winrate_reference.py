"""alphapo's length-controlled win rate against the ``alpaca_eval`` package's, on fixed examples.

    pip install alpaca_eval==0.6.6        # its own dependencies (scikit-learn, patsy, openai, ...)
    python benchmarks/lc_winrate_reference.py

AlpacaEval's GLM (``alpaca_eval.metrics.glm_winrate.get_length_controlled_winrate``) fetches
``df_gamed.csv`` from the Hugging Face hub for its per-instruction difficulty, which exists only for
AlpacaEval's 805 instructions. Its ``length_controlled_minimal`` model does not use that column; this
script serves the download a local file (each example's indices with difficulty 0) and runs the
package's own fitting code unchanged. It prints, per example, the raw win rate, the package's LC win
rate and alphapo's (``alphapo.eval.length_control``), and their difference; the numbers are what
``tests/eval/test_length_control.py`` holds.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np


def examples() -> dict[str, tuple[list[float], list[int], list[int]]]:
    """name -> (preferences in [0, 1] with 1 the policy preferred, policy lengths, baseline lengths)."""
    rng = np.random.default_rng(0)
    out = {}
    n = 300
    base = rng.integers(200, 1200, size=n)
    delta = rng.normal(0, 250, size=n).round().astype(int)
    policy = np.maximum(base + delta, 1)
    # length explains (almost) everything: policy answers mostly longer, the longer answer wins with
    # probability sigma(4 x), no strength of its own
    longer = np.maximum(base + rng.normal(150, 250, size=n).round().astype(int), 1)
    xl = np.tanh((longer - base) / np.std(longer - base, ddof=1))
    out["length_is_everything"] = ((rng.random(n) < 1 / (1 + np.exp(-4 * xl))).astype(float), longer, base)
    # perfectly separable: the longer answer always wins (the model's likelihood has no maximum)
    out["separable"] = ((policy > base).astype(float), policy, base)
    # length explains nothing: lengths drawn apart from the verdicts, the policy wins 70% (ties half).
    # (Identical lengths make the package's feature 0/0; alphapo then drops the length term.)
    wins = rng.random(n)
    prefs = np.where(wins < 0.6, 1.0, np.where(wins < 0.8, 0.5, 0.0))
    out["length_is_nothing"] = (prefs, np.maximum(base + rng.normal(0, 250, size=n).round().astype(int), 1), base)
    # both: strength 0.4 and a length effect of 1.2 on tanh(delta / sd), ties drawn at 10%
    x = np.tanh((policy - base) / np.std(policy - base, ddof=1))
    p = 1 / (1 + np.exp(-(0.4 + 1.2 * x)))
    draw = rng.random(n)
    prefs = np.where(draw < 0.1, 0.5, (rng.random(n) < p).astype(float))
    out["strength_and_length"] = (prefs, policy, base)
    # a large one (the package's cross-validation then picks its weakest penalty)
    big = 3000
    bb = rng.integers(200, 1200, size=big)
    ab = np.maximum(bb + rng.normal(80, 250, size=big).round().astype(int), 1)
    xb = np.tanh((ab - bb) / np.std(ab - bb, ddof=1))
    pb = 1 / (1 + np.exp(-(0.3 + 1.5 * xb)))
    yb = np.where(rng.random(big) < 0.1, 0.5, (rng.random(big) < pb).astype(float))
    out["large_sample"] = (yb, ab, bb)
    # a small, noisy one
    m = 40
    b = rng.integers(100, 600, size=m)
    a = np.maximum(b + rng.normal(50, 120, size=m).round().astype(int), 1)
    xm = np.tanh((a - b) / np.std(a - b, ddof=1))
    pm = 1 / (1 + np.exp(-(-0.3 + 0.8 * xm)))
    out["small_sample"] = ((rng.random(m) < pm).astype(float), a, b)
    return {k: ([float(v) for v in y], [int(v) for v in pl], [int(v) for v in bl]) for k, (y, pl, bl) in out.items()}


def package_lc(prefs, policy_lengths, baseline_lengths) -> dict:
    from unittest import mock

    import pandas as pd
    from alpaca_eval.metrics import glm_winrate

    annotations = [
        {
            "index": i,
            "instruction": f"prompt {i}",
            "output_1": "x" * b,
            "output_2": "y" * a,
            "generator_1": "baseline",
            "generator_2": "policy",
            "annotator": "judge",
            "preference": 1.0 + y,  # AlpacaEval: 1 = output_1 (baseline) preferred, 2 = output_2 (policy)
        }
        for i, (y, a, b) in enumerate(zip(prefs, policy_lengths, baseline_lengths, strict=True))
    ]
    with tempfile.TemporaryDirectory() as tmp:
        gamed = Path(tmp) / "df_gamed.csv"
        pd.DataFrame(
            {
                "index": range(len(prefs)),
                "instruction_difficulty": 0.0,
                "preference": 0.5,
                "std_delta_len": 0.0,
                "not_gamed_baseline": True,
                "model": "none",
            }
        ).to_csv(gamed, index=False)
        with mock.patch.object(glm_winrate, "hf_hub_download", return_value=str(gamed)):
            metrics = glm_winrate.get_length_controlled_winrate(
                annotations, glm_name="length_controlled_minimal", save_weights_dir=None
            )
    return {"win_rate": metrics["win_rate"] / 100, "lc_win_rate": metrics["length_controlled_winrate"] / 100}


def main() -> None:
    from alphapo.eval.length_control import fit_length_control

    rows = {}
    for name, (prefs, a, b) in examples().items():
        ours = fit_length_control(prefs, np.asarray(a) - np.asarray(b)).win_rate
        theirs = package_lc(prefs, a, b)
        rows[name] = {
            "raw_win_rate": float(np.mean(prefs)),
            "package_win_rate": theirs["win_rate"],
            "package_lc": theirs["lc_win_rate"],
            "alphapo_lc": ours,
            "difference": ours - theirs["lc_win_rate"],
        }
    print("| example | raw win rate | alpaca_eval LC | alphapo LC | difference |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['raw_win_rate']:.6f} | {r['package_lc']:.8f} | {r['alphapo_lc']:.8f} | "
            f"{r['difference']:.2e} |"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
