"""A paired loss on per-sequence log-probs with its gradients formed in the forward pass (6*N*H*V).

:func:`sequence_logps` must recompute every logit in the backward pass (8*N*H*V FLOPs) because the
gradient reaching a sequence's log-prob, ``w = d loss / d logp``, is known only once the loss has
seen every sequence. A paired loss whose per-pair value depends only on that pair's scalars needs
far less: a pair's ``w`` is known as soon as its two log-probs are. This op therefore holds one chunk
of pairs' logits at a time, computes the chunk's log-probs, runs the caller's loss (and autograd) on
those scalars, and forms the chunk's gradients right away from the held softmax: three GEMMs per
token instead of four, and no logit outlives its chunk.

Call tree::

    fused_pair_loss(hidden, weight, labels, pair_loss, bias, ignore_index, softcap, separable,
                    budget_bytes, schedule)
    ├── choose_schedule            pair chunks within the budget, or two-pass (and why)
    ├── "pair": _PairLoss.apply
    │   └── forward  for each chunk of pairs (chosen rows i, rejected rows P + i):
    │                  gather its labelled hidden rows [c, H]
    │                  for each token block: logits W @ h^T into the held buffer [V, c_b],
    │                    target logits, max, exp in place, sum  -> lse
    │                  chunk log-probs (index_add) -> pair_loss + autograd on the scalars -> w [c]
    │                  for each token block: w p = held exp * (w / sum); accumulate_tile (2 GEMMs);
    │                    onehot_grads (the + w e_y part)
    │      backward  scales the formed gradients by the incoming scalar gradient
    └── "two-pass": sequence_logps (8NHV) then pair_loss on every pair, plain autograd

Rows: ``labels`` [2P, T]: rows ``[0, P)`` are chosen completions, ``[P, 2P)`` rejected ones, row
``i`` pairs with ``P + i`` (the collator's layout). Both schedules return the same values and
gradients; fp64 inputs give identical results to rounding.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import NamedTuple

import torch

from alphapo.errors import InputError
from alphapo.ops.sequence_logps import check_inputs, sequence_logps
from alphapo.ops.tiles import Grads, accumulate_tile, compute_dtype, finish, onehot_grads

PairLossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``pair_loss(chosen_logps, rejected_logps, chosen_n, rejected_n, pairs) -> losses``, each [k]:
the per-pair losses of the pairs at batch indices ``pairs`` [k] (int64). The op's loss is their SUM,
so a batch mean is the caller's ``1 / B`` factor inside the function."""

PAIR_BUDGET_FRACTION = 0.125
"""Default budget of the pair schedule's held logits: this fraction of the memory free on the device
when the op is called (CUDA: ``torch.cuda.mem_get_info``; CPU: ``MemAvailable``), at most 8 GiB."""

MIN_CHUNK_TOKENS = 256
"""Pairs are grouped into one chunk until it holds this many labelled tokens (short pairs would
otherwise make skinny GEMMs); a longer pair is a chunk on its own."""

MAX_BLOCK_TOKENS = 1024
"""A chunk's logits are computed in token blocks of at most this many tokens: on a 2-core EPYC with
MKL the three GEMMs ran at about the same rate from 1024 tokens up, and larger blocks only delay
the first gradient GEMM."""


class Schedule(NamedTuple):
    """What :func:`choose_schedule` decided: ``name`` ``"pair"`` or ``"two-pass"``, the pair chunks
    (``[start, stop)`` pair indices; empty for two-pass) and the reason, for logs and tests."""

    name: str
    chunks: list[tuple[int, int]]
    reason: str


class PairLoss(NamedTuple):
    """Output of :func:`fused_pair_loss`: the summed ``loss`` (scalar, differentiable), per-row
    ``logps`` [2P] and ``n_tokens`` [2P] (neither differentiable) and the ``schedule`` that ran."""

    loss: torch.Tensor
    logps: torch.Tensor
    n_tokens: torch.Tensor
    schedule: Schedule


def default_budget_bytes(device: torch.device) -> int:
    """:data:`PAIR_BUDGET_FRACTION` of the memory free on ``device`` now, at most 8 GiB."""
    free = None
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        try:
            with open("/proc/meminfo") as f:
                free = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
        except (OSError, StopIteration):
            pages = os.sysconf("SC_AVPHYS_PAGES") if hasattr(os, "sysconf") else None
            free = pages * os.sysconf("SC_PAGE_SIZE") if pages else 8 * 2**30
    return int(min(8 * 2**30, PAIR_BUDGET_FRACTION * free))


