"""Memory per process: FSDP2 (FULL_SHARD) against DDP, 2 CPU processes each, the same training run.

    python benchmarks/sharded_memory.py                 # a ~63M-parameter Llama, 3 rounds alternating
    python benchmarks/sharded_memory.py --rounds 1 --hidden 64 --layers 2 --steps 2   # a smoke run

Builds a tiny Llama (``alphapo.models``) large enough that its training states dominate, a pair file,
and a recipe (AlphaPO, fp32, AdamW, no gradient checkpointing); then launches the same training on
2 CPU processes under DDP (``torchrun``) and under FSDP2 (``accelerate launch`` with the shipped
``accelerate/fsdp2_cpu`` config), alternating, ``--rounds`` times. Each process reports:

* ``state_mb``: the training states it holds, from its own tensors after each step: the parameters'
  local shard (the DTensor's local tensor under FSDP2) x 4 (parameter, gradient and AdamW's two
  moments, all fp32);
* ``step_rss_mb``: its resident memory after each training step (the largest), what training holds;
* ``peak_rss_mb``: its peak resident memory over the whole run (``ru_maxrss``): loading the full model
  before it is sharded and gathering it again for the final ``save_pretrained`` count here too.

Prints a table of medians over rounds (per process) and the FSDP2/DDP ratios, and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

WORDS = ["apple", "pear", "plum", "fig", "kiwi", "lime", "date", "grape", "melon", "berry"]


def build(root: Path, hidden: int, layers: int, steps: int) -> Path:
    from alphapo.models import TinyModelSpec, build_tiny_model, train_bpe_tokenizer

    rows = [
        {
            "prompt": f"Name a fruit like {WORDS[i % 10]}, then another one:",
            "chosen": f" {WORDS[(3 * i + 1) % 10]} and {WORDS[i % 10]}" + " ok" * (i % 5),
            "rejected": f" no {WORDS[(7 * i + 2) % 10]}" + " bad" * (i % 6),
        }
        for i in range(64)
    ]
    tokenizer = train_bpe_tokenizer([r["prompt"] + r["chosen"] + r["rejected"] for r in rows] * 5, vocab_size=400)
    special = {k: getattr(tokenizer, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    spec = TinyModelSpec(
        hidden_size=hidden,
        intermediate_size=hidden * 8 // 3,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
    )
    model = build_tiny_model(spec, vocab_size=len(tokenizer), special_tokens=special)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    with open(root / "pairs.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    recipe = root / "recipe.yaml"
    recipe.write_text(
        f"model: {{path: {root / 'model'}}}\n"
        f"data: {{paths: [{root / 'pairs.jsonl'}], max_length: 64, max_prompt_length: 32, prompt_format: plain}}\n"
        "loss: {name: alphapo, alpha: 0.25}\n"
        "optim: {lr: 1.0e-5}\n"
        f"train: {{batch_size: 2, max_steps: {steps}, seed: 0, verify_logps: false}}\n"
        "checkpoint: {every: null}\n"
        "logging: {every: 1, progress: none}\n"
    )
    (root / "params.txt").write_text(str(params))
    return recipe


def worker(recipe: str, out: str) -> None:
    """Runs inside each launched process: trains and reports this process's memory."""
    import psutil
    import torch

    from alphapo.config import load_config
    from alphapo.train import TrainConfig, train

    states, rss = [], []

    def record(step, metrics, model):
        rss.append(psutil.Process().memory_info().rss / 2**20)
        local = 0
        for p in model.parameters():
            tensor = p.to_local() if hasattr(p, "to_local") else p
            local += tensor.numel() * tensor.element_size()
        states.append(4 * local / 2**20)

    cfg = load_config(TrainConfig, recipe, [f"output_dir={out}"])
    train(cfg, on_step=record)
    rank = int(os.environ.get("RANK", "0"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    record_path = Path(out) / f"memory-rank{rank}.json"
    record_path.write_text(
        json.dumps(
            {"state_mb": max(states), "step_rss_mb": max(rss), "peak_rss_mb": peak, "threads": torch.get_num_threads()}
        )
    )


def launch(engine: str, recipe: Path, out: Path, port: int) -> list[dict]:
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "ALPHAPO_PROGRESS": "none"}
    me = [str(Path(__file__).resolve()), "--worker", str(recipe), str(out)]
    if engine == "ddp":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port), *me]
    else:
        from alphapo.recipes import recipe_path

        config = str(recipe_path("accelerate/fsdp2_cpu"))
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config]
        cmd += ["--main_process_port", str(port), *me]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{engine} run failed:\n{done.stderr[-3000:]}")
    expected = "FSDP2 FULL_SHARD, 2 processes" if engine == "fsdp2" else "DDP, 2 processes"
    if expected not in done.stderr:
        raise SystemExit(f"{engine}: the run did not say '{expected}':\n{done.stderr[-2000:]}")
    return [json.loads((out / f"memory-rank{r}.json").read_text()) for r in range(2)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--worker", nargs=2, metavar=("RECIPE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        recipe = build(root, args.hidden, args.layers, args.steps)
        params = int((root / "params.txt").read_text())
        results: dict[str, list[dict]] = {"ddp": [], "fsdp2": []}
        port = 29900
        for k in range(args.rounds):
            for engine in ("ddp", "fsdp2") if k % 2 == 0 else ("fsdp2", "ddp"):
                port += 1
                results[engine] += launch(engine, recipe, root / f"{engine}-{k}", port)
    summary = {"parameters": params, "rounds": args.rounds, "processes": 2}
    print(f"\n{params / 1e6:.1f}M parameters, fp32, AdamW, 2 CPU processes, {args.rounds} rounds (medians per process)")
    print("| engine | training states (MB) | RSS after a step (MB, spread) | peak RSS of the run (MB, spread) |")
    print("|---|---|---|---|")
    for engine, rows in results.items():
        state = statistics.median(r["state_mb"] for r in rows)
        summary[engine] = {"state_mb": round(state, 1)}
        cells = []
        for key in ("step_rss_mb", "peak_rss_mb"):
            values = [r[key] for r in rows]
            summary[engine][key] = round(statistics.median(values), 1)
            cells.append(f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})")
        print(f"| {engine} | {state:.0f} | {cells[0]} | {cells[1]} |")
    for key in ("state_mb", "step_rss_mb", "peak_rss_mb"):
        summary[f"{key}_ratio"] = round(summary["fsdp2"][key] / summary["ddp"][key], 3)
    print(
        f"FSDP2 / DDP: training states {summary['state_mb_ratio']:.2f}x, RSS after a step "
        f"{summary['step_rss_mb_ratio']:.2f}x, peak RSS of the run {summary['peak_rss_mb_ratio']:.2f}x"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
