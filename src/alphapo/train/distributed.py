"""The distributed setup a run trains under: FSDP2 on CPU processes, and the one line that says what
the launch gave.

Accelerate turns a launch's FSDP config into FSDP only on accelerators: on CPU processes (the
``gloo`` backend) its state stays ``MULTI_CPU``, so ``accelerate launch`` with an FSDP config on a CPU
machine trains plain data-parallel and says nothing. PyTorch's FSDP2 (``fully_shard``) does run on CPU
processes, so :func:`enable_fsdp_on_cpu` completes Accelerate's state there (FSDP2 only: FSDP1 refuses
CPU). Every run then states its setup in one line (:func:`describe`), e.g.
``distributed: FSDP2 FULL_SHARD, 2 processes (gloo)``.
"""

from __future__ import annotations

import os

from alphapo.errors import ConfigError


def fsdp_requested() -> bool:
    """Whether the launcher asked for FSDP (``accelerate launch`` with an FSDP config sets this)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def enable_fsdp_on_cpu(acc) -> None:
    """Make a CPU launch that asked for FSDP run FSDP2 (see the module docstring); a CPU launch asking
    for FSDP1 is refused (PyTorch's FSDP1 needs an accelerator)."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if not fsdp_requested() or acc.distributed_type != DistributedType.MULTI_CPU:
        return
    plugin = getattr(acc.state, "fsdp_plugin", None) or FullyShardedDataParallelPlugin()
    if plugin.fsdp_version != 2:
        raise ConfigError(
            "FSDP on CPU processes needs fsdp_version: 2 in the accelerate config (PyTorch's FSDP1 needs a GPU); "
            "`alphapo recipes path accelerate/fsdp2_cpu` is one that runs here"
        )
    if acc.mixed_precision != "no":
        plugin.set_mixed_precision(acc.mixed_precision)
    acc.state.fsdp_plugin = plugin
    acc.state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # as Accelerate does on GPUs: kept
    # when Accelerate re-reads its state (``AcceleratorState()`` copies PartialState's)


def check_engine(acc) -> None:
    """Stop when the launch asked for DeepSpeed and Accelerate set up something else: Accelerate
    turns DeepSpeed off on CPU processes (``ACCELERATE_USE_CPU``), where the run would otherwise train
    plain data-parallel under a ZeRO config."""
    from accelerate.utils import DistributedType

    asked = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    if asked and acc.distributed_type != DistributedType.DEEPSPEED:
        raise ConfigError(
            f"the launch asked for DeepSpeed, but Accelerate set up {describe(acc).removeprefix('distributed: ')}: "
            "Accelerate runs DeepSpeed only on accelerators (not on CPU processes). On CPUs use FSDP2 "
            "(`alphapo recipes path accelerate/fsdp2_cpu`), which shards the same states"
        )


def check_diagnostics(cfg, acc) -> None:
    """``diagnostics.every`` probes gradients on the main process alone, outside the engine: under
    FSDP or DeepSpeed that backward (or, sharded, even the forward) would wait for processes that never
    join it."""
    from accelerate.utils import DistributedType

    if cfg.diagnostics.every and acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        raise ConfigError(
            f"diagnostics.every={cfg.diagnostics.every} (the gradient probe) runs on the main process alone, "
            f"which {describe(acc).removeprefix('distributed: ')} cannot do; set diagnostics.every=0, or run "
            "the diagnostics under DDP or on one process"
        )


def describe(acc) -> str:
    """One line: engine, sharding, processes, backend (``distributed: DDP, 2 processes (gloo)``)."""
    from accelerate.utils import DistributedType

    kind = acc.distributed_type
    n = acc.num_processes
    processes = f"{n} process{'es' if n != 1 else ''}"
    backend = f" ({acc.state.backend})" if getattr(acc.state, "backend", None) else ""
    if kind == DistributedType.FSDP:
        plugin = acc.state.fsdp_plugin
        if plugin.fsdp_version == 2:
            sharding = "FULL_SHARD" if plugin.reshard_after_forward else "SHARD_GRAD_OP"
        else:
            sharding = str(plugin.sharding_strategy).rsplit(".", 1)[-1]
        engine = f"FSDP{plugin.fsdp_version} {sharding}"
    elif kind == DistributedType.DEEPSPEED:
        engine = f"DeepSpeed ZeRO-{acc.state.deepspeed_plugin.zero_stage}"
    elif kind == DistributedType.NO:
        engine = "one process"
        return f"distributed: {engine} on {acc.device}" + (
            "; note: the launch asked for FSDP, which this single process ignores" if fsdp_requested() else ""
        )
    else:
        engine = "DDP"
    return f"distributed: {engine}, {processes}{backend}"
