"""The benchmarks run (at toy sizes) and print their table and JSON: they must not rot."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _json_tail(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{") :])


@pytest.mark.slow
def test_fused_logps_benchmark_runs(tmp_path):
    variants = "naive,two-pass,pair,floor-8nhv,floor-6nhv"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "fused_logps.py"),
            "--shapes",
            "1,32,16,64",
            "--variants",
            variants,
            "--reps",
            "1",
            "--json",
            str(tmp_path / "out.json"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    assert "x floor" in proc.stdout
    results = {r["variant"]: r for r in _json_tail(proc.stdout)["results"]}
    assert set(results) == set(variants.split(","))
    assert results["two-pass"]["time_vs_floor"] > 0 and results["two-pass"]["peak_growth_bytes"] >= 0
    assert results["pair"]["schedule"] == "pair" and results["pair"]["time_vs_two-pass"] > 0
    assert json.loads((tmp_path / "out.json").read_text())["results"]


@pytest.mark.slow
def test_train_throughput_benchmark_runs():
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "train_throughput.py"),
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
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    rows = _json_tail(proc.stdout)["results"]
    assert rows["alphapo"]["tokens_per_s"] > 0


@pytest.mark.slow
def test_sharded_memory_benchmark_runs():
    """DDP and FSDP2 on 2 CPU processes at a toy size: each process reports its states, FSDP2 holds fewer."""
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "sharded_memory.py"),
            *["--rounds", "1", "--hidden", "64", "--layers", "2", "--steps", "2"],
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["fsdp2"]["state_mb"] < summary["ddp"]["state_mb"] and summary["ddp"]["peak_rss_mb"] > 0
