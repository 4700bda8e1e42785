"""Sweep grids: ``alpha=-1,0,0.5 beta=2.5 seeds=3`` -> one training setting per combination and seed.

Keys address the swept method's :class:`~alphapo.train.config.TrainConfig`: dotted paths
(``optim.lr``, ``loss.gamma``) or the short names in :data:`SHORT_KEYS` (``alpha`` is ``loss.alpha``,
``lr`` is ``optim.lr``). A comma-separated value is an axis; a single value is set in every run.
Reserved keys: ``seeds`` (how many seeds per setting, from 0), ``method`` (which of the recipe's
methods to sweep), ``eval_every`` (steps between evaluations during training, for the
over-optimisation frontier), ``eval_prompts`` (held-out prompts used by those evaluations) and
``recipe.<key>`` (a setting of the pipeline recipe itself).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from alphapo.config import parse_value
from alphapo.errors import ConfigError

SHORT_KEYS = {
    "alpha": "loss.alpha",
    "beta": "loss.beta",
    "gamma": "loss.gamma",
    "gamma_beta_ratio": "loss.gamma_beta_ratio",
    "nll_weight": "loss.nll_weight",
    "label_smoothing": "loss.label_smoothing",
    "loss": "loss.name",
    "lr": "optim.lr",
    "epochs": "train.epochs",
    "max_steps": "train.max_steps",
    "batch_size": "train.batch_size",
}
RESERVED = {"seeds", "method", "eval_every", "eval_prompts"}


@dataclass
class SweepSpec:
    axes: dict[str, list[Any]] = field(default_factory=dict)  # dotted key -> values
    fixed: dict[str, Any] = field(default_factory=dict)  # dotted key -> value, every run
    seeds: int = 1
    method: str | None = None
    eval_every: int | None = None
    eval_prompts: int = 100
    recipe_overrides: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Setting:
    """One point of the grid (its values by short or dotted key) and one seed."""

    values: tuple[tuple[str, Any], ...]
    seed: int

    @property
    def label(self) -> str:
        """A directory-safe name: ``alpha=0.25,beta=2.5``."""
        parts = [f"{key.split('.')[-1]}={value}" for key, value in self.values]
        return ",".join(parts) or "base"

    def overrides(self) -> dict[str, Any]:
        return dict(self.values)


def parse_sweep(args: list[str]) -> SweepSpec:
    """``key=value`` arguments -> a :class:`SweepSpec` (errors name the argument)."""
    spec = SweepSpec()
    for item in args:
        if "=" not in item:
            raise ConfigError(f"sweep: {item!r} is not key=value (e.g. alpha=-1,0,0.5 or seeds=3)")
        key, raw = (part.strip() for part in item.split("=", 1))
        if key.startswith("recipe."):
            spec.recipe_overrides.append(f"{key[len('recipe.') :]}={raw}")
            continue
        if key in RESERVED:
            value = parse_value(raw)
            if key in ("seeds", "eval_every", "eval_prompts") and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"sweep: {key} must be a positive integer, got {raw!r}")
            setattr(spec, key, value)
            continue
        dotted = SHORT_KEYS.get(key, key)
        if "." not in dotted:
            raise ConfigError(
                f"sweep: unknown key {key!r}: use a short name ({', '.join(SHORT_KEYS)}) or a dotted "
                "setting of the method such as optim.lr or loss.gamma"
            )
        values = [parse_value(v) for v in raw.split(",")] if "," in raw else None
        if values is not None:
            spec.axes[dotted] = values
        else:
            spec.fixed[dotted] = parse_value(raw)
    return spec


def expand(spec: SweepSpec) -> list[Setting]:
    """Every combination of the axes (in the order given) times every seed."""
    keys = list(spec.axes)
    combos = list(itertools.product(*(spec.axes[k] for k in keys))) or [()]
    return [Setting(tuple(zip(keys, combo, strict=True)), seed) for combo in combos for seed in range(spec.seeds)]


def nested(overrides: dict[str, Any]) -> dict[str, Any]:
    """``{"loss.alpha": 0.5}`` -> ``{"loss": {"alpha": 0.5}}``."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out
