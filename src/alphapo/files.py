"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half of one.

    write_json(path, {"step": 3})            # also write_text, write_jsonl
    write_atomically(path, lambda tmp: torch.save(obj, tmp))

Each writes to a temporary name in the target's directory (``.tmp-<name>-<pid>``, so processes do
not collide), then renames it over the target (``os.replace``: atomic on POSIX and Windows). The
temporary file is removed when writing fails. Directories written as a whole (checkpoints, the
final model, the tokenised-data cache) use the same rename on a temporary directory in their modules.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def cache_root() -> Path:
    """alphapo's cache directory (converted GGUF models, fetched models, NLTK data): ``$ALPHAPO_CACHE``
    or ``~/.cache/alphapo``."""
    return Path(os.environ.get("ALPHAPO_CACHE") or Path.home() / ".cache" / "alphapo")


def write_atomically(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` to write a temporary file, then rename it to ``path`` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    return write_atomically(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | Path, data: Any, indent: int | None = 1) -> Path:
    return write_text(path, json.dumps(data, indent=indent, default=str))


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    return write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
