"""Kill -9 a training run at random moments (and during checkpoint writes), resume it, compare.

    python benchmarks/kill_resume.py --trials 20
    python benchmarks/kill_resume.py --trials 10 --launch fsdp2     # 2 CPU processes, sharded checkpoints
    python benchmarks/kill_resume.py --trials 10 --command rm       # a reward model (alphapo rm)

Builds a tiny model, tokenizer and pair file, trains once uninterrupted (``alphapo train`` in a
subprocess, a checkpoint every step), then for each trial starts the same run, sends SIGKILL either
at a random moment or as soon as a checkpoint's temporary folder appears (a kill during the write),
and resumes with ``resume=true`` until the run completes. It reports, per trial and in total: whether
the final weights equal the uninterrupted run's bit for bit, whether a stale ``.tmp-*`` folder was left
behind, and whether every checkpoint folder that looks complete (has its marker) actually loads.
Prints a table and a JSON line. ``--launch fsdp2``: every run is ``accelerate launch`` with the shipped
``accelerate/fsdp2_cpu`` config on 2 CPU processes (sharded checkpoints); a kill is SIGKILL to the
whole launch (launcher and both workers), as a scheduler's kill -9 of the job would be. ``--command
rm``: the run is ``alphapo rm`` (a Bradley-Terry reward model on the same pairs), complete when its
model directory holds ``reward_stats.json`` (written after the model, so a kill there is covered too).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ["apple", "pear", "plum", "fig", "kiwi", "lime", "date", "grape", "melon", "berry"]


def build_assets(root: Path) -> Path:
    from alphapo.models import TinyModelSpec, build_tiny_model, train_bpe_tokenizer

    rows = [
        {
            "prompt": f"Name a fruit like {WORDS[i % 10]}:",
            "chosen": f" {WORDS[(3 * i + 1) % 10]} and {WORDS[i % 10]}" + " ok" * (i % 3),
            "rejected": f" no {WORDS[(7 * i + 2) % 10]}" + " bad" * (i % 4),
        }
        for i in range(64)
    ]
    tokenizer = train_bpe_tokenizer([r["prompt"] + r["chosen"] + r["rejected"] for r in rows] * 5, vocab_size=200)
    special = {k: getattr(tokenizer, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    spec = TinyModelSpec(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2)
    model = build_tiny_model(spec, vocab_size=len(tokenizer), special_tokens=special)
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    with open(root / "pairs.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    recipe = root / "recipe.yaml"
    recipe.write_text(
        f"model: {{path: {root / 'model'}}}\n"
        f"data: {{paths: [{root / 'pairs.jsonl'}], max_length: 64, max_prompt_length: 32}}\n"
        + ("loss: {name: sigmoid, beta: 0.1}\n" if COMMAND == "train" else "")
        + "optim: {lr: 1.0e-3}\n"
        "train: {batch_size: 4, max_steps: 16, seed: 0}\n"
        "checkpoint: {every: 1, keep_last: 2}\n"
        "logging: {every: 1, progress: none}\n"
    )
    return recipe


LAUNCH = "single"
COMMAND = "train"


def finished(out: Path) -> bool:
    """Whether the run in ``out`` completed (a reward model: its stats, written last, are there)."""
    return (out / "model" / ("model.safetensors" if COMMAND == "train" else "reward_stats.json")).is_file()


def command(recipe: Path, out: Path, *extra: str) -> list[str]:
    train = ["-m", "alphapo", COMMAND, str(recipe), f"output_dir={out}", *extra]
    if LAUNCH == "single":
        return [sys.executable, *train]
    from alphapo.recipes import recipe_path

    config = str(recipe_path("accelerate/fsdp2_cpu"))
    port = str(29700 + random.randrange(200))
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        config,
        "--main_process_port",
        port,
        *train,
    ]


def environment() -> dict:
    return {**os.environ, "ALPHAPO_PROGRESS": "none", "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the run and every process it started (a launch's workers run in sessions of their own),
    as a scheduler's kill of the job would."""
    import psutil

    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.send_signal(signal.SIGKILL)
    psutil.wait_procs(family, timeout=10)


def weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def complete_ones_load(out: Path) -> tuple[int, int]:
    """(folders that look complete, those of them that load)."""
    import torch
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.api import CheckpointException

    looks, loads = 0, 0
    for folder in sorted((out / "checkpoints").glob("step-*")):
        if not (folder / "trainer_state.json").is_file():
            continue
        looks += 1
        try:
            if (folder / "pytorch_model_fsdp_0").is_dir():  # sharded: read every shard back into one state
                from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

                with tempfile.TemporaryDirectory() as tmp:
                    for part in ("pytorch_model_fsdp_0", "optimizer_0"):
                        dcp_to_torch_save(folder / part, Path(tmp) / f"{part}.pt")
                        torch.load(Path(tmp) / f"{part}.pt", weights_only=False)
            else:
                load_file(str(folder / "model.safetensors"))
                torch.load(folder / "optimizer.bin", weights_only=False)
            json.loads((folder / "trainer_state.json").read_text())
            loads += 1
        except (Exception, CheckpointException):  # the latter is a BaseException
            pass
    return looks, loads


