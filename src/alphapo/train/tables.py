"""Which log-prob tables a run needs, computed once before training (or found in the cache).

* ``reference`` [N, 2]: for reference-based losses. ``precompute`` uses the starting policy (with
  LoRA, that is the adapter-disabled base: the adapters start at zero); ``model`` another directory;
  ``soup`` the weight average of several checkpoints. The model used is dropped afterwards.
* ``initial`` [N, 2]: the starting policy's log-probs, for the displacement metrics; the same table
  as ``reference`` when the reference is the starting policy. Only computed with
  ``diagnostics.displacement: dataset`` (a reference-free loss otherwise gets no pass over the data
  before its first step: see ``alphapo.train.displacement``).

Tables are cached under ``<output_dir>/cache`` (or ``data.cache_dir``) keyed by the model's weights,
the tokenised data and the log-prob settings; a resumed run loads them by the keys saved in its
checkpoint, since its weights have moved on.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from pathlib import Path

import torch

from alphapo.errors import ConfigError
from alphapo.train.config import TrainConfig
from alphapo.train.reference import cached_table, compute_table, table_key
from alphapo.train.setup import load_policy, model_fingerprint


@dataclass
class Tables:
    reference: torch.Tensor | None = None
    initial: torch.Tensor | None = None
    keys: dict[str, str] = field(default_factory=dict)


def _soup(cfg: TrainConfig, tokenizer):
    """The weight average of ``cfg.reference.paths`` (same architecture), loaded into the first one."""
    models = [load_policy(cfg, tokenizer, path=p) for p in cfg.reference.paths]
    states = [m.state_dict() for m in models]
    names = set(states[0])
    for path, state in zip(cfg.reference.paths[1:], states[1:], strict=True):
        if set(state) != names or any(state[n].shape != states[0][n].shape for n in names):
            raise ConfigError(f"reference.soup: {path} does not have the architecture of {cfg.reference.paths[0]}")
    averaged = {n: sum(s[n].double() for s in states) / len(states) for n in names}
    models[0].load_state_dict({n: v.to(states[0][n].dtype) for n, v in averaged.items()})
    return models[0]


def prepare_tables(
    cfg: TrainConfig,
    policy,
    tokenizer,
    dataset,
    collator,
    acc,
    checkpoint: Path | None,
    share_prompt: torch.dtype | None = None,
    share_for=None,
) -> Tables:
    """The reference and starting log-prob tables the run needs, from the cache or computed.
    ``share_prompt``: the policy's pairs run packed with this mask dtype (``train.share_prompt``, as the
    trainer checked it); ``share_for(model)``: the same decision for a reference model or soup (None:
    they run unpacked)."""
    if cfg.task != "preference":
        return Tables()
    output_dir = Path(cfg.output_dir)
    cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else output_dir / "cache"
    settings = {"logps": cfg.train.logps, "dtype": cfg.model.dtype}
    batch_size = cfg.reference.batch_size or cfg.train.batch_size
    kind = cfg.reference_kind()
    keys: dict[str, str] = {}
    if checkpoint is not None:  # resuming: the policy has moved on, load the tables it started with
        import json

        from alphapo.train.checkpoint import STATE_FILE

        stored = json.loads((checkpoint / STATE_FILE).read_text())
        keys = {k: stored[k] for k in ("reference_key", "initial_key") if k in stored}

    def table_for(load_model, key_name: str, share=None) -> torch.Tensor:
        """The table of the model ``load_model()`` returns, from the cache when its key is known."""
        key = keys.get(key_name)
        model = None
        if key is None:  # a fresh run: fingerprint the model's weights
            model = load_model()
            key = keys[key_name] = table_key(model_fingerprint(model), dataset.key, settings)
        elif not (cache_dir / f"logps-{key[:24]}.pt").is_file():
            raise ConfigError(f"cannot resume: the cached {key_name.split('_')[0]} log-probs ({key[:24]}) are gone")

        def compute() -> torch.Tensor:
            label = (
                "starting log-probs" if key_name == "initial_key" and kind != "precompute" else "reference log-probs"
            )
            on_device = (model or load_model()).to(acc.device)
            dtype = share(on_device) if share is not None else None
            logps = cfg.train.logps
            return compute_table(on_device, dataset, collator, batch_size, acc, logps, label, share_prompt=dtype)

        return cached_table(cache_dir, key, compute, acc)

    by_dataset = cfg.displacement_mode() == "dataset"
    starting = None  # the starting policy's table: the reference, the displacement baseline, or both
    if kind == "precompute" or by_dataset:
        starting = table_for(lambda: policy, "initial_key", lambda _: share_prompt)
    reference = None
    if kind == "precompute":
        reference = starting
    elif kind == "model":
        reference = table_for(lambda: load_policy(cfg, tokenizer, path=cfg.reference.path), "reference_key", share_for)
    elif kind == "soup":
        reference = table_for(lambda: _soup(cfg, tokenizer), "reference_key", share_for)
    gc.collect()
    return Tables(reference, starting if by_dataset else None, keys)
