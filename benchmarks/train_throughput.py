"""Benchmark: training throughput and peak memory, ``alphapo train`` against TRL's CPOTrainer.

Trainers: ``alphapo`` (the fused pair schedule, gradients formed in the forward pass where a pair's
logits fit the budget: ``train.pair_schedule=auto``), ``alphapo-2pass`` (the two-pass fused op,
``train.pair_schedule=two-pass``), either with ``-inbwd`` (``alphapo-inbwd``, ``alphapo-2pass-inbwd``:
``optim.in_backward``, each parameter updated and its gradient freed during the backward pass; needs
``--max-grad-norm none``) and ``trl`` (CPOTrainer, full logits). TRL's Liger-Kernel path
(``use_liger_kernel``) exists for its DPO trainer only: CPOTrainer, the one with AlphaPO, has none (TRL
1.16), so no TRL+Liger row is measured here; ``benchmarks/fused_logps.py`` compares the losses
with Liger's directly.

    python benchmarks/train_throughput.py                  # tiny Llama (32k vocabulary), 2-core CPU sizes
    python benchmarks/train_throughput.py --steps 30 --hidden 512 --layers 8
    python benchmarks/train_throughput.py --model smollm2-135m-instruct --rounds 3   # the real model

Real-model mode (``--model``: a name of ``alphapo models``, a directory or a ``.gguf``): the first
``--pairs`` HH-RLHF pairs of ``--data`` (``../shared/data/hh-rlhf/``), converted to TRL's conversational
format (prompt turns; chosen and rejected as one assistant turn each), so both trainers render them
with the model's chat template; 4 pairs a step, max_length 256 (prompts cut to 128) unless set; every
trainer with and without gradient checkpointing (``--gradient-checkpointing off|on|both``; rows
``+gc``).

Both trainers get the same model directory, tokenizer, pairs, batch size, learning rate, steps and
loss: AlphaPO (alpha 0.25, beta 2.5, gamma 0.25, no NLL term: TRL's ``loss_type="alphapo"``) and
gradient clipping (``--max-grad-norm``, 1.0 by default; ``none`` turns it off for every trainer). Each runs
in a fresh subprocess. The clock and the peak-RSS counter start when the first optimiser step ends
(so data preparation, reference/initial log-prob passes and warm-up are excluded for both) and stop
at the end of step ``--steps``; then N - 1 steps are profiled for memory (below) and one more step
runs, so what a run does after its last step is outside every measure for both (alphapo's end-of-run
displacement measurement, a forward pass over the pairs its probe holds; TRL's end of training).
tokens/s counts real (non-padding) tokens of the examples trained on in steps 2..N, the same for both.
Memory: CUDA max-allocated growth, or CPU peak-RSS growth (VmHWM reset via /proc/self/clear_refs),
and beside it the whole process's peak RSS (CPU: the larger of the peaks before and after step 1), a
measure that moves less between runs than the growth does (the allocator's reuse of freed pages varies),
and the steps' tensor peak: the most bytes of tensors allocated during a step that are live at once,
the largest over steps N + 1 .. 2N - 1 (as many as the window, after it: the profiler slows them), from
torch.profiler's memory events (:class:`StepTensorPeak`): what a step itself needs, with neither the
allocator's behaviour nor what was live before the step in it.

Precision: fp32 for both. TRL's configs default to ``bf16=True`` (when fp16 is off), which on a CPU
without bf16 units runs emulated bf16 at a fraction of the speed: TRL gets ``bf16=False, fp16=False``
here, and alphapo trains in fp32 (``train.precision`` default), so the two do the same arithmetic.
With ``--rounds N`` the trainers alternate (a, b, c, a, b, c, ...) and each row reports the median
round and the spread (lowest-highest) of tokens/s and of both memory measures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HH = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"
TRAINERS = ["alphapo", "alphapo-2pass", "trl"]
ALL_TRAINERS = [*TRAINERS, "alphapo-inbwd", "alphapo-2pass-inbwd"]
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


def hh_to_conversational(row: dict) -> dict | None:
    """An HH-RLHF pair (two transcripts with a shared history) in TRL's conversational format, or None
    when the two transcripts do not share their turns before the last answer."""
    from alphapo.data.tokenize import transcript_turns

    chosen = transcript_turns(row["chosen"], "\n\nAssistant:")
    rejected = transcript_turns(row["rejected"], "\n\nAssistant:")
    if not chosen or not rejected or chosen[:-1] != rejected[:-1] or chosen[-1]["role"] != "assistant":
        return None
    if rejected[-1]["role"] != "assistant" or len(chosen) < 2:
        return None
    return {"prompt": chosen[:-1], "chosen": [chosen[-1]], "rejected": [rejected[-1]]}


def build_real_assets(root: Path, args) -> dict:
    """A real model (resolved as ``model.path`` is) and the first ``args.pairs`` convertible HH pairs."""
    import gzip

    import torch
    from transformers import AutoConfig, AutoTokenizer

    from alphapo.models.sources import resolve_model_source

    model_dir = resolve_model_source(args.model, "--model")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    opener = gzip.open if str(args.data).endswith(".gz") else open
    pairs, skipped, long_prompts = [], 0, 0
    with opener(args.data, "rt") as f:
        for line in f:
            pair = hh_to_conversational(json.loads(line))
            if pair is None:
                skipped += 1
                continue
            prompt = tokenizer.apply_chat_template(pair["prompt"], tokenize=False, add_generation_prompt=True)
            if len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) > prompt_length(args):
                long_prompts += 1
                continue
            pairs.append(pair)
            if len(pairs) == args.pairs:
                break
    with open(root / "pairs.jsonl", "w") as f:
        f.writelines(json.dumps(p) + "\n" for p in pairs)
    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        from transformers import AutoModelForCausalLM

        params = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    return {
        "model": model_dir,
        "pairs": str(root / "pairs.jsonl"),
        "params": params,
        "skipped": skipped,
        "long_prompts": long_prompts,
    }


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


class StepTensorPeak:
    """The most bytes of tensors allocated during one step that are live at once: torch.profiler's
    memory events (``Total Allocated`` counts what was allocated since the profiler started and is not
    freed yet), so the allocator's reuse of freed pages, which moves the RSS growth between runs, does
    not enter it. Each step is profiled on its own; taken on steps after the timed window (the
    profiler slows a step)."""

    def __init__(self, device):
        self.device_type = 1 if device.type == "cuda" else 0
        self.profiler = None
        self.peaks: list[int] = []

    def start(self) -> None:
        import torch

        self.profiler = torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True, record_shapes=False
        )
        self.profiler.__enter__()

    def stop(self) -> None:
        self.profiler.__exit__(None, None, None)
        with tempfile.TemporaryDirectory() as tmp:
            trace = Path(tmp) / "trace.json"
            self.profiler.export_chrome_trace(str(trace))
            events = json.loads(trace.read_text())["traceEvents"]
        self.profiler = None
        totals = [
            e["args"]["Total Allocated"]
            for e in events
            if e.get("name") == "[memory]" and e["args"].get("Device Type") == self.device_type
        ]
        self.peaks.append(max(totals, default=0))


class Meter:
    """Starts at the end of step 1: clock and peak memory; counts tokens of steps 2..N; then profiles
    as many steps again (N + 1 .. 2N - 1) for the steps' tensor peak (:class:`StepTensorPeak`)."""

    def __init__(self, device, steps: int):
        self.device, self.tokens, self.start, self.mem = device, 0, None, None
        self.steps = steps
        self.tensors = StepTensorPeak(device)

    def first_step_done(self):
        self.peak_before = process_peak_bytes(self.device)  # before PeakMemory resets the CPU's counter
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
            "process_peak_bytes": max(self.peak_before, process_peak_bytes(self.device)),
        }

    @staticmethod
    def total_steps(steps: int) -> int:
        """Steps a trainer runs: 1 (warm-up), 2..N timed, N-1 profiled, and one more whose end (a
        trainer's end-of-run work: alphapo's displacement measurement) stays outside both."""
        return 2 * steps

    def step_done(self, step: int) -> None:
        """Called at the end of every step (after counting its tokens)."""
        if step == 1:
            self.first_step_done()
            return
        if self.steps < step < 2 * self.steps:
            self.tensors.stop()
        if step == self.steps:
            self.result = self.finish()
        if self.steps <= step < 2 * self.steps - 1:
            self.tensors.start()
        if step == 2 * self.steps - 1:
            self.result["step_tensor_peak_bytes"] = max(self.tensors.peaks)
            self.result["step_tensor_peaks"] = self.tensors.peaks


