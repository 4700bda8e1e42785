"""The benchmarks run (at toy sizes) and print their table and JSON: they must not rot."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _json_tail(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{") :])


def run_benchmark(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``benchmarks/<script> args`` in a fresh interpreter; fails the test on a non-zero exit."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)


@pytest.mark.slow
def test_fused_logps_benchmark_runs(tmp_path):
    variants = "naive,two-pass,pair,floor-8nhv,floor-6nhv"
    proc = run_benchmark(
        "fused_logps.py",
        "--shapes",
        "1,32,16,64",
        "--variants",
        variants,
        "--reps",
        "1",
        "--json",
        str(tmp_path / "out.json"),
    )
    assert "x floor" in proc.stdout
    results = {r["variant"]: r for r in _json_tail(proc.stdout)["results"]}
    assert set(results) == set(variants.split(","))
    assert results["two-pass"]["time_vs_floor"] > 0 and results["two-pass"]["peak_growth_bytes"] >= 0
    assert results["pair"]["schedule"] == "pair" and results["pair"]["time_vs_two-pass"] > 0
    assert json.loads((tmp_path / "out.json").read_text())["results"]


@pytest.mark.slow
def test_train_throughput_benchmark_runs():
    proc = run_benchmark(
        "train_throughput.py",
        "--steps",
        "3",
        "--pairs",
        "16",
        "--batch-size",
        "2",
        "--hidden",
        "64",
        "--layers",
        "1",
        "--vocab",
        "2048",
        "--max-length",
        "128",
        timeout=900,
    )
    rows = _json_tail(proc.stdout)["results"]
    assert rows["alphapo"]["tokens_per_s"]["median"] > 0


@pytest.mark.slow
def test_train_throughput_real_model_mode_runs(tmp_path, tiny_chat_model):
    """The real-model mode on a tiny chat model directory and HH-style transcripts: pairs converted to
    TRL's conversational format (a pair whose histories differ is skipped and counted), both
    gradient-checkpointing settings, medians and spreads in the JSON."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from train_throughput import hh_to_conversational

    rows = hh_rows(12)
    rows.append({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: c\n\nAssistant: d"})
    assert hh_to_conversational(rows[0]) == {
        "prompt": [
            {"role": "user", "content": "where did the cat sit 0?"},
            {"role": "assistant", "content": "on the mat"},
            {"role": "user", "content": "and then?"},
        ],
        "chosen": [{"role": "assistant", "content": "it ran to the door 0"}],
        "rejected": [{"role": "assistant", "content": "it was late"}],
    }
    assert hh_to_conversational(rows[-1]) is None
    data = tmp_path / "hh.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows[::-1]))
    proc = run_benchmark(
        "train_throughput.py",
        *["--model", str(tiny_chat_model), "--data", str(data), "--trainers", "alphapo,alphapo-inbwd"],
        *["--steps", "3", "--pairs", "8", "--batch-size", "2", "--max-length", "64", "--rounds", "1"],
        *["--max-grad-norm", "none"],
        timeout=900,
    )
    assert "skipped: 1 without a shared history" in proc.stderr and "max_grad_norm none" in proc.stderr
    out = _json_tail(proc.stdout)
    assert out["config"]["gradient_checkpointing"] == "both" and out["config"]["max_grad_norm"] is None
    rows = out["results"]
    assert set(rows) == {"alphapo", "alphapo+gc", "alphapo-inbwd", "alphapo-inbwd+gc"}
    for row in rows.values():
        assert row["rounds"] == 1 and row["tokens"] > 0
        assert row["tokens_per_s"]["low"] == row["tokens_per_s"]["median"] > 0
        assert row["process_peak_bytes"]["median"] > row["peak_growth_bytes"]["median"]
        assert 0 < row["step_tensor_peak_bytes"]["median"] < row["process_peak_bytes"]["median"]


def test_in_backward_trainers_need_clipping_off():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--trainers", "alphapo-inbwd"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "add --max-grad-norm none" in proc.stderr


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory):
    """A tiny Llama with a chat-template tokenizer, saved as a model directory."""
    from alphapo.models import TinyModelSpec, build_tiny_model, train_bpe_tokenizer

    path = tmp_path_factory.mktemp("tiny_chat") / "model"
    sentences = ["where did the cat sit", "on the mat and then", "it ran to the door", "it was late"]
    tokenizer = train_bpe_tokenizer(sentences * 40, 300)
    spec = TinyModelSpec(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    special = {k: getattr(tokenizer, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    build_tiny_model(spec, vocab_size=len(tokenizer), special_tokens=special).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def hh_rows(n: int) -> list[dict]:
    return [
        {
            "chosen": f"\n\nHuman: where did the cat sit {i}?\n\nAssistant: on the mat\n\nHuman: and then?"
            f"\n\nAssistant: it ran to the door {i}",
            "rejected": f"\n\nHuman: where did the cat sit {i}?\n\nAssistant: on the mat\n\nHuman: and then?"
            "\n\nAssistant: it was late",
        }
        for i in range(n)
    ]


@pytest.mark.slow
@pytest.mark.parametrize("in_backward", [False, True])
def test_profile_step_runs(tmp_path, tiny_chat_model, in_backward):
    """Every phase of a step is timed; the phases add up to the step's wall time; padding is counted.
    With --in-backward the optimiser runs inside the backward pass (no clip, no separate step)."""
    data = tmp_path / "hh.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in hh_rows(16)))
    proc = run_benchmark(
        "profile_step.py",
        *["--model", str(tiny_chat_model), "--data", str(data), "--steps", "3", "--pairs", "8"],
        *["--batch-size", "2", "--max-length", "64", "--ops"],
        *(["--in-backward"] if in_backward else []),
    )
    out = _json_tail(proc.stdout)
    phases = out["phases"]
    assert set(phases) == {"data", "forward body", "head + loss", "backward", "clip", "optimizer", "other"}
    separate = ("optimizer", "clip")
    for name in ("data", "forward body", "head + loss", "backward", *([] if in_backward else separate)):
        assert phases[name]["seconds_per_step"] > 0, name
    if in_backward:
        assert all(phases[name]["seconds_per_step"] == 0 for name in separate)
    assert sum(p["share"] for p in phases.values()) == pytest.approx(1.0)
    assert 0 < out["padding_share"] < 1 and out["tokens_per_s"] > 0 and out["ops"]


@pytest.mark.slow
def test_generation_throughput_runs(tiny_chat_model):
    proc = run_benchmark(
        "generation_throughput.py",
        *["--model", str(tiny_chat_model), "--prompts", "6", "--batch-sizes", "4", "--max-new-tokens", "8"],
    )
    out = _json_tail(proc.stdout)
    assert out["compute_bound_tokens_per_s"] > 0 and out["copy_bytes_per_s"] > 0
    engines = {r["engine"]: r for r in out["results"]}
    assert set(engines) == {"alphapo", "generate"}
    assert engines["alphapo"]["new_tokens"] == engines["generate"]["new_tokens"] > 0  # the same greedy answers
    row = engines["alphapo"]
    assert row["prompt_tokens"] > 0 and row["share_of_compute_bound_with_prompts"] == pytest.approx(
        (row["new_tokens"] + row["prompt_tokens"]) / row["seconds"] / out["compute_bound_tokens_per_s"]
    )
    step = out["decode_step"]
    assert step["rows"] == 4 and step["seconds"] > 0 and sum(step["shares"].values()) == pytest.approx(1.0)


@pytest.mark.slow
def test_sharded_memory_benchmark_runs():
    """DDP and FSDP2 on 2 CPU processes at a toy size: each process reports its states, FSDP2 holds fewer."""
    proc = run_benchmark(
        "sharded_memory.py",
        *["--rounds", "1", "--hidden", "64", "--layers", "2", "--steps", "2"],
    )
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["fsdp2"]["state_mb"] < summary["ddp"]["state_mb"] and summary["ddp"]["peak_rss_mb"] > 0


@pytest.mark.slow
def test_reference_pass_benchmark_runs(tmp_path, tiny_chat_model):
    """Both ways of the reference pass on a tiny chat model: packed rows hold fewer positions and the
    tables agree within fp32 rounding."""
    data = tmp_path / "hh.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in hh_rows(8)))
    proc = run_benchmark(
        "reference_pass.py",
        *["--model", str(tiny_chat_model), "--data", str(data), "--pairs", "6", "--batch-size", "4"],
        *["--max-length", "64", "--rounds", "1"],
    )
    out = _json_tail(proc.stdout)
    assert out["pairs"] == 6 and out["positions"]["shared prompts"] < out["positions"]["unpacked"]
    assert out["max_abs_difference"] < 1e-4
    assert all(s["median"] > 0 for s in out["seconds"].values())


@pytest.mark.slow
def test_compile_body_benchmark_runs(tiny_chat_model):
    """The eager mode's plumbing on a tiny model (compiling needs a C++ toolchain CI need not have)."""
    proc = run_benchmark(
        "compile_body.py",
        *["--model", str(tiny_chat_model), "--batch", "2", "--length", "16", "--steps", "2", "--modes", "eager"],
    )
    result = _json_tail(proc.stdout)["results"]["eager"]
    assert 0 < result["low_s"] <= result["median_s"] and result["first_s"] > 0
