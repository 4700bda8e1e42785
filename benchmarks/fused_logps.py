"""Benchmark: per-sequence log-probs + SimPO loss, forward and backward, side by side.

    python benchmarks/fused_logps.py                      # the default shapes, every variant
    python benchmarks/fused_logps.py --shapes 4,256,512,32000 --variants pair,liger,floor-6nhv --reps 5
    python benchmarks/fused_logps.py --shapes 4,256,576,49152 --rounds 3     # SmolLM2-135M's head

Each (shape, variant) runs in a fresh subprocess: inputs are built, the peak-RSS counter is reset
(CPU; ``torch.cuda.reset_peak_memory_stats`` on CUDA), one cold forward+backward measures the peak
memory growth, then ``--reps`` timed runs give the median time. Variants:

* ``naive``   materialised logits (``hidden @ W.T``), fp32 log-softmax, gather: the twin from the tests
* ``liger``   Liger-Kernel's ``LigerFusedLinearSimPOLoss`` (when installed; compiled, chunk = 1 pair)
* ``two-pass`` :func:`alphapo.ops.sequence_logps` (8*N*H*V FLOPs) + ``preference_loss("simpo")``
* ``pair``    :func:`alphapo.ops.fused_preference_loss` ("simpo"), schedule ``auto``: a chunk of pairs
  at a time, gradients formed in the forward pass (6*N*H*V), or two-pass where the chooser says so
  (column ``sched``); ``--budget-mb`` sets its logits budget (default: the op's)
* ``floor-8nhv`` only the four GEMMs of the two-pass schedule, on its own tiles
* ``floor-6nhv`` only the three GEMMs of the pair schedule, on its own chunks and token blocks

Memory floor (analytic): the gradient buffers every variant must return, hidden [N, H] and
weight [V, H] (fp32), where N = 2 * pairs * T. Prints a table (time ratios of medians, and of the
fastest runs as ``(best)``; ``sched``: the op's schedule, 1pass or 2pass), then one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks import their baselines from the tests

# the last: SmolLM2-135M-Instruct's head (H 576, V 49,152; its weight is the tied input embedding, which
# changes nothing here: the op returns the weight's gradient either way) at 4 pairs x 256 tokens
DEFAULT_SHAPES = ["4,256,512,32000", "2,1024,1024,32000", "1,2048,512,128256", "4,256,576,49152"]
VARIANTS = ["naive", "liger", "two-pass", "pair", "floor-8nhv", "floor-6nhv"]
SIMPO = {"beta": 2.5, "gamma": 0.25}


def _rss_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


class PeakMemory:
    """Peak memory growth of a region: CUDA max-allocated, or CPU peak RSS (VmHWM reset via clear_refs)."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets the peak resident set size (VmHWM) to the current one
            self.base = _rss_bytes("VmRSS:")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.growth = torch.cuda.max_memory_allocated() - self.base
        else:
            self.growth = _rss_bytes("VmHWM:") - self.base


