"""What determines a run's trajectory, recorded in every checkpoint and checked before resuming.

A checkpoint belongs to one run: its starting model, its data and tokenizer, and every setting that
changes the result. Resuming it under other settings would silently train a model no config
describes (a changed ``optim.lr`` ignored, a changed beta mixed with the old one) or crash on tables
of another size. So every checkpoint stores :func:`run_fingerprint`, and :func:`check_resume`
compares it with the run about to start:

* settings that do not change the trajectory (:data:`SAFE_TO_CHANGE`: where and how often to log and
  checkpoint, diagnostics, ``nan_policy``, ...) are left out of the fingerprint;
* settings a user may deliberately change mid-run (:data:`CONTINUABLE`: how long to train, the
  learning rate) continue
  only with ``resume_mismatch: continue``;
* anything else stops with the list of differences. ``resume_mismatch: fresh`` starts over instead,
  moving the old run aside into ``<output_dir>/previous-<n>/`` (the pipeline does this for a stage
  whose settings or inputs changed).

The model enters as a signature of its directory (``config.json`` and, for each weight file, its name,
size and a hash of its first and last MiB: cheap for a 70B model, and it changes when the weights do);
the data as the tokenised dataset's content key (content, tokenizer and data settings, not paths).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from alphapo.config import flatten
from alphapo.errors import ConfigError
from alphapo.log import logger

SAFE_TO_CHANGE = (
    "model.path",  # the model's and the data's content (with the tokenizer) are fingerprinted, not paths
    "tokenizer",
    "data.paths",
    "output_dir",
    "resume",
    "resume_mismatch",
    "logging",
    "checkpoint",
    "diagnostics",  # its probes run without touching the RNG streams training draws from
    "model.gradient_checkpointing",  # memory for recomputation: the same values and gradients
    "model.checkpoint_every_n_layers",
    "optim.fused",  # the same AdamW update within fp32 rounding
    "optim.in_backward",  # the same AdamW update, applied during the backward pass
    "train.share_prompt",  # the same log-probs and gradients within fp32 rounding
    "train.batch_size",  # recorded as their product with the processes: examples per step
    "train.grad_accum",
    "data.cache_dir",
    "data.on_bad_row",  # left out of the data's content key too
    "data.max_bad_fraction",
    "reference.batch_size",
    "train.nan_policy",
    "train.nan_skip_limit",
    "train.verify_logps",
    "train.max_update_ratio",
    "train.chunk_size",  # the fused ops' schedules give the same values and gradients
    "train.pair_schedule",
    "train.logits_budget_mb",
)
"""Settings left out of the fingerprint: they change what is logged or saved, not the weights."""
CONTINUABLE = ("train.max_steps", "train.epochs", "optim.lr")
"""Settings that may change on resume with ``resume_mismatch: continue``: how long to train (the
schedule is rebuilt) and the peak learning rate (lowered after a divergence, say): the schedule
continues from its step with the new peak (:func:`apply_peak_lr`)."""
_EDGE = 2**20
KEEP = ("cache", "skipped_rows.jsonl", "truncated_rows.jsonl", ".alphapo.lock")
"""What :func:`move_aside` leaves in place: caches (keyed by content) and what this run already wrote
(the old run's ``config.yaml`` moves with it; the new run writes its own after the move)."""


def _safe(name: str) -> bool:
    return any(name == s or name.startswith(f"{s}.") for s in SAFE_TO_CHANGE)


def model_signature(path: str | None) -> str | None:
    """A cheap signature of a model directory's content (see the module docstring); None for a tiny model."""
    if path is None:
        return None
    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        name = str(file.relative_to(root))
        size = file.stat().st_size
        digest.update(f"{name}:{size}".encode())
        if file.suffix in (".json", ".safetensors", ".bin", ".model", ".txt", ".jinja"):
            with open(file, "rb") as f:
                digest.update(f.read(_EDGE))
                if size > 2 * _EDGE:
                    f.seek(size - _EDGE)
                    digest.update(f.read(_EDGE))
    return digest.hexdigest()


def run_fingerprint(cfg, data_key: str, processes: int = 1) -> dict:
    """The fingerprint stored in each checkpoint: settings (flattened, safe ones left out), data, model.

    The batch enters as what decides the trajectory: ``train.examples_per_step`` (micro-batch size x
    accumulation x processes: the step-to-data mapping, the step count and the schedule follow it) and
    ``train.processes`` (each process's RNG stream). Re-splitting the same step between micro-batch
    size and accumulation (after running out of memory) resumes; another number of processes does not."""
    settings = {k: v for k, v in flatten(cfg.model_dump(mode="json")).items() if not _safe(k)}
    settings["train.examples_per_step"] = cfg.train.batch_size * cfg.train.grad_accum * processes
    settings["train.processes"] = processes
    return {
        "settings": settings,
        "data": data_key,
        "model": model_signature(cfg.model.path),
    }


def differences(stored: dict, current: dict) -> list[str]:
    """Human-readable differences, settings first (``optim.lr: 0.0001 -> 0.0002``)."""
    out = []
    old = {k: v for k, v in stored.get("settings", {}).items() if not _safe(k)}  # older versions kept more
    new = current["settings"]
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            out.append(f"{key}: {json.dumps(old.get(key))} -> {json.dumps(new.get(key))}")
    what = {"data": "the training data (content, tokenizer or data settings)", "model": "the starting model's files"}
    for key, text in what.items():
        if stored.get(key) != current[key]:
            out.append(f"{key}: {text} changed")
    return out


def move_aside(output_dir: Path) -> Path:
    """Move a run's results (checkpoints, logs, model) into ``previous-<n>/``; keep caches and config."""
    n = 1
    while (output_dir / f"previous-{n}").exists():
        n += 1
    target = output_dir / f"previous-{n}"
    target.mkdir()
    for item in output_dir.iterdir():
        if item.name in KEEP or item.name.startswith("previous-") or item == target:
            continue
        shutil.move(str(item), str(target / item.name))
    return target


def check_resume(checkpoint: Path, stored: dict | None, current: dict, mode: str) -> str:
    """Whether to resume from ``checkpoint`` (``"resume"``) or start over (``"fresh"``), given the
    fingerprint it stored and the current one; raises :class:`ConfigError` listing what differs."""
    if stored is None:
        found = ["(the checkpoint records no fingerprint: it was written by an older alphapo)"]
    else:
        found = differences(stored, current)
    if not found:
        return "resume"
    if mode == "fresh":
        return "fresh"
    continuable = stored is not None and all(d.split(":")[0] in CONTINUABLE for d in found)
    if mode == "continue" and continuable:
        return "resume"
    listed = "\n  ".join(found)
    hint = "resume_mismatch=continue to carry on with the new length or learning rate, or " if continuable else ""
    raise ConfigError(
        f"cannot resume from {checkpoint}: it belongs to a run with other settings or inputs:\n  {listed}\n"
        f"Set {hint}resume_mismatch=fresh to start over (the old run is moved to "
        f"{checkpoint.parent.parent}/previous-<n>/), or put the old settings back."
    )


def resume_or_start_over(checkpoint: Path, fingerprint: dict, cfg, acc) -> str:
    """Check ``checkpoint`` against this run (:func:`check_resume`); with ``fresh``, move the old run
    aside. Returns ``"resume"`` or ``"fresh"``."""

    from alphapo.train.checkpoint import STATE_FILE

    stored = json.loads((checkpoint / STATE_FILE).read_text()).get("fingerprint")
    decision = check_resume(checkpoint, stored, fingerprint, cfg.resume_mismatch)
    found = differences(stored, fingerprint) if stored is not None else ["no fingerprint"]
    if decision == "fresh":
        if acc.is_main_process:
            moved = move_aside(Path(cfg.output_dir))
            logger.info(
                f"train: {checkpoint} belongs to other settings or inputs ({'; '.join(found[:3])}"
                f"{'; ...' if len(found) > 3 else ''}): the old run is now in {moved}; starting over",
            )
        acc.wait_for_everyone()
    elif stored is not None and found and acc.is_main_process:
        logger.info(f"train: resuming with changed {', '.join(found)} (resume_mismatch=continue)")
    return decision


def apply_peak_lr(scheduler, lr: float) -> None:
    """Make a restored schedule use peak ``lr`` from its current step (a no-op when unchanged)."""
    inner = getattr(scheduler, "scheduler", scheduler)  # Accelerate wraps the torch scheduler
    inner.base_lrs = [lr] * len(inner.optimizer.param_groups)
    for group, factor in zip(inner.optimizer.param_groups, inner.lr_lambdas, strict=True):
        group["initial_lr"] = lr
        group["lr"] = lr * factor(inner.last_epoch)


def previous_results(output_dir: Path) -> list[str]:
    """What an earlier run left in ``output_dir`` that a new run would overwrite."""
    found = []
    if (output_dir / "model").is_dir():
        found.append("model/")
    from alphapo.train.checkpoint import complete_checkpoints

    if complete_checkpoints(output_dir):  # a write cut short (a .tmp- folder, no marker) is no result: removed at start
        found.append("checkpoints/")
    log = output_dir / "metrics.jsonl"
    if log.is_file() and log.stat().st_size > 0:
        found.append("metrics.jsonl")
    return found


def claim_output_dir(cfg, acc) -> None:
    """A run starting from step 0 never overwrites an earlier run's results silently: with
    ``resume_mismatch: fresh`` they move to ``previous-<n>/`` (as does the log of a run resumed with
    ``resume=true`` that stopped before its first checkpoint: there is nothing else to resume);
    otherwise it stops and says so."""

    output_dir = Path(cfg.output_dir)
    found = previous_results(output_dir)
    acc.wait_for_everyone()  # all have looked before the main process moves anything
    if not found:
        return
    unfinished = found == ["metrics.jsonl"]  # stopped before its first checkpoint: only a log to keep
    if cfg.resume_mismatch == "fresh" or (cfg.resume and unfinished):
        if acc.is_main_process:
            moved = move_aside(output_dir)
            why = "stopped before its first checkpoint" if unfinished else "is not resumed"
            logger.info(f"train: the earlier run in {output_dir} {why}; it is now in {moved}; starting over")
        acc.wait_for_everyone()
        return
    why = "has no complete checkpoint to resume from" if cfg.resume else "would be overwritten"
    raise ConfigError(
        f"{output_dir} holds an earlier run ({', '.join(found)}) that {why}. Set resume_mismatch=fresh to "
        "start over (the earlier run moves to previous-<n>/), resume=true to continue it, or another output_dir"
    )
