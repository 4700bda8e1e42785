"""Reward-model ensembles as judges (mean, WCO, UWO with standardised members), and a reward model
judging policy against baseline in ``alphapo eval`` (win rate and length-controlled win rate)."""

import json

import numpy as np
import pytest

from alphapo.cli import main
from alphapo.errors import StageError
from alphapo.judge.score import combine
from alphapo.train import train
from tests.train.test_reward_model import _rows, _write, rm_config


def test_each_rule_against_hand_values():
    members = [[1.0, 3.0, 5.0], [10.0, 30.0, 20.0]]
    centres, scales = [3.0, 20.0], [2.0, 10.0]
    z = [[-1.0, 0.0, 1.0], [-1.0, 1.0, 0.0]]  # (raw - centre) / scale
    assert combine(members, "mean", centres, scales) == pytest.approx([-1.0, 0.5, 0.5])
    assert combine(members, "worst", centres, scales) == pytest.approx([-1.0, 0.0, 0.0])
    # UWO: mean - lambda * variance over members (population variance of two values: (a - b)^2 / 4)
    var = [(a - b) ** 2 / 4 for a, b in zip(*z, strict=True)]
    uwo = combine(members, "uncertainty", centres, scales, uncertainty_weight=0.5)
    assert uwo == pytest.approx([m - 0.5 * v for m, v in zip([-1.0, 0.5, 0.5], var, strict=True)])
    uwo_std = combine(members, "uncertainty", centres, scales, uncertainty_weight=2.0, uncertainty_penalty="std")
    assert uwo_std == pytest.approx([m - 2.0 * np.sqrt(v) for m, v in zip([-1.0, 0.5, 0.5], var, strict=True)])
    with pytest.raises(StageError, match="unknown combination rule"):
        combine(members, "median", centres, scales)


@pytest.fixture(scope="module")
def two_members(assets, tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    dirs = []
    for seed in (0, 1):
        cfg = rm_config(assets, root / f"rm{seed}", train={"batch_size": 4, "max_steps": 6, "seed": seed})
        cfg = cfg.model_copy(
            update={"data": cfg.data.model_copy(update={"paths": [_write(root / "p.jsonl", _rows(40))]})}
        )
        result = train(cfg)
        from alphapo.train.reward_model import evaluate_reward_model

        evaluate_reward_model(result.model_dir, cfg, result.output_dir)  # writes reward_stats.json
        dirs.append(str(result.model_dir))
    samples = _write(
        root / "samples.jsonl",
        [
            {"prompt": f"Name a fruit like plum #{i}:", "completions": [" pear ok", " no fig bad", " kiwi"]}
            for i in range(3)
        ],
    )
    return root, dirs, samples


def test_ensemble_judge_standardises_with_each_members_stats(two_members):
    root, dirs, samples = two_members
    single = []
    for d in dirs:
        out = root / f"single-{len(single)}.jsonl"
        assert (
            main(["judge", "--samples", samples, "--out", str(out), "--reward-model", d, "--prompt-format", "plain"])
            == 0
        )
        single.append([json.loads(line)["scores"] for line in out.read_text().splitlines()])
    stats = [json.loads((root / f"rm{s}" / "model" / "reward_stats.json").read_text()) for s in (0, 1)]
    for rule in ("mean", "worst", "uncertainty"):
        out = root / f"{rule}.jsonl"
        args = ["judge", "--samples", samples, "--out", str(out), "--combine", rule, "--prompt-format", "plain"]
        assert main([*args, "--reward-model", dirs[0], "--reward-model", dirs[1]]) == 0
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        for number, row in enumerate(rows):
            assert row["member_scores"] == [single[0][number], single[1][number]]
            z = [
                [(s - st["mean"]) / st["std"] for s in member[number]] for member, st in zip(single, stats, strict=True)
            ]
            expected = {
                "mean": [(a + b) / 2 for a, b in zip(*z, strict=True)],
                "worst": [min(a, b) for a, b in zip(*z, strict=True)],
                "uncertainty": [(a + b) / 2 - (a - b) ** 2 / 4 for a, b in zip(*z, strict=True)],
            }[rule]
            assert row["scores"] == pytest.approx(expected, abs=1e-6)


def test_member_without_stats_needs_file_standardisation(two_members, tmp_path):
    import shutil

    _, dirs, samples = two_members
    bare = tmp_path / "bare"
    shutil.copytree(dirs[1], bare)
    (bare / "reward_stats.json").unlink()
    args = ["judge", "--samples", samples, "--out", str(tmp_path / "o.jsonl"), "--prompt-format", "plain"]
    members = ["--reward-model", dirs[0], "--reward-model", str(bare)]
    assert main([*args, *members]) == 2  # a clear error naming the member and the way out
    assert main([*args, *members, "--standardize", "file"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    flat = np.array([r["scores"] for r in rows]).ravel()
    assert abs(flat.mean()) < 1e-6  # each member centred on this file: their mean is centred too


def test_eval_with_a_reward_model_judge_reports_lc_win_rate(two_members, assets, tmp_path, capsys):
    _, dirs, _ = two_members
    prompts = _write(tmp_path / "hh.jsonl", [{"prompt": f"Name a fruit like fig #{i}:"} for i in range(6)])
    args = ["eval", "--model", assets["model"], "--baseline", assets["model"], "--prompts", prompts]
    args += [
        "--out",
        str(tmp_path / "eval"),
        "--judge-model",
        dirs[0],
        "--max-new-tokens",
        "6",
        "--prompt-format",
        "plain",
    ]
    assert main(args) == 0
    assert "length-controlled" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())["splits"]["hh"]
    judge = metrics["judge"]
    assert judge["win_rate"]["mean"] == 0.5 and judge["lc_win_rate"]["mean"] == pytest.approx(0.5)  # itself: ties
    assert "accuracy" not in metrics  # these prompts have no gold verifier
