"""`alphapo run` end to end on a micro recipe (a few steps per stage), and its resume."""

import json
from pathlib import Path

import pytest

from alphapo.config import validate
from alphapo.pipeline.recipe import RecipeConfig
from alphapo.pipeline.run import Pipeline

TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "max_position_embeddings": 128,
}


def micro_recipe(out: Path) -> RecipeConfig:
    return validate(
        RecipeConfig,
        {
            "out": str(out),
            "seed": 0,
            "task": {"sft_examples": 96, "train_prompts": 24, "heldout": 12, "perturbed": 12},
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
            "methods": {
                "alphapo": {"loss": {"name": "alphapo", "nll_weight": 1.0}},
                "dpo": {"loss": {"name": "sigmoid", "beta": 0.1}},
            },
            "eval": {"kl_samples": 1, "max_new_tokens": 24, "batch_size": 32},
        },
    )


@pytest.mark.slow
def test_run_produces_every_file_and_the_report(tmp_path):
    out = tmp_path / "run"
    summary = Pipeline(micro_recipe(out), quiet=True).run()
    for name in [
        "data/sft.jsonl",
        "data/train.jsonl",
        "data/heldout.jsonl",
        "data/perturbed.jsonl",
        "tokenizer/tokenizer.json",
        "sft/model/model.safetensors",
        "samples.jsonl",
        "judged.jsonl",
        "pairs.jsonl",
        "pairs.jsonl.stats.json",
        "alphapo/model/model.safetensors",
        "dpo/model/model.safetensors",
        "alphapo/metrics.jsonl",
        "eval/sft/metrics.json",
        "eval/alphapo/metrics.json",
        "eval/dpo/metrics.json",
        "eval/alphapo/generations-heldout.jsonl",
        "summary.json",
        "report.md",
        "plots/training_curves.png",
        "plots/results.png",
    ]:
        assert (out / name).is_file(), f"{name} missing"
    stored = json.loads((out / "summary.json").read_text())
    assert set(stored["methods"]) == {"sft", "alphapo", "dpo"}
    for method in stored["methods"].values():
        for key in ("accuracy", "gold_reward", "win_rate_vs_sft", "kl_to_sft"):
            assert isinstance(method[key], float)
    sft = stored["methods"]["sft"]
    assert sft["win_rate_vs_sft"] == 0.5 and sft["kl_to_sft"] == 0.0
    assert set(sft["by_split"]) == {"heldout", "perturbed"}
    report = (out / "report.md").read_text()
    assert "## Results: heldout prompts" in report and "training_curves.png" in report
    assert summary["methods"]["alphapo"]["accuracy"] == stored["methods"]["alphapo"]["accuracy"]


@pytest.mark.slow
def test_run_resumes_after_an_interrupted_stage(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    original = Pipeline.train_method

    def interrupted(self, name):
        if name == "alphapo":
            raise KeyboardInterrupt  # as if Ctrl-C hit during the first training stage
        return original(self, name)

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
    # a changed setting reruns only what depends on it
    recipe = micro_recipe(out).model_copy(update={"pair": micro_recipe(out).pair.model_copy(update={"min_gap": 0.01})})
    Pipeline(recipe).run()
    log = capsys.readouterr().err
    assert "[sample] up to date, skipped" in log and "[pair] running" in log
