"""Fixtures for trainer tests: a tokenizer and a tiny model saved to disk, small data files, configs."""

import json

import pytest

from alphapo.config import validate
from alphapo.models import TinyModelSpec, build_tiny_model, train_bpe_tokenizer
from alphapo.train import TrainConfig

WORDS = ["apple", "pear", "plum", "fig", "kiwi", "lime", "date", "grape", "melon", "berry"]


def _pairs(n):
    rows = []
    for i in range(n):
        a, b, c = WORDS[i % 10], WORDS[(3 * i + 1) % 10], WORDS[(7 * i + 2) % 10]
        rows.append(
            {
                "prompt": f"Name a fruit like {a}:",
                "chosen": f" {b} and {a}" + " ok" * (i % 3),
                "rejected": f" no {c}" + " bad" * (i % 4),
            }
        )
    return rows


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    """Paths of a tokenizer dir, a tiny model dir (from save_pretrained), pair and SFT files."""
    root = tmp_path_factory.mktemp("assets")
    pairs = _pairs(24)
    texts = [r["prompt"] + r["chosen"] + r["rejected"] for r in pairs] * 5
    tokenizer = train_bpe_tokenizer(texts, vocab_size=200)
    tokenizer.save_pretrained(root / "tokenizer")
    model = build_tiny_model(
        TinyModelSpec(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        vocab_size=len(tokenizer),
        special_tokens={
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
    )
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    with open(root / "pairs.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in pairs)
    with open(root / "sft.jsonl", "w") as f:
        f.writelines(json.dumps({"prompt": r["prompt"], "completion": r["chosen"]}) + "\n" for r in pairs)
    return {
        "root": root,
        "tokenizer": str(root / "tokenizer"),
        "model": str(root / "model"),
        "pairs": str(root / "pairs.jsonl"),
        "sft": str(root / "sft.jsonl"),
    }


def make_config(assets, out, **sections):
    """A TrainConfig for the tiny assets; keyword sections update the defaults (dotted dict merge)."""
    data = {
        "model": {"path": assets["model"]},
        "data": {"paths": [assets["pairs"]], "max_length": 64, "max_prompt_length": 32, "prompt_format": "plain"},
        "loss": {"name": "alphapo"},
        "optim": {"lr": 1e-3},
        "schedule": {"name": "constant", "warmup_steps": 0},
        "train": {"batch_size": 4, "max_steps": 4, "seed": 0},
        "logging": {"every": 1, "progress": "none"},
        "output_dir": str(out),
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return validate(TrainConfig, data)


def weights(model_dir):
    from safetensors.torch import load_file

    return load_file(f"{model_dir}/model.safetensors")
