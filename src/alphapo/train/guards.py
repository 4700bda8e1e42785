"""Guards that stop a run honestly: saves that fail (a full disk) and weights that explode.

* :func:`guarded_save` runs a checkpoint or final-model write; on an I/O error (``No space left on
  device`` from safetensors or torch included) it removes what the failed write left, and stops with
  a :class:`TrainingError` naming the path, the free space there and the last complete checkpoint,
  which the failed write never touched.
* :func:`non_finite` / :func:`nan_message`: what was not finite in a step, and the message that
  stops the run (or ends a run of skipped steps) naming the step and the last good checkpoint.
* :class:`WeightGuard` follows the weights' global norm after every update. A finite but exploded
  update (``optim.lr=1e10``) passes every finiteness check, yet the checkpoint after it cannot be
  resumed from; so a step whose update changes the norm by more than ``train.max_update_ratio``
  times the norm before it (or makes it non-finite) stops the run before anything is saved, naming
  the step and the last checkpoint, whose weights were written before the jump.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import torch

from alphapo.errors import AlphapoError, TrainingError
from alphapo.train.checkpoint import complete_checkpoints


def last_checkpoint_text(output_dir: Path) -> str:
    kept = complete_checkpoints(output_dir)
    return f"the last complete checkpoint is {kept[-1]}" if kept else "no checkpoint was saved yet"


def _free_space(path: Path) -> str:
    for candidate in (path, *path.parents):
        if candidate.exists():
            free = shutil.disk_usage(candidate).free
            size = f"{free / 2**30:.2f} GiB" if free >= 2**30 else f"{free / 2**20:.1f} MiB"
            return f"{size} free on {candidate}"
    return "free space unknown"


def guarded_save(what: str, target: Path, output_dir: Path, write, leftovers: list[Path]):
    """``write()``, or a :class:`TrainingError` saying why it failed and what was kept."""
    try:
        return write()
    except Exception as err:  # OSError, safetensors' own error type, torch's RuntimeError...
        if isinstance(err, AlphapoError):
            raise
        for path in leftovers:
            shutil.rmtree(path, ignore_errors=True)
        raise TrainingError(
            f"could not write {what} to {target}: {type(err).__name__}: {err} ({_free_space(target)}); "
            f"{last_checkpoint_text(output_dir)}. Free some space (or set output_dir elsewhere) and run "
            "again with resume=true"
        ) from err


def local_shard(p: torch.Tensor) -> torch.Tensor:
    """The part of parameter ``p`` this process holds: ZeRO-3 keeps it in ``ds_tensor`` (``p`` itself
    is an empty placeholder outside the forward pass), FSDP2 in the DTensor's local tensor."""
    shard = getattr(p, "ds_tensor", None)
    if shard is not None:
        return shard.detach()
    if hasattr(p, "to_local"):
        return p.to_local().detach()
    return p.detach()


class WeightGuard:
    """Stops training when one update changes the weights' norm by more than ``max_ratio`` of it."""

    def __init__(self, model, acc, max_ratio: float | None):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.acc, self.max_ratio = acc, max_ratio
        self.norm = self.measure() if max_ratio is not None else None

    @torch.no_grad()
    def measure(self) -> float:
        """The trainable weights' global L2 norm, summed over processes: shards (ZeRO-3, FSDP) add up to
        the whole, replicas (DDP) scale both sides of the ratio alike. Each tensor's norm is taken in
        fp32 without a copy (an fp64 copy of a 128k x 4096 embedding alone is 4 GiB), the squares are
        summed in fp64."""
        total = torch.zeros((), dtype=torch.float64, device=self.acc.device)
        for p in self.params:
            local = local_shard(p)
            if local.numel():
                total += torch.linalg.vector_norm(local, dtype=torch.float32).double().pow(2)
        if self.acc.num_processes > 1:
            total = self.acc.reduce(total, reduction="sum")
        return math.sqrt(float(total))

    def check(self, step: int, output_dir: Path) -> float | None:
        """After the update of ``step``: the new norm, or a :class:`TrainingError` if it exploded."""
        if self.max_ratio is None:
            return None
        before, after = self.norm, self.measure()
        jump = abs(after - before) / max(before, 1e-12)
        if not math.isfinite(after) or jump > self.max_ratio:
            raise TrainingError(
                f"step {step}: the update changed the weights' norm from {before:.4g} to {after:.4g} "
                f"({jump:.3g} times its size; train.max_update_ratio={self.max_ratio}): training diverged, "
                f"nothing from this step was saved; {last_checkpoint_text(output_dir)}. Lower optim.lr (to resume "
                "from a checkpoint with the lower rate: resume=true resume_mismatch=continue), or raise "
                "train.max_update_ratio if such jumps are intended"
            )
        self.norm = after
        return after


def non_finite(bad_logps: float, loss: float, grad_norm: float) -> str | None:
    """What was not finite in a step, or None."""
    if bad_logps:
        return "non-finite policy log-probs"
    if not math.isfinite(loss):
        return "a non-finite loss"
    if not math.isfinite(grad_norm):
        return "a non-finite gradient"
    return None


def nan_message(
    step: int,
    culprit: str,
    metrics: dict,
    grad_norm: float,
    output_dir: Path,
    in_a_row: int = 0,
    applied: int = 0,
) -> str:
    """The message that stops a run (or a run of skipped steps). ``applied``: parameter tensors an
    in-backward step (``optim.in_backward``) had updated before the non-finite value was known."""
    kept = complete_checkpoints(output_dir)
    where = f"the last good checkpoint is {kept[-1]}" if kept else "no checkpoint was saved yet"
    what = f"{culprit} at step {step} (loss {metrics.get('loss')}, grad_norm {grad_norm})"
    if applied:
        return (
            f"{what}; optim.in_backward had already applied it to {applied} parameter tensor(s), so the step "
            f"cannot be skipped: stopped, nothing from this step was saved, {where}. Lower the learning rate "
            "or check the data"
        )
    if in_a_row:
        return (
            f"{in_a_row} steps in a row skipped ({what}; train.nan_skip_limit={in_a_row}); {where}. "
            "Lower the learning rate or check the data"
        )
    return (
        f"{what}; stopped without updating the weights, {where}. Lower the learning rate, check the data, or "
        "set train.nan_policy=skip to skip such steps"
    )
