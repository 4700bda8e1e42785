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


class SharedPrompt(NamedTuple):
    """A batch of pairs packed one pair per row: ``[common prefix | rest of chosen | rest of rejected]``.

    Rows ``i`` (chosen) and ``P + i`` (rejected) of a paired batch repeat their prompt; packed, the
    prefix they share runs through the body once, the rejected answer attends to it and to itself
    (never to the chosen answer) at the positions it has in its own row. The head then receives each
    unpacked row's hidden states, gathered from the packed ones (``gather``): the same contexts at
    the same positions, so the same log-probs and gradients as the unpacked batch, computed on fewer
    positions (the saving is the prefixes' length, a third of the positions on HH-RLHF's multi-turn
    prompts)."""

    input_ids: torch.Tensor  # [P, Tp]
    attention_mask: torch.Tensor  # [P, 1, Tp, Tp]: bool (True attends) for sdpa, additive float for eager
    position_ids: torch.Tensor  # [P, Tp]
    gather: torch.Tensor  # [2P * T] index into the packed hidden states [P * Tp] of each unpacked position
    positions_saved: int  # unpacked positions minus packed positions


def share_prompts(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, float_mask_dtype: torch.dtype | None = None
) -> SharedPrompt:
    """Pack a right-padded paired batch (rows ``[0, P)`` chosen, ``[P, 2P)`` rejected, as the collator
    builds it) into :class:`SharedPrompt`. The shared prefix is the longest common prefix of the two
    rows' tokens (at least the prompt; nothing when they differ from the first token). ``float_mask_dtype``:
    an additive mask of this dtype (eager attention) instead of a boolean one (sdpa)."""
    pairs, width = input_ids.shape[0] // 2, input_ids.shape[1]
    lengths = attention_mask.sum(dim=1).tolist()
    if not all(bool(attention_mask[r, : lengths[r]].all()) for r in range(2 * pairs)):
        raise ValueError("share_prompts needs right-padded rows")
    chosen, rejected = input_ids[:pairs], input_ids[pairs:]
    common = (chosen == rejected).int().cumprod(dim=1).sum(dim=1).tolist()
    plan = []
    for i in range(pairs):
        lc, lr = lengths[i], lengths[pairs + i]
        shared = min(common[i], lc, lr)
        plan.append((lc, lr, shared))
    packed = max(lc + lr - shared for lc, lr, shared in plan)
    device = input_ids.device
    ids = torch.zeros(pairs, packed, dtype=input_ids.dtype, device=device)
    positions = torch.zeros(pairs, packed, dtype=torch.long, device=device)
    allowed = torch.zeros(pairs, packed, packed, dtype=torch.bool, device=device)
    gather = torch.zeros(2 * pairs, width, dtype=torch.long, device=device)
    causal = torch.ones(packed, packed, dtype=torch.bool, device=device).tril()
    for i, (lc, lr, shared) in enumerate(plan):
        rest = lr - shared  # the rejected row's own tokens
        ids[i, :lc] = input_ids[i, :lc]
        ids[i, lc : lc + rest] = input_ids[pairs + i, shared:lr]
        positions[i, :lc] = torch.arange(lc, device=device)
        positions[i, lc : lc + rest] = torch.arange(shared, lr, device=device)
        allowed[i, :lc, :lc] = causal[:lc, :lc]  # the chosen row, as it is
        allowed[i, lc : lc + rest, :shared] = True  # the rejected answer sees the shared prefix
        allowed[i, lc : lc + rest, lc : lc + rest] = causal[:rest, :rest]  # and itself, causally
        idle = torch.arange(lc + rest, packed, device=device)
        allowed[i, idle, idle] = True  # padding attends to itself (a row with no key gives NaN)
        base = i * packed
        gather[i, :lc] = base + torch.arange(lc, device=device)
        gather[pairs + i, :shared] = base + torch.arange(shared, device=device)
        gather[pairs + i, shared:lr] = base + lc + torch.arange(rest, device=device)
        gather[i, lc:] = gather[pairs + i, lr:] = base  # padding: any position (its targets are ignored)
    mask = allowed.unsqueeze(1)
    if float_mask_dtype is not None:
        mask = torch.zeros(mask.shape, dtype=float_mask_dtype, device=device).masked_fill(
            ~mask, torch.finfo(float_mask_dtype).min
        )
    saved = 2 * pairs * width - pairs * packed
    return SharedPrompt(ids, mask, positions, gather.reshape(-1), saved)