def pair_token_counts(labels: torch.Tensor, ignore_index: int = -100) -> list[int]:
    """[P] labelled tokens of each pair (chosen row ``i`` plus rejected row ``P + i``) of ``labels`` [2P, T]:
    what :func:`choose_schedule` plans with."""
    counts = (labels != ignore_index).sum(dim=1)
    pairs = labels.shape[0] // 2
    return (counts[:pairs] + counts[pairs:]).tolist()


def choose_schedule(
    pair_tokens: list[int],
    vocab: int,
    budget_bytes: int,
    *,
    element_bytes: int = 4,
    separable: bool = True,
    softcap: float | None = None,
    schedule: str = "auto",
) -> Schedule:
    """Pair chunks whose held logits (tokens x ``vocab`` x ``element_bytes``) fit ``budget_bytes``,
    or two-pass when the loss couples pairs (``separable`` False), a soft-cap is set (its derivative
    would need the raw logits, which the held buffer no longer has), or one pair does not fit.

    ``pair_tokens`` [P]: labelled tokens of each pair (chosen + rejected). ``schedule``: ``"auto"``,
    or ``"pair"`` / ``"two-pass"`` to force one (``"pair"`` still refuses what it cannot compute).
    """
    if schedule not in ("auto", "pair", "two-pass"):
        raise InputError(f"fused_pair_loss: schedule must be auto, pair or two-pass, got {schedule!r}")
    if schedule == "two-pass":
        return Schedule("two-pass", [], "requested")
    why_not = None
    if not separable:
        why_not = "the loss uses a statistic of the whole batch"
    elif softcap is not None:
        why_not = "logit soft-capping needs the raw logits in the gradient"
    elif pair_tokens and max(pair_tokens) * vocab * element_bytes > budget_bytes:
        need = max(pair_tokens) * vocab * element_bytes
        why_not = f"one pair's logits need {need / 2**20:.0f} MiB, over the {budget_bytes / 2**20:.0f} MiB budget"
    if why_not is not None:
        if schedule == "pair":
            raise InputError(f"fused_pair_loss: the pair schedule cannot run: {why_not}")
        return Schedule("two-pass", [], why_not)
    chunks: list[tuple[int, int]] = []
    start, tokens = 0, 0
    for i, n in enumerate(pair_tokens):
        if i > start and (tokens >= MIN_CHUNK_TOKENS or (tokens + n) * vocab * element_bytes > budget_bytes):
            chunks.append((start, i))
            start, tokens = i, 0
        tokens += n
    if pair_tokens:
        chunks.append((start, len(pair_tokens)))
    return Schedule("pair", chunks, "the largest chunk's logits fit the budget")


