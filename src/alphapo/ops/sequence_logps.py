"""Per-sequence log-probs from hidden states and the LM head, without the (tokens x vocab) logits.

Preference losses need, per sequence, ``sum_t log softmax(h_t W^T + b)[y_t]``. Materialising
``model(...).logits`` costs B*T*V floats (plus an fp32 copy) and is what runs DPO-style training out
of memory. This op visits only the labelled tokens, in tiles of (vocabulary block x token block)
logits held in one reused buffer, and keeps O(N) statistics between forward and backward.

Call tree::

    sequence_logps(hidden, weight, labels, bias, ignore_index, chunk_size, vocab_chunk_size, softcap,
                   grad_weights)
    └── _SequenceLogps.apply
        ├── forward   for each token block:  for each vocabulary block:
        │               Tiles.logits (GEMM into the buffer) -> target logits, online log-sum-exp
        │             per-sequence sums (index_add); save lse [M]
        │             [single-pass mode (whole-vocabulary tiles): softmax -> tile_grads right away]
        └── backward  for each token block:  for each vocabulary block:
                        Tiles.logits (recompute) -> softmax -> tile_grads
                      then the one-hot terms of the block: onehot_grads

Gradients (w_t = incoming per-sequence gradient of token t's sequence, p = softmax, e_y = one-hot):
``dZ = w_t (e_y - p)``. The one-hot part is applied once per token as row gathers/scatters
(``W[y]``, ``index_add``), so the only tile-sized work besides the GEMMs is forming the softmax and
scaling it by ``w``. Each vocabulary block's rows of ``grad_weight`` receive one
GEMM per token block, in place. FLOPs: 8*M*H*V (forward GEMM, recompute, two gradient GEMMs);
single-pass mode needs 6*M*H*V when ``d loss / d logps`` is known in advance (linear losses such as
SFT's NLL) and promised through ``grad_weights``, and runs when its whole-vocabulary tiles are wide
enough to pay (:func:`single_pass_pays`).

Tiles: by default sized from a memory budget (:func:`tile_shape`), balanced so that the GEMMs stay
large (measured on a 2-core EPYC with MKL: [V, 80] tiles ran at ~60 GF/s, [2560, 1024] tiles at
~130). Logits are computed vocabulary-major (``W @ h^T``): BLAS then packs the small operand.

Precision: logits come out of the GEMM in the inputs' dtype (as a model's own head would produce
them) and everything after is fp32 (fp64 for fp64 inputs): log-sum-exp, per-sequence sums and the
weight/bias gradient accumulators. ``grad_weight`` is cast to the weight's dtype once at the end.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from alphapo.errors import InputError
from alphapo.ops.tiles import (
    Grads,
    Tiles,
    compute_dtype,
    finish,
    in_block,
    onehot_grads,
    softcap_factor,
    tile_grads,
)

CHUNK_BUDGET_FRACTION = 0.06
"""The tile buffer may add this fraction to the memory the op needs anyway (the gradient buffers for
hidden and weight), between 4 MiB and 1 GiB."""

SINGLE_PASS_MIN_TOKENS = 128
"""Single-pass mode runs only when a whole-vocabulary tile within the budget holds this many tokens
(or all of them). Narrower tiles make skinny GEMMs: measured on a 2-core EPYC with MKL, [32000, 512]
x [512, c] ran at 85 GF/s for c = 32 and 158 GF/s for c = 128, so 6NHV on 32-token tiles took longer
than 8NHV on the two-pass schedule's square tiles. Below it the op runs two-pass (same results)."""


class SequenceLogps(NamedTuple):
    """Output of :func:`sequence_logps`: ``logps`` [B] (fp32 or fp64) and ``n_tokens`` [B] (int64)."""

    logps: torch.Tensor
    n_tokens: torch.Tensor


def gradient_floor_bytes(hidden: torch.Tensor, weight: torch.Tensor) -> int:
    """Bytes of the gradients the op must return: hidden's (its dtype) and weight's (fp32 accumulator)."""
    return hidden.numel() * hidden.element_size() + weight.numel() * 4


def tile_budget_bytes(floor_bytes: int) -> int:
    """Default tile buffer size: :data:`CHUNK_BUDGET_FRACTION` of the floor, clamped to [4 MiB, 1 GiB]."""
    return int(min(2**30, max(4 * 2**20, CHUNK_BUDGET_FRACTION * floor_bytes)))


