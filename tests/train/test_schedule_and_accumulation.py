"""Learning rate per step against the closed forms, and step metrics however a step is split."""

import json
import math

import pytest
import torch

from alphapo.train import train
from tests.train.conftest import make_config, weights


def read_metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def cosine(step, lr, warmup, total):
    if step < warmup:
        return lr * step / warmup
    progress = (step - warmup) / (total - warmup)
    return lr * 0.5 * (1 + math.cos(math.pi * progress))


def linear(step, lr, warmup, total):
    if step < warmup:
        return lr * step / warmup
    return lr * max(0.0, (total - step) / (total - warmup))


@pytest.mark.parametrize(("name", "closed_form"), [("cosine", cosine), ("linear", linear)])
@pytest.mark.parametrize(("schedule", "warmup"), [({"warmup_steps": 3}, 3), ({"warmup_ratio": 0.25}, 3)])
def test_learning_rate_per_step_matches_the_closed_form(assets, tmp_path, name, closed_form, schedule, warmup):
    total, lr = 10, 1e-3
    cfg = make_config(assets, tmp_path / "run", schedule={"name": name, **schedule}, train={"max_steps": total})
    cfg.schedule.warmup_steps = schedule.get("warmup_steps")  # make_config merges over warmup_steps=0
    seen = []
    train(cfg, on_step=lambda step, metrics, model: seen.append(metrics["learning_rate"]))
    # the logged rate after step s is the one step s+1 uses: lr(s) (0-based steps count from 1 here)
    assert seen == pytest.approx([closed_form(s, lr, warmup, total) for s in range(1, total + 1)], rel=1e-12)
    assert [r["learning_rate"] for r in read_metrics(tmp_path / "run")] == seen


def test_accumulation_logs_the_same_loss_and_grad_norm(assets, tmp_path):
    """4 micro-batches of 1 and 1 of 4: same weights, and the same logged loss, grad_norm, rewards."""
    one = make_config(assets, tmp_path / "a", train={"batch_size": 4, "grad_accum": 1, "max_steps": 3})
    four = make_config(assets, tmp_path / "b", train={"batch_size": 1, "grad_accum": 4, "max_steps": 3})
    train(one), train(four)
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    keys = ("loss", "grad_norm", "rewards/chosen", "rewards/margins", "rewards/accuracies", "logps/chosen", "nll_loss")
    for ra, rb in zip(a, b, strict=True):
        for key in keys:
            assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-6), (ra["step"], key)


def test_metrics_of_a_step_with_unequal_micro_batches_match_a_hand_computation(assets, tmp_path):
    """23 pairs, 8 a step in 2 micro-batches: step 3 has 7 pairs, split 4 + 3. Its logged loss is
    the mean over the 7 pairs (not the mean of the two micro-batch means)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alphapo.data import Collator, DataConfig, load_dataset_for_training
    from alphapo.losses import preference_loss
    from alphapo.ops.model_logps import logits_sequence_logps
    from alphapo.train.loop import _micro_batches, _step_batches

    data = {"max_rows": 23}
    cfg = make_config(assets, tmp_path / "run", data=data, train={"batch_size": 4, "grad_accum": 2, "max_steps": 3})
    train(cfg)
    two = train(
        make_config(assets, tmp_path / "two", data=data, train={"batch_size": 4, "grad_accum": 2, "max_steps": 2})
    )
    logged = read_metrics(tmp_path / "run")[2]

    tokenizer = AutoTokenizer.from_pretrained(assets["model"])
    ds = load_dataset_for_training(
        DataConfig(paths=[assets["pairs"]], max_length=64, max_prompt_length=32, max_rows=23, prompt_format="plain"),
        tokenizer,
        tmp_path / "h",
        quiet=True,
    )
    items = _step_batches(ds, cfg, 1, 0)[2]
    assert len(items) == 7 and [len(m) for m in _micro_batches(items, 2)] == [4, 3]
    model = AutoModelForCausalLM.from_pretrained(two.model_dir, dtype=torch.float64)
    batch = Collator(tokenizer.pad_token_id)([ds[i] for i in items])
    with torch.no_grad():
        logps = logits_sequence_logps(model(input_ids=batch["input_ids"]).logits, batch["labels"])
    n = (batch["labels"][:, 1:] != -100).sum(1).double()
    out = preference_loss("alphapo", logps[:7], logps[7:], n[:7], n[7:])
    assert logged["loss"] == pytest.approx(out.losses.mean().item(), rel=1e-5)
    assert logged["rewards/margins"] == pytest.approx(out.margins.mean().item(), rel=1e-5)
    assert logged["logps/rejected"] == pytest.approx(logps[7:].mean().item(), rel=1e-5)
    per_micro = (out.losses[:4].mean() + out.losses[4:].mean()) / 2
    assert abs(per_micro.item() - out.losses.mean().item()) > 1e-4  # the wrong average would be caught
    assert weights(two.model_dir)  # the model after step 2 loaded from its directory
