"""Reward shapes: how a (length-normalised) log-prob or log-ratio becomes a reward.

A reward is ``r = beta * shape(l)``. Two shapes exist:

* log shape (``alpha == 0``): ``shape(l) = l``; SimPO, DPO and the rest of the family.
* alpha shape (AlphaPO, Gupta et al. 2025, arXiv:2501.03884):
  ``shape(l) = (1 - exp(-alpha * l)) / alpha``, i.e. ``(1 - p^-alpha) / alpha`` with ``p = exp(l)``.
  Its slope is ``d shape / d l = exp(-alpha * l) = p^-alpha``: ``alpha > 0`` up-weights the gradient
  of unlikely responses, ``alpha < 0`` down-weights it. As ``alpha -> 0`` it tends to the log shape.

Numerics: the alpha shape is evaluated as ``-expm1(-alpha * l) / alpha``, exact for small ``alpha``.
Overflow guard: where ``z = -alpha * l`` exceeds :data:`SHAPE_EXP_BOUND` (30, so ``exp(z)`` stays
below 1.1e13), the exponential is continued by its tangent line at the bound,
``exp(B) * (1 + (z - B))``. Value and slope are continuous there, both stay finite for any finite
``l`` (un-normalised sums of -1e4 with ``|alpha| = 2`` included), and the gradient keeps its sign
instead of vanishing as a hard clamp would. Inside the bound the shape is exact.
"""

from __future__ import annotations

import math

import torch

SHAPE_EXP_BOUND = 30.0
"""Largest exponent ``-alpha * l`` evaluated exactly; beyond it the exponential is linearised."""


def shape_reward(values: torch.Tensor, alpha: float) -> torch.Tensor:
    """Apply the reward shape to ``values`` ([B]: log-probs or log-ratios, optionally per token).

    ``alpha == 0`` returns ``values`` unchanged (the log shape, exactly); otherwise
    ``-expm1(-alpha * values) / alpha`` with the overflow guard described in the module docstring.
    """
    if alpha == 0:
        return values
    z = -alpha * values
    exact = torch.expm1(torch.clamp(z, max=SHAPE_EXP_BOUND))
    # Tangent-line continuation beyond the bound: finite everywhere, so torch.where's unused branch
    # never produces inf * 0 = NaN in the backward pass.
    tangent = math.exp(SHAPE_EXP_BOUND) * (1.0 + (z - SHAPE_EXP_BOUND)) - 1.0
    return -torch.where(z > SHAPE_EXP_BOUND, tangent, exact) / alpha


def shape_slope(values: torch.Tensor, alpha: float) -> torch.Tensor:
    """``d shape / d values`` in closed form: ``exp(-alpha * values)`` (1 for the log shape).

    Used by diagnostics to report the per-sequence gradient weight AlphaPO applies; matches
    autograd through :func:`shape_reward` inside the guard's bound.
    """
    if alpha == 0:
        return torch.ones_like(values)
    z = -alpha * values
    return torch.exp(torch.clamp(z, max=SHAPE_EXP_BOUND))
