"""KTO on unpaired data from the trainer: ``loss.name: kto`` with rows of (prompt, completion, label).

KTO's reference point is a KL estimate ``E[logp(y'|x) - logp_ref(y'|x)]`` on *mismatched* prompts and
completions (Ethayarajh et al. 2024; TRL pairs each prompt with another example's completion). Here
the mismatch is fixed per example by a seeded permutation that avoids the example's own prompt
(:func:`mismatched_partners`): unpaired data often holds a prompt's chosen and rejected rows side by
side (TRL's ``unpair_preference_dataset``) or its K samples together, so "the next row" would often be
an answer to the same prompt. The mismatched completion is cut to what ``data.max_length`` leaves
after the prompt, as every training row is. :class:`KTOView` presents each example as a two-row
item, its own completion then the mismatched one, so the reference table, the collator and the fused
op run unchanged: the reference table holds both log-probs ``[N, 2]``.

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
from alphapo.log import logger
from alphapo.losses import kto_loss
from alphapo.train.metrics import MetricSums
from alphapo.train.objectives import StepShape, mark_non_finite
from alphapo.train.reference import batch_logps


def mismatched_partners(prompts: list[tuple[int, ...]], seed: int) -> tuple[list[int], int]:
    """For each example, another example whose prompt differs: a seeded shuffle of the prompts'
    groups, each group kept together, every example paired with the one a largest group's length
    further on (wrapping around), so no example lands in its own group unless one prompt holds more
    than half of the data. Returns (partners, how many still share their prompt)."""
    import random

    groups: dict[tuple[int, ...], list[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault(prompt, []).append(i)
    ordered = list(groups.values())
    random.Random(seed).shuffle(ordered)
    order = [i for group in ordered for i in group]
    shift = max(len(g) for g in ordered) if len(ordered) > 1 else 1
    partners = [0] * len(order)
    for position, i in enumerate(order):
        partners[i] = order[(position + shift) % len(order)]
    same = sum(prompts[i] == prompts[j] for i, j in enumerate(partners))
    return partners, same


class KTOView:
    """Unpaired examples as two-row items: ``chosen_ids`` the example's completion, ``rejected_ids``
    another prompt's completion under this prompt (the KL estimate's mismatched pair; see
    :func:`mismatched_partners`), cut to ``max_length``, and ``label``."""

    kind = "paired"  # the row layout; what the rows mean is KTO's
    unpaired = True

    def __init__(self, dataset, seed: int = 0, max_length: int | None = None):
        self.base = dataset
        self.report = dataset.report
        self.max_length = max_length
        prompts = [tuple(dataset[i]["prompt_ids"]) for i in range(len(dataset))]
        self.partners, shared = mismatched_partners(prompts, seed)
        if shared:
            logger.warning(
                f"kto: {shared} of {len(prompts)} KL rows pair a prompt with an answer to the same prompt: one "
                "prompt holds more than half of the data"
            )
        tag = f"kto-mismatch-permuted:{seed}:{max_length}"
        self.key = f"{dataset.key}:{tag}"
        self.content_key = f"{dataset.content_key}:{tag}"
        self._lengths: list[int] | None = None

    def __len__(self) -> int:
        return len(self.base)

    def _mismatched(self, i: int) -> list[int]:
        prompt, other = self.base[i]["prompt_ids"], self.base[self.partners[i]]["completion_ids"]
        if self.max_length is not None:
            other = other[: max(self.max_length - len(prompt), 1)]
        return other

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.base[i]
        return {
            "index": i,
            "prompt_ids": item["prompt_ids"],
            "chosen_ids": item["completion_ids"],
            "rejected_ids": self._mismatched(i),
            "label": item["label"],
        }

    def lengths(self) -> list[int]:
        if self._lengths is None:
            self._lengths = [
                len(self.base[i]["prompt_ids"]) + max(len(self.base[i]["completion_ids"]), len(self._mismatched(i)))
                for i in range(len(self.base))
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
                other, other_n, _ = batch_logps(model, mismatched, self.logps_mode, self.chunk_size)
            gap = other.double() - ref[:, 1]  # policy and reference on the same mismatched completions
            if self.hparams.get("length_normalize"):  # the rewards are per token: so is their reference point
                gap = gap / other_n.double()
            kl = gap.mean().clamp(min=0)
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