def tile_shape(
    n_tokens: int,
    vocab: int,
    budget_bytes: int,
    chunk_size: int | None = None,
    vocab_chunk_size: int | None = None,
    whole_vocab: bool = False,
) -> tuple[int, int]:
    """(token block, vocabulary block) for fp32 tiles of at most ``budget_bytes``.

    Explicit sizes win (an explicit ``chunk_size`` alone means whole-vocabulary tiles). Otherwise:
    whole-vocabulary tiles when at least 256 tokens fit beside the full vocabulary (or when
    ``whole_vocab``, as single-pass mode needs), else square-ish tiles of ``sqrt(budget)`` a side,
    with the tokens split into equal blocks.
    """
    n_tokens = max(n_tokens, 1)
    elements = max(1, budget_bytes // 4)
    if chunk_size is not None or vocab_chunk_size is not None:
        tokens = min(chunk_size or max(1, elements // (vocab_chunk_size or vocab)), n_tokens)
        return tokens, min(vocab_chunk_size or vocab, vocab)
    if whole_vocab or elements // vocab >= min(256, n_tokens):
        tokens = max(1, elements // vocab)
        if tokens >= 32:
            tokens -= tokens % 16  # GEMM-friendly multiples
        return min(tokens, n_tokens), vocab
    blocks = math.ceil(n_tokens / max(1, math.isqrt(elements)))
    tokens = math.ceil(n_tokens / blocks)
    return tokens, min(vocab, max(1, elements // tokens))


def single_pass_pays(
    n_tokens: int, vocab: int, budget_bytes: int, chunk_size: int | None = None, vocab_chunk_size: int | None = None
) -> bool:
    """Whether a caller's ``grad_weights`` are used (single-pass, 6NHV) or ignored (two-pass, 8NHV).

    Explicit tile sizes are the caller's choice and always honoured; otherwise single-pass needs
    whole-vocabulary tiles of at least :data:`SINGLE_PASS_MIN_TOKENS` tokens within the budget.
    """
    if chunk_size is not None or vocab_chunk_size is not None:
        return True
    tokens, _ = tile_shape(n_tokens, vocab, budget_bytes, whole_vocab=True)
    return tokens >= min(SINGLE_PASS_MIN_TOKENS, max(n_tokens, 1))


class _SequenceLogps(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, ignore_index, chunk_size, vocab_chunk_size, softcap, grad_weights):
        batch, seq, _ = hidden.shape
        vocab = weight.shape[0]
        dtype = compute_dtype(hidden.dtype)
        hidden_flat = hidden.reshape(batch * seq, -1)
        pos = (labels.reshape(-1) != ignore_index).nonzero().squeeze(1)  # [M] labelled positions
        y = labels.reshape(-1)[pos]
        rows = torch.div(pos, seq, rounding_mode="floor")  # [M] sequence of each labelled token
        budget = tile_budget_bytes(gradient_floor_bytes(hidden, weight))
        single_pass = grad_weights is not None and single_pass_pays(
            len(pos), vocab, budget, chunk_size, vocab_chunk_size
        )
        tokens, vblock = tile_shape(len(pos), vocab, budget, chunk_size, vocab_chunk_size, whole_vocab=single_pass)
        if single_pass and vblock < vocab:
            raise InputError("sequence_logps: single-pass mode (grad_weights) needs whole-vocabulary tiles")
        tiles = Tiles(weight, min(tokens, max(len(pos), 1)), vblock, dtype)
        lse = torch.empty(len(pos), dtype=dtype, device=hidden.device)
        target = torch.empty_like(lse)
        if single_pass:
            token_w = grad_weights.to(dtype)[rows]
            grads = Grads(hidden_flat, weight, bias, dtype, ctx.needs_input_grad[:3])
        for t0 in range(0, len(pos), tokens):
            sl = slice(t0, t0 + tokens)
            h, y_c = tiles.hidden_rows(hidden_flat, pos[sl]), y[sl]
            peak = torch.full((h.shape[0],), -math.inf, dtype=dtype, device=h.device)
            total = torch.zeros_like(peak)
            for v0 in range(0, vocab, vblock):
                zt = tiles.logits(
                    h, weight[v0 : v0 + vblock], None if bias is None else bias[v0 : v0 + vblock], softcap
                )
                cols, in_rows = in_block(y_c, v0, v0 + zt.shape[0])
                target[t0 + cols] = zt[in_rows, cols]
                cap_factor = softcap_factor(zt, softcap) if single_pass else None
                # online log-sum-exp over the vocabulary blocks (zt becomes exp(zt - new peak))
                new_peak = torch.maximum(peak, zt.amax(dim=0))
                total.mul_(torch.exp(peak - new_peak)).add_(zt.sub_(new_peak).exp_().sum(dim=0))
                peak = new_peak
                if single_pass:  # whole vocabulary: zt / total is the softmax
                    w_c = token_w[sl]
                    acc = tiles.accumulator(h.shape[0])
                    tile_grads(grads, zt.div_(total), h, w_c, acc, v0, weight, cap_factor, y_c)
                    onehot_grads(grads, pos[sl], y_c, w_c, h, acc, weight, softcap)
                del zt, cap_factor
            lse[sl] = peak + total.log()
        logps = torch.zeros(batch, dtype=dtype, device=hidden.device).index_add_(0, rows, target - lse)
        n_tokens = torch.bincount(rows, minlength=batch)
        ctx.mark_non_differentiable(n_tokens)
        ctx.meta = (hidden.shape, tokens, vblock, softcap, dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.single_pass = single_pass
        if single_pass:
            ctx.save_for_backward(grad_weights)
            ctx.grads = grads
        else:
            ctx.save_for_backward(hidden, weight, bias, pos, y, rows, lse)
            # The op ends the forward and starts the backward: keeping its buffer in between costs no
            # peak memory and saves a second allocation. It is freed with the graph.
            ctx.tiles = tiles
        return logps, n_tokens

    @staticmethod
    def backward(ctx, grad_logps, _grad_n_tokens):
        shape, tokens, vblock, softcap, dtype, weight_dtype, bias_dtype = ctx.meta
        if ctx.single_pass:
            (promised,) = ctx.saved_tensors
            grads, ctx.grads = ctx.grads, None
            # The gradients were formed for `promised`; a uniform rescaling (gradient accumulation,
            # loss scaling) is applied here. Anything else would need the softmax, which was not kept.
            scale = _uniform_scale(grad_logps, promised)
            for g in (grads.hidden, grads.weight, grads.bias):
                if g is not None and scale != 1.0:
                    g.mul_(scale)
            return finish(grads, shape, weight_dtype, bias_dtype)
        hidden, weight, bias, pos, y, rows, lse = ctx.saved_tensors
        tiles = ctx.tiles  # kept on ctx: the graph may be back-propagated again (retain_graph)
        hidden_flat = hidden.reshape(shape[0] * shape[1], -1)
        grads = Grads(hidden_flat, weight, bias, dtype, ctx.needs_input_grad[:3])
        token_w = grad_logps.to(dtype)[rows]
        for t0 in range(0, len(pos), tokens):
            sl = slice(t0, t0 + tokens)
            h, y_c, w_c = tiles.hidden_rows(hidden_flat, pos[sl]), y[sl], token_w[sl]
            acc = tiles.accumulator(h.shape[0])
            for v0 in range(0, weight.shape[0], vblock):
                w_block = weight[v0 : v0 + vblock]
                zt = tiles.logits(h, w_block, None if bias is None else bias[v0 : v0 + vblock], softcap)
                cap_factor = softcap_factor(zt, softcap)
                pt = zt.sub_(lse[sl]).exp_()  # softmax of the tile
                tile_grads(grads, pt, h, w_c, acc, v0, w_block, cap_factor, y_c)
                del zt, pt, cap_factor
            onehot_grads(grads, pos[sl], y_c, w_c, h, acc, weight, softcap)
        return finish(grads, shape, weight_dtype, bias_dtype)


def _uniform_scale(actual: torch.Tensor, promised: torch.Tensor) -> float:
    actual, promised = actual.double(), promised.double()
    nonzero = promised != 0
    if not torch.equal(actual == 0, ~nonzero):
        raise RuntimeError(_MISMATCH)
    if not nonzero.any():
        return 0.0
    ratios = actual[nonzero] / promised[nonzero]
    if not torch.allclose(ratios, ratios[0].expand_as(ratios), rtol=1e-6, atol=0):
        raise RuntimeError(_MISMATCH)
    return float(ratios[0])


_MISMATCH = (
    "sequence_logps(grad_weights=...): the gradient reaching the log-probs is not a uniform multiple of "
    "grad_weights, so the gradients formed in the forward pass do not apply. Pass grad_weights only when "
    "d loss / d logps is known in advance (e.g. an NLL), or call without it."
)


def sequence_logps(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
    chunk_size: int | None = None,
    *,
    vocab_chunk_size: int | None = None,
    softcap: float | None = None,
    grad_weights: torch.Tensor | None = None,
) -> SequenceLogps:
    """Sum of ``log softmax(hidden @ weight.T + bias)`` at ``labels`` per sequence.

    Args:
        hidden: [B, T, H] hidden states, already aligned: ``hidden[:, t]`` predicts ``labels[:, t]``.
        weight: [V, H] LM head. bias: optional [V].
        labels: [B, T] int64 token ids; positions equal to ``ignore_index`` are skipped.
        chunk_size: labelled tokens per tile; vocab_chunk_size: vocabulary rows per tile. Both None
            (default): sized from a memory budget (:func:`tile_shape`); ``chunk_size`` alone means
            whole-vocabulary tiles.
        softcap: logit soft-cap ``c * tanh(z / c)`` applied before the softmax (Gemma 2 style).
        grad_weights: single-pass mode. [B] values of ``d loss / d logps`` that the caller's loss will
            produce (up to one uniform factor, e.g. gradient accumulation); gradients are formed in
            the forward pass (6NHV instead of 8NHV FLOPs) and the backward only rescales them.
            Ignored (two-pass, same results) when the memory budget's whole-vocabulary tiles would
            be too narrow to pay (:func:`single_pass_pays`), unless tile sizes are given.

    Returns:
        ``SequenceLogps(logps [B], n_tokens [B])``; a row with no labelled token gets logp 0, n 0.
    """
    check_inputs(hidden, weight, labels, bias, ignore_index, chunk_size, vocab_chunk_size, softcap, grad_weights)
    out = _SequenceLogps.apply(
        hidden, weight, bias, labels, ignore_index, chunk_size, vocab_chunk_size, softcap, grad_weights
    )
    return SequenceLogps(*out)


def check_inputs(hidden, weight, labels, bias, ignore_index, chunk_size, vocab_chunk_size, softcap, grad_weights):
    if hidden.dim() != 3:
        raise InputError(f"sequence_logps: hidden must be [B, T, H], got shape {tuple(hidden.shape)}")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[2]:
        raise InputError(
            f"sequence_logps: weight must be [V, H] with H = {hidden.shape[2]}, got shape {tuple(weight.shape)}"
        )
    if labels.shape != hidden.shape[:2]:
        raise InputError(
            f"sequence_logps: labels must be [B, T] = {tuple(hidden.shape[:2])}, got {tuple(labels.shape)}"
        )
    if labels.dtype not in (torch.int64, torch.int32):
        raise InputError(f"sequence_logps: labels must be integer token ids, got {labels.dtype}")
    if bias is not None and bias.shape != weight.shape[:1]:
        raise InputError(f"sequence_logps: bias must be [V] = [{weight.shape[0]}], got {tuple(bias.shape)}")
    if hidden.dtype != weight.dtype or (bias is not None and bias.dtype != weight.dtype):
        raise InputError(
            f"sequence_logps: hidden ({hidden.dtype}), weight ({weight.dtype}) and bias must share a dtype"
        )
    for name, size in (("chunk_size", chunk_size), ("vocab_chunk_size", vocab_chunk_size)):
        if size is not None and size < 1:
            raise InputError(f"sequence_logps: {name} must be >= 1, got {size}")
    if softcap is not None and not softcap > 0:
        raise InputError(f"sequence_logps: softcap must be > 0, got {softcap}")
    if grad_weights is not None and grad_weights.shape != hidden.shape[:1]:
        raise InputError(f"sequence_logps: grad_weights must be [B], got {tuple(grad_weights.shape)}")
    labelled = labels[labels != ignore_index]
    if labelled.numel() and (int(labelled.min()) < 0 or int(labelled.max()) >= weight.shape[0]):
        bad = labelled[(labelled < 0) | (labelled >= weight.shape[0])][0]
        raise InputError(
            f"sequence_logps: label {int(bad)} is outside the vocabulary [0, {weight.shape[0]}) "
            f"and is not ignore_index ({ignore_index})"
        )


@torch.no_grad()
def sequence_mean_logits(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
) -> torch.Tensor:
    """[B] mean logit over the vocabulary and the labelled tokens of each sequence (no V-sized work).

    A token's logits sum to ``h . sum_v W_v + sum_v b_v``, so the mean over the vocabulary is one dot
    product per token. This is TRL's ``logits/chosen|rejected`` metric (raw logits, before any
    soft-cap). Rows with no labelled token give 0.
    """
    dtype = compute_dtype(hidden.dtype)
    mask = (labels != ignore_index).to(dtype)  # [B, T]
    row_sum = weight.to(dtype).sum(dim=0)  # [H]
    per_token = hidden.to(dtype) @ row_sum  # [B, T]
    if bias is not None:
        per_token = per_token + bias.to(dtype).sum()
    per_token = per_token / weight.shape[0]
    return (per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
