"""FSDP2 through Accelerate on two CPU processes (gloo), launched as a user would with the shipped
``accelerate/fsdp2_cpu`` config: every parameter sharded, the same trajectory as one process on the
same global batch (per-step loss and gradient norm, final weights), sharded checkpoints that resume
exactly, one gathered ``save_pretrained`` directory at the end, and clear refusals (another number of
processes on resume, a GPU config on a CPU machine)."""

import json
import os
import subprocess
import sys
from itertools import count
from pathlib import Path

import pytest
import torch
import yaml

from alphapo.recipes import recipe_path
from alphapo.train import train

from .conftest import make_config, weights

pytestmark = pytest.mark.slow
PORTS = count(29640)


def launch(cfg, tmp_path, config="accelerate/fsdp2_cpu", processes=2, cpu=True, extra=()):
    """``accelerate launch --config_file <shipped config> -m alphapo train RECIPE`` in a subprocess."""
    path = tmp_path / f"{os.path.basename(cfg.output_dir)}.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1" if cpu else "0"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(recipe_path(config))]
    cmd += ["--num_processes", str(processes), "--main_process_port", str(next(PORTS))]
    cmd += ["-m", "alphapo", "train", str(path), *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def steps(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"step"' in line]


def saved(model_dir):
    """The weights a run wrote: the model, or a LoRA run's adapter."""
    from safetensors.torch import load_file

    adapter = model_dir / "adapter_model.safetensors"
    return load_file(adapter) if adapter.is_file() else weights(model_dir)


def assert_same_run(one_dir, two_dir, atol=1e-5, rtol=1e-5):
    one, two = steps(one_dir), steps(two_dir)
    assert [r["step"] for r in one] == [r["step"] for r in two] and len(one) == 8
    for a, b in zip(one, two, strict=True):
        for key in ("loss", "grad_norm", "learning_rate"):
            assert b[key] == pytest.approx(a[key], rel=rtol, abs=1e-12), (a["step"], key, a[key], b[key])
    a, b = saved(one_dir / "model"), saved(two_dir / "model")
    assert a.keys() == b.keys()  # a tied head is written once, as one process writes it
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= atol, worst
    return worst


CASES = {
    "alphapo-pair-schedule": {"loss": {"name": "alphapo", "alpha": 0.25}, "train": {"pair_schedule": "pair"}},
    "dpo-two-pass": {"loss": {"name": "sigmoid", "beta": 0.5}, "train": {"pair_schedule": "two-pass"}},
    "alphapo-lora": {"loss": {"name": "alphapo"}, "lora": {"r": 4, "alpha": 8, "dropout": 0.0}},
    "sft": {"task": "sft", "loss": {"name": "alphapo"}},
}


@pytest.mark.parametrize("case", list(CASES))
def test_two_fsdp2_processes_equal_one_on_the_same_global_batch(assets, tmp_path, case):
    settings = dict(CASES[case])
    loop = {"batch_size": 2, "max_steps": 8, **settings.pop("train", {})}
    if settings.get("task") == "sft":
        settings["data"] = {"paths": [assets["sft"]]}
    common = {"schedule": {"name": "cosine", "warmup_ratio": 0.25}, "checkpoint": {"every": 4}, **settings}
    one = train(make_config(assets, tmp_path / "one", train={**loop, "grad_accum": 2}, **common))
    two = launch(make_config(assets, tmp_path / "two", train=loop, **common), tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "distributed: FSDP2 FULL_SHARD, 2 processes (gloo)" in two.stderr
    assert_same_run(one.output_dir, tmp_path / "two")
    shards = sorted(p.name for p in (tmp_path / "two" / "checkpoints" / "step-00000008").iterdir())
    assert "pytorch_model_fsdp_0" in shards and "optimizer_0" in shards  # sharded, not gathered
    if "lora" in settings:
        from peft import AutoPeftModelForCausalLM as Loader
    else:
        from transformers import AutoModelForCausalLM as Loader

    loaded = Loader.from_pretrained(tmp_path / "two" / "model")  # on one process, as any user loads it
    if loaded.config.tie_word_embeddings:
        head, embeddings = loaded.get_output_embeddings(), loaded.get_input_embeddings()
        assert head.weight.data_ptr() == embeddings.weight.data_ptr()


def test_unpaired_kto_trains_under_fsdp2(assets, tmp_path):
    rows = [json.loads(line) for line in Path(assets["pairs"]).read_text().splitlines()]
    path = tmp_path / "unpaired.jsonl"
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps({"prompt": r["prompt"], "completion": r["chosen"], "label": True}) + "\n")
            f.write(json.dumps({"prompt": r["prompt"], "completion": r["rejected"], "label": False}) + "\n")
    common = {"loss": {"name": "kto"}, "data": {"paths": [str(path)]}}
    one = train(
        make_config(assets, tmp_path / "one", train={"batch_size": 2, "grad_accum": 2, "max_steps": 8}, **common)
    )
    two = launch(make_config(assets, tmp_path / "two", train={"batch_size": 2, "max_steps": 8}, **common), tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert_same_run(one.output_dir, tmp_path / "two")


def test_a_sharded_checkpoint_resumes_exactly_and_refuses_another_world_size(assets, tmp_path):
    import shutil

    cfg = make_config(
        assets,
        tmp_path / "run",
        loss={"name": "sigmoid", "beta": 0.5},
        schedule={"name": "cosine", "warmup_ratio": 0.25},
        train={"batch_size": 2, "max_steps": 8},
        checkpoint={"every": 2, "keep_last": 4},
    )
    full = launch(cfg, tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]
    reference = weights(tmp_path / "run" / "model")
    # back to the sharded checkpoint of step 4, as a run killed after writing it would be
    for name in ("step-00000006", "step-00000008"):
        shutil.rmtree(tmp_path / "run" / "checkpoints" / name)
    shutil.rmtree(tmp_path / "run" / "model")
    resumed = launch(cfg, tmp_path, extra=["resume=true"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "step-00000004" in resumed.stderr
    final = weights(tmp_path / "run" / "model")
    assert final.keys() == reference.keys() and all(torch.equal(final[k], reference[k]) for k in final)
    other = launch(cfg, tmp_path, processes=1, extra=["resume=true"])
    assert other.returncode != 0 and "train.processes" in other.stderr, other.stderr[-2000:]


def test_a_gpu_config_on_a_cpu_machine_stops_with_a_clear_message(assets, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    cfg = make_config(assets, tmp_path / "gpu", train={"max_steps": 2})
    done = launch(cfg, tmp_path, config="accelerate/fsdp2", processes=2, cpu=False)
    assert done.returncode != 0
    assert "launched as one of 2 (WORLD_SIZE) but joined a group of 1" in done.stderr
    assert "ACCELERATE_USE_CPU=1" in done.stderr and not (tmp_path / "gpu" / "model").exists()
