"""Any registered paired loss through :func:`fused_pair_loss`: the one-call fused preference loss.

    from alphapo.ops import fused_preference_loss
    out = fused_preference_loss(hidden, lm_head.weight, labels, "alphapo", beta=2.5, gamma=0.25, alpha=0.25)
    out.loss.backward()                   # the mean over pairs; gradients formed in the forward pass
    out.output.chosen_rewards, out.schedule.name

The loss library stays pure: this module only closes :func:`alphapo.losses.preference_loss` over a
chunk's pair indices (to pick the matching reference log-probs) and tells the op whether the loss
couples the pairs of a batch (:meth:`alphapo.losses.LossSpec.couples_pairs`), which sends it to the
two-pass schedule. Unpaired KTO (:func:`alphapo.losses.kto_loss`, whose KL estimate is a batch
statistic) does not come through here: it takes :func:`sequence_logps` (two-pass).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from alphapo.errors import InputError
from alphapo.losses import LossOutput, get_loss_spec, preference_loss
from alphapo.losses.api import check_loss_settings
from alphapo.ops.pair_loss import PairLossFn, Schedule, fused_pair_loss


class FusedPreferenceLoss(NamedTuple):
    """``loss`` (scalar, differentiable), ``output`` (:class:`LossOutput` of every pair, detached, for
    metrics), per-row ``logps`` [2P] and ``n_tokens`` [2P], and the ``schedule`` that ran."""

    loss: torch.Tensor
    output: LossOutput
    logps: torch.Tensor
    n_tokens: torch.Tensor
    schedule: Schedule


def preference_pair_loss(
    loss: str,
    *,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    scale: float = 1.0,
    **loss_options: Any,
) -> tuple[PairLossFn, bool]:
    """(``pair_loss`` for :func:`fused_pair_loss`: ``scale`` times the per-pair losses of ``loss``,
    whether that loss is separable pair by pair). Reference log-probs are [P], indexed per chunk."""
    check_loss_settings(loss, loss_options)
    refs = (ref_chosen_logps, ref_rejected_logps)

    def pair_loss(chosen, rejected, chosen_n, rejected_n, pairs):
        chunk_refs = () if refs[0] is None or refs[1] is None else (refs[0][pairs], refs[1][pairs])
        out = preference_loss(loss, chosen, rejected, chosen_n, rejected_n, *chunk_refs, **loss_options)
        return out.losses * scale

    return pair_loss, not get_loss_spec(loss).couples_pairs(loss_options)


def fused_preference_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    loss: str = "alphapo",
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
    *,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    reduction: str = "mean",
    softcap: float | None = None,
    budget_bytes: int | None = None,
    schedule: str = "auto",
    **loss_options: Any,
) -> FusedPreferenceLoss:
    """The paired loss ``loss`` (any name of :func:`alphapo.losses.available_losses`) on the
    log-probs of ``labels`` under the head ``weight`` (+ ``bias``), without materialising the logits.

    Args:
        hidden: [2P, T, H] aligned hidden states, chosen rows first then rejected (row ``i`` pairs
            with ``P + i``). labels: [2P, T]. weight: [V, H]. bias: [V] or None.
        ref_chosen_logps, ref_rejected_logps: [P] reference log-prob sums (reference-based losses).
        reduction: ``"mean"`` over pairs (TRL's) or ``"sum"``.
        softcap, budget_bytes, schedule: see :func:`fused_pair_loss`.
        **loss_options: the loss's hyper-parameters and ``alpha``, ``length_normalize``, ``nll_weight``.
    """
    if reduction not in ("mean", "sum"):
        raise InputError(f"fused_preference_loss: reduction must be mean or sum, got {reduction!r}")
    pairs = hidden.shape[0] // 2
    refs = {"ref_chosen_logps": ref_chosen_logps, "ref_rejected_logps": ref_rejected_logps}
    scale = 1.0 / max(pairs, 1) if reduction == "mean" else 1.0
    pair_loss, separable = preference_pair_loss(loss, scale=scale, **refs, **loss_options)
    fused = fused_pair_loss(
        hidden,
        weight,
        labels,
        pair_loss,
        bias,
        ignore_index,
        softcap=softcap,
        separable=separable,
        budget_bytes=budget_bytes,
        schedule=schedule,
    )
    logps, n = fused.logps, fused.n_tokens
    detached = {k: None if v is None else v.detach() for k, v in refs.items()}
    output = preference_loss(loss, logps[:pairs], logps[pairs:], n[:pairs], n[pairs:], **detached, **loss_options)
    return FusedPreferenceLoss(fused.loss, output, logps, n, fused.schedule)
