"""Checkpoints: atomic, verified, the last K kept, exact resume.

A checkpoint is ``<output_dir>/checkpoints/step-00000042/``: Accelerate's state (model, optimiser,
scheduler, every process's RNG states, written correctly for DDP, FSDP and DeepSpeed) plus
``trainer_state.json`` (step, data position, tokens seen, table keys, and the manifest: every other
file with its size). "Complete" means "loads":

* it is written under a ``.tmp-`` name; every file is flushed to disk (fsync) before
  ``trainer_state.json``, the completeness marker, is written last (itself to a temporary name,
  fsynced, renamed), then the folder is renamed into place;
* a checkpoint counts as complete only when its marker exists and every file its manifest names is
  there with its size, so a folder a kill left half-written or half-deleted is never resumed from;
* pruning and replacing remove the marker first, then the files;
* stale ``.tmp-step-*`` folders from a killed save are removed at the next save or run start.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from alphapo.errors import ConfigError

STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^step-(\d{8})$")


def checkpoints_dir(output_dir: Path) -> Path:
    return output_dir / "checkpoints"


def missing_files(path: Path) -> list[str]:
    """Files the checkpoint's manifest names that are absent or of another size ([] when it loads)."""
    try:
        state = json.loads((path / STATE_FILE).read_text())
    except (OSError, ValueError):
        return [STATE_FILE]
    manifest = state.get("files")
    if manifest is None:
        return ["(no manifest in trainer_state.json)"]
    missing = []
    for name, size in manifest.items():
        file = path / name
        if not file.is_file() or file.stat().st_size != size:
            missing.append(name)
    return missing


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints in step order (half-written or half-deleted ones are skipped)."""
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name) and (p / STATE_FILE).is_file()]
    found = [p for p in found if not missing_files(p)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _manifest(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` with its size, each flushed to disk first."""
    files = {}
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        _fsync(file)
        files[str(file.relative_to(folder))] = file.stat().st_size
    return files


def remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint so that no moment of it looks complete: the marker goes first."""
    (path / STATE_FILE).unlink(missing_ok=True)
    shutil.rmtree(path, ignore_errors=True)


def remove_stale(output_dir: Path, incomplete: bool = False) -> list[Path]:
    """Remove ``.tmp-step-*`` folders left by a save that was killed and, with ``incomplete``, step
    folders without their marker (a kill while pruning one: the marker goes first, the files after);
    return what was removed. Saves are renamed into place only with their marker, so a ``step-*``
    folder without one can only be one being deleted: the run start (which holds the output
    directory's lock) finishes the job. A folder whose marker lists files that are gone is left for
    the user to see (it is never resumed from)."""
    root = checkpoints_dir(output_dir)
    stale = sorted(root.glob(".tmp-step-*")) if root.is_dir() else []
    if incomplete and root.is_dir():
        stale += sorted(p for p in root.iterdir() if _NAME.match(p.name) and not (p / STATE_FILE).is_file())
    for path in stale:
        remove_checkpoint(path)
    return stale


def save_checkpoint(accelerator, output_dir: Path, step: int, state: dict, keep_last: int) -> Path:
    """Write a checkpoint for ``step`` atomically (all processes call this); prune to ``keep_last``."""
    from alphapo.train.output import quiet_tied_weights_note

    quiet_tied_weights_note()
    root = checkpoints_dir(output_dir)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        remove_stale(output_dir)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        files = _manifest(tmp)
        marker = tmp / f".{STATE_FILE}.tmp"
        marker.write_text(json.dumps({**state, "step": step, "files": files}, indent=1))
        _fsync(marker)
        os.replace(marker, tmp / STATE_FILE)
        _fsync(tmp)
        if final.exists():
            remove_checkpoint(final)
        os.replace(tmp, final)
        _fsync(root)
        for old in complete_checkpoints(output_dir)[:-keep_last]:
            remove_checkpoint(old)
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
        raise ConfigError(f"resume={resume}: not a complete checkpoint (no {STATE_FILE})")
    missing = missing_files(path)
    if missing:
        raise ConfigError(f"resume={resume}: the checkpoint is incomplete: missing or cut short: {', '.join(missing)}")
    return path


def load_checkpoint(accelerator, path: Path) -> dict:
    """Restore Accelerate's state from ``path`` (a checkpoint :func:`resolve_resume` verified);
    return its trainer state."""
    accelerator.load_state(str(path))
    state = json.loads((path / STATE_FILE).read_text())
    state.pop("files", None)
    return state
