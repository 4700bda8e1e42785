"""Diagnostics: entanglement cosine and per-sequence weights against hand computations."""

import json
import math

import pytest
import torch

from alphapo.data import Collator, DataConfig, load_dataset_for_training
from alphapo.ops.model_logps import logits_sequence_logps
from alphapo.train import train
from alphapo.train.diagnostics import gradient_cosine, sequence_weights
from tests.train.conftest import make_config


def _model_and_batch(assets, tmp_path, pairs=3):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(assets["model"], dtype=torch.float64)
    tokenizer = AutoTokenizer.from_pretrained(assets["model"])
    ds = load_dataset_for_training(
        DataConfig(paths=[assets["pairs"]], max_length=64, max_prompt_length=32, prompt_format="plain"),
        tokenizer,
        tmp_path,
        quiet=True,
    )
    return model, Collator(tokenizer.pad_token_id)([ds[i] for i in range(pairs)])


def test_entanglement_cosine_matches_a_hand_computation(assets, tmp_path):
    model, batch = _model_and_batch(assets, tmp_path)
    got = gradient_cosine(model, batch, 3, "parameters", "fused")
    # by hand: each sequence's gradient from its own backward pass through the full logits
    params = [p for p in model.parameters() if p.requires_grad]
    cosines = []
    for i in range(3):
        grads = []
        for row in (i, 3 + i):
            model.zero_grad()
            logits = model(
                input_ids=batch["input_ids"][row : row + 1], attention_mask=batch["attention_mask"][row : row + 1]
            ).logits
            logits_sequence_logps(logits, batch["labels"][row : row + 1]).sum().backward()
            grads.append(torch.cat([p.grad.reshape(-1) for p in params]).clone())
        dot = sum(a * b for a, b in zip(grads[0].tolist(), grads[1].tolist(), strict=True))
        norms = math.sqrt(sum(a * a for a in grads[0].tolist())) * math.sqrt(sum(b * b for b in grads[1].tolist()))
        cosines.append(dot / norms)
    assert got == pytest.approx(sum(cosines) / 3, abs=1e-9)


def test_identical_answers_are_fully_entangled(assets, tmp_path):
    model, batch = _model_and_batch(assets, tmp_path, pairs=2)
    for key in ("input_ids", "attention_mask", "labels"):
        batch[key][2:] = batch[key][:2]  # rejected rows = chosen rows
    assert gradient_cosine(model, batch, 2, "last_hidden", "fused") == pytest.approx(1.0, abs=1e-12)


def test_alphapo_sequence_weights_match_the_formula():
    logps = torch.tensor([-6.0, -3.0, -10.0, -9.0], dtype=torch.float64)  # chosen then rejected
    n = torch.tensor([3.0, 2.0, 4.0, 3.0], dtype=torch.float64)
    alpha, beta, gamma = 0.5, 2.0, 0.3
    w_chosen, w_rejected = sequence_weights(logps, n, 2, "alphapo", {"alpha": alpha, "beta": beta, "gamma": gamma}, ())
    lp, nn = logps.tolist(), n.tolist()  # plain floats: the expected values are computed without torch
    for i in range(2):
        lw, ll = lp[i] / nn[i], lp[2 + i] / nn[2 + i]
        shape = lambda v: (1 - math.exp(-alpha * v)) / alpha  # noqa: E731
        margin = beta * (shape(lw) - shape(ll)) - gamma
        sig = 1 / (1 + math.exp(margin))  # sigmoid(-margin) = -dL/dmargin
        # dL/dlogp_w = -sig * beta * exp(-alpha l_w) / n_w: the p^-alpha factor of AlphaPO
        assert w_chosen[i].item() == pytest.approx(sig * beta * math.exp(-alpha * lw) / nn[i], rel=1e-12)
        assert w_rejected[i].item() == pytest.approx(sig * beta * math.exp(-alpha * ll) / nn[2 + i], rel=1e-12)


def test_diagnostics_are_logged_every_n_steps(assets, tmp_path):
    out = tmp_path / "run"
    train(make_config(assets, out, train={"max_steps": 4}, diagnostics={"every": 2, "probe_pairs": 3}))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    with_diag = [r["step"] for r in records if "diagnostics/grad_cosine" in r]
    assert with_diag == [1, 2, 4]
    record = records[1]
    assert -1.0 <= record["diagnostics/grad_cosine"] <= 1.0
    assert record["diagnostics/weight_chosen_p10"] <= record["diagnostics/weight_chosen_p50"]
    assert record["diagnostics/weight_chosen_p50"] <= record["diagnostics/weight_chosen_p90"]
    assert 0.0 <= records[-1]["displacement/chosen_fell"] <= 1.0
