"""Benchmark: does ``torch.compile`` pay for a training step's body on this machine?

Times the body of the model (``model.model``: embeddings and decoder layers, the part of a step that
alphapo's fused head does not replace) forward + backward on a fixed batch, eager against compiled:
``regional`` compiles each decoder layer (one graph reused by every layer; transformers' recommended
form), ``whole`` compiles the body at once. Each mode runs in a fresh process: the first step (with
its compilation) and the median of the next ``--steps``. Fixed shapes (``dynamic=False``); a real run's
varying lengths would recompile per shape or need ``dynamic=True``, so a gain here is an upper bound.

    python benchmarks/compile_body.py --model smollm2-135m-instruct --batch 8 --length 192
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
MODES = ("eager", "regional", "whole")


def measure(args) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from alphapo.models.sources import resolve_model_source

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_source(args.model, "--model"), dtype=torch.float32)
    model.train()
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.length))
    if args.worker == "regional":
        for layer in model.model.layers:
            layer.compile(dynamic=False)
    elif args.worker == "whole":
        model.model.compile(dynamic=False)

    def step() -> float:
        start = time.perf_counter()
        hidden = model.model(input_ids=ids, use_cache=False).last_hidden_state
        hidden.float().pow(2).mean().backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    first = step()
    times = [step() for _ in range(args.steps)]
    return {"mode": args.worker, "first_s": first, "median_s": statistics.median(times), "low_s": min(times)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--batch", type=int, default=8, help="rows (4 pairs = 8 rows)")
    p.add_argument("--length", type=int, default=192, help="tokens per row")
    p.add_argument("--steps", type=int, default=5, help="timed steps after the first")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}")
    p.add_argument("--json", default=None)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(measure(args)))
        return
    modes = args.modes.split(",")
    if unknown := [m for m in modes if m not in MODES]:
        p.error(f"unknown mode(s) {', '.join(unknown)}")
    results = {}
    for mode in modes:
        cmd = [sys.executable, __file__, "--worker", mode, "--model", args.model]
        cmd += [f"--batch={args.batch}", f"--length={args.length}", f"--steps={args.steps}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{mode} failed:\n{proc.stderr[-3000:]}")
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    eager = results.get("eager", {}).get("median_s")
    print(f"body forward + backward, {args.batch} x {args.length} tokens, fp32:", file=sys.stderr)
    for mode, r in results.items():
        speed = f"{eager / r['median_s']:.3f}x eager" if eager else ""
        print(
            f"  {mode:9} first step {r['first_s']:6.1f} s  then {r['median_s']:.3f} s (best {r['low_s']:.3f})  {speed}",
            file=sys.stderr,
        )
    blob = json.dumps({"config": {k: v for k, v in vars(args).items() if k != "worker"}, "results": results}, indent=1)
    print(blob)
    if args.json:
        Path(args.json).write_text(blob)


if __name__ == "__main__":
    main()
