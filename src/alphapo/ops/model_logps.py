"""Apply :func:`sequence_logps` to a ``transformers`` causal LM.

The model's top-level ``forward`` runs as usual (so DDP, FSDP, DeepSpeed, gradient checkpointing and
PEFT adapters behave as they always do), but for that one call the output head's ``forward`` is
replaced by the fused op: it receives the final hidden states, computes the per-sequence log-probs
and returns them in place of the logits. Running inside the head module's own call is what makes
sharded training work: FSDP and ZeRO-3 gather the head's parameters around that call and hook its
output for the backward pass. Supported heads: a plain ``nn.Linear`` with
or without bias, tied or not to the input embeddings, with Gemma-2 style logit soft-capping
(``config.final_logit_softcapping``) and the logit scales of Cohere (``config.logit_scale``) and
Granite (``config.logits_scaling``). Anything else is refused with :class:`UnsupportedModelError`;
:func:`verify_against_logits` checks a model the op does not know against its own logits.

Labels follow Hugging Face's convention: aligned with ``input_ids`` (``labels[:, t]`` is the token at
``t``, ``-100`` where not trained), the shift happens here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from alphapo.errors import ConfigError
from alphapo.ops.pair_loss import PairLossFn, Schedule, fused_pair_loss
from alphapo.ops.sequence_logps import sequence_logps, sequence_mean_logits


class UnsupportedModelError(ConfigError):
    """The model's output head is not one the fused op can reproduce exactly."""


@dataclass(frozen=True)
class LMHead:
    """What the op needs from a model's output head: logits = softcap(scale * (h W^T + b))."""

    weight: torch.Tensor  # [V, H]
    bias: torch.Tensor | None  # [V]
    scale: float = 1.0
    softcap: float | None = None


class ModelLogps(NamedTuple):
    logps: torch.Tensor  # [B] log-prob sums over labelled tokens
    n_tokens: torch.Tensor  # [B]
    mean_logits: torch.Tensor  # [B] (no grad) TRL's logits/chosen|rejected metric


