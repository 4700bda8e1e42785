"""Fingerprints and the on-disk cache of tokenised datasets.

A fingerprint is a SHA-256 over everything that decides the tokenised result: the bytes of every
data file (or a dataset directory's files, or a hub name and split), the tokenizer (its full
serialised state, chat template and special tokens) and the data settings. A cache entry is a
directory holding ``items.parquet`` and ``report.json``, written to a temporary name and renamed,
so a crash never leaves a half-written entry that a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

CACHE_VERSION = 2  # bump when the tokenised layout or the rules in tokenize.py change


def _hash_file(digest, path: Path) -> None:
    digest.update(str(path.stat().st_size).encode())
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)


def source_fingerprint(source: str, split: str | None) -> str:
    """Hash of a data source's content (a file, every file of a directory, or a hub name + split)."""
    digest = hashlib.sha256()
    path = Path(source)
    if path.is_file():
        _hash_file(digest, path)
    elif path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(file.relative_to(path)).encode())
            _hash_file(digest, file)
    else:
        digest.update(f"hub:{source}:{split}".encode())
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of everything about a tokenizer that changes token ids."""
    digest = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    digest.update(str(getattr(tokenizer, "chat_template", None)).encode())
    digest.update(json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def fingerprint(parts: dict[str, Any]) -> str:
    blob = json.dumps({"version": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def load_entry(cache_dir: Path, key: str) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
    """The cached (items, report) under ``key``, or None."""
    entry = cache_dir / f"tokenized-{key[:24]}"
    if not (entry / "report.json").is_file():
        return None
    import pyarrow.parquet as pq

    report = json.loads((entry / "report.json").read_text())
    if report.get("key") != key:
        return None
    items = pq.read_table(entry / "items.parquet").to_pylist()
    return items, report


def save_entry(cache_dir: Path, key: str, items: list[dict[str, Any]], report: dict[str, Any]) -> Path:
    """Write (items, report) under ``key`` atomically; return the entry's directory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cache_dir.mkdir(parents=True, exist_ok=True)
    entry = cache_dir / f"tokenized-{key[:24]}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-tokenized-", dir=cache_dir))
    try:
        pq.write_table(pa.Table.from_pylist(items) if items else pa.table({}), tmp / "items.parquet")
        (tmp / "report.json").write_text(json.dumps({**report, "key": key}, indent=1))
        if entry.exists():
            shutil.rmtree(entry)
        os.replace(tmp, entry)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return entry