def shared_prompt_support(model: nn.Module) -> str | None:
    """Why ``model`` cannot run :class:`SharedPrompt` batches, or None when it can: its attention takes
    a custom 4D mask (sdpa or eager), its positions come from ``position_ids`` (rotary or learned, not
    ALiBi) and no layer uses a sliding window (whose own mask a custom one would replace)."""
    import inspect

    inner = unwrap(model)
    config = inner.config
    implementation = getattr(config, "_attn_implementation", None)
    if implementation not in ("sdpa", "eager"):
        return f"attention {implementation!r} (sdpa or eager take the packed rows' mask)"
    if "position_ids" not in inspect.signature(inner.forward).parameters:
        return f"{type(inner).__name__} takes no position_ids"
    if getattr(config, "alibi", False) or getattr(config, "position_embedding_type", None) == "alibi":
        return "ALiBi positions come from the mask"
    layer_types = getattr(config, "layer_types", None) or []
    if getattr(config, "sliding_window", None) is not None and (
        getattr(config, "use_sliding_window", True) or any("sliding" in t for t in layer_types)
    ):
        return "a sliding-window attention layer"
    return None


def model_sequence_logps(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int = -100,
    chunk_size: int | None = None,
    grad_weights: torch.Tensor | None = None,
    shared: SharedPrompt | None = None,
) -> ModelLogps:
    """Per-sequence log-probs of ``labels`` under ``model`` without materialising its logits.

    Args:
        model: a ``transformers`` causal LM, possibly wrapped (DDP, FSDP, DeepSpeed, PEFT, compile).
        input_ids, attention_mask, labels: [B, T]; labels aligned with input_ids (HF convention).
        chunk_size, grad_weights: passed to :func:`sequence_logps`.
        shared: the batch's pairs packed by :func:`share_prompts` (the body runs on them).
    """

    def compute(hidden, weight, targets, bias, softcap):
        logps, n_tokens = sequence_logps(
            hidden, weight, targets, bias, ignore_index, chunk_size, softcap=softcap, grad_weights=grad_weights
        )
        return logps, ModelLogps(logps, n_tokens, sequence_mean_logits(hidden, weight, targets, bias, ignore_index))

    return _through_head(model, input_ids, attention_mask, labels, ignore_index, compute, shared)


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
    shared: SharedPrompt | None = None,
) -> ModelPairLoss:
    """:func:`fused_pair_loss` on ``model``'s head: rows ``[0, P)`` chosen, ``[P, 2P)`` rejected.

    The gradients of the head and of the final hidden states are formed during this forward pass
    (pair schedule) and released to the rest of the model by ``loss.backward()``. ``shared``: the
    batch packed by :func:`share_prompts`, each pair's common prefix run once.
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

    return _through_head(model, input_ids, attention_mask, labels, ignore_index, compute, shared)


def _through_head(model, input_ids, attention_mask, labels, ignore_index, compute, shared=None):
    """Run ``model`` with its head's forward replaced by ``compute(hidden, weight, targets, bias,
    softcap) -> (what the head returns, result)``; return the result. With ``shared``, the body runs
    on the packed rows and the head gathers each unpacked row's hidden states from them."""
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
        if shared is not None and hidden.shape[:2] == shared.input_ids.shape:
            hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, shared.gather)
            hidden = hidden.view(*targets.shape, -1)
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
        if shared is None:
            model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        else:
            model(
                input_ids=shared.input_ids,
                attention_mask=shared.attention_mask,
                position_ids=shared.position_ids,
                use_cache=False,
            )
    finally:
        del head.forward
    if len(results) != 1:
        raise UnsupportedModelError(
            f"{type(unwrap(model)).__name__}: expected one call of the output head per forward, saw {len(results)}"
        )
    return results[0]


@torch.no_grad()
def verify_shared_prompt(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    float_mask_dtype: torch.dtype | None = None,
    *,
    atol: float | None = None,
) -> float | None:
    """The largest per-token difference between the log-probs of a paired batch packed by
    :func:`share_prompts` and unpacked, or None when it exceeds ``atol`` (1e-4 per token for fp32/fp64
    weights, 2e-2 for bf16/fp16): a model whose attention or positions do not follow the packed rows'
    mask and position ids."""
    if atol is None:
        atol = 1e-4 if head_of(model).weight.dtype in (torch.float32, torch.float64) else 2e-2
    shared = share_prompts(input_ids, attention_mask, float_mask_dtype)
    plain = model_sequence_logps(model, input_ids, attention_mask, labels)
    packed = model_sequence_logps(model, input_ids, attention_mask, labels, shared=shared)
    per_token = ((plain.logps - packed.logps).abs() / plain.n_tokens.clamp(min=1)).max().item()
    return per_token if per_token <= atol else None


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
