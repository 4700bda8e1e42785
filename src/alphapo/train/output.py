"""The run's result: a ``save_pretrained`` directory written atomically.

``<output_dir>/model`` holds the weights (safetensors) or, with LoRA, the adapter; the tokenizer;
``alphapo_config.yaml`` (the resolved config) and ``final_metrics.json``. With ``lora.merge`` the
merged model also goes to ``<output_dir>/merged``. Each is written under a temporary name and renamed.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import socket
from pathlib import Path

from alphapo.config import dump_config
from alphapo.errors import ConfigError


class OutputDirLock:
    """An exclusive lock on ``<output_dir>/.alphapo.lock`` held while a run writes there: a second run
    (another shell, or launcher processes that did not join one group) stops instead of interleaving
    its files with this one's. Released when the run ends or its process dies."""

    def __init__(self, output_dir: Path):
        import fcntl

        self.path = output_dir / ".alphapo.lock"
        self.file = open(self.path, "a+")  # noqa: SIM115  (held for the run's lifetime)
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                return  # a file system without locks (some network mounts): run without one
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise ConfigError(
                f"{output_dir} is in use by another alphapo run ({holder}); wait for it to finish, stop it, "
                "or choose another output_dir"
            ) from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        self.file.flush()

    def release(self) -> None:
        if not self.file.closed:
            self.file.close()

    def __del__(self):
        self.release()


def lock_output_dir(output_dir: Path) -> OutputDirLock | None:
    """:class:`OutputDirLock` on ``output_dir``, or None where ``fcntl`` does not exist (Windows)."""
    try:
        import fcntl  # noqa: F401
    except ImportError:
        return None
    return OutputDirLock(output_dir)


def _write_atomically(acc, target: Path, write) -> Path:
    tmp = target.with_name(f".tmp-{target.name}")
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    write(tmp)
    acc.wait_for_everyone()
    if acc.is_main_process:
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    acc.wait_for_everyone()
    return target


class _TiedWeightsNote(logging.Filter):
    """Drops Accelerate's "Removed shared tensor {'lm_head.weight'} while saving" warning: a model with
    tied embeddings stores the shared tensor once by design, and ``from_pretrained`` ties it back."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Removed shared tensor" not in record.getMessage()


def quiet_tied_weights_note() -> None:
    """Install :class:`_TiedWeightsNote` once on the Accelerate logger that emits the warning."""
    target = logging.getLogger("accelerate.utils.other")
    if not any(isinstance(f, _TiedWeightsNote) for f in target.filters):
        target.addFilter(_TiedWeightsNote())


def drop_tied_copies(model, state_dict: dict | None) -> dict | None:
    """``state_dict`` without the second name of a tied parameter (``lm_head.weight`` beside
    ``model.embed_tokens.weight``): a gathered sharded state dict (FSDP2) holds a separate copy under
    each name, which ``save_pretrained`` cannot recognise as shared and would write twice."""
    if not state_dict:
        return state_dict
    first: dict[int, str] = {}
    copies = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in first:
            copies.add(name)
        else:
            first[id(param)] = name
    return {k: v for k, v in state_dict.items() if k not in copies}


def save_final_model(acc, model, tokenizer, cfg, output_dir: Path, metrics: dict) -> Path:
    """The trained model in ``output_dir/model`` (``save_pretrained``, with its tokenizer, config and
    final metrics); with LoRA the adapter there (and the merged model in ``merged/`` when asked). A
    LoRA reward model is written merged to ``model/`` (what the judge and transformers' pipelines
    load) and its adapter to ``adapter/``."""
    quiet_tied_weights_note()
    unwrapped = acc.unwrap_model(model)
    if cfg.task == "reward" and cfg.lora is not None:
        return _save_lora_reward_model(acc, unwrapped, tokenizer, cfg, output_dir, metrics)
    state_dict = drop_tied_copies(unwrapped, acc.get_state_dict(model))

    def write(tmp: Path) -> None:
        unwrapped.save_pretrained(
            tmp,
            is_main_process=acc.is_main_process,
            save_function=acc.save,
            state_dict=state_dict,
            safe_serialization=True,
        )
        if acc.is_main_process:
            tokenizer.save_pretrained(tmp)
            dump_config(cfg, tmp / "alphapo_config.yaml")
            (tmp / "final_metrics.json").write_text(json.dumps(metrics, indent=1))

    target = _write_atomically(acc, output_dir / "model", write)
    if cfg.lora is not None and cfg.lora.merge:
        merged = unwrapped.merge_and_unload()

        def write_merged(tmp: Path) -> None:
            if acc.is_main_process:
                merged.save_pretrained(tmp, safe_serialization=True)
                tokenizer.save_pretrained(tmp)

        _write_atomically(acc, output_dir / "merged", write_merged)
    return target


def _save_lora_reward_model(acc, unwrapped, tokenizer, cfg, output_dir: Path, metrics: dict) -> Path:
    def write_adapter(tmp: Path) -> None:
        if acc.is_main_process:
            unwrapped.save_pretrained(tmp, safe_serialization=True)

    _write_atomically(acc, output_dir / "adapter", write_adapter)
    merged = unwrapped.merge_and_unload()

    def write(tmp: Path) -> None:
        if acc.is_main_process:
            merged.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            dump_config(cfg, tmp / "alphapo_config.yaml")
            (tmp / "final_metrics.json").write_text(json.dumps(metrics, indent=1))

    return _write_atomically(acc, output_dir / "model", write)
