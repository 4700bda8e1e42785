"""Benchmark: greedy generation on a real model in new tokens/s, against this machine's limits.

    python benchmarks/generation_throughput.py                            # SmolLM2-135M-Instruct, IFEval prompts
    python benchmarks/generation_throughput.py --batch-sizes 32 64 --prompts 128 --engines alphapo

Generates greedy answers to the first ``--prompts`` IFEval prompts (through the chat template, as
``alphapo eval --benchmark ifeval`` does) with ``alphapo.sample.generate.generate`` at each batch size,
with each engine: ``alphapo`` (its decoding loop: rows that ended leave the batch and the KV cache) and
``generate`` (transformers' ``model.generate``: finished rows are computed until the batch's last row
ends). Counts new tokens up to and including EOS (what the answers hold).

The limits, measured in the same run:
* **compute bound**: 2 x parameters FLOPs per new token at the fp32 GEMM rate of this machine
  (``torch.mm`` at 2048^3: the best the BLAS does), as tokens/s. The prompts go through the model too
  (2 x parameters FLOPs per prompt token, once), so beside the share of new tokens the run gives the
  share counting every token processed: the first is what the issue asks for, the second what the
  machine did;
* **memory traffic**: a decoding step reads every weight once for the whole batch and every row's KV
  cache (keys and values of all layers up to its length); at the measured copy bandwidth this gives a
  second bound per batch size, for the mean prompt + answer length of the run.
Each configuration runs in this process, one after another, after one warm-up batch.

Then one decoding step of the largest batch, every row at the run's mean context, is timed and
profiled: where a step's time goes (GEMMs, attention over the KV cache, the cache's growth by
concatenation, the rest), with the GEMM rate at the step's own shapes (M = batch rows): the measured
reason a step runs below the bounds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's alphapo, not an installed one


def gemm_rate(size: int = 2048, reps: int = 5) -> float:
    """fp32 FLOP/s of torch.mm at size^3 (the best of ``reps``)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(reps))
    return 2 * size**3 / best


