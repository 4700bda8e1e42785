"""The optimiser step inside the backward pass (``optim.in_backward``).

A plain step holds every parameter's gradient until the backward pass ends (for a 135M-parameter
model in fp32, 513 MiB), then updates. Here each parameter is updated as soon as its gradient is
complete (``Tensor.register_post_accumulate_grad_hook``) and the gradient is freed at once, so the
backward pass holds only the gradients still being formed. The update is the same AdamW update
(the run's one optimiser, its state, its learning-rate schedule and its checkpoints are unchanged:
the hook calls ``optimizer.step()`` while only that parameter holds a gradient).

What it gives up, refused at configuration (:func:`settings_refusal`, :func:`processes_refusal`):
global-norm clipping (the norm is known only after the last gradient), gradient accumulation (a
micro-batch's gradient would update the weights before the next one is formed), several processes
(DDP, FSDP and DeepSpeed reduce gradients after the backward pass) and fp16 (its loss scaler unscales
and skips steps after it). A non-finite loss or log-probs skip the step before its backward pass, as
in a plain step; a non-finite gradient with a finite loss is found only after some parameters were
updated, so it stops the run whatever ``train.nan_policy`` says.
"""

from __future__ import annotations

import math

import torch


def settings_refusal(cfg) -> str | None:
    """Why ``optim.in_backward`` cannot run with these settings, or None (the processes are checked
    when the run starts: :func:`processes_refusal`)."""
    if cfg.optim.max_grad_norm is not None:
        return (
            "optim.in_backward updates each parameter before the gradients' global norm is known, so it "
            f"cannot clip it: set optim.max_grad_norm: null (it is {cfg.optim.max_grad_norm})"
        )
    if cfg.train.grad_accum != 1:
        return (
            "optim.in_backward updates the weights during each backward pass, so it cannot accumulate "
            f"{cfg.train.grad_accum} micro-batches: set train.grad_accum: 1 (and a larger train.batch_size)"
        )
    if cfg.train.precision == "fp16":
        return "optim.in_backward cannot run under fp16's loss scaler (it unscales and skips after the backward pass)"
    return None


def processes_refusal(processes: int, distributed_type: str) -> str | None:
    """Why ``optim.in_backward`` cannot run in this process group, or None."""
    if processes != 1 or distributed_type != "NO":
        return (
            f"optim.in_backward runs on one process, not {processes} ({distributed_type}): DDP, FSDP and "
            "DeepSpeed reduce the gradients after the backward pass. Set optim.in_backward: false"
        )
    return None


class StepInBackward:
    """Updates each trainable parameter of ``params`` with ``optimizer`` as its gradient completes.

    :meth:`backward` runs a backward pass so; :meth:`grad_norm` is the global L2 norm of the gradients
    it applied (fp64 sum of squares, like the plain step's reported norm). Gradients formed outside
    :meth:`backward` accumulate as usual."""

    def __init__(self, optimizer, params: list[torch.nn.Parameter]):
        self.optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper: the torch optimiser
        self.params = params
        self.square_sum: torch.Tensor | None = None
        self.applied = 0
        self._armed = False
        self._handles = [p.register_post_accumulate_grad_hook(self._apply) for p in params]

    def _apply(self, p: torch.Tensor) -> None:
        if not self._armed:
            return
        norm = torch.linalg.vector_norm(p.grad, dtype=torch.float32).double()
        self.square_sum = norm.square() if self.square_sum is None else self.square_sum + norm.square()
        self.optimizer.step()  # every other parameter's gradient is None: applied and freed, or not formed yet
        p.grad = None
        self.applied += 1

    def reset(self) -> None:
        """Forget the last step's gradients (a step without a backward pass applied none)."""
        self.square_sum, self.applied = None, 0

    def backward(self, accelerator, loss: torch.Tensor) -> None:
        """``loss``'s backward pass, each parameter updated as its gradient completes."""
        self.reset()
        self._armed = True
        try:
            accelerator.backward(loss)
        finally:
            self._armed = False

    def grad_norm(self) -> float:
        """The applied gradients' global norm (0 when none was formed)."""
        return math.sqrt(float(self.square_sum)) if self.square_sum is not None else 0.0

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
