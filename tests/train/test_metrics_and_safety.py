"""Logged metrics against a hand computation; crash safety; NaN policy; outputs; reference kinds."""

import json
import shutil

import pytest
import torch

from alphapo.train import TrainingError, train
from alphapo.train.checkpoint import complete_checkpoints, remove_checkpoint
from tests.train.conftest import make_config, weights


def read_metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_logged_metrics_match_a_hand_computation(assets, tmp_path):
    """One step over all 24 pairs: the logged values are those of the starting model on every pair."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alphapo.data import Collator, DataConfig, load_dataset_for_training
    from alphapo.ops.model_logps import logits_sequence_logps

    beta, gamma, alpha = 2.0, 0.5, 0.3
    out = tmp_path / "run"
    train(
        make_config(
            assets,
            out,
            loss={"name": "alphapo", "beta": beta, "gamma": gamma, "alpha": alpha},
            train={"batch_size": 24, "max_steps": 1},
            diagnostics={"displacement": "dataset"},  # the starting table: step 1's batch shows 0
        )
    )
    logged = read_metrics(out)[0]

    tokenizer = AutoTokenizer.from_pretrained(assets["model"])
    model = AutoModelForCausalLM.from_pretrained(assets["model"], dtype=torch.float64)
    ds = load_dataset_for_training(
        DataConfig(paths=[assets["pairs"]], max_length=64, max_prompt_length=32, prompt_format="plain"),
        tokenizer,
        tmp_path / "hand",
        quiet=True,
    )
    batch = Collator(tokenizer.pad_token_id)([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logps = logits_sequence_logps(logits, batch["labels"])
    n = (batch["labels"][:, 1:] != -100).sum(1).double()
    pairs = len(ds)
    # AlphaPO by hand: r = beta (1 - exp(-alpha * logp / n)) / alpha
    r = beta * (1 - torch.exp(-alpha * logps / n)) / alpha
    r_w, r_l = r[:pairs], r[pairs:]
    margins = r_w - r_l
    assert logged["rewards/margins"] == pytest.approx(margins.mean().item(), rel=1e-4, abs=1e-6)
    assert logged["rewards/accuracies"] == pytest.approx((r_w > r_l).double().mean().item(), abs=1e-12)
    assert logged["rewards/chosen"] == pytest.approx(r_w.mean().item(), rel=1e-4)
    loss = -torch.nn.functional.logsigmoid(margins - gamma)
    assert logged["loss"] == pytest.approx(loss.mean().item(), rel=1e-4)
    assert logged["logps/chosen"] == pytest.approx(logps[:pairs].mean().item(), rel=1e-4)
    assert logged["nll_loss"] == pytest.approx((-logps[:pairs] / n[:pairs]).mean().item(), rel=1e-4)
    assert logged["displacement/chosen"] == pytest.approx(0.0, abs=1e-4)  # step 1 sees the starting model
    assert logged["num_tokens"] == int(batch["attention_mask"].sum())
    for name in (
        "grad_norm",
        "learning_rate",
        "logits/chosen",
        "logits/rejected",
        "logps/rejected",
        "rewards/rejected",
        "displacement/rejected",
    ):
        assert name in logged


def test_half_written_checkpoint_is_ignored_on_resume(assets, tmp_path):
    out = tmp_path / "run"
    cfg = dict(train={"max_steps": 4}, checkpoint={"every": 2, "keep_last": 5})
    train(make_config(assets, out, **cfg))
    # every 2 steps, and one at the end before the final model is written
    assert [p.name for p in complete_checkpoints(out)] == ["step-00000002", "step-00000004"]
    remove_checkpoint(out / "checkpoints" / "step-00000004")
    good = complete_checkpoints(out)
    # simulate a kill while saving step 4: a temporary dir, and a renamed one missing its state file
    shutil.copytree(good[0], out / "checkpoints" / ".tmp-step-00000004")
    broken = out / "checkpoints" / "step-00000003"
    shutil.copytree(good[0], broken)
    (broken / "trainer_state.json").unlink()
    assert [p.name for p in complete_checkpoints(out)] == ["step-00000002"]
    resumed = train(make_config(assets, out, resume=True, **cfg))
    assert resumed.step == 4 and len(read_metrics(out)) == 4
    assert not list((out / "checkpoints").glob(".tmp-step-*"))  # the stale temporary folder is gone


def test_a_checkpoint_missing_a_file_is_not_complete(assets, tmp_path):
    from alphapo.errors import ConfigError
    from alphapo.train.checkpoint import missing_files

    out = tmp_path / "run"
    cfg = dict(train={"max_steps": 6}, checkpoint={"every": 2, "keep_last": 5})
    train(make_config(assets, out, **cfg))
    two, four, six = complete_checkpoints(out)
    remove_checkpoint(six)
    state = json.loads((four / "trainer_state.json").read_text())
    assert "model.safetensors" in state["files"] and not missing_files(four)
    (four / "model.safetensors").unlink()  # a kill while pruning: marker still there, weights gone
    assert missing_files(four) == ["model.safetensors"] and complete_checkpoints(out) == [two]
    with pytest.raises(ConfigError, match=r"incomplete: missing or cut short: model.safetensors"):
        train(make_config(assets, out, resume=str(four), **cfg))
    # a weight file cut short is caught too
    data = (two / "model.safetensors").read_bytes()
    (two / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert complete_checkpoints(out) == []
    # removal takes the marker first: interrupted right after that, the folder no longer looks complete
    (two / "model.safetensors").write_bytes(data)
    assert complete_checkpoints(out) == [two]
    (two / "trainer_state.json").unlink()
    assert complete_checkpoints(out) == []
    remove_checkpoint(two)
    assert not two.exists()


def test_nan_stops_with_a_clear_message_or_skips(assets, tmp_path, monkeypatch):
    import alphapo.train.objectives as objectives

    original = objectives.PreferenceObjective.__call__
    calls = {"n": 0}

    def poisoned(self, model, batch, shape, sums):
        calls["n"] += 1
        loss = original(self, model, batch, shape, sums)
        if calls["n"] == 3:
            sums.add("loss", torch.tensor([float("nan")]))
            return loss * float("nan")
        return loss

    monkeypatch.setattr(objectives.PreferenceObjective, "__call__", poisoned)
    out = tmp_path / "stop"
    with pytest.raises(TrainingError, match=r"a non-finite loss at step 3.*last good checkpoint is .*step-00000002"):
        train(make_config(assets, out, checkpoint={"every": 2}))
    assert [p.name for p in complete_checkpoints(out)] == ["step-00000002"]
    calls["n"] = 0
    skipped = train(make_config(assets, tmp_path / "skip", train={"max_steps": 4, "nan_policy": "skip"}))
    assert skipped.status == "completed" and skipped.metrics["skipped_steps"] == 1
    assert all(torch.isfinite(v).all() for v in weights(skipped.model_dir).values())


def test_output_directory(assets, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alphapo.config import load_config
    from alphapo.train import TrainConfig

    cfg = make_config(assets, tmp_path / "run", train={"max_steps": 2})
    result = train(cfg)
    model_dir = result.model_dir
    final = json.loads((model_dir / "final_metrics.json").read_text())
    last = read_metrics(tmp_path / "run")[-1]
    assert last["step"] == 2 and final == {k: v for k, v in last.items() if k != "step"}
    assert final["learning_rate"] == pytest.approx(1e-3)  # the constant schedule of make_config
    loaded = AutoModelForCausalLM.from_pretrained(model_dir)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in weights(model_dir).items())
    text = "Name a fruit like kiwi:"
    original = AutoTokenizer.from_pretrained(assets["model"])
    assert AutoTokenizer.from_pretrained(model_dir)(text).input_ids == original(text).input_ids
    assert load_config(TrainConfig, str(tmp_path / "run" / "config.yaml"), []) == cfg
    assert load_config(TrainConfig, str(model_dir / "alphapo_config.yaml"), []) == cfg
    assert not list(tmp_path.glob("run/.tmp-*"))


@pytest.mark.parametrize("kind", ["precompute", "model", "soup"])
def test_reference_kinds(assets, tmp_path, kind):
    ref = {"kind": kind}
    if kind == "model":
        ref["path"] = assets["model"]
    if kind == "soup":
        ref["paths"] = [assets["model"], assets["model"]]
    result = train(
        make_config(assets, tmp_path / kind, loss={"name": "sigmoid"}, reference=ref, train={"max_steps": 1})
    )
    first = read_metrics(tmp_path / kind)[0]
    # every source here equals the starting policy: rewards (log-ratios) start at zero
    assert first["rewards/chosen"] == pytest.approx(0.0, abs=1e-5)
    assert result.status == "completed"


def test_sft_task_runs_the_same_loop(assets, tmp_path):
    out = tmp_path / "sft"
    result = train(
        make_config(
            assets, out, task="sft", data={"paths": [assets["sft"]]}, loss={"name": "alphapo"}, train={"max_steps": 6}
        )
    )
    losses = [r["loss"] for r in read_metrics(out)]
    assert result.status == "completed" and losses[-1] < losses[0]


def test_logged_values_average_every_step_of_the_window(assets, tmp_path):
    per_step = {}

    def record(step, metrics, model):
        per_step[step] = dict(metrics)

    out = tmp_path / "run"
    train(make_config(assets, out, train={"max_steps": 4, "batch_size": 4}, logging={"every": 2}), on_step=record)
    logged = read_metrics(out)
    assert [r["step"] for r in logged] == [2, 4]
    for r in logged:  # equal batch sizes: the window mean is the mean of the two steps
        steps = (r["step"] - 1, r["step"])
        for key in ("loss", "rewards/margins", "logps/chosen"):
            assert r[key] == pytest.approx(sum(per_step[s][key] for s in steps) / 2, rel=1e-9)
        assert r["grad_norm"] == per_step[r["step"]]["grad_norm"]  # step values: the last step's


def test_probe_displacement_matches_a_hand_computation(assets, tmp_path):
    """Reference-free default: the probe holds the first 6 pairs visited (step 1's 4 at the starting
    model, step 2's first 2 after one update) and re-measures them every 2 steps."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alphapo.data import Collator, DataConfig, load_dataset_for_training
    from alphapo.ops.model_logps import logits_sequence_logps
    from alphapo.train.loop import _step_batches

    diagnostics = {"displacement_pairs": 6, "displacement_every": 2}
    cfg = make_config(assets, tmp_path / "run", train={"batch_size": 4, "max_steps": 2}, diagnostics=diagnostics)
    assert cfg.displacement_mode() == "probe"
    final = train(cfg)
    after_one = train(make_config(assets, tmp_path / "one", train={"batch_size": 4, "max_steps": 1}))
    logged = read_metrics(tmp_path / "run")
    assert "displacement/chosen" not in logged[0] and "displacement/chosen" in logged[1]

    tokenizer = AutoTokenizer.from_pretrained(assets["model"])
    ds = load_dataset_for_training(
        DataConfig(paths=[assets["pairs"]], max_length=64, max_prompt_length=32, prompt_format="plain"),
        tokenizer,
        tmp_path / "h",
        quiet=True,
    )
    order = _step_batches(ds, cfg, 1, 0)
    first_visit = [(i, assets["model"]) for i in order[0]] + [(i, after_one.model_dir) for i in order[1][:2]]

    def logps(model_dir, ids):
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float64)
        batch = Collator(tokenizer.pad_token_id)([ds[i] for i in ids])
        with torch.no_grad():
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        values = logits_sequence_logps(out, batch["labels"])
        return values[: len(ids)], values[len(ids) :]

    start = [logps(path, [i]) for i, path in first_visit]
    start_c = torch.cat([c for c, _ in start])
    start_r = torch.cat([r for _, r in start])
    end_c, end_r = logps(final.model_dir, [i for i, _ in first_visit])
    assert logged[1]["displacement/chosen"] == pytest.approx((end_c - start_c).mean().item(), abs=1e-4)
    assert logged[1]["displacement/rejected"] == pytest.approx((end_r - start_r).mean().item(), abs=1e-4)
    assert logged[1]["displacement/chosen_fell"] == pytest.approx((end_c < start_c).double().mean().item())
    assert (end_c - start_c).abs().max() > 1e-2  # the check is not vacuous: the model moved


