"""Setup for a training run: tokenizer, policy model (local directory or tiny), LoRA, optimiser.

Everything loads from local directories through the real ``from_pretrained`` code; a directory that
is not a model (no config, no weights) is a clear error naming it.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch

from alphapo.errors import ConfigError
from alphapo.models.tiny import build_tiny_model
from alphapo.train.config import TrainConfig

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "adapter_model.safetensors")


def check_model_dir(path: str | Path, what: str = "model") -> Path:
    """``path`` if it is a model directory (config + weights), else a :class:`ConfigError` saying why."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"{what} directory {path} does not exist")
    if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
        raise ConfigError(f"{what} directory {path} has no config.json: not a saved Hugging Face model")
    if not any(next(path.glob(p), None) for p in WEIGHT_PATTERNS):
        raise ConfigError(f"{what} directory {path} has no weights (*.safetensors or pytorch_model*.bin)")
    return path


def load_tokenizer(cfg: TrainConfig):
    from transformers import AutoTokenizer

    source = cfg.tokenizer or cfg.model.path
    if not Path(source).is_dir():
        raise ConfigError(f"tokenizer directory {source} does not exist")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as err:
        raise ConfigError(f"{source}: cannot load a tokenizer: {type(err).__name__}: {err}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(cfg: TrainConfig, tokenizer, path: str | None = None):
    """The policy: from ``path`` (default ``cfg.model.path``) or a tiny model built for ``tokenizer``."""
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, cfg.model.dtype)
    path = path or cfg.model.path
    if path is not None:
        check_model_dir(path)
        kwargs = {"dtype": dtype}
        if cfg.model.attn_implementation:
            kwargs["attn_implementation"] = cfg.model.attn_implementation
        try:
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        except (OSError, ValueError) as err:
            raise ConfigError(f"{path}: cannot load the model: {err}") from None
    else:
        special = {
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        }
        model = build_tiny_model(cfg.model.tiny, vocab_size=len(tokenizer), special_tokens=special).to(dtype)
    rows = model.get_input_embeddings().weight.shape[0]
    if rows < len(tokenizer):
        raise ConfigError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's embedding only {rows}: "
            "they do not belong together"
        )
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    return model


def add_lora(cfg: TrainConfig, model):
    """Wrap ``model`` with PEFT LoRA adapters (base weights frozen)."""
    from peft import LoraConfig, get_peft_model

    lora = cfg.lora
    peft_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_config)


def model_fingerprint(model) -> str:
    """SHA-256 of a model's weights (every parameter and buffer, in name order)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def make_optimizer(cfg: TrainConfig, model):
    """AdamW over the trainable parameters; no weight decay on biases and norms (1-D tensors)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters")
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.optim.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    o = cfg.optim
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=o.lr, betas=o.betas, eps=o.eps)


def make_scheduler(cfg: TrainConfig, optimizer, total_steps: int):
    from transformers import get_scheduler

    s = cfg.schedule
    warmup = s.warmup_steps if s.warmup_steps is not None else math.ceil(s.warmup_ratio * total_steps)
    name = "constant_with_warmup" if s.name == "constant" else s.name
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
