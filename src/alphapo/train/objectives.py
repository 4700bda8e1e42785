"""What one micro-batch contributes: the loss to back-propagate and the metric sums.

Losses are scaled so that, after DDP averages gradients over processes and micro-batches are
summed, the gradient is exactly the mean over every example of the optimiser step, whatever the
split: ``loss = sum(per-example losses) * world_size / examples_in_step`` (SFT: per token).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alphapo.log import logger
from alphapo.losses import preference_loss
from alphapo.ops.model_logps import SharedPrompt, model_pair_loss, share_prompts
from alphapo.ops.pair_loss import default_budget_bytes
from alphapo.ops.preference import preference_pair_loss
from alphapo.train.metrics import MetricSums
from alphapo.train.reference import batch_logps


@dataclass
class StepShape:
    """How many examples (and completion tokens, for SFT) the whole optimiser step has."""

    examples: int
    tokens: int
    world_size: int


class PreferenceObjective:
    """A paired loss from ``alphapo.losses`` on the policy's log-probs: fused (``model_pair_loss``:
    a chunk of pairs at a time, gradients formed in the forward pass, or two-pass when the loss
    couples pairs or a pair's logits exceed the budget) or from the model's full logits.

    ``reference`` [N, 2]: precomputed reference log-probs (None for reference-free losses);
    ``initial`` [N, 2]: the starting policy's, for the displacement metrics (None to skip them).
    """

    def __init__(
        self,
        loss_name,
        hparams,
        reference,
        initial,
        logps_mode,
        chunk_size,
        probe=None,
        schedule="auto",
        budget=None,
        share_prompt: torch.dtype | None = None,
    ):
        self.loss_name = loss_name
        self.hparams = hparams
        self.reference = reference
        self.initial = initial
        self.logps_mode = logps_mode
        self.chunk_size = chunk_size
        self.probe = probe  # a DisplacementProbe collecting first-visit log-probs, or None
        self.schedule = schedule  # fused_pair_loss's schedule: auto, pair or two-pass
        self.budget = budget  # bytes of logits the pair schedule may hold; None: fixed at the first step
        self.last_schedule: str | None = None  # what ran last ("pair" / "two-pass"), logged when it changes
        # pairs packed with their common prefix run once (alphapo.ops.model_logps.share_prompts): None for
        # off, else the mask's dtype (torch.bool for sdpa, the model's dtype for eager's additive mask)
        self.share_prompt = share_prompt

    def __call__(self, model, batch, shape: StepShape, sums: MetricSums) -> torch.Tensor:
        pairs = batch["index"].shape[0]
        scale = shape.world_size / shape.examples
        refs = ()
        if self.reference is not None:
            ref = self.reference[batch["index"].cpu()].to(batch["input_ids"].device)
            refs = (ref[:, 0], ref[:, 1])
        if self.logps_mode == "fused":
            if self.budget is None:  # read once (free memory moves as caches fill); the trainer passes its own
                self.budget = default_budget_bytes(batch["input_ids"].device)
            pair_loss, separable = self._pair_loss(refs, scale)
            fused = model_pair_loss(
                model,
                batch["input_ids"],
                batch["attention_mask"],
                batch["labels"],
                pair_loss,
                separable=separable,
                budget_bytes=self.budget,
                schedule=self.schedule,
                chunk_size=self.chunk_size,
                shared=self._shared(batch),
            )
            logps, n_tokens, mean_logits, objective = fused.logps, fused.n_tokens, fused.mean_logits, fused.loss
            if fused.schedule.name != self.last_schedule:
                self.last_schedule = fused.schedule.name
                logger.info(f"train: fused loss runs the {fused.schedule.name} schedule ({fused.schedule.reason})")
        else:
            logps, n_tokens, mean_logits = batch_logps(model, batch, self.logps_mode, self.chunk_size)
            objective = None
        if not torch.isfinite(logps.detach()).all():
            marked = mark_non_finite(logps, sums).sum() * 0.0
            return marked if objective is None else objective * 0.0
        chosen, rejected = logps[:pairs], logps[pairs:]
        if self.probe is not None:
            self.probe.offer(batch["index"], chosen.detach(), rejected.detach())
        out = preference_loss(
            self.loss_name, chosen, rejected, n_tokens[:pairs], n_tokens[pairs:], *refs, **self.hparams
        )
        sums.add("loss", out.losses)
        sums.add("rewards/chosen", out.chosen_rewards)
        sums.add("rewards/rejected", out.rejected_rewards)
        sums.add("rewards/margins", out.margins)
        sums.add("rewards/accuracies", (out.chosen_rewards > out.rejected_rewards).float())
        sums.add("logps/chosen", chosen)
        sums.add("logps/rejected", rejected)
        sums.add("logits/chosen", mean_logits[:pairs])
        sums.add("logits/rejected", mean_logits[pairs:])
        sums.add("nll_loss", out.nll)
        if self.initial is not None:
            start = self.initial[batch["index"].cpu()].to(logps.device)
            sums.add("displacement/chosen", chosen.detach() - start[:, 0])
            sums.add("displacement/rejected", rejected.detach() - start[:, 1])
            sums.add("displacement/chosen_fell", (chosen.detach() < start[:, 0]).float())
        return out.losses.sum() * scale if objective is None else objective

    def _shared(self, batch) -> SharedPrompt | None:
        if self.share_prompt is None:
            return None
        dtype = None if self.share_prompt == torch.bool else self.share_prompt
        return share_prompts(batch["input_ids"], batch["attention_mask"], float_mask_dtype=dtype)

    def _pair_loss(self, refs, scale):
        """(the per-pair losses of a chunk, times the step's scale, for :func:`model_pair_loss`; whether
        the loss is separable). A chunk with a non-finite log-prob gives zero losses: the step is
        dropped after the forward pass."""
        ref_chosen, ref_rejected = refs or (None, None)
        losses, separable = preference_pair_loss(
            self.loss_name, ref_chosen_logps=ref_chosen, ref_rejected_logps=ref_rejected, scale=scale, **self.hparams
        )

        def pair_loss(chosen, rejected, chosen_n, rejected_n, pairs):
            if not (torch.isfinite(chosen).all() and torch.isfinite(rejected).all()):
                return (chosen + rejected).nan_to_num(0.0, 0.0, 0.0) * 0.0
            return losses(chosen, rejected, chosen_n, rejected_n, pairs)

        return pair_loss, separable


def mark_non_finite(logps: torch.Tensor, sums: MetricSums) -> torch.Tensor:
    """Record that this micro-batch's log-probs are not finite (``nonfinite_logps``, summed over
    processes, so every process skips or stops at the same step) and return them with the
    non-finite values zeroed. The caller still builds its loss from those and runs the backward pass:
    DDP needs every process to reach the same collectives, and the step's update is dropped whatever
    its gradient holds."""
    sums.add_sum("nonfinite_logps", 1.0, 1.0)
    sums.add("loss", torch.full_like(logps.detach(), float("nan")))
    return torch.nan_to_num(logps, nan=0.0, posinf=0.0, neginf=0.0)


class SFTObjective:
    """Token-level NLL on the completions, via the fused op's single-pass mode (6NHV FLOPs): the
    gradient weights ``d loss / d logps`` are the same constant for every sequence and known before
    the forward pass."""

    def __init__(self, logps_mode, chunk_size):
        self.logps_mode = logps_mode
        self.chunk_size = chunk_size

    def __call__(self, model, batch, shape: StepShape, sums: MetricSums) -> torch.Tensor:
        scale = shape.world_size / shape.tokens
        rows = batch["input_ids"].shape[0]
        weights = None
        if self.logps_mode == "fused":
            weights = torch.full((rows,), -scale, dtype=torch.float32, device=batch["input_ids"].device)
        logps, n_tokens, _ = batch_logps(model, batch, self.logps_mode, self.chunk_size, grad_weights=weights)
        if not torch.isfinite(logps.detach()).all():
            return -mark_non_finite(logps, sums).sum() * scale  # the promised grad_weights still hold
        sums.add_sum("loss", -logps.detach().sum(), float(n_tokens.sum()))
        sums.add("logps/chosen", logps)
        return -logps.sum() * scale
