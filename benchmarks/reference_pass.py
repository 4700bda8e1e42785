"""Benchmark: the reference log-prob pass (DPO's table of the starting policy) with and without shared
prompts (``train.share_prompt``).

A reference-based loss (DPO, IPO, ...) starts with a forward pass over every pair (``compute_table``),
as does the end-of-run displacement pass. With ``train.share_prompt`` those passes pack each pair's
common prefix once, as the training steps do. This times the pass both ways on the real model and the
real pairs of ``train_throughput.py``'s real-model mode (the first ``--pairs`` HH-RLHF pairs in
conversational form whose prompts fit 128 tokens, max_length 256), alternating for ``--rounds``, and
reports the median seconds, pairs/s, the positions each way runs and the largest difference between
the two tables (fp32: rounding only).

    python benchmarks/reference_pass.py --model smollm2-135m-instruct --pairs 128 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from train_throughput import HH, alphapo_config, build_real_assets  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--data", default=str(HH))
    p.add_argument("--pairs", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8, help="pairs per forward pass (reference.batch_size)")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    args.max_grad_norm = 1.0

    import torch
    from accelerate import Accelerator

    from alphapo.data import Collator, load_dataset_for_training
    from alphapo.ops.model_logps import share_prompts
    from alphapo.train.reference import compute_table
    from alphapo.train.setup import load_policy, load_tokenizer

    workdir = Path(tempfile.mkdtemp(prefix="alphapo-reference-"))
    try:
        assets = build_real_assets(workdir, args)
        cfg = alphapo_config(assets, args, gradient_checkpointing=False, max_steps=1, output_dir=workdir / "run")
        tokenizer = load_tokenizer(cfg)
        dataset = load_dataset_for_training(cfg.data, tokenizer, workdir / "run", quiet=True)
        model = load_policy(cfg, tokenizer)
        collator = Collator(tokenizer.pad_token_id, cfg.data.pad_to_multiple_of)
        acc = Accelerator(cpu=True)
        unpacked = packed = 0
        for start in range(0, len(dataset), args.batch_size):
            batch = collator([dataset[i] for i in range(start, min(start + args.batch_size, len(dataset)))])
            unpacked += batch["input_ids"].numel()
            packed += share_prompts(batch["input_ids"], batch["attention_mask"]).input_ids.numel()
        variants = {"unpacked": None, "shared prompts": torch.bool}
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        tables = {}
        for _ in range(args.rounds):
            for name, share in variants.items():
                begin = time.perf_counter()
                tables[name] = compute_table(
                    model, dataset, collator, args.batch_size, acc, "fused", name, share_prompt=share
                )
                seconds[name].append(time.perf_counter() - begin)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    gap = float((tables["shared prompts"] - tables["unpacked"]).abs().max())
    result = {
        "model": args.model,
        "pairs": len(dataset),
        "batch_size": args.batch_size,
        "positions": {"unpacked": unpacked, "shared prompts": packed},
        "seconds": {n: {"median": statistics.median(s), "low": min(s), "high": max(s)} for n, s in seconds.items()},
        "max_abs_difference": gap,
    }
    base = result["seconds"]["unpacked"]["median"]
    print(
        f"{len(dataset)} pairs, batch {args.batch_size}, {args.rounds} rounds; positions packed/unpacked "
        f"{packed / unpacked:.2f}; largest table difference {gap:.2e} nats",
        file=sys.stderr,
    )
    for name, s in result["seconds"].items():
        print(
            f"  {name:15} {s['median']:7.2f} s ({s['low']:.2f}-{s['high']:.2f})  "
            f"{len(dataset) / s['median']:6.2f} pairs/s  {base / s['median']:.2f}x",
            file=sys.stderr,
        )
    blob = json.dumps(result, indent=1)
    print(blob)
    if args.json:
        Path(args.json).write_text(blob)


if __name__ == "__main__":
    main()
