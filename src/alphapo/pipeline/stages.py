"""Stage bookkeeping for ``alphapo run``: run a stage only when its inputs or settings changed.

A completed stage leaves ``<out>/.stages/<name>.json`` with a fingerprint of its settings and of the
content of its input files. On the next run the stage is skipped when the fingerprint matches and
its outputs exist; otherwise it runs again, and since its outputs then change, so do the
fingerprints of the stages after it. A stage killed half-way left no marker, so it runs again (a
training stage resumes from its own last checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from alphapo.files import write_json
from alphapo.log import logger

LARGE_FILE = 64 * 2**20  # files above this are fingerprinted by size and modification time, not content


def fingerprint_path(path: Path) -> str:
    """Content hash of a file, or of every file under a directory (large files by size and mtime)."""
    if not path.exists():
        return "missing"
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and ".tmp-" not in p.name)
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        stat = file.stat()
        if stat.st_size > LARGE_FILE:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
            continue
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class Stages:
    """Runs named stages with skip-if-unchanged semantics and records their timings."""

    def __init__(self, out: Path, quiet: bool = False):
        self.out = out
        self.markers = out / ".stages"
        self.quiet = quiet
        self.timings: dict[str, float] = {}

    def log(self, message: str) -> None:
        if not self.quiet:
            logger.info(message)

    def fingerprint(self, settings: dict, inputs: list[Path]) -> str:
        blob = json.dumps(
            {"settings": settings, "inputs": [fingerprint_path(p) for p in inputs]}, sort_keys=True, default=str
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def run(self, name: str, settings: dict, inputs: list[Path], outputs: list[Path], fn: Callable[[], object]):
        """Run ``fn`` unless stage ``name`` already completed with these settings and inputs."""
        marker = self.markers / f"{name}.json"
        key = self.fingerprint(settings, inputs)
        if marker.is_file() and all(p.exists() for p in outputs):
            stored = json.loads(marker.read_text())
            if stored.get("fingerprint") == key:
                self.log(f"[{name}] up to date, skipped")
                self.timings[name] = 0.0
                return None
        self.log(f"[{name}] running")
        start = time.monotonic()
        result = fn()
        self.timings[name] = time.monotonic() - start
        self.markers.mkdir(parents=True, exist_ok=True)
        write_json(marker, {"fingerprint": key, "seconds": self.timings[name], "outputs": [str(p) for p in outputs]})
        self.log(f"[{name}] done in {self.timings[name]:.1f}s")
        return result