def unwrap(model: nn.Module) -> nn.Module:
    """The ``transformers`` model inside DDP/FSDP/``torch.compile``/PEFT wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):  # DDP, DeepSpeed engine
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        elif hasattr(model, "get_base_model") and callable(model.get_base_model):  # PEFT
            model = model.get_base_model()
        else:
            return model


def _unsharded_class(module: nn.Module) -> type:
    """The module's own class: FSDP2's ``fully_shard`` swaps it for a subclass ``FSDP<Name>(FSDPModule,
    <Name>)`` that only adds the sharding hooks."""
    cls = type(module)
    bases = cls.__bases__
    if len(bases) == 2 and bases[0].__name__ == "FSDPModule" and cls.__name__ == f"FSDP{bases[1].__name__}":
        return bases[1]
    return cls


def head_of(model: nn.Module) -> LMHead:
    """Describe ``model``'s output head, or raise :class:`UnsupportedModelError` saying why not."""
    lm = unwrap(model)
    name = type(lm).__name__
    config = getattr(lm, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        raise UnsupportedModelError(f"{name}: only decoder-only transformers causal LMs are supported")
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    if head is None:
        raise UnsupportedModelError(f"{name} has no output embeddings (get_output_embeddings() is None)")
    if _unsharded_class(head) is not nn.Linear:
        raise UnsupportedModelError(
            f"{name}: the output head is a {type(head).__name__}, not a plain nn.Linear (an adapter on lm_head "
            "or a custom head); train without LoRA on lm_head, or set logps: logits to use full logits"
        )
    scale = 1.0
    if getattr(config, "logit_scale", None) is not None:  # Cohere: logits * logit_scale
        scale *= float(config.logit_scale)
    if getattr(config, "logits_scaling", None) is not None:  # Granite: logits / logits_scaling
        scale /= float(config.logits_scaling)
    if getattr(config, "dim_model_base", None) is not None:  # MiniCPM scales hidden states in code we can't see
        raise UnsupportedModelError(f"{name}: MiniCPM-style width scaling of the head is not supported")
    softcap = getattr(config, "final_logit_softcapping", None)
    return LMHead(head.weight, head.bias, scale, float(softcap) if softcap else None)


def shift_labels(labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """[B, T] labels aligned with input_ids -> labels aligned with the hidden state that predicts them."""
    pad = torch.full_like(labels[:, :1], ignore_index)
    return torch.cat([labels[:, 1:], pad], dim=1)


def model_sequence_logps(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int = -100,
    chunk_size: int | None = None,
    grad_weights: torch.Tensor | None = None,
) -> ModelLogps:
    """Per-sequence log-probs of ``labels`` under ``model`` without materialising its logits.

    Args:
        model: a ``transformers`` causal LM, possibly wrapped (DDP, FSDP, DeepSpeed, PEFT, compile).
        input_ids, attention_mask, labels: [B, T]; labels aligned with input_ids (HF convention).
        chunk_size, grad_weights: passed to :func:`sequence_logps`.
    """

    def compute(hidden, weight, targets, bias, softcap):
        logps, n_tokens = sequence_logps(
            hidden, weight, targets, bias, ignore_index, chunk_size, softcap=softcap, grad_weights=grad_weights
        )
        return logps, ModelLogps(logps, n_tokens, sequence_mean_logits(hidden, weight, targets, bias, ignore_index))

    return _through_head(model, input_ids, attention_mask, labels, ignore_index, compute)


class ModelPairLoss(NamedTuple):
    loss: torch.Tensor  # summed pair loss, differentiable
    logps: torch.Tensor  # [2P] log-prob sums (detached)
    n_tokens: torch.Tensor  # [2P]
    mean_logits: torch.Tensor  # [2P] (no grad) TRL's logits/chosen|rejected metric
    schedule: Schedule


def model_pair_loss(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    pair_loss: PairLossFn,
    *,
    ignore_index: int = -100,
    separable: bool = True,
    budget_bytes: int | None = None,
    schedule: str = "auto",
    chunk_size: int | None = None,
) -> ModelPairLoss:
    """:func:`fused_pair_loss` on ``model``'s head: rows ``[0, P)`` chosen, ``[P, 2P)`` rejected.

    The gradients of the head and of the final hidden states are formed during this forward pass
    (pair schedule) and released to the rest of the model by ``loss.backward()``.
    """

    def compute(hidden, weight, targets, bias, softcap):
        out = fused_pair_loss(
            hidden,
            weight,
            targets,
            pair_loss,
            bias,
            ignore_index,
            softcap=softcap,
            separable=separable,
            budget_bytes=budget_bytes,
            schedule=schedule,
            chunk_size=chunk_size,
        )
        mean_logits = sequence_mean_logits(hidden, weight, targets, bias, ignore_index)
        return out.loss, ModelPairLoss(out.loss, out.logps, out.n_tokens, mean_logits, out.schedule)

    return _through_head(model, input_ids, attention_mask, labels, ignore_index, compute)


def _through_head(model, input_ids, attention_mask, labels, ignore_index, compute):
    """Run ``model`` with its head's forward replaced by ``compute(hidden, weight, targets, bias,
    softcap) -> (what the head returns, result)``; return the result."""
    spec = head_of(model)
    head = unwrap(model).get_output_embeddings()
    targets = shift_labels(labels, ignore_index)
    results = []

    def fused_head(hidden: torch.Tensor) -> torch.Tensor:
        # Runs as the head module's forward: parameters are gathered here under FSDP/ZeRO-3.
        weight, bias = head.weight, head.bias
        if spec.scale != 1.0:  # (s h) W^T + s b = s (h W^T + b)
            hidden = hidden * spec.scale
            bias = None if bias is None else bias * spec.scale
        if hidden.dtype != weight.dtype:  # e.g. autocast left the final norm in fp32
            hidden = hidden.to(weight.dtype)
        if hidden.shape[:2] != targets.shape:
            raise UnsupportedModelError(
                f"{type(unwrap(model)).__name__}: the head received hidden states of shape {tuple(hidden.shape)}, "
                f"not one per input position {tuple(targets.shape)}"
            )
        returned, result = compute(hidden, weight, targets, bias, spec.softcap)
        results.append(result)
        return returned

    head.forward = fused_head  # an instance attribute: nn.Module.__call__ (and its hooks) call it
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    finally:
        del head.forward
    if len(results) != 1:
        raise UnsupportedModelError(
            f"{type(unwrap(model)).__name__}: expected one call of the output head per forward, saw {len(results)}"
        )
    return results[0]


def logits_sequence_logps(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """The naive twin: [B] log-prob sums from full logits [B, T, V] and HF-aligned labels [B, T]."""
    targets = shift_labels(labels, ignore_index)
    mask = targets != ignore_index
    logprobs = torch.log_softmax(logits.float() if logits.dtype != torch.float64 else logits, dim=-1)
    picked = logprobs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(dim=1)


@torch.no_grad()
def verify_against_logits(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    *,
    atol: float | None = None,
) -> float:
    """Compare the fused path with ``model(...).logits`` on a (small) batch; return the largest
    per-token difference, or raise :class:`UnsupportedModelError` if it exceeds ``atol`` (default:
    1e-3 per token for fp32/fp64 weights, 5e-2 for bf16/fp16, whose logits differ by rounding alone)."""
    if atol is None:
        atol = 1e-3 if head_of(model).weight.dtype in (torch.float32, torch.float64) else 5e-2
    fused = model_sequence_logps(model, input_ids, attention_mask, labels)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    naive = logits_sequence_logps(logits, labels)
    per_token = ((fused.logps - naive).abs() / fused.n_tokens.clamp(min=1)).max().item()
    if per_token > atol:
        raise UnsupportedModelError(
            f"{type(unwrap(model)).__name__}: fused log-probs differ from the model's own logits by {per_token:.3g} "
            f"per token (> {atol}); its head does something the op does not reproduce. Set logps: logits."
        )
    return per_token
