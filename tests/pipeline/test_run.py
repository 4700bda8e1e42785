"""`alphapo run` end to end on a micro recipe (a few steps per stage), and its resume."""

import json
import shutil
from pathlib import Path

import pytest

from alphapo.config import validate
from alphapo.pipeline.recipe import IFEvalSpec, RecipeConfig
from alphapo.pipeline.run import Pipeline

TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "max_position_embeddings": 128,
}


def micro_recipe(out: Path, seeds: int = 1, methods: dict | None = None) -> RecipeConfig:
    return validate(
        RecipeConfig,
        {
            "out": str(out),
            "seed": 0,
            "seeds": seeds,
            "task": {"sft_examples": 96, "train_prompts": 24, "heldout": 12, "noop": 12, "unseen_templates": 12},
            "sft": {
                "checkpoint": "train",
                "vocab_size": 400,
                "recipe": {
                    "model": {"tiny": TINY},
                    "data": {"max_length": 128, "max_prompt_length": 96},
                    "optim": {"lr": 3e-3},
                    "train": {"batch_size": 16, "max_steps": 6},
                    "logging": {"progress": "none"},
                },
            },
            # an almost untrained model: long samples, so the length term separates their scores
            "sample": {"k": 4, "max_new_tokens": 40, "batch_size": 32},
            "pair": {"min_gap": 0.0},
            "method_defaults": {
                "data": {"max_length": 128, "max_prompt_length": 96},
                "optim": {"lr": 1e-3},
                "train": {"batch_size": 4, "max_steps": 3},
                "logging": {"every": 1, "progress": "none"},
                "checkpoint": {"every": 1},
            },
            "methods": methods
            or {
                "alphapo": {"loss": {"name": "alphapo", "nll_weight": 1.0}},
                "dpo": {"loss": {"name": "sigmoid", "beta": 0.1}},
            },
            "eval": {"kl_samples": 1, "max_new_tokens": 24, "batch_size": 32},
        },
    )


SHAPE_METHODS = {
    "alphapo": {"loss": {"name": "alphapo", "alpha_scale": 1.0}},
    "simpo": {"loss": {"name": "simpo"}},
    "dpo": {"loss": {"name": "sigmoid", "beta": 0.1}},
}


