"""Models: tiny Llama-architecture models built from a config, locally trained tokenizers."""

from alphapo.models.tiny import TinyModelSpec, build_tiny_model
from alphapo.models.tokenizer import CHAT_TEMPLATE, train_bpe_tokenizer

__all__ = ["CHAT_TEMPLATE", "TinyModelSpec", "build_tiny_model", "train_bpe_tokenizer"]
