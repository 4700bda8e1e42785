"""Tile buffers and gradient steps shared by the fused ops (:mod:`sequence_logps`, :mod:`pair_loss`).

Notation: a tile is ``[v, c]`` logits, vocabulary-major (``W_b @ h^T``), for a block of ``v``
vocabulary rows and ``c`` labelled tokens; ``w`` [c] is each token's ``d loss / d logp`` of its
sequence; ``dZ = w (e_y - p)``. The one-hot part is applied once per token block as row
gathers/scatters (:func:`onehot_grads`), so a tile's own work is forming ``w p`` and two GEMMs.
"""

from __future__ import annotations

import torch


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


class Tiles:
    """Buffers reused by every block: the tile (plus one in the weight's dtype when that is not the
    compute dtype), the token block's [c, H] accumulator and, only when a block's positions are not
    contiguous, a [c, H] buffer for its gathered hidden rows. Allocating them per block fragments the
    CPU heap: measured, the resident set grew by one tile every few tiles."""

    def __init__(self, weight: torch.Tensor, tokens: int, vocab_block: int, dtype: torch.dtype):
        size, device = tokens * vocab_block, weight.device
        self.flat = torch.empty(size, dtype=dtype, device=device)
        self.raw = None if weight.dtype == dtype else torch.empty(size, dtype=weight.dtype, device=device)
        self.acc = torch.empty(tokens, weight.shape[1], dtype=dtype, device=device)
        self.rows: torch.Tensor | None = None

    def hidden_rows(self, hidden_flat: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """[c, H] rows of the flattened hidden states at ``positions``: a view when they are contiguous
        (no prompt or padding inside the block), else gathered into a reused buffer."""
        first, count = int(positions[0]), len(positions)
        if int(positions[-1]) - first + 1 == count:
            return hidden_flat[first : first + count]
        if self.rows is None:
            self.rows = torch.empty(self.acc.shape, dtype=hidden_flat.dtype, device=hidden_flat.device)
        return torch.index_select(hidden_flat, 0, positions, out=self.rows[:count])

    def accumulator(self, rows: int) -> torch.Tensor:
        return self.acc[:rows].zero_()

    def logits(self, h, weight_block, bias_block, softcap) -> torch.Tensor:
        """[v, c] logits (vocabulary-major, compute dtype) of the hidden rows ``h`` [c, H]."""
        rows, cols = weight_block.shape[0], h.shape[0]
        out = (self.flat if self.raw is None else self.raw)[: rows * cols].view(rows, cols)
        if bias_block is None:
            torch.mm(weight_block, h.t(), out=out)
        else:
            torch.addmm(bias_block[:, None], weight_block, h.t(), out=out)
        if self.raw is not None:
            out = self.flat[: rows * cols].view(rows, cols).copy_(out)
        if softcap is not None:
            torch.tanh_(out.div_(softcap)).mul_(softcap)
        return out


class Grads:
    """Accumulators: hidden gradient buffer (its dtype), weight/bias gradients (fp32 or fp64)."""

    def __init__(self, hidden_flat, weight, bias, dtype, needs):
        self.hidden = torch.zeros_like(hidden_flat) if needs[0] else None
        self.weight = torch.zeros(weight.shape, dtype=dtype, device=weight.device) if needs[1] else None
        self.bias = torch.zeros(bias.shape, dtype=dtype, device=bias.device) if needs[2] else None


def in_block(y: torch.Tensor, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(columns of the tokens whose label is in [start, stop), those labels' rows in the block)."""
    cols = ((y >= start) & (y < stop)).nonzero().squeeze(1)
    return cols, y[cols] - start


def tile_grads(grads, pt, h, w, acc, start, weight_block, cap_factor, y) -> None:
    """Accumulate one tile's share of the gradients; ``pt`` [v, c] is the tile's softmax (overwritten).

    Without soft-cap only the ``-w p`` part of dZ is applied here: the tile is scaled by ``w`` in place
    and ``acc`` [c, H] collects ``(w p)^T W``. With a soft-cap dZ is formed explicitly (one-hot
    included: it no longer factors) and ``acc`` collects ``dZ^T W``.
    """
    if cap_factor is not None:
        dzt = pt.mul_(-w)
        cols, rows = in_block(y, start, start + pt.shape[0])
        dzt[rows, cols] += w[cols]
        accumulate_tile(grads, dzt.mul_(cap_factor), h, acc, start, weight_block, sign=1.0)
    else:
        accumulate_tile(grads, pt.mul_(w), h, acc, start, weight_block, sign=-1.0)


def accumulate_tile(grads, dzt, h, acc, start, weight_block, sign) -> None:
    """The tile's GEMMs: ``acc += dzt^T W_b`` [c, H] and ``grad_W[b] += sign dzt h``, plus the bias
    gradient. ``dzt`` [v, c] is dZ^T (``sign`` 1) or its softmax part ``w p`` (``sign`` -1)."""
    dtype = dzt.dtype
    stop = start + dzt.shape[0]
    if acc is not None:
        if weight_block.dtype == dtype:
            acc.addmm_(dzt.t(), weight_block)
        else:
            acc.add_(torch.mm(dzt.t().to(weight_block.dtype), weight_block).to(dtype))
    if grads.weight is not None:
        grads.weight[start:stop].addmm_(dzt, h.to(dtype), alpha=sign)
    if grads.bias is not None:
        grads.bias[start:stop].add_(dzt.sum(dim=1), alpha=sign)


GATHER_ROWS = 256  # rows per sub-block when gathering W[y]: bounds that temporary to 256 x H


def onehot_grads(grads, pos, y, w, h, acc, weight, softcap) -> None:
    """Finish a token block: write its hidden-gradient rows and add the ``+w e_y`` part of dZ
    (absent with soft-cap: already in the tiles). Reuses ``acc`` [c, H] as scratch."""
    if softcap is not None:
        if grads.hidden is not None:
            grads.hidden.index_copy_(0, pos, acc.to(grads.hidden.dtype))
        return
    if grads.hidden is not None:
        # grad_h = w W[y] - (w p)^T W
        acc.neg_()
        for r in range(0, len(y), GATHER_ROWS):
            sub = slice(r, r + GATHER_ROWS)
            acc[sub].addcmul_(weight[y[sub]].to(acc.dtype), w[sub, None])
        grads.hidden.index_copy_(0, pos, acc.to(grads.hidden.dtype))
    if grads.weight is not None:
        grads.weight.index_add_(0, y, torch.mul(h.to(acc.dtype), w[:, None], out=acc))
    if grads.bias is not None:
        grads.bias.index_add_(0, y, w)


def softcap_factor(zt: torch.Tensor, softcap: float | None) -> torch.Tensor | None:
    """``d capped / d raw = 1 - tanh^2 = 1 - (capped / c)^2`` for soft-capped logits; None without cap."""
    return None if softcap is None else 1 - (zt / softcap) ** 2


def finish(grads: Grads, shape, weight_dtype, bias_dtype):
    """Autograd's return tuple: gradients in the inputs' dtypes, None for non-tensor arguments."""
    grad_hidden = None if grads.hidden is None else grads.hidden.reshape(shape)
    grad_weight = None if grads.weight is None else grads.weight.to(weight_dtype)
    grad_bias = None if grads.bias is None else grads.bias.to(bias_dtype)
    return grad_hidden, grad_weight, grad_bias, None, None, None, None, None, None
