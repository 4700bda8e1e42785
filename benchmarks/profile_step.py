"""Profile: where one ``alphapo train`` step's time goes on a real model.

    python benchmarks/profile_step.py                                    # SmolLM2-135M-Instruct + HH-RLHF
    python benchmarks/profile_step.py --gradient-checkpointing --no-group-by-length
    python benchmarks/profile_step.py --model DIR_OR_GGUF --data HH.jsonl.gz --steps 6 --batch-size 4

Runs the real trainer (``alphapo.train.train``, AlphaPO, fp32, the same data and settings as
``train_throughput.py``'s real-model mode) and times, over steps 2..N, each part of a step by hooks
around the code that runs it: data (the collator: padding and tensors), forward body (the model up to
its head), head + loss (the fused op: the head's logits in chunks, the loss, and the gradients of the
head and of the final hidden states, formed in the forward pass), backward (the body's backward, with
its recomputation under gradient checkpointing), gradient clipping, the optimiser, and the rest (metrics,
the weight guard, bookkeeping). Also the padding share of the batches (pad positions / all positions)
and, with ``--ops``, the step's 15 costliest operators from ``torch.profiler`` (one extra step, not timed).
The run's last step, which ends with its diagnostics (the displacement probe's measurement), is not timed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's alphapo, not an installed one
sys.path.insert(0, str(ROOT / "benchmarks"))
from train_throughput import HH, alphapo_config, build_real_assets  # noqa: E402

PHASES = ["data", "forward body", "head + loss", "backward", "clip", "optimizer", "other"]


class Clock:
    """Seconds per phase, counted once ``on`` is set (after step 1)."""

    def __init__(self):
        self.on = False
        self.seconds: dict[str, float] = defaultdict(float)
        self.marks: dict[str, float] = {}
        self.positions = 0
        self.pads = 0

    def add(self, phase: str, seconds: float) -> None:
        if self.on:
            self.seconds[phase] += seconds

    def timed(self, phase: str, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(phase, time.perf_counter() - start)

        return wrapper


def install(clock: Clock) -> None:
    """Wrap the trainer's collator, clipping, backward and optimiser step (module attributes the loop
    looks up at run time)."""
    from accelerate import Accelerator
    from accelerate.optimizer import AcceleratedOptimizer

    import alphapo.train.loop as loop

    class TimedCollator(loop.Collator):
        def __call__(self, examples):
            start = time.perf_counter()
            batch = super().__call__(examples)
            clock.add("data", time.perf_counter() - start)
            if clock.on:
                mask = batch["attention_mask"]
                clock.positions += mask.numel()
                clock.pads += int((mask == 0).sum())
            return batch

    loop.Collator = TimedCollator
    loop._clip = clock.timed("clip", loop._clip)
    Accelerator.backward = clock.timed("backward", Accelerator.backward)
    AcceleratedOptimizer.step = clock.timed("optimizer", AcceleratedOptimizer.step)


def hook_model(clock: Clock, model) -> None:
    """Forward body = model call to head call; head + loss = the head's (replaced) forward."""
    from accelerate.utils import extract_model_from_parallel

    model = extract_model_from_parallel(model)
    head = model.get_output_embeddings()

    def model_start(*_):
        clock.marks["model"] = time.perf_counter()

    def head_start(*_):
        now = time.perf_counter()
        clock.add("forward body", now - clock.marks.pop("model", now))
        clock.marks["head"] = now

    def head_end(*_):
        now = time.perf_counter()
        clock.add("head + loss", now - clock.marks.pop("head", now))

    model.register_forward_pre_hook(model_start)
    head.register_forward_pre_hook(head_start)
    head.register_forward_hook(head_end)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--data", default=str(HH))
    p.add_argument("--steps", type=int, default=8, help="steps timed: 2..N (step 1 warms up)")
    p.add_argument("--batch-size", type=int, default=4, help="pairs per step")
    p.add_argument("--pairs", type=int, default=64)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--no-group-by-length", action="store_true")
    p.add_argument("--ops", action="store_true", help="also profile one more step with torch.profiler")
    p.add_argument(
        "--in-backward",
        action="store_true",
        help="optim.in_backward (no clipping): the optimiser's time is then inside the backward pass",
    )
    p.add_argument("--json", default=None)
    args = p.parse_args()
    args.max_grad_norm = None if args.in_backward else 1.0

    import torch

    from alphapo.train import train

    workdir = Path(tempfile.mkdtemp(prefix="alphapo-profile-"))
    assets = build_real_assets(workdir, args)
    clock = Clock()
    install(clock)
    total = args.steps + 1 + (1 if args.ops else 0)  # the last step ends with the run's diagnostics: untimed
    cfg = alphapo_config(
        assets,
        args,
        gradient_checkpointing=args.gradient_checkpointing,
        max_steps=total,
        output_dir=workdir / "run",
        in_backward=args.in_backward,
        group_by_length=not args.no_group_by_length,
    )
    state: dict = {"tokens": 0, "last_tokens": 0}
    profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])

    def on_step(step, metrics, model):
        now = time.perf_counter()
        if step == 1:
            hook_model(clock, model)
            clock.on, state["start"] = True, now
        elif step <= args.steps:
            state["tokens"] += metrics["num_tokens"] - state["last_tokens"]
        if step == args.steps:
            state["wall"] = now - state["start"]
            clock.on = False
            if args.ops:
                profiler.__enter__()
        if args.ops and step == args.steps + 1:
            profiler.__exit__(None, None, None)
        state["last_tokens"] = metrics["num_tokens"]

    try:
        train(cfg, on_step=on_step)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # the model's copy and the run's checkpoint (about 2 GB)
    steps = args.steps - 1
    wall = state["wall"]
    seconds = dict(clock.seconds)
    seconds["other"] = wall - sum(seconds.values())
    result = {
        "model": assets["model"],
        "params": assets["params"],
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "steps_timed": steps,
        "seconds_per_step": wall / steps,
        "tokens_per_s": state["tokens"] / wall,
        "padding_share": clock.pads / max(clock.positions, 1),
        "phases": {
            name: {"seconds_per_step": seconds.get(name, 0.0) / steps, "share": seconds.get(name, 0.0) / wall}
            for name in PHASES
        },
    }
    print(
        f"{assets['params'] / 1e6:.1f}M parameters, {args.batch_size} pairs/step, max_length {args.max_length}, "
        f"gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}, "
        f"group_by_length {'off' if args.no_group_by_length else 'on'}: {result['seconds_per_step']:.2f} s/step, "
        f"{result['tokens_per_s']:.0f} real tokens/s, padding {result['padding_share']:.1%} of positions",
        file=sys.stderr,
    )
    for name, phase in result["phases"].items():
        print(f"  {name:13} {phase['seconds_per_step']:7.3f} s/step  {phase['share']:6.1%}", file=sys.stderr)
    if args.ops:
        table = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
        print(table, file=sys.stderr)
        result["ops"] = [
            {"name": e.key, "self_cpu_s": e.self_cpu_time_total / 1e6, "calls": e.count}
            for e in sorted(profiler.key_averages(), key=lambda e: -e.self_cpu_time_total)[:15]
        ]
    blob = json.dumps(result, indent=1)
    print(blob)
    if args.json:
        Path(args.json).write_text(blob)


if __name__ == "__main__":
    main()
