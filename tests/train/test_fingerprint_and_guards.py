"""A checkpoint is resumed only by the run it belongs to; failed saves and exploding weights stop
honestly, with the last good checkpoint intact."""

import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch

from alphapo.errors import ConfigError, TrainingError
from alphapo.train import train
from alphapo.train.checkpoint import complete_checkpoints
from tests.train.conftest import make_config, weights

RUN = dict(train={"max_steps": 4}, checkpoint={"every": 2, "keep_last": 5})


def _interrupted(assets, out, **extra):
    """A run stopped after step 2 (its checkpoint there), as a kill would leave it."""
    train(make_config(assets, out, **{**RUN, **extra}))
    for late in complete_checkpoints(out)[1:]:
        shutil.rmtree(late)
    shutil.rmtree(out / "model")
    return complete_checkpoints(out)[-1]


@pytest.mark.parametrize(
    ("change", "listed"),
    [
        ({"optim": {"lr": 2e-3}}, "optim.lr: 0.001 -> 0.002"),
        ({"loss": {"name": "simpo"}}, 'loss.name: "alphapo" -> "simpo"'),
        ({"loss": {"name": "alphapo", "beta": 1.0}}, "loss.beta: null -> 1.0"),
        ({"train": {"max_steps": 4, "seed": 1}}, "train.seed: 0 -> 1"),
    ],
)
def test_resume_refused_on_changed_settings(assets, tmp_path, change, listed):
    out = tmp_path / "run"
    checkpoint = _interrupted(assets, out)
    with pytest.raises(ConfigError, match=r"cannot resume from .*step-00000002") as err:
        train(make_config(assets, out, resume=True, **{**RUN, **change}))
    assert listed in str(err.value) and "resume_mismatch=fresh" in str(err.value)
    assert complete_checkpoints(out) == [checkpoint]  # nothing was touched


def test_resume_refused_on_changed_data_or_model(assets, tmp_path):
    out = tmp_path / "run"
    _interrupted(assets, out)
    fewer = tmp_path / "fewer.jsonl"
    fewer.write_text("\n".join(Path(assets["pairs"]).read_text().splitlines()[:20]) + "\n")
    with pytest.raises(ConfigError, match=r"data: the training data .* changed"):
        train(make_config(assets, out, resume=True, data={"paths": [str(fewer)]}, **RUN))
    other = tmp_path / "other-model"
    shutil.copytree(assets["model"], other)
    from safetensors.torch import load_file, save_file

    state = load_file(other / "model.safetensors")
    state = {k: v + 0.01 for k, v in state.items()}
    save_file(state, other / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ConfigError, match="model: the starting model's files changed"):
        train(make_config(assets, out, resume=True, model={"path": str(other)}, **RUN))


@pytest.mark.parametrize("change", ["chat_template", "vocabulary"])
def test_resume_refused_with_another_tokenizer_or_chat_template(assets, tmp_path, change):
    """The tokenizer is part of the data's content key: a checkpoint trained on one tokenisation is
    never continued on another (the data files and every setting unchanged)."""
    from transformers import AutoTokenizer

    from alphapo.models import train_bpe_tokenizer

    out = tmp_path / "run"
    chat = {"data": {"paths": [assets["pairs"]], "max_length": 64, "max_prompt_length": 32, "prompt_format": "auto"}}
    _interrupted(assets, out, tokenizer=assets["tokenizer"], **chat)
    other = tmp_path / "other-tokenizer"
    if change == "chat_template":
        tokenizer = AutoTokenizer.from_pretrained(assets["tokenizer"])
        tokenizer.chat_template = "{{ bos_token }}" + tokenizer.chat_template  # one token more per prompt
    else:  # the same vocabulary, but a tokenizer that adds no BOS: other token ids for every row
        base = AutoTokenizer.from_pretrained(assets["tokenizer"])
        texts = [json.dumps(json.loads(line)) for line in Path(assets["pairs"]).read_text().splitlines()] * 5
        tokenizer = train_bpe_tokenizer(texts, vocab_size=200, add_bos=False)
        assert len(tokenizer) == len(base) and tokenizer("a")["input_ids"] != base("a")["input_ids"]
    tokenizer.save_pretrained(other)
    with pytest.raises(ConfigError, match=r"data: the training data \(content, tokenizer or data settings\) changed"):
        train(make_config(assets, out, resume=True, tokenizer=str(other), **{**RUN, **chat}))


