"""Trainer invariants: accumulation, resume, processes, what changes and what must not."""

import os
import signal
import subprocess
import sys

import pytest
import torch

from alphapo.train import tables as tables_module
from alphapo.train import train
from tests.train.conftest import make_config, weights


def assert_same(a, b, atol):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=atol, rtol=0), (name, (a[name] - b[name]).abs().max())


def test_grad_accumulation_4x1_equals_1x4(assets, tmp_path):
    one = train(make_config(assets, tmp_path / "a", train={"batch_size": 4, "grad_accum": 1, "max_steps": 3}))
    four = train(make_config(assets, tmp_path / "b", train={"batch_size": 1, "grad_accum": 4, "max_steps": 3}))
    assert_same(weights(one.model_dir), weights(four.model_dir), atol=1e-5)


def test_interrupted_then_resumed_equals_uninterrupted(assets, tmp_path):
    cfg = dict(train={"max_steps": 6}, checkpoint={"every": 2}, model={"path": assets["model"]}, lora=None)
    full = train(make_config(assets, tmp_path / "full", **cfg))

    def interrupt_at_3(step, metrics, model):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # the real Ctrl-C path: finish the step, save, stop

    first = train(make_config(assets, tmp_path / "resumed", **cfg), on_step=interrupt_at_3)
    assert first.status == "interrupted" and first.step == 3 and first.checkpoint.name == "step-00000003"
    assert first.model_dir is None
    second = train(make_config(assets, tmp_path / "resumed", resume=True, **cfg))
    assert second.status == "completed" and second.step == 6
    assert_same(weights(full.model_dir), weights(second.model_dir), atol=0)

    # the metrics log of the resumed run matches the uninterrupted one line for line (but times)
    def lines(path):
        import json

        return [{k: v for k, v in json.loads(x).items()} for x in (path / "metrics.jsonl").read_text().splitlines()]

    a, b = lines(tmp_path / "full"), lines(tmp_path / "resumed")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 7))
    for ra, rb in zip(a, b, strict=True):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-9)


def test_every_trainable_parameter_changes(assets, tmp_path):
    result = train(make_config(assets, tmp_path / "run", train={"max_steps": 2}))
    before, after = weights(assets["model"]), weights(result.model_dir)
    for name in before:
        assert not torch.equal(before[name], after[name]), f"{name} did not change"


