"""Benchmark: training throughput and peak memory, ``alphapo train`` against TRL's CPOTrainer.

Trainers: ``alphapo`` (the fused pair schedule, gradients formed in the forward pass where a pair's
logits fit the budget: ``train.pair_schedule=auto``), ``alphapo-2pass`` (the two-pass fused op,
``train.pair_schedule=two-pass``) and ``trl`` (CPOTrainer, full logits). TRL's Liger-Kernel path
(``use_liger_kernel``) exists for its DPO trainer only: CPOTrainer, the one with AlphaPO, has none (TRL
1.16), so no TRL+Liger row is measured here; ``benchmarks/fused_logps.py`` compares the losses
with Liger's directly.

    python benchmarks/train_throughput.py                  # tiny Llama (32k vocabulary), 2-core CPU sizes
    python benchmarks/train_throughput.py --steps 30 --hidden 512 --layers 8

Both trainers get the same model directory, tokenizer, pairs, batch size, learning rate, steps and
loss: AlphaPO (alpha 0.25, beta 2.5, gamma 0.25, no NLL term: TRL's ``loss_type="alphapo"``). Each runs
in a fresh subprocess. The clock and the peak-RSS counter start when the first optimiser step ends
(so data preparation, reference/initial log-prob passes and warm-up are excluded for both) and stop
at the last. tokens/s counts real (non-padding) tokens of the examples trained on, the same for both.
Memory: CUDA max-allocated growth, or CPU peak-RSS growth (VmHWM reset via /proc/self/clear_refs).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from fused_logps import PeakMemory  # noqa: E402

WORDS = [
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "it",
    "that",
    "for",
    "on",
    "with",
    "as",
    "was",
    "at",
    "by",
    "be",
    "this",
    "from",
    "or",
    "an",
    "are",
    "not",
    "but",
    "have",
    "one",
    "which",
    "you",
    "all",
    "were",
    "we",
    "when",
    "there",
    "can",
    "if",
    "more",
    "what",
    "out",
    "so",
    "up",
    "said",
    "about",
    "into",
    "than",
    "them",
    "only",
    "time",
    "could",
    "new",
    "some",
    "these",
    "two",
    "may",
    "first",
    "then",
    "do",
    "any",
    "like",
    "other",
    "my",
    "now",
    "over",
    "such",
    "our",
    "man",
    "me",
    "even",
    "most",
    "made",
    "after",
    "also",
    "did",
    "many",
    "before",
    "must",
    "through",
    "back",
    "years",
    "where",
    "much",
    "your",
    "way",
    "well",
    "down",
    "should",
]


def build_assets(root: Path, args) -> dict:
    """Tokenizer, tiny model and variable-length pairs (prompts 16-128 tokens, answers 16-256)."""
    from alphapo.models import TinyModelSpec, build_tiny_model, train_bpe_tokenizer

    rng = random.Random(0)

    def text(n):
        return " ".join(rng.choice(WORDS) for _ in range(n))

    pairs = [
        {
            "prompt": text(rng.randint(16, 128)),
            "chosen": " " + text(rng.randint(16, 256)),
            "rejected": " " + text(rng.randint(16, 256)),
        }
        for _ in range(args.pairs)
    ]
    tokenizer = train_bpe_tokenizer([text(50) for _ in range(2000)], vocab_size=1024)
    spec = TinyModelSpec(
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 8 // 3 // 16 * 16,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        vocab_size=args.vocab,
        max_position_embeddings=1024,
    )
    special = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    model = build_tiny_model(spec, special_tokens=special)
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    with open(root / "pairs.jsonl", "w") as f:
        f.writelines(json.dumps(p) + "\n" for p in pairs)
    return {
        "model": str(root / "model"),
        "pairs": str(root / "pairs.jsonl"),
        "params": sum(p.numel() for p in model.parameters()),
    }


class Meter:
    """Starts at the end of step 1: clock and peak memory; counts tokens of steps 2..N."""

    def __init__(self, device):
        self.device, self.tokens, self.start, self.mem = device, 0, None, None

    def first_step_done(self):
        self.mem = PeakMemory(self.device).__enter__()
        self.start = time.perf_counter()

    def finish(self) -> dict:
        elapsed = time.perf_counter() - self.start
        self.mem.__exit__(None, None, None)
        return {
            "tokens_per_s": self.tokens / elapsed,
            "seconds": elapsed,
            "tokens": self.tokens,
            "peak_growth_bytes": self.mem.growth,
        }


def run_alphapo(assets, args, meter) -> None:
    from alphapo.config import validate
    from alphapo.train import TrainConfig, train

    cfg = validate(
        TrainConfig,
        {
            "model": {"path": assets["model"]},
            "data": {
                "paths": [assets["pairs"]],
                "max_length": args.max_length,
                "max_prompt_length": min(128, args.max_length // 2),
            },
            "loss": {"name": "alphapo", "alpha": 0.25, "beta": 2.5, "gamma": 0.25},
            "optim": {"lr": 1e-5, "max_grad_norm": 1.0},
            "schedule": {"name": "constant", "warmup_steps": 0},
            "train": {
                "batch_size": args.batch_size,
                "max_steps": args.steps,
                "seed": 0,
                "pair_schedule": "two-pass" if args.worker == "alphapo-2pass" else "auto",
            },
            "logging": {"every": 10**6, "progress": "none"},
            "output_dir": str(Path(args.workdir) / "alphapo-run"),
        },
    )
    last = {"num_tokens": 0}

    def on_step(step, metrics, model):
        if step == 1:
            meter.first_step_done()
        else:
            meter.tokens += metrics["num_tokens"] - last["num_tokens"]
        last["num_tokens"] = metrics["num_tokens"]
        if step == args.steps:
            meter.result = meter.finish()

    train(cfg, on_step=on_step)


def run_trl(assets, args, meter) -> None:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(assets["model"], dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(assets["model"])
    data = datasets.load_dataset("json", data_files=assets["pairs"], split="train")
    config = CPOConfig(
        output_dir=str(Path(args.workdir) / "trl-run"),
        loss_type="alphapo",
        alpha=0.25,
        beta=2.5,
        simpo_gamma=0.25,
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=1e-5,
        lr_scheduler_type="constant",
        max_length=args.max_length,
        max_grad_norm=1.0,
        report_to=[],
        logging_steps=10**6,
        save_strategy="no",
        dataloader_num_workers=0,
        seed=0,
        use_cpu=True,
    )

    class Callback(TrainerCallback):
        def on_step_begin(self, _args, state, control, **kwargs):
            if state.global_step >= 1:  # count the real tokens of this step's batch
                meter.tokens += int(self.batch_tokens)

        def on_step_end(self, _args, state, control, **kwargs):
            if state.global_step == 1:
                meter.first_step_done()
            if state.global_step == args.steps:
                meter.result = meter.finish()

    callback = Callback()
    trainer = CPOTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer, callbacks=[callback])
    original = trainer.training_step

    def training_step(model, inputs, *rest, **kw):
        # TRL's chosen/rejected masks already cover the prompt (prompt + answer), like alphapo's rows
        callback.batch_tokens = int(inputs["chosen_attention_mask"].sum() + inputs["rejected_attention_mask"].sum())
        return original(model, inputs, *rest, **kw)

    trainer.training_step = training_step
    trainer.train()


def worker(args) -> None:
    import torch

    assets = json.loads(Path(args.assets).read_text())
    meter = Meter(torch.device("cpu"))
    (run_trl if args.worker == "trl" else run_alphapo)(assets, args, meter)
    print(json.dumps({"trainer": args.worker, **meter.result}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=8, help="pairs per step")
    p.add_argument("--pairs", type=int, default=256)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--max-length", type=int, default=384)
    p.add_argument("--rounds", type=int, default=1, help="alternate the two trainers this many times")
    p.add_argument("--json", default=None)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--assets", default=None, help=argparse.SUPPRESS)
    p.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    try:
        import trl  # noqa: F401

        trainers = ["alphapo", "alphapo-2pass", "trl"]
    except ImportError:
        print("trl is not installed (pip install 'alphapo[bench]'): measuring alphapo alone", file=sys.stderr)
        trainers = ["alphapo", "alphapo-2pass"]
    workdir = Path(tempfile.mkdtemp(prefix="alphapo-throughput-"))
    assets = build_assets(workdir, args)
    (workdir / "assets.json").write_text(json.dumps(assets))
    print(
        f"model: {assets['params'] / 1e6:.1f}M parameters (hidden {args.hidden}, {args.layers} layers, "
        f"vocabulary {args.vocab}); {args.pairs} pairs, batch {args.batch_size}, {args.steps} steps",
        file=sys.stderr,
    )
    results: dict[str, list[dict]] = {}
    failed: list[str] = []
    for round_ in range(args.rounds):
        for name in trainers:
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                name,
                "--assets",
                str(workdir / "assets.json"),
                "--workdir",
                str(workdir / name / f"round{round_}"),  # a finished run is never overwritten
            ] + [
                f"--{k.replace('_', '-')}={v}"
                for k, v in vars(args).items()
                if k in ("steps", "batch_size", "max_length") and v is not None
            ]
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + str(ROOT)},
            )
            if proc.returncode != 0:
                print(f"[fail] {name}:\n{proc.stderr[-3000:]}", file=sys.stderr)
                failed.append(name)
                continue
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            print(
                f"  {name:8s} {result['tokens_per_s']:9.0f} tok/s  {result['peak_growth_bytes'] / 2**20:8.1f} MiB",
                file=sys.stderr,
            )
            results.setdefault(name, []).append(result)
    rows = {}
    for name, runs in results.items():
        runs.sort(key=lambda r: r["tokens_per_s"])
        rows[name] = {**runs[len(runs) // 2], "peak_growth_bytes": max(r["peak_growth_bytes"] for r in runs)}
    head = (
        f"{'trainer':13} {'tokens/s':>10} {'peak MiB':>10} {'speed vs trl':>13} {'memory vs trl':>14} {'vs 2pass':>9}"
    )
    print(head)
    for name, r in rows.items():
        base, two = rows.get("trl"), rows.get("alphapo-2pass")
        speed = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x" if base else "-"
        memory = f"{r['peak_growth_bytes'] / base['peak_growth_bytes']:.2f}x" if base else "-"
        vs_two = f"{r['tokens_per_s'] / two['tokens_per_s']:.2f}x" if two else "-"
        print(
            f"{name:13} {r['tokens_per_s']:10.0f} {r['peak_growth_bytes'] / 2**20:10.1f} {speed:>13} {memory:>14} "
            f"{vs_two:>9}"
        )
    blob = json.dumps(
        {
            "config": {k: v for k, v in vars(args).items() if k not in ("worker", "assets", "workdir")},
            "params": assets["params"],
            "results": rows,
        },
        indent=1,
    )
    print(blob)
    if args.json:
        Path(args.json).write_text(blob)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