def fused_pair_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    pair_loss: PairLossFn,
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
    *,
    softcap: float | None = None,
    separable: bool = True,
    budget_bytes: int | None = None,
    schedule: str = "auto",
    chunk_size: int | None = None,
) -> PairLoss:
    """Sum over pairs of ``pair_loss`` on the per-sequence log-probs of ``labels``, fused with the LM head.

    Args:
        hidden: [2P, T, H] hidden states, aligned (``hidden[:, t]`` predicts ``labels[:, t]``);
            rows ``[0, P)`` chosen, ``[P, 2P)`` rejected. weight: [V, H] head; bias: optional [V].
        labels: [2P, T] token ids, ``ignore_index`` where not scored.
        pair_loss: see :data:`PairLossFn`; must be differentiable in the two log-prob arguments.
        softcap: Gemma-2 style logit soft-cap (runs two-pass).
        separable: False when a pair's loss depends on other pairs (a batch mean inside the loss,
            KTO's batch KL estimate): runs two-pass, where the loss sees every pair at once.
        budget_bytes: most bytes of logits held at once; None: :func:`default_budget_bytes`.
        schedule: ``"auto"`` (:func:`choose_schedule`), ``"pair"`` or ``"two-pass"``.
        chunk_size: the two-pass schedule's token block (:func:`sequence_logps`); the pair schedule
            sizes its own blocks (:data:`MAX_BLOCK_TOKENS`).
    """
    if hidden.dim() != 3 or hidden.shape[0] % 2:
        raise InputError(
            f"fused_pair_loss: hidden must be [2P, T, H] (chosen rows, then rejected), got {tuple(hidden.shape)}"
        )
    pairs = hidden.shape[0] // 2
    if labels.shape != hidden.shape[:2]:
        raise InputError(
            f"fused_pair_loss: labels must be [2P, T] = {tuple(hidden.shape[:2])}, got {tuple(labels.shape)}"
        )
    check_inputs(hidden, weight, labels, bias, ignore_index, None, None, softcap, None)
    pair_tokens = pair_token_counts(labels, ignore_index)
    dtype = compute_dtype(hidden.dtype)
    budget = default_budget_bytes(hidden.device) if budget_bytes is None else int(budget_bytes)
    plan = choose_schedule(
        pair_tokens,
        weight.shape[0],
        budget,
        element_bytes=torch.finfo(dtype).bits // 8,
        separable=separable,
        softcap=softcap,
        schedule=schedule,
    )
    if plan.name == "two-pass":
        logps, n_tokens = sequence_logps(hidden, weight, labels, bias, ignore_index, chunk_size, softcap=softcap)
        index = torch.arange(pairs, device=hidden.device)
        loss = pair_loss(logps[:pairs], logps[pairs:], n_tokens[:pairs], n_tokens[pairs:], index).sum()
        return PairLoss(loss, logps.detach(), n_tokens, plan)
    loss, logps, n_tokens = _PairLoss.apply(hidden, weight, bias, labels, ignore_index, pair_loss, plan.chunks)
    return PairLoss(loss, logps, n_tokens, plan)


class _PairLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, ignore_index, pair_loss, chunks):
        rows_total, seq, _ = hidden.shape
        pairs = rows_total // 2
        dtype = compute_dtype(hidden.dtype)
        hidden_flat = hidden.reshape(rows_total * seq, -1)
        flat_labels = labels.reshape(-1)
        grads = Grads(hidden_flat, weight, bias, dtype, ctx.needs_input_grad[:3])
        logps = torch.zeros(rows_total, dtype=dtype, device=hidden.device)
        n_tokens = (labels != ignore_index).sum(dim=1)
        total_loss = torch.zeros((), dtype=dtype, device=hidden.device)
        held = _Held(weight, hidden, max((_chunk_tokens(n_tokens, pairs, a, b) for a, b in chunks), default=0), dtype)
        for a, b in chunks:
            row_ids = torch.cat([torch.arange(a, b), torch.arange(pairs + a, pairs + b)]).to(hidden.device)
            pos = _labelled_positions(flat_labels, row_ids, seq, ignore_index)  # [c] flat positions
            y = flat_labels[pos]
            row_of = torch.div(pos, seq, rounding_mode="floor")  # [c] row of each token in the batch
            h = held.hidden_rows(hidden_flat, pos)
            blocks = _blocks(len(pos))
            totals = []
            target = torch.empty(len(pos), dtype=dtype, device=hidden.device)
            lse = torch.empty_like(target)
            for sl in blocks:
                e = held.logits(sl, h[sl], weight, bias)  # [V, c_b]
                target[sl] = e.gather(0, y[sl][None]).squeeze(0)
                peak = e.amax(dim=0)
                total = e.sub_(peak).exp_().sum(dim=0)  # the held tile becomes exp(z - peak)
                lse[sl] = peak + total.log()
                totals.append(total)
            logps.index_add_(0, row_of, target - lse)
            chunk_loss, w_rows = _loss_and_weights(pair_loss, logps, n_tokens, a, b, pairs)
            total_loss += chunk_loss
            w = w_rows[row_of]  # [c] d loss / d logp of each token's sequence
            for sl, total in zip(blocks, totals, strict=True):
                acc = held.accumulator(sl.stop - sl.start)  # [c_b, H]; also scratch for onehot_grads
                wp = held.view(sl).mul_((w[sl] / total)[None])  # w * softmax
                accumulate_tile(grads, wp, h[sl], None if grads.hidden is None else acc, 0, weight, sign=-1.0)
                onehot_grads(grads, pos[sl], y[sl], w[sl], h[sl], acc, weight, None)
        ctx.mark_non_differentiable(logps, n_tokens)
        ctx.grads = grads
        ctx.meta = (hidden.shape, weight.dtype, None if bias is None else bias.dtype)
        return total_loss, logps, n_tokens

    @staticmethod
    def backward(ctx, grad_loss, _grad_logps, _grad_n):
        grads, ctx.grads = ctx.grads, None
        if grads is None:
            raise RuntimeError("fused_pair_loss: the gradients were formed for one backward pass only")
        scale = float(grad_loss)
        for g in (grads.hidden, grads.weight, grads.bias):
            if g is not None and scale != 1.0:
                g.mul_(scale)
        shape, weight_dtype, bias_dtype = ctx.meta
        return *finish(grads, shape, weight_dtype, bias_dtype)[:3], None, None, None, None


