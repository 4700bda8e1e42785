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
    cfg = demo_config("out", ["alphapo", "simpo", "dpo"], 3, False, [])
    assert list(cfg.methods) == ["alphapo", "simpo", "dpo"] and cfg.seed == 3 and cfg.sft.checkpoint == "builtin"
    # a loss the recipe does not list runs with the shared method defaults
    assert demo_config("out", ["ipo"], 0, False, []).methods == {"ipo": {"loss": {"name": "ipo"}}}
    assert demo_config("out", ["alphapo"], 0, True, []).sft.checkpoint == "train"
    assert demo_config("out", ["alphapo"], 0, False, ["sample.k=4"]).sample.k == 4
    with pytest.raises(ConfigError, match="'alphpo' is neither a method of the demo recipe"):
        demo_config("out", ["alphpo"], 0, False, [])


def test_shipped_checkpoint_was_built_by_the_embedded_recipe():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checkpoint = builtin_sft_dir()
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    recipe = read_yaml(demo_recipe_path())
    assert manifest["sft"] == {**recipe["sft"], "checkpoint": "train"}, "the demo recipe's SFT stage changed: rebuild"
    assert manifest["task"] == recipe["task"] and manifest["seed"] == recipe["seed"]
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
            ["alphapo"],
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
