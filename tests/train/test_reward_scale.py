"""The reward's scale on the training pairs, ``loss.alpha_scale`` against a hand computation, and the
end-of-training displacement record."""

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from alphapo.errors import ConfigError
from alphapo.train import train
from alphapo.train.reward_scale import alpha_for_scale, weight_range
from tests.train.conftest import make_config, weights


def test_alpha_for_scale_by_hand():
    assert alpha_for_scale(1.0, -0.125) == 8.0
    assert alpha_for_scale(-0.5, -0.25) == -2.0
    # the paper's setting on a chat model: l near -1, alpha 0.25
    assert alpha_for_scale(0.25, -1.0) == 0.25
    with pytest.raises(ConfigError, match="must be below 0"):
        alpha_for_scale(1.0, 0.0)
    # weights at the 5th and 95th percentiles of l: exp(-alpha * l), low to high
    assert weight_range({"p5": -0.4, "p95": -0.1}, 2.0) == pytest.approx([math.exp(0.2), math.exp(0.8)])
    assert weight_range({"p5": -0.4, "p95": -0.1}, -2.0) == pytest.approx([math.exp(-0.8), math.exp(-0.2)])


def _mean_chosen_logp_per_token(assets):
    """The starting model's mean log-prob per token of every chosen answer, from its own logits."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(assets["model"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(assets["model"])
    values = []
    for line in Path(assets["pairs"]).read_text().splitlines():
        row = json.loads(line)
        prompt = tokenizer(row["prompt"])["input_ids"]  # with BOS where the tokenizer adds one, as the data layer
        answer = tokenizer(row["chosen"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = torch.tensor([prompt + answer])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
        targets = ids[0, 1:]
        token_logps = logp[torch.arange(len(targets)), targets][len(prompt) - 1 :]
        values.append(float(token_logps.mean()))
    return sum(values) / len(values)


def test_alpha_scale_sets_alpha_from_the_starting_models_log_probs(assets, tmp_path):
    run = train(make_config(assets, tmp_path / "scaled", loss={"name": "alphapo", "alpha_scale": 0.5}))
    record = json.loads((tmp_path / "scaled" / "reward_scale.json").read_text())
    mean = _mean_chosen_logp_per_token(assets)
    assert record["pairs"] == 24 and record["chosen"]["mean_logp"] == pytest.approx(mean, rel=1e-6)
    assert record["alpha"] == pytest.approx(0.5 / abs(mean), rel=1e-6) and record["alpha_scale"] == 0.5
    assert record["rejected"]["mean_logp"] < 0 and record["length_normalized"] is True
    # the run trained with exactly that alpha: the same weights as a run given it directly
    direct = train(make_config(assets, tmp_path / "direct", loss={"name": "alphapo", "alpha": record["alpha"]}))
    assert all(torch.equal(weights(run.model_dir)[k], weights(direct.model_dir)[k]) for k in weights(run.model_dir))
    # a run without alpha_scale or a starting table makes no extra pass and writes no record
    train(make_config(assets, tmp_path / "plain", loss={"name": "alphapo"}, diagnostics={"displacement": "probe"}))
    assert not (tmp_path / "plain" / "reward_scale.json").exists()


def test_alpha_scale_resumes_with_the_alpha_it_started_with(assets, tmp_path):
    cfg = dict(loss={"name": "alphapo", "alpha_scale": 1.0}, train={"max_steps": 4}, checkpoint={"every": 2})
    full = train(make_config(assets, tmp_path / "full", **cfg))

    def interrupt_at_2(step, metrics, model):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    assert train(make_config(assets, tmp_path / "resumed", **cfg), on_step=interrupt_at_2).status == "interrupted"
    resumed = train(make_config(assets, tmp_path / "resumed", resume=True, **cfg))
    a, b = weights(full.model_dir), weights(resumed.model_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)  # re-measuring the moved policy would change alpha


@pytest.mark.parametrize(
    ("loss", "message"),
    [
        ({"name": "alphapo", "alpha": 0.5, "alpha_scale": 1.0}, "give loss.alpha or loss.alpha_scale, not both"),
        ({"name": "sigmoid", "alpha_scale": 1.0}, "its log-ratio is 0 at the start"),
        ({"name": "simpo", "alpha_scale": 1.0}, "it has no reward shape"),
        ({"name": "alphapo", "alpha_scale": float("inf")}, "must be a finite number"),
    ],
)
def test_alpha_scale_errors(assets, tmp_path, loss, message):
    with pytest.raises((ValidationError, ConfigError), match=message):
        make_config(assets, tmp_path, loss=loss)


@pytest.mark.parametrize("sample", [None, 10])
def test_final_displacement_covers_every_pair_or_a_seeded_sample(assets, tmp_path, sample):
    """``displacement.json``: end minus start log-prob of every pair (or of the sample of
    ``final_displacement_pairs``: no hidden pass over a whole large dataset), recomputed here from both models."""
    from alphapo.data import Collator, load_dataset_for_training
    from alphapo.train.displacement import final_displacement_rows
    from alphapo.train.reference import compute_table
    from alphapo.train.setup import load_policy, load_tokenizer

    diagnostics = {"displacement": "dataset", "final_displacement_pairs": sample}
    cfg = make_config(assets, tmp_path / "run", loss={"name": "simpo"}, diagnostics=diagnostics)
    run = train(cfg)
    record = json.loads((tmp_path / "run" / "displacement.json").read_text())
    tokenizer = load_tokenizer(cfg)
    dataset = load_dataset_for_training(cfg.data, tokenizer, tmp_path / "check", quiet=True)
    collator = Collator(tokenizer.pad_token_id)

    class One:
        device, process_index, num_processes, is_main_process = torch.device("cpu"), 0, 1, True

    start = compute_table(load_policy(cfg, tokenizer), dataset, collator, 8, One(), "logits")
    end = compute_table(load_policy(cfg, tokenizer, path=str(run.model_dir)), dataset, collator, 8, One(), "logits")
    delta = end - start
    rows = final_displacement_rows(24, sample, cfg.train.seed)
    assert (rows is None) == (sample is None) and record["of"] == 24
    if rows is not None:
        assert len(set(rows)) == 10 and rows == sorted(rows) and rows != list(range(10))
        delta = delta[torch.tensor(rows)]
    assert record["pairs"] == len(delta)
    assert record["chosen"] == pytest.approx(float(delta[:, 0].mean()), abs=1e-5)
    assert record["rejected"] == pytest.approx(float(delta[:, 1].mean()), abs=1e-5)
    assert record["chosen_fell"] == pytest.approx(float((delta[:, 0] < 0).double().mean()))
