"""KTO on unpaired data from the trainer: ``loss.name: kto`` with rows of (prompt, completion, label).

KTO's reference point is a KL estimate ``E[logp(y'|x) - logp_ref(y'|x)]`` on *mismatched* prompts and
completions (Ethayarajh et al. 2024; TRL pairs each prompt with another example's completion). Here
the mismatch is fixed per example: example ``i``'s prompt with example ``i + 1``'s completion (in
dataset order, wrapping around). :class:`KTOView` presents each example as a two-row item, its own
completion then the mismatched one, so the reference table, the collator and the fused op run
unchanged: the reference table holds both log-probs ``[N, 2]``.

Per micro-batch, :class:`KTOObjective` computes the policy's log-probs of the examples' own
completions (with gradients, :func:`sequence_logps`: two-pass, since the loss needs the batch's KL
estimate) and of the mismatched ones (without), estimates the KL over the micro-batch (clamped at 0,
detached, as TRL does per forward pass), and applies :func:`alphapo.losses.kto_loss`. A fixed
``loss.kl`` replaces the estimate (and skips the mismatched pass). Metrics follow TRL's KTO names:
``rewards/chosen`` (desirable), ``rewards/rejected`` (undesirable), ``logps/chosen|rejected``, ``kl``.
"""

from __future__ import annotations

from typing import Any

import torch

from alphapo.errors import ConfigError
from alphapo.losses import kto_loss
from alphapo.train.metrics import MetricSums
from alphapo.train.objectives import StepShape, mark_non_finite
from alphapo.train.reference import batch_logps


class KTOView:
    """Unpaired examples as two-row items: ``chosen_ids`` the example's completion, ``rejected_ids``
    the next example's completion under this prompt (the KL estimate's mismatched pair), ``label``."""

    kind = "paired"  # the row layout; what the rows mean is KTO's
    unpaired = True

    def __init__(self, dataset):
        self.base = dataset
        self.report = dataset.report
        self.key = f"{dataset.key}:kto-mismatch-next"
        self.content_key = f"{dataset.content_key}:kto-mismatch-next"
        self._lengths: list[int] | None = None

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item, other = self.base[i], self.base[(i + 1) % len(self.base)]
        return {
            "index": i,
            "prompt_ids": item["prompt_ids"],
            "chosen_ids": item["completion_ids"],
            "rejected_ids": other["completion_ids"],
            "label": item["label"],
        }

    def lengths(self) -> list[int]:
        if self._lengths is None:
            completions = [len(self.base[i]["completion_ids"]) for i in range(len(self.base))]
            self._lengths = [
                len(self.base[i]["prompt_ids"]) + max(n, completions[(i + 1) % len(completions)])
                for i, n in enumerate(completions)
            ]
        return self._lengths


class KTOObjective:
    """KTO's loss on a micro-batch of :class:`KTOView` items; ``reference`` [N, 2] (own, mismatched)."""

    OPTIONS = ("beta", "desirable_weight", "undesirable_weight", "alpha", "length_normalize")

    def __init__(self, hparams: dict[str, Any], reference: torch.Tensor, logps_mode: str, chunk_size):
        unknown = [k for k in hparams if k not in (*self.OPTIONS, "kl") and hparams[k] not in (None, 0, 0.0)]
        if unknown:
            raise ConfigError(f"loss kto on unpaired data does not take {', '.join(unknown)}")
        self.hparams = {k: v for k, v in hparams.items() if k in self.OPTIONS}
        self.fixed_kl = hparams.get("kl")
        self.reference = reference
        self.logps_mode = logps_mode
        self.chunk_size = chunk_size

    def __call__(self, model, batch, shape: StepShape, sums: MetricSums) -> torch.Tensor:
        rows = batch["index"].shape[0]
        own = {k: v[:rows] for k, v in batch.items() if k in ("input_ids", "attention_mask", "labels")}
        logps, n_tokens, _ = batch_logps(model, own, self.logps_mode, self.chunk_size)
        ref = self.reference[batch["index"].cpu()].to(logps.device)
        kl = self.fixed_kl
        if kl is None:
            mismatched = {k: v[rows:] for k, v in batch.items() if k in ("input_ids", "attention_mask", "labels")}
            with torch.no_grad():
                other, _, _ = batch_logps(model, mismatched, self.logps_mode, self.chunk_size)
            kl = (other.double() - ref[:, 1]).mean().clamp(min=0)
        if not torch.isfinite(logps.detach()).all() or not torch.isfinite(torch.as_tensor(kl)).all():
            return mark_non_finite(logps, sums).sum() * 0.0
        good = batch["label"].to(logps.device)
        out = kto_loss(
            logps[good],
            logps[~good],
            ref[good, 0],
            ref[~good, 0],
            kl,
            desirable_lengths=n_tokens[good],
            undesirable_lengths=n_tokens[~good],
            **self.hparams,
        )
        named = {
            "loss": out.losses,
            "rewards/chosen": out.desirable_rewards,
            "rewards/rejected": out.undesirable_rewards,
            "logps/chosen": logps[good],
            "logps/rejected": logps[~good],
        }
        for name, values in named.items():
            if values.numel():  # a micro-batch may hold only desirable or only undesirable examples
                sums.add(name, values)
        sums.add_sum("kl", out.kl, 1.0)
        return out.losses.sum() * (shape.world_size / shape.examples)
