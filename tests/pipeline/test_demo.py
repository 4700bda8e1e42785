"""The demo: its recipe, the shipped SFT checkpoint, and the checkpoint's rebuild."""

import hashlib
import json

import pytest
import torch

from alphapo.config import read_yaml
from alphapo.errors import ConfigError
from alphapo.pipeline.demo import demo_config, demo_recipe_path
from alphapo.pipeline.run import Pipeline, builtin_sft_dir


def test_demo_config_resolves_compare():
    cfg = demo_config("out", None, 3, False, [])
    assert list(cfg.methods) == ["alphapo_neg", "simpo", "alphapo_pos"] and cfg.seeds == 3
    assert cfg.seed == 3 and cfg.sft.checkpoint == "builtin"
    # the algorithms as published: no NLL term; AlphaPO's alpha set on the task's scale, either side of SimPO
    assert not any("nll_weight" in m["loss"] for m in cfg.methods.values())
    assert cfg.methods["alphapo_neg"]["loss"]["alpha_scale"] < 0 < cfg.methods["alphapo_pos"]["loss"]["alpha_scale"]
    # a loss the recipe does not list runs with the shared method defaults; NAME_nll adds the NLL term
    assert demo_config("out", ["ipo"], 0, False, []).methods == {"ipo": {"loss": {"name": "ipo"}}}
    assert demo_config("out", ["dpo"], 0, False, []).methods == {"dpo": {"loss": {"name": "dpo"}}}
    nll = demo_config("out", ["simpo", "simpo_nll"], 0, False, []).methods
    assert nll["simpo_nll"]["loss"] == {**nll["simpo"]["loss"], "nll_weight": 1.0}
    assert "nll_weight" not in nll["simpo"]["loss"]
    assert demo_config("out", ["alphapo_pos"], 0, True, []).sft.checkpoint == "train"
    assert demo_config("out", ["simpo"], 0, False, ["sample.k=4"]).sample.k == 4
    quick = demo_config("out", None, 0, False, ["task.heldout=7"], quick=True)
    assert quick.seeds == 1 and quick.task.noop == 100 and quick.task.heldout == 7  # later overrides win
    with pytest.raises(ConfigError, match="'alphpo' is neither a method of the demo recipe"):
        demo_config("out", ["alphpo"], 0, False, [])


def test_shipped_checkpoint_was_built_by_the_embedded_recipe():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checkpoint = builtin_sft_dir()
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    recipe = read_yaml(demo_recipe_path())
    assert manifest["sft"] == {**recipe["sft"], "checkpoint": "train"}, "the demo recipe's SFT stage changed: rebuild"
    assert manifest["task"] == {"sft_examples": recipe["task"]["sft_examples"]} and manifest["seed"] == recipe["seed"]
    assert hashlib.sha256((checkpoint / "model.safetensors").read_bytes()).hexdigest() == manifest["sha256"]
    AutoModelForCausalLM.from_pretrained(checkpoint)
    assert AutoTokenizer.from_pretrained(checkpoint).eos_token == "</s>"


@pytest.mark.slow
def test_sft_recipe_rebuilds_bit_for_bit(tmp_path):
    """The embedded SFT recipe, shortened, twice: identical weights (same machine and threads)."""
    from safetensors.torch import load_file

    weights = []
    for run in ("a", "b"):
        cfg = demo_config(
            str(tmp_path / run),
            ["simpo"],
            0,
            True,
            ["task.sft_examples=128", "sft.recipe.train.max_steps=4", "sft.recipe.logging.progress=none"],
        )
        pipeline = Pipeline(cfg, quiet=True)
        pipeline.make_task_data()
        pipeline.run_sft()
        weights.append(load_file(tmp_path / run / "sft" / "model" / "model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.slow
def test_micro_demo_rows_differ_and_the_report_states_alpha_and_the_comparison(tmp_path, capsys):
    """The demo's default methods on the shipped SFT model, shrunk: every row differs, and the report
    names each alpha and compares with SimPO with an interval."""
    from alphapo.pipeline.demo import run_demo

    overrides = ["seeds=2", "task.train_prompts=96", "sample.k=4"]
    overrides += [f"task.{split}=24" for split in ("heldout", "noop", "unseen_templates")]
    overrides += ["method_defaults.logging.progress=none"]
    summary = run_demo(str(tmp_path / "demo"), ["alphapo_neg", "simpo", "alphapo_pos"], 0, False, overrides, quick=True)
    printed = capsys.readouterr().out
    keys = ("accuracy", "gold_reward", "kl_to_sft")
    rows = {
        name: tuple(round(m["by_split"][s][k], 3) for s in m["by_split"] for k in keys)
        for name, m in summary["methods"].items()
    }
    assert len(set(rows.values())) == len(rows), rows
    alphas = {name: summary["methods"][name]["alpha"] for name in ("alphapo_neg", "simpo", "alphapo_pos")}
    assert alphas["alphapo_neg"] < alphas["simpo"] == 0 < alphas["alphapo_pos"]
    assert alphas["alphapo_pos"] == pytest.approx(-alphas["alphapo_neg"])  # alpha_scale +-1 on one scale
    report = (tmp_path / "demo" / "report.md").read_text()
    for name, alpha in alphas.items():
        assert f"{name} (alpha {'0' if alpha == 0 else format(alpha, '+.3g')})" in report + printed
    versus = summary["comparisons"]["methods"]["alphapo_pos"]["heldout"]
    low, high = versus["accuracy_diff_ci_seeds_and_prompts"]
    assert f"heldout accuracy {versus['accuracy_diff']:+.3f} [{low:+.3f}, {high:+.3f}]" in report
    assert "The AlphaPO paper" in report and "What the reward shape did" in printed