def process_peak_bytes(device) -> int:
    """The process's peak memory so far: CUDA max-allocated, or the CPU's peak RSS (VmHWM)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated()
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def prompt_length(args) -> int:
    """alphapo's prompt cut (its default rule for a short max_length). TRL 1.16's CPOTrainer never cuts
    a prompt (only the answers, to ``max_length``), so the real-model mode keeps only pairs whose
    prompts fit this: then neither trainer cuts a prompt and both cut answers the same way."""
    return min(128, args.max_length // 2)


def alphapo_config(
    assets, args, *, gradient_checkpointing: bool, max_steps: int, output_dir, in_backward: bool = False, **train
):
    """The AlphaPO run both the throughput benchmark and ``profile_step.py`` time (``train``: more
    ``train.*`` settings; ``args.max_grad_norm``: None turns clipping off)."""
    from alphapo.config import validate
    from alphapo.train import TrainConfig

    return validate(
        TrainConfig,
        {
            "model": {"path": assets["model"], "gradient_checkpointing": gradient_checkpointing},
            "data": {
                "paths": [assets["pairs"]],
                "max_length": args.max_length,
                "max_prompt_length": prompt_length(args),
            },
            "loss": {"name": "alphapo", "alpha": 0.25, "beta": 2.5, "gamma": 0.25},
            "optim": {"lr": 1e-5, "max_grad_norm": args.max_grad_norm, "in_backward": in_backward},
            "schedule": {"name": "constant", "warmup_steps": 0},
            "train": {"batch_size": args.batch_size, "max_steps": max_steps, "seed": 0, **train},
            "logging": {"every": 10**6, "progress": "none"},
            "output_dir": str(output_dir),
        },
    )


def run_alphapo(assets, args, meter) -> None:
    from alphapo.train import train

    cfg = alphapo_config(
        assets,
        args,
        gradient_checkpointing=args.worker.endswith("+gc"),
        max_steps=Meter.total_steps(args.steps),
        output_dir=Path(args.workdir) / "alphapo-run",
        pair_schedule="two-pass" if args.worker.startswith("alphapo-2pass") else "auto",
        in_backward="-inbwd" in args.worker,
    )
    last = {"num_tokens": 0}

    def on_step(step, metrics, model):
        if 1 < step <= args.steps:
            meter.tokens += metrics["num_tokens"] - last["num_tokens"]
        last["num_tokens"] = metrics["num_tokens"]
        meter.step_done(step)

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
        max_steps=Meter.total_steps(args.steps),
        learning_rate=1e-5,
        lr_scheduler_type="constant",
        max_length=args.max_length,
        max_grad_norm=args.max_grad_norm or 0.0,  # transformers' Trainer: 0 does not clip
        bf16=False,  # TRL's default is bf16=True: emulated on this CPU, and not what alphapo computes
        fp16=False,
        gradient_checkpointing=args.worker.endswith("+gc"),  # TRL 1.x turns it on by default
        report_to=[],
        logging_steps=10**6,
        save_strategy="no",
        dataloader_num_workers=0,
        seed=0,
        use_cpu=True,
    )

    class Callback(TrainerCallback):
        def on_step_end(self, _args, state, control, **kwargs):
            if 1 < state.global_step <= args.steps:  # the real tokens of the step that just ended
                meter.tokens += int(self.batch_tokens)
            meter.step_done(state.global_step)

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
    meter = Meter(torch.device("cpu"), args.steps)
    (run_trl if args.worker.startswith("trl") else run_alphapo)(assets, args, meter)
    print(json.dumps({"trainer": args.worker, **meter.result}))


def spread(runs: list[dict], key: str) -> dict:
    values = sorted(r[key] for r in runs)
    return {"median": statistics.median(values), "low": values[0], "high": values[-1]}


MEASURES = ("tokens_per_s", "peak_growth_bytes", "process_peak_bytes", "step_tensor_peak_bytes")


def summarise(results: dict[str, list[dict]]) -> dict[str, dict]:
    """Per trainer: the median round (tokens/s, seconds, tokens) and each measure's median and spread."""
    rows = {}
    for name, runs in results.items():
        middle = sorted(runs, key=lambda r: r["tokens_per_s"])[len(runs) // 2]
        rows[name] = {
            **middle,
            "rounds": len(runs),
            **{key: spread(runs, key) for key in MEASURES},
        }
    return rows


def print_table(rows: dict[str, dict]) -> None:
    def mib(d):
        return f"{d['median'] / 2**20:7.0f} ({d['low'] / 2**20:.0f}-{d['high'] / 2**20:.0f})"

    print(
        f"{'trainer':17} {'tokens/s (low-high)':>22} {'peak growth MiB':>22} {'process peak MiB':>24} "
        f"{'step tensors MiB':>22} {'speed vs trl':>12} {'growth vs trl':>13} {'peak vs trl':>11} "
        f"{'tensors vs trl':>14}"
    )
    for name, r in rows.items():
        base = rows.get("trl+gc" if name.endswith("+gc") else "trl")

        def ratio(key, r=r, base=base):
            return f"{r[key]['median'] / base[key]['median']:.2f}x" if base else "-"

        t = r["tokens_per_s"]
        print(
            f"{name:17} {t['median']:7.0f} ({t['low']:.0f}-{t['high']:.0f}){'':>5} {mib(r['peak_growth_bytes']):>22} "
            f"{mib(r['process_peak_bytes']):>24} {mib(r['step_tensor_peak_bytes']):>22} {ratio('tokens_per_s'):>12} "
            f"{ratio('peak_growth_bytes'):>13} {ratio('process_peak_bytes'):>11} {ratio('step_tensor_peak_bytes'):>14}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="a real model (name, directory or .gguf); default: a tiny Llama")
    p.add_argument("--data", default=str(HH), help="HH-RLHF pairs for --model (jsonl or jsonl.gz)")
    p.add_argument("--steps", type=int, default=None, help="steps per run (default 12; 8 with --model)")
    p.add_argument("--batch-size", type=int, default=None, help="pairs per step (default 8; 4 with --model)")
    p.add_argument("--pairs", type=int, default=None, help="pairs in the data (default 256; 64 with --model)")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--max-length", type=int, default=None, help="default 384; 256 with --model")
    p.add_argument(
        "--gradient-checkpointing",
        choices=["off", "on", "both"],
        default=None,
        help="default: off for the tiny model, both with --model",
    )
    p.add_argument("--trainers", default=None, help=f"comma-separated subset of {','.join(ALL_TRAINERS)}")
    p.add_argument(
        "--max-grad-norm",
        type=lambda v: None if v.lower() == "none" else float(v),
        default=1.0,
        help="gradient clipping of every trainer (default 1.0); none: off (the -inbwd trainers need it)",
    )
    p.add_argument("--rounds", type=int, default=1, help="alternate the trainers this many times")
    p.add_argument("--json", default=None)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--assets", default=None, help=argparse.SUPPRESS)
    p.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    real = args.model is not None
    for key, tiny, real_value in (("steps", 12, 8), ("batch_size", 8, 4), ("pairs", 256, 64), ("max_length", 384, 256)):
        if getattr(args, key) is None:
            setattr(args, key, real_value if real else tiny)
    if args.gradient_checkpointing is None:
        args.gradient_checkpointing = "both" if real else "off"
    if args.worker:
        worker(args)
        return
    trainers = args.trainers.split(",") if args.trainers else ["alphapo", "trl"] if real else TRAINERS
    if "trl" in trainers:
        try:
            import trl  # noqa: F401
        except ImportError:
            print("trl is not installed (pip install 'alphapo[bench]'): measuring alphapo alone", file=sys.stderr)
            trainers = [t for t in trainers if t != "trl"]
    unknown = [t for t in trainers if t not in ALL_TRAINERS]
    if unknown:
        p.error(f"unknown trainer(s) {', '.join(unknown)}; choose from {', '.join(ALL_TRAINERS)}")
    if args.max_grad_norm is not None and any("-inbwd" in t for t in trainers):
        p.error("the -inbwd trainers update during the backward pass and cannot clip: add --max-grad-norm none")
    gc_settings = {"off": [""], "on": ["+gc"], "both": ["", "+gc"]}[args.gradient_checkpointing]
    configs = [t + g for g in gc_settings for t in trainers]
    workdir = Path(tempfile.mkdtemp(prefix="alphapo-throughput-"))
    assets = build_real_assets(workdir, args) if real else build_assets(workdir, args)
    (workdir / "assets.json").write_text(json.dumps(assets))
    shape = f"{args.model}" if real else f"hidden {args.hidden}, {args.layers} layers, vocabulary {args.vocab}"
    print(
        f"model: {assets['params'] / 1e6:.1f}M parameters ({shape}); {args.pairs} pairs"
        + (
            f" (HH-RLHF, conversational; skipped: {assets['skipped']} without a shared history, "
            f"{assets['long_prompts']} with prompts over {prompt_length(args)} tokens)"
            if real
            else ""
        )
        + f", batch {args.batch_size}, {args.steps} steps, max_length {args.max_length}, fp32, "
        f"max_grad_norm {args.max_grad_norm if args.max_grad_norm is not None else 'none (no clipping)'}, "
        f"{args.rounds} round(s) of {', '.join(configs)}",
        file=sys.stderr,
    )
    results: dict[str, list[dict]] = {}
    failed: list[str] = []
    for round_ in range(args.rounds):
        for name in configs:
            cmd = (
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    name,
                    "--assets",
                    str(workdir / "assets.json"),
                    "--workdir",
                    str(workdir / name / f"round{round_}"),
                ]
                + [
                    f"--{k.replace('_', '-')}={v}"
                    for k, v in vars(args).items()
                    if k in ("steps", "batch_size", "max_length") and v is not None
                ]
                + [f"--max-grad-norm={args.max_grad_norm}"]
            )
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + str(ROOT)},
            )
            shutil.rmtree(workdir / name / f"round{round_}", ignore_errors=True)  # its checkpoint: 1.5 GB
            if proc.returncode != 0:
                print(f"[fail] {name}:\n{proc.stderr[-3000:]}", file=sys.stderr)
                failed.append(name)
                continue
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            print(
                f"  round {round_ + 1} {name:17s} {result['tokens_per_s']:7.0f} tok/s  peak growth "
                f"{result['peak_growth_bytes'] / 2**20:7.0f} MiB  "
                f"process peak {result['process_peak_bytes'] / 2**20:7.0f} MiB  "
                f"step tensors {result['step_tensor_peak_bytes'] / 2**20:6.0f} MiB",
                file=sys.stderr,
            )
            results.setdefault(name, []).append(result)
    shutil.rmtree(workdir, ignore_errors=True)  # the model's copy and the pairs
    rows = summarise(results)
    print_table(rows)
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
