"""Precomputed per-sequence log-prob tables: reference log-probs and the starting policy's.

Training never holds a reference model: before the first step, each needed model runs once over the
dataset without gradients (in parallel across processes) and the table ``[N, 2]`` (chosen, rejected
log-prob sums; ``[N, 1]`` for SFT) is cached on disk under a fingerprint of the model's weights, the
tokenised data and the settings that change log-probs. The starting policy's table also gives the
``displacement/*`` metrics (current minus initial log-prob of the same examples).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch

from alphapo.data.collate import Collator
from alphapo.files import write_atomically
from alphapo.ops.model_logps import logits_sequence_logps, model_sequence_logps, share_prompts
from alphapo.progress import Progress

LOGPS_CACHE_VERSION = 1


def table_key(model_fp: str, data_key: str, settings: dict) -> str:
    blob = json.dumps({"v": LOGPS_CACHE_VERSION, "model": model_fp, "data": data_key, **settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def batch_logps(
    model,
    batch: dict[str, torch.Tensor],
    mode: str,
    chunk_size: int | None = None,
    grad_weights=None,
    share_prompt: torch.dtype | None = None,
):
    """(logps [R], n_tokens [R], mean_logits [R]) of a collated batch, fused or from full logits.
    ``share_prompt``: a paired batch's pairs run packed, each common prefix once
    (:func:`~alphapo.ops.model_logps.share_prompts` with this mask dtype; fused mode only)."""
    if mode == "fused":
        shared = None
        if share_prompt is not None:
            float_mask = None if share_prompt == torch.bool else share_prompt
            shared = share_prompts(batch["input_ids"], batch["attention_mask"], float_mask_dtype=float_mask)
        return model_sequence_logps(
            model,
            batch["input_ids"],
            batch["attention_mask"],
            batch["labels"],
            chunk_size=chunk_size,
            grad_weights=grad_weights,
            shared=shared,
        )
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    logps = logits_sequence_logps(logits, batch["labels"])
    mask = torch.cat([batch["labels"][:, 1:] != -100, torch.zeros_like(batch["labels"][:, :1], dtype=torch.bool)], 1)
    with torch.no_grad():
        mean_logits = (logits.float().mean(-1) * mask).sum(1) / mask.sum(1).clamp(min=1)
    return logps, mask.sum(1), mean_logits


@torch.no_grad()
def compute_table(
    model,
    dataset,
    collator: Collator,
    batch_size: int,
    accelerator,
    mode: str,
    label: str = "log-probs",
    rows: list[int] | None = None,
    share_prompt: torch.dtype | None = None,
) -> torch.Tensor:
    """[N, K] log-prob sums (K = 2 for pairs: chosen, rejected; 1 otherwise), every process's share
    computed locally and summed across processes. Progress (``label``) is shown on the main process.
    ``rows``: only these rows (the same list on every process); the others stay 0. ``share_prompt``:
    pairs run packed (:func:`batch_logps`; the trainer passes what it checked ``model`` takes)."""
    width = 2 if dataset.kind == "paired" else 1
    if width == 1 or mode != "fused":
        share_prompt = None
    table = torch.zeros(len(dataset), width, dtype=torch.float64, device=accelerator.device)
    lengths = dataset.lengths()
    order = sorted(range(len(dataset)) if rows is None else rows, key=lambda i: -lengths[i])  # less padding
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    was_training = model.training
    model.eval()
    mine = batches[accelerator.process_index :: accelerator.num_processes]
    # every process runs as many forward passes (a sharded model gathers its weights in each): a short
    # share ends with an uncounted pass
    passes = math.ceil(len(batches) / accelerator.num_processes)
    with Progress(label, len(mine), "batches", enabled=accelerator.is_main_process) as progress:
        for n in range(passes):
            batch_ids = mine[n] if n < len(mine) else batches[0]
            batch = {k: v.to(accelerator.device) for k, v in collator([dataset[i] for i in batch_ids]).items()}
            logps, _, _ = batch_logps(model, batch, mode, share_prompt=share_prompt)
            if n < len(mine):
                table[batch["index"]] = logps.double().view(width, -1).t()
                progress.advance()
    model.train(was_training)
    if accelerator.num_processes > 1:
        table = accelerator.reduce(table, reduction="sum")
    return table.cpu()


def cached_table(cache_dir: Path, key: str, compute, accelerator) -> torch.Tensor:
    """The table under ``key`` from ``cache_dir``, or ``compute()`` it and write it atomically."""
    path = cache_dir / f"logps-{key[:24]}.pt"
    if path.is_file():
        stored = torch.load(path, weights_only=True)
        if stored.get("key") == key:
            return stored["table"]
    table = compute()
    if accelerator.is_main_process:
        cache_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda tmp: torch.save({"key": key, "table": table}, tmp))
    accelerator.wait_for_everyone()
    return table
