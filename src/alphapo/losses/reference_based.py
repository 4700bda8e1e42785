"""Reference-based paired losses: DPO and its relatives.

Notation (each tensor [B]): ``s_w = s.chosen``, ``s_l = s.rejected`` are ``shape_alpha(u)`` with
``u = logp - logp_ref`` (divided by the completion length when length normalisation is on);
``h = s_w - s_l``; rewards are ``beta * s_w`` and ``beta * s_l`` unless a docstring says otherwise.
With ``alpha = 0`` (the default) every loss below is exactly its published form; with ``alpha != 0``
it is its "shaped" variant (AlphaPO's reward shape applied to the log-ratio).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from alphapo.losses.registry import LossTerms, PairScores, register


def _rewards(s: PairScores, beta: float, losses: torch.Tensor, **extras: torch.Tensor) -> LossTerms:
    return LossTerms(losses, beta * s.chosen, beta * s.rejected, dict(extras))


def _smoothed_logistic(logits: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """``-(1 - e) log sigmoid(x) - e log sigmoid(-x)``: the logistic loss with flipped-label rate e."""
    return -F.logsigmoid(logits) * (1 - label_smoothing) - F.logsigmoid(-logits) * label_smoothing


@register("sigmoid", reference=True, paper="DPO, Rafailov et al. 2023, arXiv:2305.18290")
def sigmoid(s: PairScores, *, beta: float = 0.1, label_smoothing: float = 0.0) -> LossTerms:
    """DPO (Rafailov et al. 2023, arXiv:2305.18290); conservative DPO when ``label_smoothing > 0``.

    ``loss = -(1 - e) log sigmoid(beta h) - e log sigmoid(-beta h)``, ``e = label_smoothing``.
    Defaults: beta 0.1, label_smoothing 0 (must be in [0, 0.5)).
    """
    logits = beta * (s.chosen - s.rejected)
    return _rewards(s, beta, _smoothed_logistic(logits, label_smoothing), logits=logits)


@register("robust", reference=True, paper="rDPO, Chowdhury et al. 2024, arXiv:2403.00409")
def robust(s: PairScores, *, beta: float = 0.1, label_smoothing: float = 0.1) -> LossTerms:
    """Robust DPO for noisy labels (Chowdhury et al. 2024, arXiv:2403.00409).

    Unbiased under a label-flip rate ``e``:
    ``loss = [-(1 - e) log sigmoid(beta h) + e log sigmoid(-beta h)] / (1 - 2e)``.
    Defaults: beta 0.1, label_smoothing (the flip rate) 0.1, in [0, 0.5).
    """
    logits = beta * (s.chosen - s.rejected)
    losses = (-F.logsigmoid(logits) * (1 - label_smoothing) + F.logsigmoid(-logits) * label_smoothing) / (
        1 - 2 * label_smoothing
    )
    return _rewards(s, beta, losses, logits=logits)


@register("hinge", reference=True, paper="SLiC-HF, Zhao et al. 2023, arXiv:2305.10425")
def hinge(s: PairScores, *, beta: float = 0.1) -> LossTerms:
    """Hinge loss on the log-ratio margin (SLiC-HF, Zhao et al. 2023, arXiv:2305.10425).

    ``loss = max(0, 1 - beta h)``. Defaults: beta 0.1 (the margin is ``1 / beta``).
    """
    logits = beta * (s.chosen - s.rejected)
    return _rewards(s, beta, torch.relu(1 - logits), logits=logits)


@register("ipo", reference=True, length_normalize=True, paper="IPO, Azar et al. 2023, arXiv:2310.12036")
def ipo(s: PairScores, *, beta: float = 0.1) -> LossTerms:
    """IPO (Azar et al. 2023, arXiv:2310.12036, eq. 17); ``beta`` is the paper's tau.

    ``loss = (h - 1 / (2 beta))^2`` with per-token (length-normalised) log-ratios by default, as in
    TRL and as confirmed by the IPO authors. Defaults: beta 0.1.
    """
    h = s.chosen - s.rejected
    return _rewards(s, beta, (h - 1 / (2 * beta)) ** 2, logits=beta * h)


@register("exo_pair", reference=True, paper="EXO, Ji et al. 2024, arXiv:2402.00856")
def exo_pair(s: PairScores, *, beta: float = 0.1, label_smoothing: float = 1e-3) -> LossTerms:
    """EXO for pairs (Ji et al. 2024, arXiv:2402.00856, eq. 16): reverse KL to smoothed labels.

    With ``q_w = sigmoid(beta h)``, ``q_l = sigmoid(-beta h)`` and label distribution ``(1 - e, e)``:
    ``loss = q_w (log q_w - log(1 - e)) + q_l (log q_l - log e)``.
    Defaults: beta 0.1, label_smoothing e = 1e-3 (must be in (0, 0.5)).
    """
    logits = beta * (s.chosen - s.rejected)
    losses = torch.sigmoid(logits) * (F.logsigmoid(logits) - math.log1p(-label_smoothing)) + torch.sigmoid(-logits) * (
        F.logsigmoid(-logits) - math.log(label_smoothing)
    )
    return _rewards(s, beta, losses, logits=logits)


@register("nca_pair", reference=True, paper="NCA, Chen et al. 2024, arXiv:2402.05369")
def nca_pair(s: PairScores, *, beta: float = 0.1) -> LossTerms:
    """NCA for pairs (Chen et al. 2024, arXiv:2402.05369): absolute, not relative, rewards.

    ``loss = -log sigmoid(r_w) - 0.5 log sigmoid(-r_w) - 0.5 log sigmoid(-r_l)``, ``r = beta s``.
    Defaults: beta 0.1.
    """
    r_w, r_l = beta * s.chosen, beta * s.rejected
    losses = -F.logsigmoid(r_w) - 0.5 * F.logsigmoid(-r_w) - 0.5 * F.logsigmoid(-r_l)
    return LossTerms(losses, r_w, r_l)


@register("bco_pair", reference=True, batch_statistic="delta", paper="BCO, Jung et al. 2024, arXiv:2404.04656")
def bco_pair(s: PairScores, *, beta: float = 0.1, delta: float | None = None) -> LossTerms:
    """Binary classifier optimisation for pairs (Jung et al. 2024, arXiv:2404.04656).

    ``loss = -log sigmoid(r_w - delta) - log sigmoid(-(r_l - delta))``, ``r = beta s``.
    ``delta`` is the reward shift; ``None`` (default) uses this batch's mean reward (detached). A
    trainer wanting TRL's running mean passes it explicitly. Defaults: beta 0.1, delta None.
    """
    r_w, r_l = beta * s.chosen, beta * s.rejected
    if delta is None:
        shift = torch.cat([r_w, r_l]).mean().detach()
    else:
        shift = torch.as_tensor(delta, dtype=r_w.dtype, device=r_w.device)
    losses = -F.logsigmoid(r_w - shift) - F.logsigmoid(-(r_l - shift))
    return LossTerms(losses, r_w, r_l, {"delta": shift.expand_as(r_w)})


@register("sppo_hard", reference=True, paper="SPPO, Wu et al. 2024, arXiv:2405.00675")
def sppo_hard(s: PairScores, *, beta: float = 0.1) -> LossTerms:
    """SPPO with hard labels (Wu et al. 2024, arXiv:2405.00675), as in TRL.

    Regresses each log-ratio to a target: ``loss = (s_w - 1/(2 beta))^2 + (s_l + 1/(2 beta))^2``.
    Defaults: beta 0.1.
    """
    losses = (s.chosen - 0.5 / beta) ** 2 + (s.rejected + 0.5 / beta) ** 2
    return _rewards(s, beta, losses)


@register("apo_zero", reference=True, paper="APO, D'Oosterlinck et al. 2024, arXiv:2408.06266")
def apo_zero(s: PairScores, *, beta: float = 0.1) -> LossTerms:
    """Anchored preference optimisation, zero variant (D'Oosterlinck et al. 2024, arXiv:2408.06266).

    Raises the chosen and lowers the rejected likelihood: for answers better than the model's own.
    ``loss = (1 - sigmoid(beta s_w)) + sigmoid(beta s_l)``. Defaults: beta 0.1.
    """
    losses = (1 - torch.sigmoid(beta * s.chosen)) + torch.sigmoid(beta * s.rejected)
    return _rewards(s, beta, losses)


@register("apo_down", reference=True, paper="APO, D'Oosterlinck et al. 2024, arXiv:2408.06266")
def apo_down(s: PairScores, *, beta: float = 0.1) -> LossTerms:
    """Anchored preference optimisation, down variant (D'Oosterlinck et al. 2024, arXiv:2408.06266).

    Lowers both likelihoods, the rejected more: for answers worse than the model's own.
    ``loss = sigmoid(beta s_w) + (1 - sigmoid(beta h))``. Defaults: beta 0.1.
    """
    losses = torch.sigmoid(beta * s.chosen) + (1 - torch.sigmoid(beta * (s.chosen - s.rejected)))
    return _rewards(s, beta, losses)


@register("discopop", reference=True, paper="DiscoPOP, Lu et al. 2024, arXiv:2406.08414")
def discopop(s: PairScores, *, beta: float = 0.05, tau: float = 0.05) -> LossTerms:
    """DiscoPOP, the log-ratio modulated loss (Lu et al. 2024, arXiv:2406.08414).

    With ``x = beta h`` and ``m = sigmoid(x / tau)``: ``loss = (1 - m)(-log sigmoid(x)) + m exp(-x)``.
    The exponential term is evaluated as ``exp(-x + log sigmoid(x / tau))``, which is finite for any
    ``x`` when ``tau < 1`` (the naive product overflows for ``x < -88`` in float32).
    Defaults: beta 0.05, tau 0.05 (the paper's values).
    """
    logits = beta * (s.chosen - s.rejected)
    modulation = torch.sigmoid(logits / tau)
    exp_term = torch.exp(-logits + F.logsigmoid(logits / tau))
    losses = -F.logsigmoid(logits) * (1 - modulation) + exp_term
    return _rewards(s, beta, losses, logits=logits)


@register("rdpo", reference=True, paper="R-DPO, Park et al. 2024, arXiv:2403.19159")
def rdpo(s: PairScores, *, beta: float = 0.1, length_weight: float = 0.05) -> LossTerms:
    """Length-regularised DPO (Park et al. 2024, arXiv:2403.19159), as written in SimPO's Table 3.

    ``loss = -log sigmoid(beta h + a (|y_w| - |y_l|))`` with ``a = length_weight``: a longer chosen
    answer needs less log-ratio margin, which removes the incentive to win by length.
    Defaults: beta 0.1, length_weight 0.05 (the paper searched 0.05-1.0).
    """
    logits = beta * (s.chosen - s.rejected) + length_weight * (s.chosen_lengths - s.rejected_lengths)
    return _rewards(s, beta, -F.logsigmoid(logits), logits=logits)
