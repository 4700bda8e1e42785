"""Checkpoints: atomic, the last K kept, exact resume.

A checkpoint is ``<output_dir>/checkpoints/step-00000042/``: Accelerate's state (model, optimiser,
scheduler, every process's RNG states, written correctly for DDP, FSDP and DeepSpeed) plus
``trainer_state.json`` (step, data position, tokens seen, table keys). It is written under a
``.tmp-`` name and renamed when complete, and ``trainer_state.json`` is its last file, so a run killed
while saving leaves a directory that resume ignores: it falls back to the previous complete one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^step-(\d{8})$")


def checkpoints_dir(output_dir: Path) -> Path:
    return output_dir / "checkpoints"


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints in step order (half-written ones are skipped)."""
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def save_checkpoint(accelerator, output_dir: Path, step: int, state: dict, keep_last: int) -> Path:
    """Write a checkpoint for ``step`` atomically (all processes call this); prune to ``keep_last``."""
    root = checkpoints_dir(output_dir)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps({**state, "step": step}, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in complete_checkpoints(output_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def resolve_resume(output_dir: Path, resume: bool | str) -> Path | None:
    """The checkpoint to resume from: None (fresh run), the latest complete one, or a given path."""
    if resume is False:
        return None
    if resume is True:
        found = complete_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        from alphapo.errors import ConfigError

        raise ConfigError(f"resume={resume}: not a complete checkpoint (no {STATE_FILE})")
    return path


def load_checkpoint(accelerator, path: Path) -> dict:
    """Restore Accelerate's state from ``path``; return its trainer state."""
    accelerator.load_state(str(path))
    return json.loads((path / STATE_FILE).read_text())
