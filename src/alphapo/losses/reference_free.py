"""Reference-free paired losses: SimPO, AlphaPO, CPO and ORPO.

Notation (each tensor [B]): ``s_w = s.chosen``, ``s_l = s.rejected`` are ``shape_alpha(l)`` with ``l``
the policy log-prob, divided by the completion length when length normalisation is on (the default
for SimPO, AlphaPO and ORPO); ``h = s_w - s_l``; ``nll`` is the chosen completion's mean token NLL.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from alphapo.losses.reference_based import _smoothed_logistic
from alphapo.losses.registry import LossTerms, PairScores, register

ORPO_MAX_MEAN_LOGP = -1e-6
"""ORPO's odds ``p / (1 - p)`` are infinite at ``p = 1``; mean log-probs are clamped to this value."""


def _margin_loss(s: PairScores, beta: float, gamma: float, label_smoothing: float) -> LossTerms:
    logits = beta * (s.chosen - s.rejected) - gamma
    losses = _smoothed_logistic(logits, label_smoothing)
    return LossTerms(losses, beta * s.chosen, beta * s.rejected, {"logits": logits})


@register(
    "simpo",
    reference=False,
    length_normalize=True,
    shapeable=False,
    paper="SimPO, Meng et al. 2024, arXiv:2405.14734",
)
def simpo(s: PairScores, *, beta: float = 2.5, gamma: float = 0.25, label_smoothing: float = 0.0) -> LossTerms:
    """SimPO (Meng et al. 2024, arXiv:2405.14734): length-normalised log-prob rewards and a margin.

    ``r = beta * logp / |y|``; ``loss = -(1 - e) log sigmoid(r_w - r_l - gamma) - e log sigmoid(-(...))``.
    The log shape is part of SimPO's definition (use ``alphapo`` for other shapes). ``gamma`` is the
    absolute margin (pass ``gamma_beta_ratio`` to set ``gamma = ratio * beta``).
    Defaults (Mistral-7B-Instruct in the paper): beta 2.5, gamma 0.25, label_smoothing 0.
    """
    return _margin_loss(s, beta, gamma, label_smoothing)


@register(
    "alphapo",
    reference=False,
    length_normalize=True,
    default_alpha=0.25,
    paper="AlphaPO, Gupta et al. 2025, arXiv:2501.03884",
)
def alphapo(s: PairScores, *, beta: float = 2.5, gamma: float = 0.25, label_smoothing: float = 0.0) -> LossTerms:
    """AlphaPO (Gupta et al. 2025, arXiv:2501.03884): SimPO with an alpha-shaped reward.

    ``l = logp / |y|``, ``r = beta (1 - exp(-alpha l)) / alpha = beta (1 - p^-alpha) / alpha``,
    ``loss = -log sigmoid(r_w - r_l - gamma)`` (label smoothing as in SimPO). ``alpha = 0`` is SimPO
    exactly. ``alpha`` (default 0.25) is a shape option handled by ``preference_loss``.
    Defaults (Mistral-7B-Instruct in the paper): alpha 0.25, beta 2.5, gamma 0.25 (gamma/beta 0.1).

    Scale: the gradient weight ``p^-alpha = exp(-alpha l)`` depends on ``alpha * l``; 0.25 suits answers
    with ``l`` near -1. On a model whose answers are near-certain (``l`` near -0.05) the same alpha is
    SimPO in all but name: the trainer's ``loss.alpha_scale`` sets ``alpha = alpha_scale / |l_bar|``
    from the starting model instead (``alphapo.train.reward_scale``).
    """
    return _margin_loss(s, beta, gamma, label_smoothing)


@register("cpo", reference=False, paper="CPO, Xu et al. 2024, arXiv:2401.08417")
def cpo(s: PairScores, *, beta: float = 0.1, label_smoothing: float = 0.0, cpo_alpha: float = 1.0) -> LossTerms:
    """Contrastive preference optimisation (Xu et al. 2024, arXiv:2401.08417).

    ``loss = -(1 - e) log sigmoid(beta h) - e log sigmoid(-beta h) + cpo_alpha * nll`` on summed
    log-probs (``h = logp_w - logp_l`` with the log shape). The NLL is each chosen completion's mean
    token NLL, so the batch mean is a mean over sequences (TRL averages over the batch's tokens).
    Defaults: beta 0.1, label_smoothing 0, cpo_alpha 1.0.
    """
    logits = beta * (s.chosen - s.rejected)
    losses = _smoothed_logistic(logits, label_smoothing) + cpo_alpha * s.chosen_nll
    return LossTerms(losses, beta * s.chosen, beta * s.rejected, {"logits": logits})


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x < 0``, accurate on both sides of ``-log 2`` (Maechler 2012)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


@register(
    "orpo",
    reference=False,
    length_normalize=True,
    shapeable=False,
    paper="ORPO, Hong et al. 2024, arXiv:2403.07691",
)
def orpo(s: PairScores, *, beta: float = 0.1) -> LossTerms:
    """Odds-ratio preference optimisation (Hong et al. 2024, arXiv:2403.07691); ``beta`` is lambda.

    On mean log-probs ``l`` (clamped to :data:`ORPO_MAX_MEAN_LOGP` so the odds stay finite):
    ``log_odds = (l_w - l_l) - (log(1 - e^l_w) - log(1 - e^l_l))``,
    ``loss = nll - beta * log sigmoid(log_odds)``. Rewards are ``beta * l``. Defaults: beta 0.1.
    """
    l_w = torch.clamp(s.chosen, max=ORPO_MAX_MEAN_LOGP)
    l_l = torch.clamp(s.rejected, max=ORPO_MAX_MEAN_LOGP)
    log_odds = (l_w - l_l) - (_log1mexp(l_w) - _log1mexp(l_l))
    losses = s.chosen_nll - beta * F.logsigmoid(log_odds)
    return LossTerms(losses, beta * s.chosen, beta * s.rejected, {"log_odds_ratio": log_odds})