def test_resume_accepted_unchanged_and_on_safe_settings(assets, tmp_path):
    full = train(make_config(assets, tmp_path / "full", **RUN))
    out = tmp_path / "run"
    _interrupted(assets, out)
    # how often to log and checkpoint, where the data file lives: not part of what is trained
    moved = tmp_path / "moved.jsonl"
    shutil.copy(assets["pairs"], moved)
    safe = {"logging": {"every": 3, "progress": "none"}, "checkpoint": {"every": 1, "keep_last": 5}}
    resumed = train(make_config(assets, out, resume=True, data={"paths": [str(moved)]}, train=RUN["train"], **safe))
    assert resumed.step == 4
    assert all(torch.equal(weights(full.model_dir)[k], weights(resumed.model_dir)[k]) for k in weights(full.model_dir))


def test_memory_and_layout_settings_resume(assets, tmp_path):
    """What a user changes after running out of memory (gradient checkpointing, the same step split into
    smaller micro-batches with more accumulation), how bad rows would be handled and the diagnostics do
    not change the trajectory: the resumed run ends where the uninterrupted one does (fp32 rounding of
    the other micro-batch split aside)."""
    run = dict(train={"max_steps": 4, "batch_size": 4}, checkpoint={"every": 2, "keep_last": 5})
    full = train(make_config(assets, tmp_path / "full", **run))
    out = tmp_path / "run"
    _interrupted(assets, out, **run)
    changed = make_config(
        assets,
        out,
        resume=True,
        model={"path": assets["model"], "gradient_checkpointing": True},
        train={"max_steps": 4, "batch_size": 2, "grad_accum": 2},
        checkpoint=run["checkpoint"],
        diagnostics={"every": 1},
    )
    changed.data.on_bad_row, changed.data.max_bad_fraction = "error", 0.0
    resumed = train(changed)
    assert resumed.step == 4
    a, b = weights(full.model_dir), weights(resumed.model_dir)
    assert all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a)


def test_another_number_of_processes_is_refused():
    """A 4-process run resumed on 2 processes would change the examples per step, the step-to-data
    mapping, the step count and the schedule: the fingerprint holds both."""
    from alphapo.train.fingerprint import check_resume, run_fingerprint

    cfg = make_config({"model": "m", "pairs": "p.jsonl"}, Path("out"), train={"batch_size": 2})
    four, two = run_fingerprint(cfg, "data", processes=4), run_fingerprint(cfg, "data", processes=2)
    with pytest.raises(ConfigError) as err:
        check_resume(Path("out/checkpoints/step-00000002"), four, two, "stop")
    assert "train.processes: 4 -> 2" in str(err.value) and "train.examples_per_step: 8 -> 4" in str(err.value)
    # the same step on more processes with smaller micro-batches: still another process layout
    resplit = make_config({"model": "m", "pairs": "p.jsonl"}, Path("out"), train={"batch_size": 4})
    assert run_fingerprint(resplit, "data", processes=1)["settings"]["train.examples_per_step"] == 4


