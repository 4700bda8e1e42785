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
from alphapo.log import logger
from alphapo.models.sources import check_model_dir, resolve_model_source
from alphapo.models.tiny import build_tiny_model
from alphapo.train.config import TrainConfig


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
    """The policy: from ``path`` (default ``cfg.model.path``) or a tiny model built for ``tokenizer``.
    With ``task: reward``, a sequence classifier with one label (a causal LM's directory gains a new
    ``score`` head), its ``pad_token_id`` set so that it scores the last non-padding token."""

    dtype = getattr(torch, cfg.model.dtype)
    path = path or cfg.model.path
    reward = cfg.task == "reward"
    if path is not None:
        check_model_dir(path)
        model = _from_pretrained(cfg, path, dtype)
    else:
        special = {
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        }
        head = "reward" if reward else "causal"
        model = build_tiny_model(cfg.model.tiny, len(tokenizer), special, head=head).to(dtype)
    if reward:
        model.config.pad_token_id = tokenizer.pad_token_id
    rows = model.get_input_embeddings().weight.shape[0]
    if rows < len(tokenizer):
        raise ConfigError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's embedding only {rows}: "
            "they do not belong together"
        )
    if cfg.model.gradient_checkpointing:
        enable_checkpointing(model, cfg.model.checkpoint_every_n_layers)
        model.config.use_cache = False
    if cfg.model.disable_dropout:
        disable_dropout(model)
    return model


def enable_checkpointing(model, every_n_layers: int = 1) -> None:
    """Gradient (activation) checkpointing on every ``every_n_layers``-th decoder layer, non-reentrant."""
    import inspect

    enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5's name
    if enable is not None and "every_n_layers" in inspect.signature(enable).parameters:
        enable({"use_reentrant": False}, every_n_layers=every_n_layers)
        return
    if every_n_layers != 1:
        import transformers

        raise ConfigError(
            f"model.checkpoint_every_n_layers={every_n_layers} needs transformers' every_n_layers (transformers >= 5); "
            f"this is transformers {transformers.__version__}: set it to 1 (every layer) or upgrade"
        )
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _from_pretrained(cfg: TrainConfig, path: str, dtype: torch.dtype):
    """``from_pretrained`` with alphapo's attention setting; a model class that does not support the
    default ``sdpa`` (Gemma-2) falls back to ``eager`` with a note, an explicit choice it refuses is
    an error naming ``model.attn_implementation``."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    impl = cfg.model.attn_implementation
    kwargs = {"dtype": dtype} | ({"attn_implementation": impl} if impl else {})
    auto = AutoModelForCausalLM
    if cfg.task == "reward":
        auto, kwargs = AutoModelForSequenceClassification, kwargs | {"num_labels": 1}
    try:
        if cfg.task == "reward":
            return _reward_from_pretrained(auto, path, kwargs)
        return auto.from_pretrained(path, **kwargs)
    except (OSError, ValueError, ImportError) as err:
        unsupported = impl and ("attention implementation" in str(err) or "FlashAttention" in str(err))
        if not unsupported:
            raise ConfigError(f"{path}: cannot load the model: {err}") from None
        if "attn_implementation" in cfg.model.model_fields_set or impl != "sdpa":
            raise ConfigError(
                f"{path}: the model does not support model.attn_implementation={impl!r} ({str(err).split('.')[0]}); "
                "set model.attn_implementation=eager (or null for transformers' choice)"
            ) from None
    logger.info(
        "%s: this model class does not support attention through sdpa; using eager (model.attn_implementation)", path
    )
    try:
        return auto.from_pretrained(path, **kwargs | {"attn_implementation": "eager"})
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: cannot load the model: {err}") from None


def _reward_from_pretrained(auto, path: str, kwargs: dict):
    """A sequence classifier from ``path``; a causal LM's directory has no score head, which is then
    initialised anew: said in one line instead of transformers' load report (any other missing or
    unexpected weight is still reported)."""
    import logging

    quiet = logging.getLogger("transformers")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        model, info = auto.from_pretrained(path, output_loading_info=True, **kwargs)
    finally:
        quiet.setLevel(level)
    new = [k for k in info.get("missing_keys", ()) if k.split(".")[0] == "score"]
    other = [k for k in info.get("missing_keys", ()) if k not in new]
    if new:
        size = model.config.hidden_size
        logger.info(f"rm: {path} has no score head (a causal LM): a new one ({size} -> 1) starts it")
    if other:
        logger.warning(f"{path}: weights missing from the checkpoint, initialised anew: {', '.join(sorted(other)[:8])}")
    if info.get("mismatched_keys"):
        logger.warning(f"{path}: weights of another shape, initialised anew: {info['mismatched_keys'][:8]}")
    return model


def disable_dropout(model) -> None:
    """Every dropout probability to 0: ``nn.Dropout`` modules and attention modules' ``attention_dropout``."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0
    for key in ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop"):
        if isinstance(getattr(model.config, key, None), float):
            setattr(model.config, key, 0.0)


def local_sources(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with hub ids and ``.gguf`` files in model.path, tokenizer and reference.path(s) replaced by
    local directories (hub snapshots; GGUF files dequantised once into a cached directory)."""
    ref = cfg.reference
    update = {
        "model": cfg.model.model_copy(update={"path": resolve_model_source(cfg.model.path)}),
        "tokenizer": resolve_model_source(cfg.tokenizer, "tokenizer"),
        "reference": ref.model_copy(
            update={
                "path": resolve_model_source(ref.path, "reference.path"),
                "paths": [resolve_model_source(p, "reference.paths") for p in ref.paths],
            }
        ),
    }
    return cfg.model_copy(update=update)


def add_lora(cfg: TrainConfig, model):
    """Wrap ``model`` with PEFT LoRA adapters (base weights frozen)."""
    from peft import LoraConfig, get_peft_model

    lora = cfg.lora
    peft_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="SEQ_CLS" if cfg.task == "reward" else "CAUSAL_LM",  # SEQ_CLS also trains the score head
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


def make_optimizer(cfg: TrainConfig, model, fused_allowed: bool = True):
    """AdamW over the trainable parameters; no weight decay on biases and norms (1-D tensors).
    ``fused_allowed``: whether the run's setup lets ``optim.fused: null`` choose the fused kernel."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters")
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.optim.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    o = cfg.optim
    fused = o.fused
    if fused is None:
        fused = (
            fused_allowed
            and cfg.train.precision != "fp16"
            and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
        )
    kernel = {"fused": True} if fused else {}
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=o.lr, betas=o.betas, eps=o.eps, **kernel)


def make_scheduler(cfg: TrainConfig, optimizer, total_steps: int):
    from transformers import get_scheduler

    s = cfg.schedule
    warmup = s.warmup_steps if s.warmup_steps is not None else math.ceil(s.warmup_ratio * total_steps)
    name = "constant_with_warmup" if s.name == "constant" else s.name
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