def _generations(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_run_with_seeds_summarises_every_run_by_value(tmp_path):
    out = tmp_path / "run"
    recipe = micro_recipe(out, seeds=2, methods=SHAPE_METHODS)
    recipe.method_defaults["diagnostics"] = {"displacement": "dataset"}
    recipe.eval.ifeval = IFEvalSpec(limit=4, max_new_tokens=6, batch_size=4)
    summary = Pipeline(recipe, quiet=True).run()
    stored = json.loads((out / "summary.json").read_text())
    assert stored["methods"]["alphapo"]["accuracy"] == summary["methods"]["alphapo"]["accuracy"]
    assert stored["seeds"] == [0, 1] and set(stored["methods"]) == {"sft", "alphapo", "simpo", "dpo"}
    sft = stored["methods"]["sft"]
    assert sft["win_rate_vs_sft"] == 0.5 and sft["kl_to_sft"] == 0.0
    assert set(sft["by_split"]) == {"heldout", "noop", "unseen_templates"}
    for name in ("alphapo", "simpo", "dpo"):
        m = stored["methods"][name]
        for split in ("heldout", "noop", "unseen_templates"):
            runs = [_generations(out / "eval" / name / f"seed{s}" / f"generations-{split}.jsonl") for s in (0, 1)]
            per_seed = [sum(r["correct"] for r in run) / 12 for run in runs]
            assert m["by_split"][split]["per_seed"]["accuracy"] == pytest.approx(per_seed)
            assert m["by_split"][split]["accuracy"] == pytest.approx(sum(per_seed) / 2)
            kl = [r["kl"] for run in runs for r in run]
            assert m["by_split"][split]["kl_to_sft"] == pytest.approx(sum(kl) / len(kl))
        for key in ("accuracy", "gold_reward", "win_rate_vs_sft", "kl_to_sft"):  # fields consumers read
            assert isinstance(m[key], float) and m[key] == m["by_split"]["heldout"][key]
        moved = [json.loads((out / name / f"seed{s}" / "displacement.json").read_text()) for s in (0, 1)]
        assert m["training"]["chosen"] == pytest.approx((moved[0]["chosen"] + moved[1]["chosen"]) / 2)
    # the SFT model's greedy generations were reused, not generated again, for every method
    sft_heldout = _generations(out / "eval" / "sft" / "generations-heldout.jsonl")
    assert all("kl" in r for r in sft_heldout)
    # alpha resolved from alpha_scale, recorded per run; SimPO is alpha 0; DPO has no shape
    scale = json.loads((out / "alphapo" / "seed0" / "reward_scale.json").read_text())
    assert stored["methods"]["alphapo"]["alpha"] == scale["alpha"]
    assert scale["alpha"] == pytest.approx(1 / abs(scale["chosen"]["mean_logp"]))
    assert stored["methods"]["simpo"]["alpha"] == 0.0 and stored["methods"]["dpo"]["alpha"] is None
    assert stored["reward_scale"] == scale
    # seeds train differently (data order), from the same pairs
    assert weights_differ(out / "alphapo" / "seed0" / "model", out / "alphapo" / "seed1" / "model")
    # comparisons against SimPO, by value
    versus = stored["comparisons"]["methods"]["alphapo"]["heldout"]
    mine = stored["methods"]["alphapo"]["by_split"]["heldout"]["accuracy"]
    theirs = stored["methods"]["simpo"]["by_split"]["heldout"]["accuracy"]
    assert versus["accuracy_diff"] == pytest.approx(mine - theirs)
    low, high = versus["accuracy_diff_ci_seeds_and_prompts"]
    assert low <= versus["accuracy_diff"] <= high
    report = (out / "report.md").read_text()
    assert "## What the reward shape did" in report and "reward_shape.png" in report
    assert f"alpha {scale['alpha']:+.3g}" in report and "Against simpo" in report
    assert f"{versus['accuracy_diff']:+.3f} [{low:+.3f}, {high:+.3f}]" in report
    assert (out / "plots" / "reward_shape.png").is_file()
    # each method's settings are stated; KL and length carry intervals like every other number
    assert "## Methods" in report and "| dpo | sigmoid | - |" in report
    assert stored["methods"]["simpo"]["settings"]["beta"] == 2.5 and "gamma" in stored["methods"]["simpo"]["settings"]
    heldout = stored["methods"]["alphapo"]["by_split"]["heldout"]
    low_len, high_len = heldout["length_ci"]
    assert low_len <= heldout["mean_length"] <= high_len
    assert f"{heldout['mean_length']:.1f} [{low_len:.1f}, {high_len:.1f}]" in report
    assert f"{heldout['kl_to_sft']:.3f} [{heldout['kl_ci'][0]:.3f}, {heldout['kl_ci'][1]:.3f}]" in report
    # IFEval (eval.ifeval) for every model: means over seeds, paired against SFT, in the report
    ifeval = stored["ifeval"]
    assert set(ifeval) == {"sft", "alphapo", "simpo", "dpo"} and ifeval["sft"]["prompts"] == 4
    runs = [_generations(out / "eval" / "dpo" / f"seed{s}" / "ifeval" / "ifeval-model.jsonl") for s in (0, 1)]
    strict = sum(r["prompt_strict"] for run in runs for r in run) / 8
    assert ifeval["dpo"]["prompt_strict"]["mean"] == pytest.approx(strict)
    base = sum(r["prompt_strict"] for r in _generations(out / "eval" / "sft" / "ifeval" / "ifeval-model.jsonl")) / 4
    assert ifeval["dpo"]["prompt_strict_vs_sft"]["mean"] == pytest.approx(strict - base)
    assert "## IFEval" in report and "prompt strict vs SFT" in report


def weights_differ(a, b):
    from safetensors.torch import load_file

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return any(not (wa[k] == wb[k]).all() for k in wa)


@pytest.mark.slow
def test_run_resumes_after_an_interrupted_stage(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    original = Pipeline.train_method

    def interrupted(self, name, seed, round=1):
        if name == "alphapo":
            raise KeyboardInterrupt  # as if Ctrl-C hit during the first training stage
        return original(self, name, seed, round)

    monkeypatch.setattr(Pipeline, "train_method", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Pipeline(micro_recipe(out)).run()
    assert (out / "pairs.jsonl").is_file() and not (out / "alphapo" / "model").exists()
    samples_mtime = (out / "samples.jsonl").stat().st_mtime_ns
    monkeypatch.setattr(Pipeline, "train_method", original)
    capsys.readouterr()
    Pipeline(micro_recipe(out)).run()
    log = capsys.readouterr().err
    for stage in ("data", "sft", "sample", "judge", "pair"):
        assert f"[{stage}] up to date, skipped" in log
    assert "[train-alphapo] running" in log and (out / "alphapo" / "model").is_dir()
    assert (out / "samples.jsonl").stat().st_mtime_ns == samples_mtime
    # a changed setting reruns only what depends on it (this gap drops about a third of the pairs)
    recipe = micro_recipe(out).model_copy(update={"pair": micro_recipe(out).pair.model_copy(update={"min_gap": 0.04})})
    Pipeline(recipe).run()
    log = capsys.readouterr().err
    assert "[sample] up to date, skipped" in log and "[pair] running" in log
    # the training stages reran on the new pairs from scratch, the old runs kept aside, not resumed
    assert "[train-alphapo] running" in log and "starting over" in log
    assert (out / "alphapo" / "previous-1" / "checkpoints").is_dir()
    # a changed loss setting: only that method's stages rerun, from scratch: equal to a fresh run
    methods = {**recipe.methods, "dpo": {"loss": {"name": "sigmoid", "beta": 0.2}}}
    changed = recipe.model_copy(update={"methods": methods})
    Pipeline(changed).run()
    log = capsys.readouterr().err
    assert "[train-alphapo] up to date, skipped" in log and "[train-dpo] running" in log
    fresh = changed.model_copy(update={"out": str(tmp_path / "fresh")})
    pipeline = Pipeline(fresh, quiet=True)
    for name in ("data", "sft", "samples.jsonl", "judged.jsonl", "pairs.jsonl", "pairs.jsonl.stats.json", "tokenizer"):
        source = out / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / "fresh" / name)
    config = pipeline.method_config("dpo")
    config["model"]["path"] = str(out / "sft" / "model")
    config["data"]["paths"] = [str(out / "pairs.jsonl")]
    from alphapo.train import TrainConfig, train

    reference = train(validate(TrainConfig, config))
    from safetensors.torch import load_file

    a, b = load_file(out / "dpo" / "model" / "model.safetensors"), load_file(reference.model_dir / "model.safetensors")
    assert all((a[k] == b[k]).all() for k in a)


ROUND_METHODS = {
    "alphapo": {"loss": {"name": "alphapo"}},
    "dpo": {"loss": {"name": "sigmoid", "beta": 0.1}},
}


def _reference_key(config_dir: Path, model_dir: Path) -> str:
    """The cached reference table's key for the run in ``config_dir``, recomputed for ``model_dir``."""
    from alphapo.config import load_config
    from alphapo.data import load_dataset_for_training
    from alphapo.train import TrainConfig
    from alphapo.train.reference import table_key
    from alphapo.train.setup import load_policy, load_tokenizer, model_fingerprint

    cfg = load_config(TrainConfig, str(config_dir / "config.yaml"), [])
    tokenizer = load_tokenizer(cfg)
    dataset = load_dataset_for_training(cfg.data, tokenizer, None, quiet=True)
    model = load_policy(cfg, tokenizer, path=str(model_dir))
    return table_key(model_fingerprint(model), dataset.key, {"logps": cfg.train.logps, "dtype": cfg.model.dtype})


def _state(run_dir: Path) -> dict:
    from alphapo.train.checkpoint import complete_checkpoints

    return json.loads((complete_checkpoints(run_dir)[-1] / "trainer_state.json").read_text())


@pytest.mark.slow
def test_two_rounds_train_on_policy_and_report_every_round(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    recipe = micro_recipe(out, methods=ROUND_METHODS).model_copy(update={"rounds": 2, "round_reference": "start"})
    original = Pipeline.train_method

    def killed_in_round_2(self, name, seed, round=1):
        if round == 2 and name == "dpo":
            raise KeyboardInterrupt  # a kill during round 2
        return original(self, name, seed, round)

    monkeypatch.setattr(Pipeline, "train_method", killed_in_round_2)
    with pytest.raises(KeyboardInterrupt):
        Pipeline(recipe).run()
    monkeypatch.setattr(Pipeline, "train_method", original)
    capsys.readouterr()
    summary = Pipeline(recipe).run()
    log = capsys.readouterr().err
    # the resumed run keeps round 1 and round 2's finished stages, and continues in round 2
    for stage in ("sample", "train-alphapo", "train-dpo", "eval-dpo", "sample-r2-alphapo", "train-alphapo-r2"):
        assert f"[{stage}] up to date, skipped" in log, stage
    assert "[train-dpo-r2] running" in log
    for name in ("alphapo", "dpo"):
        round2 = out / "round2" / name
        data = out / "round2" / "data" / name
        for file in (data / "samples.jsonl", data / "judged.jsonl", data / "pairs.jsonl", round2 / "model"):
            assert file.exists(), file
        assert (out / "eval" / "round2" / name / "vs-previous" / "metrics.json").is_file()
        # round 2 trained from round 1's policy on pairs sampled from it
        config = (round2 / "config.yaml").read_text()
        assert str(out / name / "model") in config and str(data / "pairs.jsonl") in config
    stored = json.loads((out / "summary.json").read_text())
    rounds = stored["rounds"]["alphapo"]
    assert [e["round"] for e in rounds] == [1, 2]
    assert stored["methods"]["alphapo"]["accuracy"] == rounds[1]["by_split"]["heldout"]["accuracy"]  # the last round
    kl = json.loads((out / "eval" / "round2" / "alphapo" / "vs-previous" / "metrics.json").read_text())
    assert rounds[1]["kl_to_previous"] == kl["splits"]["heldout"]["kl_to_baseline"]["mean"]
    first = rounds[0]["by_split"]["heldout"]["gold_reward"]
    assert rounds[1]["vs_round1"]["gold_reward_diff"] == pytest.approx(
        rounds[1]["by_split"]["heldout"]["gold_reward"] - first
    )
    pairs = json.loads((out / "round2" / "data" / "alphapo" / "pairs.jsonl.stats.json").read_text())["pairs"]
    assert rounds[1]["pairs"] == pairs
    report = (out / "report.md").read_text()
    assert "## Rounds" in report and "### alphapo" in report and (out / "plots" / "rounds.png").is_file()
    assert summary["rounds"] == stored["rounds"]
    # the reference of round 2's DPO is the one configured: the SFT model ("start") ...
    round2 = out / "round2" / "dpo"
    assert _state(round2)["reference_key"] == _reference_key(round2, out / "sft" / "model")
    # ... or round 1's policy ("previous"): only round 2's DPO stages rerun
    previous = recipe.model_copy(update={"round_reference": "previous"})
    Pipeline(previous).run()
    log = capsys.readouterr().err
    assert "[train-dpo-r2] running" in log and "[train-alphapo-r2] up to date, skipped" in log
    assert _state(round2)["initial_key"] == _reference_key(round2, out / "dpo" / "model")
    assert "reference_key" not in _state(round2)


def test_fresh_rounds_from_a_prompt_file_never_share_a_prompt(tmp_path):
    """round_prompts: fresh with your own prompts: disjoint shares of the file, round 1 included (round
    1 sampling the whole file would make every later round's prompts repeats)."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in range(7)))
    recipe = validate(
        RecipeConfig,
        {
            "out": str(tmp_path / "out"),
            "task": None,
            "prompts": {"train": str(prompts)},
            "sft": {"checkpoint": str(tmp_path / "model")},
            "rounds": 3,
            "round_prompts": "fresh",
        },
    )
    pipeline = Pipeline(recipe, quiet=True)
    shares = [[r["prompt"] for r in _generations(pipeline.round_prompts(r))] for r in (1, 2, 3)]
    assert shares == [
        ["question 0", "question 3", "question 6"],
        ["question 1", "question 4"],
        ["question 2", "question 5"],
    ]
    reuse = Pipeline(recipe.model_copy(update={"round_prompts": "reuse"}), quiet=True)
    assert reuse.round_prompts(1) == reuse.round_prompts(2) == prompts
