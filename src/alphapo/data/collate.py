"""Batching: token lists -> padded tensors, and a deterministic length-grouped batch order.

Paired batches stack chosen rows above rejected rows (rows ``[0, B)`` chosen, ``[B, 2B)`` rejected:
the layout the fused op and the losses expect). Labels follow Hugging Face's convention: aligned
with ``input_ids``, ``-100`` on prompt tokens and padding. Padding is on the right, to the longest
sequence of the batch (optionally rounded up to a multiple, e.g. 8 for tensor cores).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

IGNORE_INDEX = -100


class Collator:
    """Pads a list of tokenised items into one batch dict of tensors.

    Items are dicts with ``index``, ``prompt_ids`` and either ``chosen_ids``/``rejected_ids`` (paired)
    or ``completion_ids`` (sft, unpaired; unpaired also carries ``label``). The batch holds
    ``input_ids``, ``attention_mask``, ``labels`` ([R, T] each; R = 2B for pairs), ``index`` [B],
    for unpaired data ``label`` [B] (bool), and for pairs with margins ``margin`` [B].
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not items:
            raise ValueError("cannot collate an empty batch")
        if "chosen_ids" in items[0]:
            rows = [(it["prompt_ids"], it["chosen_ids"]) for it in items]
            rows += [(it["prompt_ids"], it["rejected_ids"]) for it in items]
        else:
            rows = [(it["prompt_ids"], it["completion_ids"]) for it in items]
        batch = self.pad(rows)
        batch["index"] = torch.tensor([it["index"] for it in items], dtype=torch.long)
        if "label" in items[0]:
            batch["label"] = torch.tensor([bool(it["label"]) for it in items], dtype=torch.bool)
        if any("margin" in it for it in items):  # a file without the margin column: 0 (see DataConfig)
            batch["margin"] = torch.tensor([float(it.get("margin", 0.0)) for it in items], dtype=torch.float32)
        return batch

    def pad(self, rows: Sequence[tuple[Sequence[int], Sequence[int]]]) -> dict[str, torch.Tensor]:
        """(prompt ids, completion ids) per row -> right-padded input_ids, attention_mask, labels."""
        width = max(len(p) + len(c) for p, c in rows)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (prompt, completion) in enumerate(rows):
            n_prompt, n = len(prompt), len(prompt) + len(completion)
            input_ids[i, :n_prompt] = torch.as_tensor(prompt, dtype=torch.long)
            input_ids[i, n_prompt:n] = torch.as_tensor(completion, dtype=torch.long)
            labels[i, n_prompt:n] = input_ids[i, n_prompt:n]
            attention_mask[i, :n] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def length_grouped_batches(
    lengths: Sequence[int],
    batch_size: int,
    seed: int,
    epoch: int = 0,
    group_batches: int = 16,
    shuffle: bool = True,
    drop_last: bool = False,
) -> list[list[int]]:
    """The batches of one epoch, as lists of item indices, deterministic for ``(seed, epoch)``.

    With ``shuffle``: indices are shuffled, cut into groups of ``group_batches`` batches, each group
    sorted by length (longest first) so a batch holds similar lengths and pads little, and the order
    of the batches is shuffled again. Without: batches in index order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(lengths)
    if not shuffle:
        order = list(range(n))
    else:
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        perm = torch.randperm(n, generator=generator).tolist()
        span = batch_size * group_batches
        order = []
        for start in range(0, n, span):
            order += sorted(perm[start : start + span], key=lambda i: -lengths[i])
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    if shuffle and len(batches) > 1:
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch + 7)
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches
