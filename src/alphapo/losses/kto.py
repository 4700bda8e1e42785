"""KTO: Kahneman-Tversky optimisation for unpaired data (Ethayarajh et al. 2024, arXiv:2402.01306).

Each example is a (prompt, completion, desirable?) triple. With ``r = beta * shape_alpha(u)`` for
the log-ratio ``u = logp - logp_ref`` and the reference point ``z0 = beta * shape_alpha(max(KL, 0))``
(the KL estimate is detached, as in the paper):

* desirable:   ``loss = w_d * (1 - sigmoid(r - z0))``
* undesirable: ``loss = w_u * (1 - sigmoid(z0 - r))``

``kto_loss`` is the unpaired entry point. The registry's ``kto`` applies the same value function to
paired data (chosen as desirable, rejected as undesirable), averaging the two terms of each pair
so that a batch mean equals KTO's mean over all 2B examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alphapo.errors import InputError
from alphapo.losses.api import check_hparams, check_tensors
from alphapo.losses.registry import LossTerms, PairScores, register
from alphapo.losses.shapes import shape_reward


@dataclass
class KTOOutput:
    """Unpaired losses ``[B_d + B_u]`` (desirable first) and the implicit rewards of each group."""

    losses: torch.Tensor
    desirable_rewards: torch.Tensor  # [B_d]
    undesirable_rewards: torch.Tensor  # [B_u]
    kl: torch.Tensor  # the clamped, detached KL estimate used as the reference point


def _clamped_kl(kl: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The KL estimate as a detached 0-d tensor, clamped at 0 (KTO's reference point)."""
    kl_t = torch.as_tensor(kl, dtype=like.dtype, device=like.device).detach()
    if kl_t.numel() != 1 or not torch.isfinite(kl_t).all():
        raise InputError(f"kto: the KL estimate must be one finite number, got {kl!r}")
    return kl_t.reshape(()).clamp(min=0)


def _value_terms(
    r_d: torch.Tensor, r_u: torch.Tensor, z0: torch.Tensor, desirable_weight: float, undesirable_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    return desirable_weight * (1 - torch.sigmoid(r_d - z0)), undesirable_weight * (1 - torch.sigmoid(z0 - r_u))


def kto_loss(
    desirable_logps: torch.Tensor,
    undesirable_logps: torch.Tensor,
    ref_desirable_logps: torch.Tensor,
    ref_undesirable_logps: torch.Tensor,
    kl: float | torch.Tensor,
    *,
    desirable_lengths: torch.Tensor | None = None,
    undesirable_lengths: torch.Tensor | None = None,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    alpha: float = 0.0,
    length_normalize: bool = False,
) -> KTOOutput:
    """KTO loss on unpaired examples.

    Args:
        desirable_logps, ref_desirable_logps: [B_d] log-prob sums of desirable completions.
        undesirable_logps, ref_undesirable_logps: [B_u] the same for undesirable ones (either group
            may be empty).
        kl: the KL estimate ``E[logp - logp_ref]`` on mismatched prompt/completion pairs (a float or a
            0-d tensor); clamped at 0 and detached. Pass 0 to disable the reference point.
        desirable_lengths, undesirable_lengths: token counts, needed when ``length_normalize``.
        beta: 0.1. desirable_weight, undesirable_weight: 1.0 (the paper balances them so that
            ``w_d * B_d / (w_u * B_u)`` lies in [1, 4/3]). alpha: reward shape, 0 = log.
    """
    check_hparams(
        "kto",
        {"beta": beta, "desirable_weight": desirable_weight, "undesirable_weight": undesirable_weight, "alpha": alpha},
    )
    if length_normalize and (desirable_lengths is None or undesirable_lengths is None):
        raise InputError("kto: length_normalize=True needs desirable_lengths and undesirable_lengths")
    groups = []
    for label, logps, ref, lengths in (
        ("desirable", desirable_logps, ref_desirable_logps, desirable_lengths),
        ("undesirable", undesirable_logps, ref_undesirable_logps, undesirable_lengths),
    ):
        named = {f"{label}_logps": logps, f"ref_{label}_logps": ref}
        if lengths is not None:
            named[f"{label}_lengths"] = lengths
        check_tensors("kto", named)
        dtype = torch.promote_types(logps.dtype, torch.float32)
        u = logps.to(dtype) - ref.to(dtype)
        if length_normalize:
            u = u / lengths.to(dtype)
        groups.append(beta * shape_reward(u, alpha))
    r_d, r_u = groups
    kl_t = _clamped_kl(kl, r_d)
    loss_d, loss_u = _value_terms(r_d, r_u, beta * shape_reward(kl_t, alpha), desirable_weight, undesirable_weight)
    return KTOOutput(torch.cat([loss_d, loss_u]), r_d, r_u, kl_t)


@register("kto", reference=True, paper="KTO, Ethayarajh et al. 2024, arXiv:2402.01306")
def kto(
    s: PairScores,
    *,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    kl: float = 0.0,
) -> LossTerms:
    """KTO's value function on paired data: chosen as desirable, rejected as undesirable.

    ``loss = (w_d (1 - sigmoid(r_w - z0)) + w_u (1 - sigmoid(z0 - r_l))) / 2`` with
    ``z0 = beta * shape(max(kl, 0))``. For unpaired data call :func:`kto_loss`.
    Defaults: beta 0.1, desirable_weight 1, undesirable_weight 1, kl 0 (no reference point).
    """
    r_w, r_l = beta * s.chosen, beta * s.rejected
    z0 = beta * shape_reward(_clamped_kl(kl, r_w), s.alpha)
    loss_d, loss_u = _value_terms(r_w, r_l, z0, desirable_weight, undesirable_weight)
    return LossTerms((loss_d + loss_u) / 2, r_w, r_l)
