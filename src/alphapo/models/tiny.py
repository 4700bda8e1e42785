"""Tiny Llama-architecture causal LMs built from a config, for tests, demos and benchmarks.

They are real ``transformers`` models (``LlamaForCausalLM``): saved with ``save_pretrained`` and
loaded back with ``from_pretrained`` like any checkpoint, so everything downstream runs the same
code path as with a real model.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field


class TinyModelSpec(BaseModel):
    """Size of a tiny Llama. ``vocab_size`` defaults to the tokenizer's when built by the trainer."""

    model_config = ConfigDict(extra="forbid")

    vocab_size: int | None = Field(default=None, gt=0)
    hidden_size: int = Field(default=128, gt=0)
    intermediate_size: int = Field(default=344, gt=0)
    num_hidden_layers: int = Field(default=4, gt=0)
    num_attention_heads: int = Field(default=4, gt=0)
    num_key_value_heads: int | None = Field(default=None, gt=0)
    max_position_embeddings: int = Field(default=512, gt=0)
    tie_word_embeddings: bool = True
    rope_theta: float = 10000.0
    seed: int = 0


def build_tiny_model(
    spec: TinyModelSpec, vocab_size: int | None = None, special_tokens: dict | None = None, head: str = "causal"
):
    """A freshly initialised ``LlamaForCausalLM`` of the given size (deterministic for ``spec.seed``);
    ``head="reward"``: a ``LlamaForSequenceClassification`` with one label (a reward model)."""
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    vocab = spec.vocab_size or vocab_size
    if vocab is None:
        raise ValueError("tiny model: vocab_size is needed (from the spec or the tokenizer)")
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads or spec.num_attention_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=spec.tie_word_embeddings,
        rope_theta=spec.rope_theta,
        **({"num_labels": 1} if head == "reward" else {}),
        **(special_tokens or {}),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = LlamaForCausalLM(config) if head == "causal" else LlamaForSequenceClassification(config)
    return model
