"""optim.in_backward: the same AdamW update applied during the backward pass, each gradient freed as
soon as it is used; refused where it cannot be the same update; non-finite values handled."""

import json

import pytest
import torch

from alphapo.errors import ConfigError, TrainingError
from alphapo.train import train
from alphapo.train.in_backward import StepInBackward
from tests.train.conftest import make_config, weights

NO_CLIP = {"lr": 1e-3, "max_grad_norm": None, "weight_decay": 0.1}


def grad_norms(run) -> list[float]:
    lines = (run.output_dir / "metrics.jsonl").read_text().splitlines()
    return [row["grad_norm"] for row in map(json.loads, lines) if "grad_norm" in row]


def learning_rates(run) -> list[float]:
    lines = (run.output_dir / "metrics.jsonl").read_text().splitlines()
    return [row["learning_rate"] for row in map(json.loads, lines) if "learning_rate" in row]


@pytest.mark.parametrize("checkpointing", [False, True])
def test_in_backward_trains_to_the_plain_runs_weights(assets, tmp_path, checkpointing):
    model = {"path": assets["model"], "gradient_checkpointing": checkpointing}
    schedule = {"name": "cosine", "warmup_steps": 1}  # the learning rate moves every step
    plain = train(make_config(assets, tmp_path / "plain", model=model, optim=NO_CLIP, schedule=schedule))
    inside = train(
        make_config(assets, tmp_path / "inside", model=model, optim={**NO_CLIP, "in_backward": True}, schedule=schedule)
    )
    a, b = weights(plain.model_dir), weights(inside.model_dir)
    assert a.keys() == b.keys()
    start = weights(assets["model"])
    assert all(not torch.equal(a[k], start[k]) for k in a)  # every tensor (the tied embedding too) trained
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)
    assert grad_norms(inside) == pytest.approx(grad_norms(plain), rel=1e-5)
    assert len(grad_norms(plain)) == 4
    assert learning_rates(inside) == learning_rates(plain) and len(set(learning_rates(plain))) == 4


def test_in_backward_trains_lora_adapters_as_the_plain_run(assets, tmp_path):
    from safetensors.torch import load_file

    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    plain = train(make_config(assets, tmp_path / "plain", optim=NO_CLIP, lora=lora))
    inside = train(make_config(assets, tmp_path / "inside", optim={**NO_CLIP, "in_backward": True}, lora=lora))
    a = load_file(plain.model_dir / "adapter_model.safetensors")
    b = load_file(inside.model_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys() and any("lora_B" in k and v.abs().sum() > 0 for k, v in a.items())
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)


def test_each_gradient_is_freed_once_applied(assets, tmp_path, monkeypatch):
    """When a parameter's gradient completes, no other parameter holds one: the backward pass never
    holds more than the gradient being applied."""
    original = StepInBackward._apply
    held, applied, hooked = [], [], set()

    def watching(self, p):
        held.append(sum(q.grad is not None for q in self.params))
        hooked.add(len(self.params))
        original(self, p)
        applied.append(p.grad is None)

    monkeypatch.setattr(StepInBackward, "_apply", watching)
    train(make_config(assets, tmp_path / "run", optim={**NO_CLIP, "in_backward": True}, train={"max_steps": 2}))
    assert held and max(held) == 1 and all(applied)
    (params,) = hooked
    assert len(held) == 2 * params  # every trainable tensor once a step (the tied embedding and head: once)


def test_a_checkpoint_of_an_in_backward_run_resumes_in_a_plain_one(assets, tmp_path):
    out = tmp_path / "run"
    train(make_config(assets, out, optim={**NO_CLIP, "in_backward": True}, train={"max_steps": 2}))
    resumed = train(make_config(assets, out, optim=NO_CLIP, resume=True, resume_mismatch="continue"))
    assert resumed.step == 4
    whole = train(make_config(assets, tmp_path / "whole", optim=NO_CLIP))
    a, b = weights(whole.model_dir), weights(resumed.model_dir)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"optim": {"in_backward": True}}, r"cannot clip it: set optim.max_grad_norm: null \(it is 1.0\)"),
        ({"optim": {**NO_CLIP, "in_backward": True}, "train": {"grad_accum": 2}}, "cannot accumulate 2"),
        ({"optim": {**NO_CLIP, "in_backward": True}, "train": {"precision": "fp16"}}, "fp16's loss scaler"),
    ],
)
def test_settings_in_backward_cannot_honour_are_refused(assets, tmp_path, settings, match):
    with pytest.raises(ConfigError, match=match):
        make_config(assets, tmp_path / "run", **settings)


def test_more_than_one_process_is_refused(monkeypatch):
    from alphapo.train.in_backward import processes_refusal

    assert processes_refusal(1, "NO") is None
    assert "not 2 (MULTI_CPU)" in processes_refusal(2, "MULTI_CPU")
    assert "not 1 (FSDP)" in processes_refusal(1, "FSDP")


def test_a_non_finite_loss_is_skipped_before_its_backward_pass(assets, tmp_path, monkeypatch):
    import alphapo.train.objectives as objectives

    original = objectives.PreferenceObjective.__call__
    calls = []

    def second_is_nan(self, *args, **kwargs):
        calls.append(1)
        loss = original(self, *args, **kwargs)
        return loss * float("nan") if len(calls) == 2 else loss

    monkeypatch.setattr(objectives.PreferenceObjective, "__call__", second_is_nan)
    cfg = make_config(
        assets, tmp_path / "run", optim={**NO_CLIP, "in_backward": True}, train={"nan_policy": "skip", "max_steps": 3}
    )
    run = train(cfg)
    assert run.status == "completed"
    final = weights(run.model_dir)
    assert all(torch.isfinite(t).all() for t in final.values())
    rows = [json.loads(line) for line in (run.output_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_steps"] for r in rows] == [0, 1, 1]


def test_a_non_finite_gradient_stops_the_run_whatever_the_policy(assets, tmp_path, monkeypatch):
    original = StepInBackward._apply

    def poisoned(self, p):
        if self.applied == 3:
            p.grad.fill_(float("nan"))
        original(self, p)

    monkeypatch.setattr(StepInBackward, "_apply", poisoned)
    cfg = make_config(
        assets,
        tmp_path / "run",
        optim={**NO_CLIP, "in_backward": True},
        train={"nan_policy": "skip"},
        checkpoint={"every": 1},
    )
    with pytest.raises(TrainingError, match=r"optim.in_backward had already applied it to \d+ parameter tensor") as err:
        train(cfg)
    assert "a non-finite gradient at step 1" in str(err.value) and "no checkpoint was saved yet" in str(err.value)
    assert not (tmp_path / "run" / "model").exists()