def kill_during_write(proc: subprocess.Popen, out: Path, deadline: float, nth: int = 1) -> bool:
    """SIGKILL ``proc`` as soon as the ``nth`` checkpoint's temporary folder exists; False if it never did."""
    root = out / "checkpoints"
    seen: set[str] = set()
    while proc.poll() is None and time.monotonic() < deadline:
        if root.is_dir():
            seen.update(p.name for p in root.glob(".tmp-step-*"))
            if len(seen) >= nth:
                kill(proc)
                return True
        time.sleep(0.001)
    return False


def trial(recipe: Path, out: Path, rng: random.Random, during_write: bool, run_time: float) -> dict:
    env = environment()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env, "start_new_session": True}
    proc = subprocess.Popen(command(recipe, out), **quiet)
    if during_write:  # during the write of the first checkpoint, or of a later one
        killed = kill_during_write(proc, out, time.monotonic() + run_time * 2, nth=rng.randint(1, 12))
    else:
        time.sleep(rng.uniform(0.3, 1.0) * run_time)
        killed = proc.poll() is None
        if killed:
            kill(proc)
    proc.wait()
    time.sleep(0.5)  # the killed group's sockets and files released
    stale_after_kill = sorted(p.name for p in (out / "checkpoints").glob(".tmp-*")) if killed else []
    looks, loads = complete_ones_load(out)
    resumes = 0
    while not finished(out):
        resumes += 1
        try:
            done = subprocess.run(
                command(recipe, out, "resume=true"), capture_output=True, text=True, env=env, timeout=10 * run_time + 60
            )
        except subprocess.TimeoutExpired:
            return {"killed": killed, "error": ["the resumed run hung"]}
        if done.returncode != 0 or resumes > 3:
            errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
            return {"killed": killed, "error": (errors or done.stderr.strip().splitlines())[-2:]}
    stale = sorted(p.name for p in out.rglob(".tmp-*"))
    return {
        "killed": killed,
        "during_write": during_write,
        "stale_after_kill": stale_after_kill,
        "stale_at_end": stale,
        "looked_complete": looks,
        "loaded": loads,
        "resumes": resumes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--launch", choices=["single", "fsdp2"], default="single")
    parser.add_argument("--command", choices=["train", "rm"], default="train", help="alphapo train or alphapo rm")
    args = parser.parse_args()
    global LAUNCH, COMMAND
    LAUNCH, COMMAND = args.launch, args.command
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        recipe = build_assets(root)
        t0 = time.monotonic()
        subprocess.run(command(recipe, root / "reference"), check=True, capture_output=True, env=environment())
        run_time = time.monotonic() - t0
        reference = weights(root / "reference" / "model")
        results = []
        for k in range(args.trials):
            out = root / f"trial-{k}"
            result = trial(recipe, out, rng, during_write=k % 2 == 1, run_time=run_time)
            if "error" not in result:
                final = weights(out / "model")
                result["identical"] = final.keys() == reference.keys() and all(
                    final[n].equal(reference[n]) for n in reference
                )
            results.append(result)
            print(f"trial {k:2d}: {json.dumps(result)}", flush=True)
    killed = [r for r in results if r.get("killed")]
    summary = {
        "trials": len(results),
        "killed": len(killed),
        "killed_during_write": sum(bool(r.get("during_write")) for r in killed),
        "resumed_identical": sum(bool(r.get("identical")) for r in results),
        "errors": sum("error" in r for r in results),
        "stale_tmp_left_at_end": sum(bool(r.get("stale_at_end")) for r in results),
        "looked_complete": sum(r.get("looked_complete", 0) for r in results),
        "looked_complete_and_loaded": sum(r.get("loaded", 0) for r in results),
        "uninterrupted_run_s": round(run_time, 1),
        "launch": args.launch,
        "command": args.command,
    }
    print(
        "\n| trials | killed | during a write | resumed bit-identical | errors | stale tmp at end | "
        "looked complete / loaded |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {summary['trials']} | {summary['killed']} | {summary['killed_during_write']} | "
        f"{summary['resumed_identical']} | {summary['errors']} | {summary['stale_tmp_left_at_end']} | "
        f"{summary['looked_complete']} / {summary['looked_complete_and_loaded']} |"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