def test_diagnostics_do_not_change_training_under_dropout(assets, tmp_path):
    """The diagnostic probes run forward passes in train mode; with dropout they must not draw from
    the RNG stream training uses, or turning them on (a 'safe' setting) would change the weights."""
    model = tmp_path / "dropout-model"
    shutil.copytree(assets["model"], model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "attention_dropout": 0.3}))
    run = dict(model={"path": str(model)}, train={"max_steps": 3})
    plain = train(make_config(assets, tmp_path / "plain", **run))
    probed = train(make_config(assets, tmp_path / "probed", diagnostics={"every": 1, "displacement": "probe"}, **run))
    a, b = weights(plain.model_dir), weights(probed.model_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_changed_length_continues_only_when_asked(assets, tmp_path):
    out = tmp_path / "run"
    _interrupted(assets, out)
    longer = {"train": {"max_steps": 6}, "checkpoint": RUN["checkpoint"]}
    with pytest.raises(ConfigError, match=r"(?s)train.max_steps: 4 -> 6.*resume_mismatch=continue"):
        train(make_config(assets, out, resume=True, **longer))
    result = train(make_config(assets, out, resume=True, resume_mismatch="continue", **longer))
    assert result.step == 6
    # a changed weight decay is not a length or a learning rate: continue does not cover it
    _interrupted(assets, tmp_path / "wd")
    with pytest.raises(ConfigError, match=r"optim\.weight_decay"):
        train(
            make_config(
                assets, tmp_path / "wd", resume=True, resume_mismatch="continue", optim={"weight_decay": 0.1}, **RUN
            )
        )


def test_continue_with_a_lower_learning_rate_uses_it(assets, tmp_path):
    """After a divergence a user resumes a sane checkpoint with a lower rate: the new rate is the one
    used (the old bug: silently kept the checkpoint's)."""
    import json as json_module

    out = tmp_path / "run"
    _interrupted(assets, out)
    train(make_config(assets, out, resume=True, resume_mismatch="continue", **{**RUN, "optim": {"lr": 5e-4}}))
    rates = [json_module.loads(x)["learning_rate"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rates == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4])  # constant schedule in these tests


def test_fresh_moves_the_old_run_aside_and_equals_a_new_run(assets, tmp_path):
    out = tmp_path / "run"
    _interrupted(assets, out)
    changed = {**RUN, "optim": {"lr": 2e-3}}
    result = train(make_config(assets, out, resume=True, resume_mismatch="fresh", **changed))
    new = train(make_config(assets, tmp_path / "new", **changed))
    assert all(torch.equal(weights(new.model_dir)[k], weights(result.model_dir)[k]) for k in weights(new.model_dir))
    old = out / "previous-1"
    assert (old / "checkpoints" / "step-00000002").is_dir() and (old / "metrics.jsonl").is_file()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4  # the new run's log only


def _fail_with_enospc(*args, **kwargs):
    raise OSError(28, "No space left on device")


def test_disk_full_at_a_checkpoint_keeps_the_previous_one(assets, tmp_path, monkeypatch):
    from accelerate import Accelerator

    out = tmp_path / "run"
    original = Accelerator.save_state
    calls = []

    def second_save_fails(self, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            original(self, path, *args, **kwargs)  # half written, then the disk is full
            _fail_with_enospc()
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", second_save_fails)
    with pytest.raises(TrainingError) as err:
        train(make_config(assets, out, **RUN))
    message = str(err.value)
    assert "could not write the checkpoint of step 4" in message and "No space left on device" in message
    assert re.search(r"\d+\.\d+ (GiB|MiB) free on ", message), message  # the runner's disk may have < 1 GiB
    assert "last complete checkpoint is" in message and "step-00000002" in message
    assert [p.name for p in complete_checkpoints(out)] == ["step-00000002"]
    assert not list((out / "checkpoints").glob(".tmp-*"))
    monkeypatch.setattr(Accelerator, "save_state", original)
    resumed = train(make_config(assets, out, resume=True, **RUN))
    full = train(make_config(assets, tmp_path / "full", **RUN))
    assert all(torch.equal(weights(full.model_dir)[k], weights(resumed.model_dir)[k]) for k in weights(full.model_dir))


def test_disk_full_at_the_final_save_loses_nothing(assets, tmp_path, monkeypatch):
    from transformers import PreTrainedModel

    out = tmp_path / "run"
    cfg = dict(train={"max_steps": 3})  # no periodic checkpoints: only the one before the final write
    original = PreTrainedModel.save_pretrained
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", _fail_with_enospc)
    with pytest.raises(TrainingError, match=r"could not write the final model .*No space left on device"):
        train(make_config(assets, out, **cfg))
    assert [p.name for p in complete_checkpoints(out)] == ["step-00000003"]
    assert not (out / "model").exists() and not (out / ".tmp-model").exists()
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", original)
    resumed = train(make_config(assets, out, resume=True, **cfg))  # writes the model, trains nothing more
    full = train(make_config(assets, tmp_path / "full", **cfg))
    assert resumed.step == 3
    assert all(torch.equal(weights(full.model_dir)[k], weights(resumed.model_dir)[k]) for k in weights(full.model_dir))


def test_exploding_weights_stop_before_anything_is_saved(assets, tmp_path):
    out = tmp_path / "run"
    # warmup: step 1 updates with lr 0, step 2 with 1e6 / 3: finite, and far too large
    cfg = dict(
        optim={"lr": 1e6},
        schedule={"name": "linear", "warmup_steps": 3},
        train={"max_steps": 6},
        checkpoint={"every": 1, "keep_last": 5},
    )
    with pytest.raises(TrainingError) as err:
        train(make_config(assets, out, **cfg))
    message = str(err.value)
    assert "step 2: the update changed the weights' norm" in message and "step-00000001" in message
    assert [p.name for p in complete_checkpoints(out)] == ["step-00000001"]
    state = json.loads((out / "checkpoints" / "step-00000001" / "trainer_state.json").read_text())
    assert state["step"] == 1
    # the same run without the guard saves the exploded weights as a "good" checkpoint
    unguarded = tmp_path / "unguarded"
    train(make_config(assets, unguarded, **{**cfg, "train": {"max_steps": 2, "max_update_ratio": None}}))
    assert max(float(v.abs().max()) for v in weights(unguarded / "model").values()) > 1e3


def test_a_finished_run_is_never_overwritten_silently(assets, tmp_path, capsys):
    out = tmp_path / "run"
    train(make_config(assets, out, **RUN))
    lines = (out / "metrics.jsonl").read_text()
    assert len(lines.splitlines()) == 4
    # a new run into the same folder stops, naming what it would overwrite
    with pytest.raises(
        ConfigError, match=r"holds an earlier run \(model/, checkpoints/, metrics.jsonl\) that would be"
    ):
        train(make_config(assets, out, **RUN))
    # resume=true on a finished run: its final checkpoint says where it resumes; nothing is lost
    capsys.readouterr()
    resumed = train(make_config(assets, out, resume=True, **RUN))
    assert resumed.step == 4 and "(step 4 of 4)" in capsys.readouterr().err
    assert (out / "metrics.jsonl").read_text() == lines and (out / "model").is_dir()
    # with no checkpoint left, resume=true refuses instead of starting over on top of the results
    shutil.rmtree(out / "checkpoints")
    assert not (out / "previous-1").exists()
    with pytest.raises(ConfigError, match="has no complete checkpoint to resume from"):
        train(make_config(assets, out, resume=True, **RUN))
    assert (out / "metrics.jsonl").read_text() == lines
    # starting over is explicit, and keeps the earlier run aside
    train(make_config(assets, out, resume_mismatch="fresh", **RUN))
    assert (out / "previous-1" / "metrics.jsonl").read_text() == lines and (out / "previous-1" / "model").is_dir()


def test_the_interrupt_hint_names_resume_once(assets, tmp_path, capsys, monkeypatch):
    from alphapo.cli import main
    from alphapo.train.loop import TrainResult

    def interrupted(cfg, on_step=None):
        return TrainResult("interrupted", 2, tmp_path, None, tmp_path / "checkpoints" / "step-00000002")

    monkeypatch.setattr("alphapo.train.train", interrupted)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {{path: {assets['model']}}}\ndata: {{paths: [{assets['pairs']}]}}\n")
    assert main(["train", str(recipe), "resume=true", "optim.lr=1e-4"]) == 130
    hint = capsys.readouterr().err.split("Resume with: ")[1]
    assert hint.strip() == f"alphapo train {recipe} optim.lr=1e-4 resume=true"


def test_resume_of_a_run_stopped_before_its_first_checkpoint_keeps_its_log(assets, tmp_path):
    out = tmp_path / "run"
    train(make_config(assets, out, **RUN))
    log = (out / "metrics.jsonl").read_text()
    shutil.rmtree(out / "checkpoints")
    shutil.rmtree(out / "model")  # as a kill before the first checkpoint leaves it: a log only
    result = train(make_config(assets, out, resume=True, **RUN))
    assert result.step == 4 and (out / "previous-1" / "metrics.jsonl").read_text() == log


class _OneProcess:
    num_processes, device = 1, torch.device("cpu")


def test_the_weight_guard_norm_makes_no_fp64_copies(monkeypatch):
    from alphapo.train.guards import WeightGuard

    layer = torch.nn.Linear(64, 32)
    expected = torch.cat([p.detach().double().flatten() for p in layer.parameters()]).norm().item()

    double, to = torch.Tensor.double, torch.Tensor.to

    def no_copies(original):
        def copy(self, *args, **kwargs):
            if self.numel() > 1:  # a scalar (one tensor's norm) may widen; a parameter may not
                raise AssertionError("the guard copied a parameter to fp64")
            return original(self, *args, **kwargs)

        return copy

    monkeypatch.setattr(torch.Tensor, "double", no_copies(double))
    monkeypatch.setattr(torch.Tensor, "to", no_copies(to))
    guard = WeightGuard(layer, _OneProcess(), 1.0)
    monkeypatch.undo()
    assert guard.norm == pytest.approx(expected, rel=1e-6)


def test_the_weight_guard_sees_zero3_shards():
    """Under ZeRO-3 a parameter is an empty placeholder and its values live in ``ds_tensor``: a norm
    of the placeholders is 0 and the guard would never fire."""
    from alphapo.train.guards import WeightGuard

    weight = torch.nn.Parameter(torch.empty(0))
    weight.ds_tensor = torch.full((10,), 2.0)  # this process's partition
    module = torch.nn.Module()
    module.weight = weight
    guard = WeightGuard(module, _OneProcess(), 0.5)
    assert guard.norm == pytest.approx(math.sqrt(40.0))
    weight.ds_tensor.mul_(10)  # an exploding update of the shard
    with pytest.raises(TrainingError, match="changed the weights' norm"):
        guard.check(1, Path("."))


def test_the_pair_schedule_budget_is_decided_once_and_kept_on_resume(assets, tmp_path, monkeypatch):
    """Free memory shrinks once caches fill: a budget read at every step could switch the schedule (or
    its chunks) mid-run. It is read once, logged, stored in checkpoints and reused on resume."""
    import alphapo.ops.model_logps as model_logps
    import alphapo.ops.pair_loss as pair_loss
    import alphapo.train.objectives as objectives

    budgets, seen = iter([1 << 30, 1, 1, 1, 1, 1]), []
    for module in (pair_loss, objectives):
        monkeypatch.setattr(module, "default_budget_bytes", lambda device: next(budgets))
    original = model_logps.fused_pair_loss

    def spy(*args, budget_bytes=None, **kwargs):
        seen.append(budget_bytes)
        out = original(*args, budget_bytes=budget_bytes, **kwargs)
        seen.append(out.schedule.name)
        return out

    monkeypatch.setattr(model_logps, "fused_pair_loss", spy)
    out = tmp_path / "run"
    _interrupted(assets, out)
    assert set(seen) == {1 << 30, "pair"}  # every step: the first budget, the pair schedule
    state = json.loads((complete_checkpoints(out)[-1] / "trainer_state.json").read_text())
    assert state["pair_budget_bytes"] == 1 << 30
    seen.clear()
    train(make_config(assets, out, resume=True, **RUN))  # free memory now reads as 1 byte
    assert set(seen) == {1 << 30, "pair"}


def test_a_run_moved_aside_keeps_its_own_config(assets, tmp_path):
    """resume_mismatch=fresh moves the earlier run to previous-<n>/ with its config.yaml, so `alphapo
    report` can still read it; the new run writes its own."""
    import yaml

    out = tmp_path / "run"
    train(make_config(assets, out, optim={"lr": 1e-3}, **RUN))
    train(make_config(assets, out, resume_mismatch="fresh", optim={"lr": 2e-3}, **RUN))
    old = yaml.safe_load((out / "previous-1" / "config.yaml").read_text())
    new = yaml.safe_load((out / "config.yaml").read_text())
    assert old["optim"]["lr"] == 1e-3 and new["optim"]["lr"] == 2e-3
    from alphapo.report import write_report

    assert write_report(out / "previous-1").is_file()


def test_a_checkpoint_half_removed_by_a_kill_is_cleaned_at_start(assets, tmp_path):
    """A kill while pruning (marker gone, files not yet) leaves step-N/ behind: the next run removes it."""
    from alphapo.train.checkpoint import STATE_FILE

    out = tmp_path / "run"
    checkpoint = _interrupted(assets, out)
    half = checkpoint.with_name("step-00000001")
    shutil.copytree(checkpoint, half)
    (half / STATE_FILE).unlink()  # pruning removes the marker first
    result = train(make_config(assets, out, resume=True, **RUN))
    assert result.step == 4 and not half.exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [p.name for p in complete_checkpoints(out)]


def test_saving_a_tied_embedding_model_prints_no_shared_tensor_note(assets, tmp_path, caplog):
    """Accelerate's "Removed shared tensor {'lm_head.weight'}" is expected for tied embeddings: not shown."""
    import logging

    caplog.set_level(logging.WARNING)
    train(make_config(assets, tmp_path / "run", train={"max_steps": 1}, checkpoint={"every": 1}))
    assert not [r for r in caplog.records if "Removed shared tensor" in r.getMessage()]


def test_free_space_is_named_in_gib_or_mib(tmp_path, monkeypatch):
    from alphapo.train import guards

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(guards.shutil, "disk_usage", lambda _: usage._replace(free=3 * 2**30 + 2**29))
    assert guards._free_space(tmp_path / "not" / "yet") == f"3.50 GiB free on {tmp_path}"
    monkeypatch.setattr(guards.shutil, "disk_usage", lambda _: usage._replace(free=300 * 2**20))
    assert guards._free_space(tmp_path) == f"300.0 MiB free on {tmp_path}"
