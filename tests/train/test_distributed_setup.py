"""The one line that says what a launch gave, and the refusals when a launch asked for an engine that
Accelerate did not set up (no processes needed: Accelerate's state is stood in for)."""

from types import SimpleNamespace

import pytest
from accelerate.utils import DistributedType

from alphapo.errors import ConfigError
from alphapo.train.distributed import check_diagnostics, check_engine, describe, enable_fsdp_on_cpu


def fake(kind, processes=2, **state):
    return SimpleNamespace(
        distributed_type=kind,
        num_processes=processes,
        device="cpu",
        mixed_precision="no",
        state=SimpleNamespace(backend="gloo", **state),
    )


def test_the_setup_line(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert describe(fake(DistributedType.MULTI_CPU)) == "distributed: DDP, 2 processes (gloo)"
    fsdp = SimpleNamespace(fsdp_version=2, reshard_after_forward=True)
    assert describe(fake(DistributedType.FSDP, fsdp_plugin=fsdp)) == "distributed: FSDP2 FULL_SHARD, 2 processes (gloo)"
    fsdp.reshard_after_forward = False
    assert "FSDP2 SHARD_GRAD_OP" in describe(fake(DistributedType.FSDP, fsdp_plugin=fsdp))
    assert describe(fake(DistributedType.NO, 1)) == "distributed: one process on cpu"
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # accelerate launch --cpu: one process, FSDP ignored
    assert "asked for FSDP, which this single process ignores" in describe(fake(DistributedType.NO, 1))


def test_a_deepspeed_launch_that_got_ddp_stops(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(ConfigError, match=r"asked for DeepSpeed, but Accelerate set up DDP, 2 processes \(gloo\)"):
        check_engine(fake(DistributedType.MULTI_CPU))
    check_engine(fake(DistributedType.DEEPSPEED))
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "false")
    check_engine(fake(DistributedType.MULTI_CPU))


def test_fsdp1_on_cpu_processes_is_refused(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(ConfigError, match="needs fsdp_version: 2"):
        enable_fsdp_on_cpu(fake(DistributedType.MULTI_CPU))


def test_the_gradient_probe_is_refused_under_sharding():
    cfg = SimpleNamespace(diagnostics=SimpleNamespace(every=5))
    fsdp = SimpleNamespace(fsdp_version=2, reshard_after_forward=True)
    with pytest.raises(ConfigError, match=r"diagnostics.every=5 .* FSDP2 FULL_SHARD, 2 processes"):
        check_diagnostics(cfg, fake(DistributedType.FSDP, fsdp_plugin=fsdp))
    check_diagnostics(cfg, fake(DistributedType.MULTI_CPU))  # DDP: the probe uses the unwrapped model
    check_diagnostics(
        SimpleNamespace(diagnostics=SimpleNamespace(every=0)), fake(DistributedType.FSDP, fsdp_plugin=fsdp)
    )