def test_automatic_probe_interval_bounds_its_cost():
    from alphapo.train.displacement import automatic_every

    assert automatic_every(256, 128, 10) == 10  # paper-scale batches: every logged step
    assert automatic_every(256, 8, 10) == 110  # 256 / (0.1 * 3 * 8) = 106.7 -> the next multiple of 10
    assert automatic_every(6, 4, 1) == 5


def _poison_logps(monkeypatch, bad_calls):
    """Make the policy's log-probs NaN on the given forward calls (1-based), as exploded weights do."""
    import alphapo.train.objectives as objectives

    original, original_pair = objectives.batch_logps, objectives.model_pair_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        logps, n_tokens, logits = original(*args, **kwargs)
        if calls["n"] in bad_calls:
            logps = logps * float("nan")
        return logps, n_tokens, logits

    def poisoned_pair(*args, **kwargs):  # the fused preference path (model_pair_loss)
        calls["n"] += 1
        out = original_pair(*args, **kwargs)
        if calls["n"] in bad_calls:
            out = out._replace(logps=out.logps * float("nan"), loss=out.loss * float("nan"))
        return out

    monkeypatch.setattr(objectives, "batch_logps", poisoned)
    monkeypatch.setattr(objectives, "model_pair_loss", poisoned_pair)


