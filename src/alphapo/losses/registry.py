"""The loss registry: names -> small pure functions, with what each needs.

A paired loss is a function ``fn(s: PairScores, *, <hyper-parameters with defaults>) -> LossTerms``.
It sees the already shaped, already normalised per-sequence quantities and knows nothing about
models, chunking or reference caching. :func:`register` records, next to the function, whether it
needs reference log-probs, whether it length-normalises by default and whether a reward shape
(``alpha``) is defined for it. The accepted hyper-parameters are read from the function's
keyword-only parameters, so the defaults are written exactly once: in the signature.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from alphapo.errors import ConfigError, suggest


@dataclass(frozen=True)
class PairScores:
    """What a paired loss sees. Every tensor is [B] and at least float32.

    ``chosen`` / ``rejected`` hold ``shape_alpha(l)`` where ``l`` is the policy log-prob (reference-
    free losses) or the log-ratio ``logp - logp_ref`` (reference-based losses), divided by the
    completion length when length normalisation is on. Raw values are kept for losses that need them.
    """

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_logps: torch.Tensor  # policy log-prob sums
    rejected_logps: torch.Tensor
    chosen_lengths: torch.Tensor  # completion token counts
    rejected_lengths: torch.Tensor
    chosen_nll: torch.Tensor  # mean token negative log-likelihood of the chosen completion
    alpha: float  # the reward shape in use (0: log shape), for losses that shape extra terms


@dataclass
class LossTerms:
    """What a paired loss returns: per-pair losses and implicit rewards, each [B], plus extras."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class LossSpec:
    """A registered loss and the facts the caller needs about it."""

    name: str
    fn: Callable[..., LossTerms]
    needs_reference: bool
    length_normalize: bool  # default for this loss; callers may override
    shapeable: bool  # whether ``alpha`` (reward shape) is defined for this loss
    default_alpha: float
    paper: str
    batch_statistic: str | None = None
    """A hyper-parameter which, left None, makes each pair's loss depend on the whole batch (BCO's
    ``delta``: the batch's mean reward). Such a loss cannot be computed chunk by chunk."""

    @property
    def defaults(self) -> dict[str, Any]:
        """Hyper-parameters this loss accepts and their defaults (from the signature)."""
        params = inspect.signature(self.fn).parameters.values()
        return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}

    def couples_pairs(self, hparams: dict[str, Any]) -> bool:
        """Whether, with ``hparams``, one pair's loss depends on the other pairs of its batch."""
        return self.batch_statistic is not None and hparams.get(self.batch_statistic) is None


_REGISTRY: dict[str, LossSpec] = {}
ALIASES = {"dpo": "sigmoid"}
"""Other names users know a loss by, mapped to its registered name."""


def register(
    name: str,
    *,
    reference: bool,
    length_normalize: bool = False,
    shapeable: bool = True,
    default_alpha: float = 0.0,
    paper: str = "",
    batch_statistic: str | None = None,
) -> Callable[[Callable[..., LossTerms]], Callable[..., LossTerms]]:
    """Decorator adding a paired loss to the registry under ``name``."""

    def wrap(fn: Callable[..., LossTerms]) -> Callable[..., LossTerms]:
        if name in _REGISTRY:
            raise ValueError(f"loss {name!r} registered twice")
        _REGISTRY[name] = LossSpec(
            name=name,
            fn=fn,
            needs_reference=reference,
            length_normalize=length_normalize,
            shapeable=shapeable,
            default_alpha=default_alpha,
            paper=paper,
            batch_statistic=batch_statistic,
        )
        return fn

    return wrap


def get_loss_spec(name: str) -> LossSpec:
    """The registered loss called ``name``; unknown names raise with the closest names suggested."""
    try:
        return _REGISTRY[ALIASES.get(name, name)]
    except KeyError:
        known = [*_REGISTRY, *ALIASES]
        raise ConfigError(
            f"unknown loss {name!r}{suggest(name, known)}; available: {', '.join(sorted(_REGISTRY))}"
        ) from None


def registered_names() -> list[str]:
    """Every registered loss name, sorted."""
    return sorted(_REGISTRY)
