"""GGUF checkpoints in: a ``.gguf`` file becomes an ordinary fp32 ``save_pretrained`` directory, once.

    from alphapo.models.gguf import dequantized_dir
    model_dir = dequantized_dir("SmolLM2-135M-Instruct.Q4_1.gguf")   # cached; later calls return at once

transformers reads GGUF through the ``gguf`` package (``from_pretrained(dir, gguf_file=...)``) and
dequantises every tensor to the requested dtype; the model it returns refuses ``save_pretrained``
("quantized with gguf"). So the model is rebuilt from its config without the ``quantization_config``,
the dequantised state dict loaded into it, and saved with the tokenizer (chat template included) as a
normal directory. Every stage then loads that directory through the usual code path.

The cache lives under ``$ALPHAPO_CACHE`` (default ``~/.cache/alphapo``) in ``gguf/<sha256 of the
file's bytes, 16 hex digits>/``: keyed by content, so a renamed or moved file is found again and a
changed one is converted anew. The directory is written under a temporary name and renamed, so a
conversion killed half-way is redone, never half-used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from alphapo.errors import ConfigError
from alphapo.files import cache_root
from alphapo.log import logger

MARKER = "alphapo_gguf.json"
"""Written last into a converted directory: the source file, its hash, the versions that converted it."""


def is_gguf(path: str | Path | None) -> bool:
    return path is not None and str(path).lower().endswith(".gguf")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def dequantized_dir(gguf_path: str | Path, what: str = "model.path") -> Path:
    """The fp32 ``save_pretrained`` directory of ``gguf_path`` (converted on first use, then cached)."""
    source = Path(gguf_path)
    if not source.is_file():
        raise ConfigError(f"{what}={gguf_path}: no such GGUF file")
    digest = file_sha256(source)
    target = cache_root() / "gguf" / digest[:16]
    if _converted(target, digest):
        logger.debug(f"gguf: {source} -> {target} (cached)")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock(target.parent / f".{target.name}.lock"):  # several processes of one launch: one converts
        if _converted(target, digest):
            return target
        logger.info(f"gguf: dequantising {source} to fp32 (once; cached by content in {target})")
        start = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
        try:
            _convert(source, tmp)
            (tmp / MARKER).write_text(json.dumps({"source": str(source.resolve()), "sha256": digest, **_versions()}))
            if target.exists():  # a conversion without its marker: never finished
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        logger.info(f"gguf: {source.name} -> {target} in {time.monotonic() - start:.0f}s")
    return target


def _converted(target: Path, digest: str) -> bool:
    marker = target / MARKER
    return marker.is_file() and json.loads(marker.read_text()).get("sha256") == digest


@contextmanager
def _lock(path: Path):
    try:
        import fcntl
    except ImportError:  # Windows: no lock (one process converts at a time in practice)
        yield
        return
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert(source: Path, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError:
        raise ConfigError(f"{source}: reading GGUF files needs the gguf package: pip install gguf") from None
    folder, name = str(source.parent), source.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise ConfigError(f"{source}: transformers cannot read this GGUF file: {type(err).__name__}: {err}") from None
    config = AutoConfig.for_model(**{k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"})
    config.dtype = torch.float32
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = loaded.state_dict()
    model.load_state_dict(state, assign=True, strict=False)
    if config.tie_word_embeddings:
        model.tie_weights()
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        raise ConfigError(f"{source}: the GGUF file has no tensor for {', '.join(missing[:5])}")
    model.generation_config = loaded.generation_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _versions() -> dict:
    from importlib.metadata import version

    return {name: version(name) for name in ("transformers", "torch", "gguf")}