def make_inputs(pairs, seq, hidden_size, vocab, dtype, device, prompt_fraction, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(2 * pairs, seq, hidden_size, generator=g).to(dtype=dtype, device=device)
    weight = (torch.randn(vocab, hidden_size, generator=g) * hidden_size**-0.5).to(dtype=dtype, device=device)
    labels = torch.randint(0, vocab, (2 * pairs, seq), generator=g).to(device)
    labels[:, : int(prompt_fraction * seq)] = -100
    return hidden.requires_grad_(), weight.requires_grad_(), labels


def simpo_of(logps, n_tokens, pairs):
    from alphapo.losses import preference_loss

    out = preference_loss("simpo", logps[:pairs], logps[pairs:], n_tokens[:pairs], n_tokens[pairs:], **SIMPO)
    return out.losses.mean()


def build_step(variant, hidden, weight, labels, pairs, chunk_size, budget):
    """A closure running one forward+backward of ``variant`` (gradients land in .grad), the tile
    or block shape it uses and its schedule."""
    from alphapo.ops import (
        choose_schedule,
        default_budget_bytes,
        fused_preference_loss,
        gradient_floor_bytes,
        pair_token_counts,
        sequence_logps,
        tile_budget_bytes,
        tile_shape,
    )

    n_labelled = int((labels != -100).sum())
    tokens, vblock = tile_shape(n_labelled, weight.shape[0], tile_budget_bytes(gradient_floor_bytes(hidden, weight)))
    tile, schedule = None, None
    if variant == "naive":
        from tests.ops.reference import naive_sequence_logps

        def step():
            logps, n = naive_sequence_logps(hidden, weight, labels)
            simpo_of(logps, n, pairs).backward()

    elif variant == "two-pass":
        tile, schedule = (tokens, vblock), "2pass"

        def step():
            logps, n = sequence_logps(hidden, weight, labels, chunk_size=chunk_size)
            simpo_of(logps, n, pairs).backward()

    elif variant == "pair":
        plan = choose_schedule(
            pair_token_counts(labels),
            weight.shape[0],
            default_budget_bytes(hidden.device) if budget is None else budget,
        )
        schedule = "pair" if plan.name == "pair" else "2pass"

        def step():
            fused_preference_loss(hidden, weight, labels, "simpo", budget_bytes=budget, **SIMPO).loss.backward()

    elif variant == "liger":
        from liger_kernel.chunked_loss import LigerFusedLinearSimPOLoss

        loss_fn = LigerFusedLinearSimPOLoss(compute_nll_loss=False, **SIMPO)

        def step():
            loss_fn(weight, hidden, labels)[0].backward()

    elif variant == "floor-8nhv":
        tile, schedule = (tokens, vblock), "2pass"
        step = _floor_8nhv(hidden, weight, labels, tokens, vblock)
    elif variant == "floor-6nhv":
        step, tile = _floor_6nhv(hidden, weight, labels, budget)
        schedule = "pair"
    else:
        raise ValueError(f"unknown variant {variant!r}")
    return step, tile, schedule


def _floor_8nhv(hidden, weight, labels, tokens, vblock):
    """The GEMMs of the two-pass schedule and nothing else, on its own tiles: vocabulary-major [v, c]
    logits into one reused buffer, W_b @ h^T (forward), again (recompute), p^T @ W_b accumulated per
    token block, and grad_W[b] += p @ h."""
    flat = hidden.detach().reshape(-1, hidden.shape[-1])
    pos = (labels.reshape(-1) != -100).nonzero().squeeze(1)
    w = weight.detach()

    def step():
        grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device)
        grad_h = torch.zeros_like(flat)
        buf = torch.empty(tokens * vblock, dtype=w.dtype, device=w.device)
        for t0 in range(0, len(pos), tokens):
            h = flat.index_select(0, pos[t0 : t0 + tokens])
            acc = torch.zeros_like(h)
            for v0 in range(0, w.shape[0], vblock):
                w_b = w[v0 : v0 + vblock]
                zt = buf[: w_b.shape[0] * h.shape[0]].view(w_b.shape[0], h.shape[0])
                torch.mm(w_b, h.t(), out=zt)  # forward logits
                torch.mm(w_b, h.t(), out=zt)  # recomputed in the backward pass
                acc.add_(torch.mm(zt.t(), w_b))
                grad_w[v0 : v0 + vblock].addmm_(zt, h)
            grad_h.index_copy_(0, pos[t0 : t0 + tokens], acc)
        hidden.grad, weight.grad = grad_h.reshape(hidden.shape), grad_w.to(w.dtype)

    return step