def test_lora_changes_adapters_not_base_weights(assets, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result = train(
        make_config(
            assets, tmp_path / "run", lora={"r": 4, "alpha": 8, "dropout": 0.0, "merge": True}, train={"max_steps": 2}
        )
    )
    adapter = weights(result.model_dir).keys() if (result.model_dir / "model.safetensors").exists() else None
    assert adapter is None and (result.model_dir / "adapter_model.safetensors").is_file()
    from safetensors.torch import load_file

    adapter = load_file(result.model_dir / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in adapter.items())  # adapters trained (B starts at 0)
    base = AutoModelForCausalLM.from_pretrained(assets["model"])
    loaded = PeftModel.from_pretrained(base, result.model_dir)
    original = weights(assets["model"])
    for name, value in loaded.get_base_model().state_dict().items():
        if "lora_" in name:
            continue
        clean = name.replace(".base_layer", "")
        if clean in original:
            assert torch.equal(value, original[clean]), f"base weight {clean} changed"
    merged = weights(tmp_path / "run" / "merged")
    assert any(not torch.equal(merged[k], original[k]) for k in original)


def test_reference_free_losses_never_build_a_reference(assets, tmp_path, monkeypatch):
    def no_reference(*args, **kwargs):
        raise AssertionError("a reference model was built for a reference-free loss")

    monkeypatch.setattr(tables_module, "load_policy", no_reference)
    monkeypatch.setattr(tables_module, "_soup", no_reference)
    seen = {}
    original = tables_module.prepare_tables

    def spy(*args, **kwargs):
        seen["tables"] = original(*args, **kwargs)
        return seen["tables"]

    import alphapo.train.loop as loop

    def no_pass(*args, **kwargs):
        raise AssertionError("a pass over the dataset ran before training a reference-free loss")

    monkeypatch.setattr(loop, "prepare_tables", spy)
    monkeypatch.setattr(tables_module, "compute_table", no_pass)
    for name in ("alphapo", "simpo", "cpo", "orpo"):
        train(make_config(assets, tmp_path / name, loss={"name": name}, train={"max_steps": 1}))
        assert seen["tables"].reference is None and seen["tables"].initial is None and not seen["tables"].keys


@pytest.mark.slow
def test_two_gloo_processes_equal_one_with_doubled_accumulation(assets, tmp_path):
    import yaml

    def config_file(out, **train_cfg):
        cfg = make_config(
            assets, out, train={"batch_size": 2, "max_steps": 3, **train_cfg}, loss={"name": "sigmoid", "beta": 0.5}
        )
        path = tmp_path / f"{out.name}.yaml"
        path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        return path

    single = train(
        make_config(
            assets,
            tmp_path / "single",
            train={"batch_size": 2, "grad_accum": 2, "max_steps": 3},
            loss={"name": "sigmoid", "beta": 0.5},
        )
    )
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "alphapo",
        "train",
        str(config_file(tmp_path / "double", grad_accum=1)),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same(weights(single.model_dir), weights(tmp_path / "double" / "model"), atol=1e-5)


def test_shared_prompts_train_as_the_unpacked_pairs(assets, tmp_path, monkeypatch):
    """train.share_prompt packs every step's pairs (the packing runs) and ends at the unpacked run's weights."""
    import alphapo.train.objectives as objectives

    packed_batches = []
    original = objectives.share_prompts

    def counting(*args, **kwargs):
        packed_batches.append(original(*args, **kwargs))
        return packed_batches[-1]

    monkeypatch.setattr(objectives, "share_prompts", counting)
    shared = train(make_config(assets, tmp_path / "shared", train={"max_steps": 4, "share_prompt": True}))
    assert len(packed_batches) == 4 and all(b.positions_saved > 0 for b in packed_batches)
    plain = train(make_config(assets, tmp_path / "plain", train={"max_steps": 4, "share_prompt": False}))
    assert len(packed_batches) == 4
    assert_same(weights(shared.model_dir), weights(plain.model_dir), atol=1e-5)


def test_a_model_the_packed_rows_do_not_suit_trains_unpacked(assets, tmp_path, monkeypatch, caplog):
    import logging

    import alphapo.ops.model_logps as model_logps

    monkeypatch.setattr(model_logps, "verify_shared_prompt", lambda *a, **k: None)  # as if they differed
    with caplog.at_level(logging.WARNING, logger="alphapo"):
        train(make_config(assets, tmp_path / "run", train={"max_steps": 1}))
    assert "pairs run unpacked" in caplog.text


@pytest.mark.parametrize("reference", [{"kind": "precompute"}, {"kind": "model"}])
def test_reference_and_displacement_passes_share_prompts_as_training_does(assets, tmp_path, monkeypatch, reference):
    """DPO's reference table and end-of-run displacement pass pack pairs like its training steps (a third
    fewer positions on multi-turn prompts) and give the unpacked passes' tables, metrics and weights."""
    import json

    import alphapo.train.reference as reference_module

    packed = []
    original = reference_module.share_prompts

    def counting(*args, **kwargs):
        packed.append(args[0].shape[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(reference_module, "share_prompts", counting)
    if reference["kind"] == "model":
        reference = {**reference, "path": assets["model"]}
    runs = {}
    for share in (True, False):
        cfg = make_config(
            assets,
            tmp_path / str(share),
            loss={"name": "dpo", "beta": 0.1},
            reference=reference,
            train={"max_steps": 3, "share_prompt": share},
        )
        packed.clear()
        runs[share] = train(cfg)
        # 24 pairs in batches of 4: 6 batches for the table, then 6 for the final displacement over every
        # pair (a precomputed reference) or 3 for the probe's 12 visited pairs (a reference model)
        expected = 6 + (6 if reference["kind"] == "precompute" else 3)
        assert len(packed) == (expected if share else 0), share
    assert_same(weights(runs[True].model_dir), weights(runs[False].model_dir), atol=1e-5)
    tables = {}
    for share, run in runs.items():
        (cached,) = (run.output_dir / "cache").glob("logps-*.pt")
        tables[share] = torch.load(cached, weights_only=True)["table"]
    torch.testing.assert_close(tables[True], tables[False], rtol=0, atol=1e-5)
    for share, run in runs.items():
        last = json.loads((run.output_dir / "metrics.jsonl").read_text().splitlines()[-1])
        if reference["kind"] == "precompute":
            last.update(json.loads((run.output_dir / "displacement.json").read_text()))
        runs[share] = last
    assert runs[True].keys() == runs[False].keys() and "displacement/chosen" in runs[True]
    for key, value in runs[False].items():
        if isinstance(value, float):
            assert runs[True][key] == pytest.approx(value, abs=1e-4), key
