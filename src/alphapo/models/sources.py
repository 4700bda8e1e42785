"""Where a model comes from: a local ``save_pretrained`` directory, a ``.gguf`` file or a hub id.

:func:`resolve_model_source` turns any of them into a local directory (a GGUF file is dequantised
once into a cached directory, :mod:`alphapo.models.gguf`; a hub id comes from the local cache or a
download); :func:`check_model_dir` says clearly why a directory is not a model. Every stage that
loads a model (train, sample, eval, judge) goes through here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from alphapo.errors import ConfigError
from alphapo.models.gguf import dequantized_dir, is_gguf

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "adapter_model.safetensors")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


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


def resolve_model_source(source: str | None, what: str = "model.path") -> str | None:
    """A local directory for ``source``: itself when it is a directory; for a ``.gguf`` file, its
    dequantised fp32 directory (converted once, cached by content); for a name of ``alphapo models
    ls`` (``smollm2-135m-instruct``), that model (fetched once); else (when it reads as a Hugging
    Face hub id, ``org/name``) the hub snapshot from the local cache or a download. Offline or not
    found, a :class:`ConfigError` that says so and how to get the files."""
    if source is None:
        return None
    if is_gguf(source):
        return str(dequantized_dir(source, what))
    from alphapo.models.catalog import CATALOG, get_model

    if source in CATALOG and not Path(source).exists():  # a model `alphapo models get` fetches
        return str(get_model(source))
    if Path(source).exists() or not HUB_ID.match(source):
        return source
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(source)
    except Exception as err:  # offline, gated, or no such repository
        offline = os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True")
        why = "offline (HF_HUB_OFFLINE is set)" if offline else f"{type(err).__name__}: {str(err).splitlines()[0]}"
        raise ConfigError(
            f"{what}={source!r} is not a local directory, so it was taken as a Hugging Face hub id, and it is not in "
            f"the local cache and could not be downloaded ({why}). Download it where there is internet "
            f"(`hf download {source} --local-dir DIR`) and set {what}=DIR; for SmolLM2-135M-Instruct offline: "
            "`alphapo models get smollm2-135m-instruct`."
        ) from None
