"""``preference_loss``: the one entry point to every paired loss, and its input checks.

The call resolves the loss by name, checks the tensors and hyper-parameters, forms the per-sequence
quantity the loss works on (log-prob or log-ratio, optionally per token, then reward-shaped), calls
the loss's pure function and adds the optional NLL term (RPO). Shapes: every tensor is [B].
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from alphapo.errors import ConfigError, InputError, MissingReferenceError, suggest
from alphapo.losses.registry import LossSpec, PairScores, get_loss_spec
from alphapo.losses.shapes import shape_reward


@dataclass
class LossOutput:
    """Per-pair results of :func:`preference_loss`, each [B].

    ``losses`` already includes any NLL term; ``nll`` is the chosen completions' mean token NLL
    (reported whether or not it is trained on); ``extras`` holds loss-specific tensors (``logits``,
    ``log_odds_ratio``, ...), also readable as attributes.
    """

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    nll: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def margins(self) -> torch.Tensor:
        return self.chosen_rewards - self.rejected_rewards

    @property
    def loss(self) -> torch.Tensor:
        """The batch loss: the mean of ``losses``."""
        return self.losses.mean()

    def __getattr__(self, name: str) -> torch.Tensor:
        extras = self.__dict__.get("extras", {})
        if name in extras:
            return extras[name]
        raise AttributeError(f"LossOutput has no field or extra {name!r} (extras: {sorted(extras)})")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.detach())
    return None


# name -> (predicate on a finite float, what it must be)
_RULES: dict[str, tuple[Any, str]] = {
    "beta": (lambda v: v > 0, "> 0"),
    "tau": (lambda v: v > 0, "> 0"),
    "label_smoothing": (lambda v: 0 <= v < 0.5, "in [0, 0.5)"),
    "cpo_alpha": (lambda v: v >= 0, ">= 0"),
    "nll_weight": (lambda v: v >= 0, ">= 0"),
    "desirable_weight": (lambda v: v >= 0, ">= 0"),
    "undesirable_weight": (lambda v: v >= 0, ">= 0"),
    "gamma_beta_ratio": (lambda v: True, "a number"),
}
_OPTIONAL = {"delta"}  # may be None
_GLOBAL_OPTIONS = ("alpha", "length_normalize", "nll_weight", "gamma_beta_ratio")
"""Options every loss takes (handled by preference_loss itself, not by the loss's function)."""


def check_hparams(loss: str, hparams: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` for a non-numeric, non-finite or out-of-range hyper-parameter."""
    for name, value in hparams.items():
        if value is None and name in _OPTIONAL:
            continue
        v = _number(value)
        if v is None or not math.isfinite(v):
            raise ConfigError(f"{loss}: hyper-parameter {name}={value!r} must be a finite number")
        rule = _RULES.get(name)
        if rule is not None and not rule[0](v):
            raise ConfigError(f"{loss}: hyper-parameter {name}={value!r} must be {rule[1]}")
    if loss == "exo_pair" and not 0 < hparams.get("label_smoothing", 1e-3) < 0.5:
        raise ConfigError("exo_pair: label_smoothing must be in (0, 0.5): it is the label distribution's epsilon")


def check_tensors(loss: str, named: Mapping[str, torch.Tensor]) -> None:
    """Raise :class:`InputError` unless every tensor is a finite 1-D tensor of one common length.

    Names ending in ``_lengths`` must also be positive (a completion with no token has no log-prob).
    """
    shape = None
    for name, t in named.items():
        if not isinstance(t, torch.Tensor):
            raise InputError(f"{loss}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 1:
            raise InputError(f"{loss}: {name} must be 1-D [B] (one value per sequence), got shape {tuple(t.shape)}")
        if shape is None:
            shape = t.shape
        elif t.shape != shape:
            first = next(iter(named))
            raise InputError(f"{loss}: {name} has shape {tuple(t.shape)} but {first} has {tuple(shape)}")
        if t.is_floating_point() and not torch.isfinite(t).all():
            bad = int((~torch.isfinite(t)).nonzero()[0])
            raise InputError(f"{loss}: {name} is not finite at index {bad} (value {t[bad].item()})")
        if name.endswith("_lengths") and (t <= 0).any():
            bad = int((t <= 0).nonzero()[0])
            raise InputError(f"{loss}: {name}[{bad}] = {t[bad].item()}: every completion needs at least one token")


def _resolve_hparams(spec: LossSpec, hparams: dict[str, Any], gamma_beta_ratio: float | None) -> dict[str, Any]:
    accepted = spec.defaults
    unknown = [k for k in hparams if k not in accepted]
    if unknown:
        valid = [*accepted, *_GLOBAL_OPTIONS]
        name = unknown[0]
        raise ConfigError(
            f"loss {spec.name!r} has no hyper-parameter {name!r}{suggest(name, valid)}; it accepts {', '.join(valid)}"
        )
    resolved = {**accepted, **hparams}
    if gamma_beta_ratio is not None:
        if "gamma" not in accepted:
            raise ConfigError(f"loss {spec.name!r} has no margin gamma, so gamma_beta_ratio does not apply")
        if "gamma" in hparams:
            raise ConfigError(f"{spec.name}: give gamma or gamma_beta_ratio, not both")
        check_hparams(spec.name, {"gamma_beta_ratio": gamma_beta_ratio})
        resolved["gamma"] = gamma_beta_ratio * resolved["beta"]
    check_hparams(spec.name, resolved)
    return resolved


def _resolve_alpha(spec: LossSpec, alpha: float | None) -> float:
    if alpha is None:
        return spec.default_alpha
    check_hparams(spec.name, {"alpha": alpha})
    if not spec.shapeable and float(alpha) != 0.0:
        hint = " (use 'alphapo' for SimPO with an alpha-shaped reward)" if spec.name == "simpo" else ""
        raise ConfigError(f"loss {spec.name!r} has no reward-shape option: alpha must be 0{hint}")
    return float(alpha)


def preference_loss(
    name: str,
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    *,
    alpha: float | None = None,
    length_normalize: bool | None = None,
    nll_weight: float = 0.0,
    gamma_beta_ratio: float | None = None,
    **hparams: Any,
) -> LossOutput:
    """Compute the paired loss ``name`` (see :func:`available_losses`; ``dpo`` = ``sigmoid``) per pair.

    Args:
        chosen_logps, rejected_logps: [B] policy log-prob SUMS over completion tokens.
        chosen_lengths, rejected_lengths: [B] completion token counts (int or float, > 0).
        ref_chosen_logps, ref_rejected_logps: [B] reference log-prob sums; required by
            reference-based losses, rejected (must be None) by reference-free ones.
        alpha: reward shape; None uses the loss's default (0.25 for ``alphapo``, 0 otherwise).
            Applied to the log-prob (reference-free) or the log-ratio (reference-based, "shaped DPO").
        length_normalize: divide by completion length before shaping; None uses the loss's default
            (on for simpo, alphapo, orpo, ipo).
        nll_weight: weight of the chosen completions' mean token NLL added to each loss (RPO when
            used with ``sigmoid``). 0 by default.
        gamma_beta_ratio: set the margin ``gamma = ratio * beta`` (losses with a ``gamma``).
        **hparams: the loss's own hyper-parameters (beta, gamma, label_smoothing, ...).

    Raises:
        ConfigError: unknown loss or hyper-parameter (closest names suggested), invalid value.
        MissingReferenceError: a reference-based loss without reference log-probs.
        InputError: tensors that are not [B], of different lengths, or not finite.
    """
    spec = get_loss_spec(name)
    resolved = _resolve_hparams(spec, hparams, gamma_beta_ratio)
    shape_alpha = _resolve_alpha(spec, alpha)
    check_hparams(name, {"nll_weight": nll_weight})
    refs = (ref_chosen_logps, ref_rejected_logps)
    if spec.needs_reference and any(r is None for r in refs):
        raise MissingReferenceError(
            f"loss {name!r} needs reference log-probs: pass ref_chosen_logps and ref_rejected_logps "
            "(or choose a reference-free loss: simpo, alphapo, cpo, orpo)"
        )
    if not spec.needs_reference and any(r is not None for r in refs):
        raise ConfigError(f"loss {name!r} is reference-free: ref_chosen_logps/ref_rejected_logps must be None")
    named = {
        "chosen_logps": chosen_logps,
        "rejected_logps": rejected_logps,
        "chosen_lengths": chosen_lengths,
        "rejected_lengths": rejected_lengths,
    }
    if spec.needs_reference:
        named |= {"ref_chosen_logps": ref_chosen_logps, "ref_rejected_logps": ref_rejected_logps}
    check_tensors(name, named)

    # Losses run in at least float32 whatever the model's precision.
    dtype = torch.promote_types(chosen_logps.dtype, torch.float32)
    logp_w, logp_l = chosen_logps.to(dtype), rejected_logps.to(dtype)
    len_w, len_l = chosen_lengths.to(dtype), rejected_lengths.to(dtype)
    l_w, l_l = logp_w, logp_l
    if spec.needs_reference:
        l_w, l_l = l_w - ref_chosen_logps.to(dtype), l_l - ref_rejected_logps.to(dtype)
    normalize = spec.length_normalize if length_normalize is None else bool(length_normalize)
    if normalize:
        l_w, l_l = l_w / len_w, l_l / len_l
    nll = -logp_w / len_w
    scores = PairScores(
        chosen=shape_reward(l_w, shape_alpha),
        rejected=shape_reward(l_l, shape_alpha),
        chosen_logps=logp_w,
        rejected_logps=logp_l,
        chosen_lengths=len_w,
        rejected_lengths=len_l,
        chosen_nll=nll,
        alpha=shape_alpha,
    )
    terms = spec.fn(scores, **resolved)
    losses = terms.losses + nll_weight * nll if nll_weight else terms.losses
    return LossOutput(losses, terms.chosen_rewards, terms.rejected_rewards, nll, terms.extras)


def check_loss_settings(name: str, settings: dict[str, Any]) -> None:
    """Validate a loss name and its settings (hyper-parameters plus the global options) without
    tensors: the same checks :func:`preference_loss` makes, for configs at load time."""
    spec = get_loss_spec(name)
    hparams = {k: v for k, v in settings.items() if k not in _GLOBAL_OPTIONS}
    _resolve_hparams(spec, hparams, settings.get("gamma_beta_ratio"))
    if "alpha" in settings:
        _resolve_alpha(spec, settings["alpha"])
    if "nll_weight" in settings:
        check_hparams(name, {"nll_weight": settings["nll_weight"]})
    if "length_normalize" in settings and not isinstance(settings["length_normalize"], bool | None):
        raise ConfigError(f"{name}: length_normalize must be true or false, got {settings['length_normalize']!r}")