def copy_bandwidth(mib: int = 512, reps: int = 5) -> float:
    """Bytes/s read (and as many written) by a large tensor copy (the best of ``reps``)."""
    src = torch.randn(mib * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = min(_timed(lambda: dst.copy_(src)) for _ in range(reps))
    return src.numel() * 4 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def kv_bytes_per_token(config) -> int:
    """fp32 bytes of keys and values one token keeps in the cache, over all layers."""
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * heads * head_dim * 4


def decode_step_profile(model, rows: int, context: int) -> dict:
    """Time one decoding step of ``rows`` rows over a ``context``-token KV cache and split it by
    operator class (torch.profiler); GEMM rates at the step's own shapes."""
    from transformers import DynamicCache

    import alphapo.sample.generate as gen

    cache_name = "cache" if gen._accepts(model, "cache") else "past_key_values"
    cache = DynamicCache(config=model.config)
    gen.preallocate(cache, context + 16)  # as the decoding loop holds it
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (rows, context))
    token = torch.randint(0, vocab, (rows, 1))
    mask = torch.ones(rows, context, dtype=torch.long)
    position = torch.full((rows, 1), context - 1)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask, use_cache=True, **{cache_name: cache})

        def step():  # each timing adds one position (context + 1 ... + 7)
            nonlocal mask, position
            mask = torch.cat([mask, mask[:, :1]], dim=1)
            position = position + 1
            model(input_ids=token, attention_mask=mask, position_ids=position, use_cache=True, **{cache_name: cache})

        step()
        seconds = sorted(_timed(step) for _ in range(5))[2]
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            step()
    groups = {
        "gemm": ("aten::mm", "aten::addmm", "aten::bmm"),
        "attention": ("scaled_dot_product",),
        "cache concat": ("aten::cat",),
    }
    totals = dict.fromkeys(groups, 0.0)
    everything = 0.0
    for event in prof.key_averages():
        everything += event.self_cpu_time_total
        for name, keys in groups.items():
            if any(event.key.startswith(k) or k in event.key for k in keys):
                totals[name] += event.self_cpu_time_total
                break
    shares = {name: t / everything for name, t in totals.items()}
    shares["rest"] = 1.0 - sum(shares.values())
    hidden, inter, vocab = model.config.hidden_size, model.config.intermediate_size, model.config.vocab_size
    rates = {}
    for k, n in ((hidden, inter), (inter, hidden), (hidden, hidden), (hidden, vocab)):
        a, b = torch.randn(rows, k), torch.randn(k, n)
        torch.mm(a, b)
        best = min(_timed(lambda a=a, b=b: torch.mm(a, b)) for _ in range(5))
        rates[f"{rows}x{k}x{n}"] = 2 * rows * k * n / best
    return {
        "rows": rows,
        "context": context,
        "seconds": seconds,
        "tokens_per_s": rows / seconds,
        "shares": shares,
        "gemm_flops_per_s": rates,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct", help="a name of alphapo models, a directory or .gguf")
    p.add_argument("--prompts", type=int, default=64, help="the first N IFEval prompts")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--engines", nargs="+", default=["alphapo", "generate"], choices=["alphapo", "generate"])
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import alphapo.sample.generate as gen
    from alphapo.eval.ifeval import load_prompts
    from alphapo.models.sources import resolve_model_source

    model_dir = resolve_model_source(args.model, "--model")
    model, tokenizer = gen.load_for_generation(model_dir, "benchmark")
    params = sum(p.numel() for p in model.parameters())
    prompts = [row["prompt"] for row in load_prompts()][: args.prompts]
    rate, bandwidth = gemm_rate(), copy_bandwidth()
    bound = rate / (2 * params)
    kv = kv_bytes_per_token(model.config)
    print(
        f"{params / 1e6:.1f}M parameters; GEMM {rate / 1e9:.0f} GFLOP/s -> compute bound {bound:.0f} new tokens/s; "
        f"copy bandwidth {bandwidth / 1e9:.1f} GB/s; KV cache {kv / 2**10:.0f} KiB per token; "
        f"{torch.get_num_threads()} threads",
        file=sys.stderr,
    )
    own = gen.own_decoding
    gen.generate(model, tokenizer, prompts[:4], k=1, temperature=0.0, max_new_tokens=16, batch_size=4)  # warm-up
    rows = []
    for batch_size in args.batch_sizes:
        for engine in args.engines:
            gen.own_decoding = own if engine == "alphapo" else (lambda _model: False)
            counts: list[int] = []
            prompt_tokens = [len(ids) for ids in gen.prompt_token_ids(tokenizer, prompts, "auto")]

            def on_batch(indices, texts, new_tokens, ended, counts=counts):
                counts.extend(n for per_prompt in new_tokens for n in per_prompt)

            start = time.perf_counter()
            gen.generate(
                model,
                tokenizer,
                prompts,
                k=1,
                temperature=0.0,
                max_new_tokens=args.max_new_tokens,
                batch_size=batch_size,
                on_batch=on_batch,
            )
            seconds = time.perf_counter() - start
            new = sum(counts)
            mean_context = sum(prompt_tokens) / len(prompt_tokens) + new / len(counts) / 2
            # one step of a full batch: every weight read once, each row's cache up to the mean context
            step_bytes = params * 4 + batch_size * mean_context * kv
            memory_bound = batch_size / (step_bytes / bandwidth)
            row = {
                "engine": engine,
                "batch_size": batch_size,
                "prompts": len(prompts),
                "new_tokens": new,
                "mean_new_tokens": new / len(counts),
                "seconds": seconds,
                "new_tokens_per_s": new / seconds,
                "share_of_compute_bound": new / seconds / bound,
                # the prompts' tokens go through the model too (prefill): every token processed, against the bound
                "prompt_tokens": sum(prompt_tokens),
                "share_of_compute_bound_with_prompts": (new + sum(prompt_tokens)) / seconds / bound,
                "memory_bound_tokens_per_s": memory_bound,
                "share_of_min_bound": new / seconds / min(bound, memory_bound),
            }
            rows.append(row)
            print(
                f"  {engine:8} batch {batch_size:3}: {row['new_tokens_per_s']:6.0f} new tokens/s "
                f"({row['share_of_compute_bound']:.0%} of compute bound; with the prompts' "
                f"{row['prompt_tokens']} tokens {row['share_of_compute_bound_with_prompts']:.0%}; "
                f"memory bound {memory_bound:.0f}), "
                f"{new} tokens in {seconds:.0f} s",
                file=sys.stderr,
            )
    gen.own_decoding = own
    largest = next(r for r in rows if r["batch_size"] == max(args.batch_sizes))
    context = round(sum(prompt_tokens) / len(prompt_tokens) + largest["mean_new_tokens"] / 2)
    step = decode_step_profile(model, max(args.batch_sizes), context)
    print(
        f"one decoding step, {step['rows']} rows at context {context}: {step['seconds'] * 1e3:.0f} ms "
        f"({step['tokens_per_s']:.0f} tokens/s with every row running): "
        + ", ".join(f"{name} {share:.0%}" for name, share in step["shares"].items())
        + "; GEMM at its shapes: "
        + ", ".join(f"{shape} {rate / 1e9:.0f}" for shape, rate in step["gemm_flops_per_s"].items())
        + " GFLOP/s",
        file=sys.stderr,
    )
    head = f"{'engine':9} {'batch':>5} {'new tok/s':>10} {'of compute bound':>17} {'with prompts':>13}"
    print(head + f" {'of min(compute, memory)':>24}")
    for r in rows:
        print(
            f"{r['engine']:9} {r['batch_size']:5} {r['new_tokens_per_s']:10.0f} {r['share_of_compute_bound']:17.0%} "
            f"{r['share_of_compute_bound_with_prompts']:13.0%} {r['share_of_min_bound']:24.0%}"
        )
    blob = json.dumps(
        {
            "model": model_dir,
            "params": params,
            "threads": torch.get_num_threads(),
            "gemm_flops_per_s": rate,
            "copy_bytes_per_s": bandwidth,
            "compute_bound_tokens_per_s": bound,
            "kv_bytes_per_token": kv,
            "max_new_tokens": args.max_new_tokens,
            "results": rows,
            "decode_step": step,
        },
        indent=1,
    )
    print(blob)
    if args.json:
        Path(args.json).write_text(blob)


if __name__ == "__main__":
    main()