def _floor_6nhv(hidden, weight, labels, budget):
    """The GEMMs of the pair schedule and nothing else, on its own chunks and token blocks: each
    block's logits W @ h^T into the chunk's held buffer, then per block p^T @ W and grad_W += p @ h."""
    from alphapo.ops import choose_schedule, default_budget_bytes, pair_token_counts
    from alphapo.ops.pair_loss import _blocks

    pairs = labels.shape[0] // 2
    budget = default_budget_bytes(hidden.device) if budget is None else budget
    plan = choose_schedule(pair_token_counts(labels), weight.shape[0], budget, schedule="pair")
    flat = hidden.detach().reshape(-1, hidden.shape[-1])
    seq = labels.shape[1]
    w = weight.detach()
    chunks = []
    for a, b in plan.chunks:
        rows = [*range(a, b), *range(pairs + a, pairs + b)]
        pos = torch.cat([r * seq + (labels[r] != -100).nonzero().squeeze(1) for r in rows])
        chunks.append((pos, _blocks(len(pos))))
    held_tokens = max(len(pos) for pos, _ in chunks)

    def step():
        grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device)
        grad_h = torch.zeros_like(flat)
        held = torch.empty(held_tokens * w.shape[0], dtype=w.dtype, device=w.device)
        for pos, blocks in chunks:
            h = flat.index_select(0, pos)
            views = [held[s.start * w.shape[0] : s.stop * w.shape[0]].view(w.shape[0], -1) for s in blocks]
            for s, zt in zip(blocks, views, strict=True):
                torch.mm(w, h[s].t(), out=zt)
            for s, zt in zip(blocks, views, strict=True):
                grad_h.index_copy_(0, pos[s], torch.mm(zt.t(), w))
                grad_w.addmm_(zt, h[s])
        hidden.grad, weight.grad = grad_h.reshape(hidden.shape), grad_w.to(w.dtype)

    return step, (held_tokens, len(chunks))


def worker(args) -> dict:
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    pairs, seq, hidden_size, vocab = map(int, args.shape.split(","))
    hidden, weight, labels = make_inputs(pairs, seq, hidden_size, vocab, dtype, device, args.prompt_fraction)
    budget = None if args.budget_mb is None else int(args.budget_mb * 2**20)
    step, tile, schedule = build_step(args.worker, hidden, weight, labels, pairs, args.chunk_size, budget)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    if args.worker == "liger":  # torch.compile's first call compiles: keep it out of the memory peak
        step()
        hidden.grad = weight.grad = None
    with PeakMemory(device) as mem:
        step()
        sync()
    times = []
    for _ in range(args.reps):
        hidden.grad = weight.grad = None
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    n_tokens = 2 * pairs * seq
    floor_bytes = n_tokens * hidden_size * hidden.element_size() + vocab * hidden_size * 4
    return {
        "shape": args.shape,
        "variant": args.worker,
        "tile": tile,
        "schedule": schedule,
        "time_s": statistics.median(times),
        "times_s": times,
        "peak_growth_bytes": mem.growth,
        "memory_floor_bytes": floor_bytes,
        "labelled_tokens": int((labels != -100).sum()),
    }


def available(variant: str) -> bool:
    if variant != "liger":
        return True
    try:
        import liger_kernel.chunked_loss  # noqa: F401
    except Exception:
        return False
    return True