def test_skip_policy_skips_non_finite_log_probs(assets, tmp_path, monkeypatch, capsys):
    _poison_logps(monkeypatch, {2})
    start = weights(assets["model"])
    result = train(make_config(assets, tmp_path / "run", train={"max_steps": 4, "nan_policy": "skip"}))
    records = read_metrics(tmp_path / "run")
    assert result.status == "completed" and [r["skipped_steps"] for r in records] == [0, 1, 1, 1]
    assert "step 2 skipped: non-finite policy log-probs" in capsys.readouterr().err
    trained = weights(result.model_dir)
    assert all(torch.isfinite(v).all() for v in trained.values())
    assert any(not torch.equal(start[k], trained[k]) for k in start)


def test_stop_policy_names_the_log_probs(assets, tmp_path, monkeypatch):
    _poison_logps(monkeypatch, {2})
    with pytest.raises(TrainingError, match=r"non-finite policy log-probs at step 2.*no checkpoint was saved yet"):
        train(make_config(assets, tmp_path / "run", train={"max_steps": 4}))


def test_skipping_stops_after_the_limit_in_a_row(assets, tmp_path, monkeypatch):
    _poison_logps(monkeypatch, {2, 3, 4})
    cfg = make_config(assets, tmp_path / "run", train={"max_steps": 8, "nan_policy": "skip", "nan_skip_limit": 3})
    with pytest.raises(TrainingError, match=r"3 steps in a row skipped \(non-finite policy log-probs at step 4"):
        train(cfg)
    assert not (tmp_path / "run" / "model").exists()


def test_a_run_whose_every_step_was_skipped_is_not_a_success(assets, tmp_path, monkeypatch):
    _poison_logps(monkeypatch, set(range(1, 10)))
    cfg = make_config(assets, tmp_path / "run", train={"max_steps": 3, "nan_policy": "skip", "nan_skip_limit": 5})
    with pytest.raises(
        TrainingError, match=r"all 3 steps were skipped .* nothing was trained and no model was written"
    ):
        train(cfg)
    assert not (tmp_path / "run" / "model").exists()