def _loss_and_weights(pair_loss, logps, n_tokens, a, b, pairs):
    """(the chunk's summed loss, detached; [2P] d loss / d logp, zero outside the chunk)."""
    index = torch.arange(a, b, device=logps.device)
    with torch.enable_grad():
        chosen = logps[a:b].detach().requires_grad_()
        rejected = logps[pairs + a : pairs + b].detach().requires_grad_()
        losses = pair_loss(chosen, rejected, n_tokens[a:b], n_tokens[pairs + a : pairs + b], index)
        if losses.shape != (b - a,):
            raise InputError(
                f"fused_pair_loss: pair_loss must return one loss per pair [{b - a}], got {tuple(losses.shape)}"
            )
        loss = losses.sum()
        g_chosen, g_rejected = torch.autograd.grad(loss, (chosen, rejected), allow_unused=True)
    w = torch.zeros_like(logps)
    if g_chosen is not None:
        w[a:b] = g_chosen
    if g_rejected is not None:
        w[pairs + a : pairs + b] = g_rejected
    return loss.detach().to(logps.dtype), w


def _labelled_positions(flat_labels, row_ids, seq, ignore_index) -> torch.Tensor:
    """[c] flat positions of the labelled tokens of ``row_ids``, row by row."""
    offsets = (row_ids[:, None] * seq + torch.arange(seq, device=row_ids.device)).reshape(-1)
    return offsets[flat_labels[offsets] != ignore_index]


def _chunk_tokens(n_tokens, pairs, a, b) -> int:
    return int(n_tokens[a:b].sum() + n_tokens[pairs + a : pairs + b].sum())


def _blocks(count: int) -> list[slice]:
    """Equal token blocks of at most :data:`MAX_BLOCK_TOKENS`."""
    if count == 0:
        return []
    size = math.ceil(count / math.ceil(count / MAX_BLOCK_TOKENS))
    return [slice(s, min(s + size, count)) for s in range(0, count, size)]


class _Held:
    """The chunk's buffers, allocated once for the largest chunk: its logits ([V, c_b] per token
    block, side by side), a block buffer in the weight's dtype when that is not the compute dtype,
    the gathered hidden rows [c, H] and a [c_b, H] accumulator."""

    def __init__(self, weight, hidden, tokens, dtype):
        vocab, width, device = weight.shape[0], weight.shape[1], weight.device
        block = min(tokens, MAX_BLOCK_TOKENS)
        self.vocab = vocab
        self.flat = torch.empty(tokens * vocab, dtype=dtype, device=device)
        self.raw = None if weight.dtype == dtype else torch.empty(block * vocab, dtype=weight.dtype, device=device)
        self.rows = torch.empty(tokens, width, dtype=hidden.dtype, device=device)
        self.acc = torch.empty(block, width, dtype=dtype, device=device)

    def hidden_rows(self, hidden_flat, pos):
        return torch.index_select(hidden_flat, 0, pos, out=self.rows[: len(pos)])

    def view(self, sl: slice) -> torch.Tensor:
        return self.flat[sl.start * self.vocab : sl.stop * self.vocab].view(self.vocab, sl.stop - sl.start)

    def accumulator(self, rows: int) -> torch.Tensor:
        return self.acc[:rows].zero_()

    def logits(self, sl, h, weight, bias) -> torch.Tensor:
        out = self.view(sl)
        target = out if self.raw is None else self.raw[: out.numel()].view(out.shape)
        if bias is None:
            torch.mm(weight, h.t(), out=target)
        else:
            torch.addmm(bias[:, None], weight, h.t(), out=target)
        return out if self.raw is None else out.copy_(target)
