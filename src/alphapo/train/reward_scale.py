"""The reward's scale on the training pairs, and alpha set from a scale-free target.

AlphaPO's reward ``(1 - p^-alpha) / alpha`` acts through its slope ``p^-alpha = exp(-alpha * l)``, with
``l`` the length-normalised log-prob. What alpha does therefore depends on ``alpha * l``: alpha = 0.25
weighs a chat model's answers (``l`` near -1) by up to ``e^0.25 = 1.28``, but a model whose answers
have ``l`` near -0.1 by only ``1.025``: almost SimPO. ``loss.alpha_scale`` (``s``) states the shape
on the task's own scale instead: before training, the starting policy's mean ``l`` over the chosen
answers of the training pairs, ``l_bar``, gives

    alpha = s / |l_bar|,    so that the typical chosen answer's gradient weight is p^-alpha = e^s.

``s = 0.25`` on a chat model with ``l_bar = -1`` is the paper's alpha = 0.25. The measurement comes
from the starting log-prob table when the run has one, otherwise from one pass without gradients
over :data:`SCALE_PAIRS` pairs spread evenly over the data. ``reward_scale.json`` in the output
directory records it: mean and quantiles of ``l`` for chosen and rejected answers, the alpha in use
and the range of weights ``p^-alpha`` it gives (5th to 95th percentile of ``l``).
"""

from __future__ import annotations

import math

import torch

from alphapo.errors import ConfigError
from alphapo.files import write_json
from alphapo.log import logger
from alphapo.losses import get_loss_spec

SCALE_PAIRS = 512
"""Pairs measured for ``alpha_scale`` when no starting log-prob table exists."""
QUANTILES = (0.05, 0.5, 0.95)


def alpha_for_scale(scale: float, mean_logp: float) -> float:
    """``alpha = scale / |mean_logp|``: the alpha whose gradient weight at ``mean_logp`` is ``e^scale``."""
    if not mean_logp < 0:
        raise ConfigError(
            f"loss.alpha_scale: the starting model's mean log-prob per token is {mean_logp:.3g}; "
            "it must be below 0 to set alpha from a scale (set loss.alpha directly)"
        )
    return scale / abs(mean_logp)


def weight_range(quantiles: dict[str, float], alpha: float) -> list[float]:
    """``p^-alpha`` at the 5th and 95th percentiles of ``l`` (low to high weight)."""
    weights = [math.exp(-alpha * quantiles[f"p{int(q * 100)}"]) for q in (QUANTILES[0], QUANTILES[-1])]
    return sorted(weights)


def describe(table: torch.Tensor, lengths: torch.Tensor, normalize: bool, alpha: float) -> dict:
    """The scale record of ``table`` [N, 2] (chosen, rejected log-prob sums) with ``lengths`` [N, 2]."""
    values = (table / lengths if normalize else table).double()
    record = {"pairs": int(values.shape[0]), "length_normalized": normalize, "alpha": alpha}
    for column, side in enumerate(("chosen", "rejected")):
        v = values[:, column]
        q = torch.quantile(v, torch.tensor(QUANTILES, dtype=v.dtype))
        quantiles = {f"p{int(p * 100)}": float(x) for p, x in zip(QUANTILES, q, strict=True)}
        record[side] = {"mean_logp": float(v.mean()), **quantiles, "weight_range": weight_range(quantiles, alpha)}
    return record


class _Sample(torch.utils.data.Dataset):
    """Up to ``n`` items of ``dataset``, evenly spread, re-indexed 0..n-1 for a table of their own."""

    def __init__(self, dataset, n: int):
        step = max(1, len(dataset) // n)
        self.picked = list(range(0, len(dataset), step))[:n]
        self.dataset, self.kind = dataset, dataset.kind

    def __len__(self) -> int:
        return len(self.picked)

    def __getitem__(self, i: int) -> dict:
        return {**self.dataset[self.picked[i]], "index": i}

    def lengths(self) -> list[int]:
        every = self.dataset.lengths()
        return [every[i] for i in self.picked]


def completion_lengths(dataset) -> torch.Tensor:
    """[N, 2] completion token counts of a paired dataset (the tokens its log-prob sums run over)."""
    return torch.tensor(
        [[len(it["chosen_ids"]), len(it["rejected_ids"])] for it in (dataset[i] for i in range(len(dataset)))],
        dtype=torch.float64,
    )


def measure(cfg, policy, dataset, collator, acc, initial: torch.Tensor | None) -> dict | None:
    """The scale record for this run (resolving ``loss.alpha_scale``), or None where it means nothing:
    reference-based losses (their log-ratio starts at 0) and runs with neither a starting table nor
    ``alpha_scale`` (no extra pass is made just to report it)."""
    from alphapo.train.reference import compute_table

    spec = get_loss_spec(cfg.loss.name)
    if cfg.task != "preference" or spec.needs_reference or (initial is None and cfg.loss.alpha_scale is None):
        return None
    sample = dataset
    if initial is None:
        sample = _Sample(dataset, SCALE_PAIRS)
        batch_size = cfg.reference.batch_size or cfg.train.batch_size
        initial = compute_table(policy, sample, collator, batch_size, acc, cfg.train.logps, "reward scale")
    normalize = cfg.loss.hparams.get("length_normalize")
    normalize = spec.length_normalize if normalize is None else normalize
    lengths = completion_lengths(sample)
    alpha = cfg.loss.hparams.get("alpha", spec.default_alpha)
    if cfg.loss.alpha_scale is not None:
        chosen = (initial[:, 0] / lengths[:, 0]) if normalize else initial[:, 0]
        alpha = alpha_for_scale(cfg.loss.alpha_scale, float(chosen.mean()))
    record = describe(initial, lengths, normalize, float(alpha))
    return record | ({"alpha_scale": cfg.loss.alpha_scale} if cfg.loss.alpha_scale is not None else {})


def resolve_hparams(cfg, policy, dataset, collator, acc, initial, checkpoint) -> dict:
    """The loss's hyper-parameters for this run: ``cfg.loss.hparams``, with ``alpha`` from
    ``loss.alpha_scale`` when set (measured on a fresh run; as stored in the checkpoint on resume, since
    the policy has moved on). A fresh run writes ``reward_scale.json`` when it has a record."""
    import json
    from pathlib import Path

    from alphapo.train.checkpoint import STATE_FILE

    hparams = dict(cfg.loss.hparams)
    if checkpoint is not None:
        stored = json.loads((Path(checkpoint) / STATE_FILE).read_text()).get("alpha_from_scale")
        if cfg.loss.alpha_scale is not None:
            if stored is None:
                raise ConfigError(f"cannot resume: {checkpoint} was not trained with loss.alpha_scale")
            hparams["alpha"] = stored
        return hparams
    record = measure(cfg, policy, dataset, collator, acc, initial)
    if record is None:
        return hparams
    if acc.is_main_process:
        path = Path(cfg.output_dir) / "reward_scale.json"
        write_json(path, record)
        if cfg.loss.alpha_scale is not None:
            logger.info(
                f"train: alpha_scale {cfg.loss.alpha_scale:g} / |mean chosen log-prob "
                f"{record['chosen']['mean_logp']:.4f}|"
                f" -> alpha {record['alpha']:.4g} (chosen weights p^-alpha "
                f"{record['chosen']['weight_range'][0]:.3g}..{record['chosen']['weight_range'][1]:.3g}; {path})",
            )
    if cfg.loss.alpha_scale is not None:
        hparams["alpha"] = record["alpha"]
    return hparams