def run_all(args) -> tuple[list[dict], list[str]]:
    """Every (shape, variant) in a fresh process; with --rounds R the variants alternate R times and
    each variant's time is the median over all its runs (this machine's speed drifts between runs)."""
    variants = [v for v in args.variants.split(",") if v]
    runs: dict[tuple[str, str], list[dict]] = {}
    failed: list[str] = []
    for shape in args.shapes:
        for _round, variant in itertools.product(range(args.rounds), variants):
            if not available(variant):
                print(f"[skip] {variant}: liger-kernel is not installed", file=sys.stderr)
                continue
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                variant,
                "--shapes",
                shape,
                "--reps",
                str(args.reps),
                "--device",
                args.device,
                "--dtype",
                args.dtype,
                "--prompt-fraction",
                str(args.prompt_fraction),
            ]
            if args.chunk_size:
                cmd += ["--chunk-size", str(args.chunk_size)]
            if args.budget_mb:
                cmd += ["--budget-mb", str(args.budget_mb)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            if proc.returncode != 0:
                print(f"[fail] {shape} {variant}:\n{proc.stderr[-2000:]}", file=sys.stderr)
                failed.append(f"{shape} {variant}")
                continue
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            mib = result["peak_growth_bytes"] / 2**20
            print(f"  {shape:>20} {variant:<12} {result['time_s']:8.3f} s  {mib:9.1f} MiB", file=sys.stderr)
            runs.setdefault((shape, variant), []).append(result)
    results = []
    for group in runs.values():
        merged = dict(group[0])
        merged["times_s"] = [t for r in group for t in r["times_s"]]
        merged["time_s"] = statistics.median(merged["times_s"])
        merged["peak_growth_bytes"] = max(r["peak_growth_bytes"] for r in group)
        results.append(merged)
    return results, failed


def ratios(results: list[dict]) -> list[dict]:
    """Each variant against the GEMM floor of its schedule (6NHV for the single-pass methods, Liger
    and naive included), against Liger and against the two-pass op, side by side."""
    by = {(r["shape"], r["variant"]): r for r in results}
    rows = []
    for r in results:
        shape = r["shape"]
        floor = by.get((shape, "floor-8nhv" if r.get("schedule") == "2pass" else "floor-6nhv"))
        row = dict(r)
        row["time_vs_floor"] = r["time_s"] / floor["time_s"] if floor else None
        # fastest run against fastest run: the ratio least moved by a noisy neighbour on a shared host
        row["best_time_vs_floor"] = min(r["times_s"]) / min(floor["times_s"]) if floor else None
        for other in ("liger", "two-pass"):
            base = by.get((shape, other))
            row[f"time_vs_{other}"] = r["time_s"] / base["time_s"] if base else None
            row[f"memory_vs_{other}"] = r["peak_growth_bytes"] / base["peak_growth_bytes"] if base else None
        row["memory_vs_floor"] = r["peak_growth_bytes"] / r["memory_floor_bytes"]
        rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    head = (
        f"{'shape (pairs,T,H,V)':>20} {'variant':<11} {'sched':>5} {'time s':>8} {'x floor':>7} {'(best)':>6} "
        f"{'x liger':>7} {'x 2pass':>7} {'peak MiB':>9} {'mem x liger':>11} {'x mem floor':>11}"
    )
    print(head)
    print("-" * len(head))
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    for r in rows:
        print(
            f"{r['shape']:>20} {r['variant']:<11} {r.get('schedule') or '-':>5} {r['time_s']:8.3f} "
            f"{fmt(r['time_vs_floor']):>7} {fmt(r['best_time_vs_floor']):>6} {fmt(r['time_vs_liger']):>7} "
            f"{fmt(r['time_vs_two-pass']):>7} {r['peak_growth_bytes'] / 2**20:9.1f} {fmt(r['memory_vs_liger']):>11} "
            f"{fmt(r['memory_vs_floor']):>11}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES, help="pairs,T,H,V (rows = 2 * pairs)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--reps", type=int, default=3, help="timed runs per process")
    p.add_argument("--rounds", type=int, default=1, help="times each variant's process is run, alternating")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--chunk-size", type=int, default=None, help="two-pass token block (default: the op's auto size)")
    p.add_argument(
        "--budget-mb", type=float, default=None, help="the pair schedule's logits budget (default: the op's)"
    )
    p.add_argument("--prompt-fraction", type=float, default=0.0, help="leading share of each row labelled -100")
    p.add_argument("--json", default=None, help="also write the JSON here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.shape = args.shapes[0]
        print(json.dumps(worker(args)))
        return
    print(
        f"device {args.device}, dtype {args.dtype}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"prompt fraction {args.prompt_fraction}",
        file=sys.stderr,
    )
    results, failed = run_all(args)
    rows = ratios(results)
    print_table(rows)
    blob = json.dumps({"device": args.device, "dtype": args.dtype, "results": rows, "failed": failed}, indent=1)
    print(blob)
    if args.json:
        Path(args.json).write_text(blob)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
