"""What a user coming from TRL meets: TRL's setting names, the tracker prefix, a launcher whose
processes did not join one group, two runs into one directory, hub ids offline, Gemma-2's attention."""

import json
import logging
import os
import sys
import types
from contextlib import ExitStack
from pathlib import Path

import pytest
import torch
import yaml

from alphapo.config import load_config
from alphapo.errors import ConfigError
from alphapo.models.sources import resolve_model_source
from alphapo.train import TrainConfig, train
from alphapo.train.loop import check_world
from alphapo.train.output import lock_output_dir
from alphapo.train.setup import disable_dropout
from alphapo.train.trl_names import translate_trl_names


def trl_recipe(assets, out, **extra):
    """A DPO recipe as a TRL user writes it: TRL's flat names beside alphapo's model and data."""
    recipe = {
        "model": {"path": assets["model"]},
        "data": {"paths": [assets["pairs"]]},
        "output_dir": str(out),
        "loss_type": "sigmoid",
        "beta": 0.2,
        "learning_rate": 1.0e-4,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "max_steps": 2,
        "lr_scheduler_type": "linear",
        "warmup_ratio": 0.0,
        "max_length": 64,
        "max_prompt_length": 32,
        "precompute_ref_log_probs": True,
        "logging_steps": 1,
        "report_to": "none",
        "bf16": False,
        "seed": 3,
        **extra,
    }
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_a_trl_dpo_recipe_trains_unchanged(assets, tmp_path, caplog):
    path = trl_recipe(assets, tmp_path / "run")
    with caplog.at_level(logging.INFO, logger="alphapo"):
        cfg = load_config(TrainConfig, path, ["adam_beta2=0.99"])
    assert cfg.loss.name == "sigmoid" and cfg.loss.hparams == {"beta": 0.2}
    assert (cfg.optim.lr, cfg.optim.betas) == (1.0e-4, (0.9, 0.99))
    assert (cfg.train.batch_size, cfg.train.grad_accum, cfg.train.max_steps, cfg.train.seed) == (4, 2, 2, 3)
    assert (cfg.schedule.name, cfg.schedule.warmup_ratio, cfg.train.precision) == ("linear", 0.0, "fp32")
    assert (cfg.data.max_length, cfg.data.max_prompt_length, cfg.logging.every) == (64, 32, 1)
    assert cfg.logging.report_to == []
    assert "TRL name learning_rate=0.0001 -> optim.lr=0.0001" in caplog.text
    assert "always precomputes" in caplog.text
    result = train(cfg)
    assert result.status == "completed" and (tmp_path / "run" / "model").is_dir()
    # `alphapo report` reads a training run's directory too
    from alphapo.cli import main

    assert main(["report", str(tmp_path / "run")]) == 0
    report = (tmp_path / "run" / "report.md").read_text()
    last = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert "Loss **sigmoid** (beta 0.2)" in report and "learning rate 0.0001" in report
    assert "| rewards/margins | " in report and f"{last['rewards/margins']:.4g} |" in report
    assert (tmp_path / "run" / "plots" / "training_curves.png").is_file()


def test_trl_names_without_an_equivalent_are_named_with_what_to_use(assets, tmp_path):
    path = trl_recipe(assets, tmp_path / "run", sync_ref_model=True, f_divergence_type="js_divergence")
    with pytest.raises(ConfigError) as err:
        load_config(TrainConfig, path)
    message = str(err.value)
    assert "sync_ref_model: no alphapo equivalent" in message and "reference.kind=soup" in message
    assert "f_divergence_type: no alphapo equivalent" in message


def test_a_setting_given_both_ways_is_an_error_and_overrides_win(assets, tmp_path):
    both = trl_recipe(assets, tmp_path / "run", optim={"lr": 1e-3})
    with pytest.raises(ConfigError, match=r"optim.lr is given twice: 0.001 and, by its TRL name, 0.0001"):
        load_config(TrainConfig, both)
    with pytest.raises(ConfigError, match=r"optim.lr is given twice \(once by another name\)"):
        load_config(TrainConfig, trl_recipe(assets, tmp_path / "run"), ["learning_rate=2e-4", "optim.lr=3e-4"])
    # an override replaces the recipe's value, whichever name either uses
    assert load_config(TrainConfig, trl_recipe(assets, tmp_path / "run"), ["optim.lr=3e-4"]).optim.lr == 3e-4
    alphapo_names = tmp_path / "alphapo.yaml"
    recipe = yaml.safe_load(trl_recipe(assets, tmp_path / "run2").read_text())
    del recipe["learning_rate"]
    alphapo_names.write_text(yaml.safe_dump({**recipe, "optim": {"lr": 1e-3}}))
    assert load_config(TrainConfig, alphapo_names, ["learning_rate=2e-4"]).optim.lr == 2e-4


TRL_VALUES = [  # TRL name, its value, the alphapo setting it must produce (dotted), that setting's value
    ("model_name_or_path", "models/x", "model.path", "models/x"),
    ("dataset_name", "data/pairs.jsonl", "data.paths", ["data/pairs.jsonl"]),
    ("output_dir", "runs/x", "output_dir", "runs/x"),
    ("resume_from_checkpoint", "true", "resume", True),
    ("learning_rate", 3e-6, "optim.lr", 3e-6),
    ("weight_decay", 0.05, "optim.weight_decay", 0.05),
    ("adam_epsilon", 1e-6, "optim.eps", 1e-6),
    ("adam_beta1", 0.8, "optim.betas", (0.8, 0.999)),
    ("adam_beta2", 0.95, "optim.betas", (0.9, 0.95)),
    ("max_grad_norm", 0, "optim.max_grad_norm", None),
    ("max_grad_norm", 0.5, "optim.max_grad_norm", 0.5),
    ("per_device_train_batch_size", 3, "train.batch_size", 3),
    ("gradient_accumulation_steps", 4, "train.grad_accum", 4),
    ("num_train_epochs", 2, "train.epochs", 2.0),
    ("max_steps", 7, "train.max_steps", 7),
    ("max_steps", -1, "train.max_steps", None),
    ("seed", 5, "train.seed", 5),
    ("bf16", True, "train.precision", "bf16"),
    ("fp16", True, "train.precision", "fp16"),
    ("bf16", False, "train.precision", "fp32"),
    ("warmup_ratio", 0.2, "schedule.warmup_ratio", 0.2),
    ("warmup_steps", 3, "schedule.warmup_steps", 3),
    ("lr_scheduler_type", "constant_with_warmup", "schedule.name", "constant"),
    ("logging_steps", 4, "logging.every", 4),
    ("report_to", "none", "logging.report_to", []),
    ("save_steps", 9, "checkpoint.every", 9),
    ("save_total_limit", 3, "checkpoint.keep_last", 3),
    ("gradient_checkpointing", True, "model.gradient_checkpointing", True),
    ("activation_checkpointing", True, "model.gradient_checkpointing", True),
    ("disable_dropout", True, "model.disable_dropout", True),
    ("max_length", 300, "data.max_length", 300),
    ("max_prompt_length", 100, "data.max_prompt_length", 100),
    ("truncation_mode", "keep_start", "data.truncation_mode", "keep_start"),
    ("pad_to_multiple_of", 8, "data.pad_to_multiple_of", 8),
    ("precompute_ref_batch_size", 6, "reference.batch_size", 6),
    ("beta", 0.3, "loss.beta", 0.3),
    ("label_smoothing", 0.1, "loss.label_smoothing", 0.1),
    ("rpo_alpha", 0.7, "loss.nll_weight", 0.7),  # the NLL weight, never the reward shape loss.alpha
    ("discopop_tau", 0.04, "loss.tau", 0.04),
    ("loss_type", "ipo", "loss.name", "ipo"),
    ("center_rewards_coefficient", 0.01, "reward.center_rewards_coefficient", 0.01),  # RewardConfig's
]


@pytest.mark.parametrize(("name", "value", "key", "expected"), TRL_VALUES)
def test_every_trl_name_produces_its_value(name, value, key, expected):
    """Each mapped name by the value it produces in the resolved config (not just that it maps)."""
    from alphapo.config import validate
    from alphapo.train.trl_names import MAPPED

    base = {"model": {"path": "m"}, "data": {"paths": ["d.jsonl"]}, "loss": {"name": "sigmoid"}}
    if name == "model_name_or_path":
        base.pop("model")
    if name == "dataset_name":
        base.pop("data")
    if name == "discopop_tau":
        base["loss"] = {"name": "discopop"}
    if name == "loss_type":
        base.pop("loss")
    cfg = validate(TrainConfig, TrainConfig.translate_settings({**base, name: value}, "recipe"), "recipe")
    node = cfg.model_dump()
    for part in key.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    if key.startswith("loss."):
        node = cfg.loss.hparams.get(key.split(".")[1], node) if key != "loss.name" else cfg.loss.name
    assert node == expected
    mapped = {n for n, *_ in TRL_VALUES}
    assert set(MAPPED) <= mapped | {"desirable_weight", "undesirable_weight", "simpo_gamma", "alpha"}


@pytest.mark.parametrize(
    ("trl", "loss"),
    [
        ({"loss_type": "simpo", "simpo_gamma": 0.4}, {"name": "simpo", "gamma": 0.4, "nll_weight": 1.0}),
        ({"loss_type": "simpo", "cpo_alpha": 0.0}, {"name": "simpo", "nll_weight": 0.0}),
        ({"loss_type": "alphapo", "alpha": 0.25}, {"name": "alphapo", "alpha": 0.25, "nll_weight": 1.0}),
        ({"loss_type": "sigmoid", "cpo_alpha": 0.3}, {"name": "cpo", "cpo_alpha": 0.3}),
        ({"cpo_alpha": 0.3}, {"name": "cpo", "cpo_alpha": 0.3}),
        ({"loss_type": "kto", "desirable_weight": 2.0}, {"name": "kto", "desirable_weight": 2.0}),
        ({"loss_type": "kto", "undesirable_weight": 0.5}, {"name": "kto", "undesirable_weight": 0.5}),
    ],
)
def test_cpo_and_kto_names_by_value(trl, loss):
    from alphapo.config import validate

    data = {"model": {"path": "m"}, "data": {"paths": ["d.jsonl"]}, **trl}
    cfg = validate(TrainConfig, TrainConfig.translate_settings(data, "recipe"), "recipe")
    assert {"name": cfg.loss.name, **cfg.loss.hparams} == loss


def test_cpo_recipes_keep_cpo_s_meaning():
    simpo, notes = translate_trl_names({"loss_type": "simpo", "simpo_gamma": 0.5, "cpo_alpha": 0.0, "beta": 2.0})
    assert simpo["loss"] == {"name": "simpo", "gamma": 0.5, "nll_weight": 0.0, "beta": 2.0}
    assert any("TRL's CPO adds the chosen NLL" in n for n in notes)
    cpo, _ = translate_trl_names({"loss_type": "sigmoid", "cpo_alpha": 1.0})
    assert cpo["loss"] == {"name": "cpo", "cpo_alpha": 1.0}
    alpha, _ = translate_trl_names({"loss_type": "alphapo", "alpha": 0.25})
    assert alpha["loss"] == {"name": "alphapo", "alpha": 0.25, "nll_weight": 1.0}  # CPO's default cpo_alpha 1.0
    plain, _ = translate_trl_names({"loss_type": "simpo", "simpo_gamma": 0.5})
    assert plain["loss"] == {"name": "simpo", "gamma": 0.5, "nll_weight": 1.0}
    default, _ = translate_trl_names({"cpo_alpha": 0.5, "beta": 0.2})  # CPOConfig's default loss_type: sigmoid
    assert default["loss"] == {"name": "cpo", "cpo_alpha": 0.5, "beta": 0.2}
    with pytest.raises(ConfigError, match="bf16 and fp16 are both true"):
        translate_trl_names({"bf16": True, "fp16": True})
    assert translate_trl_names({"loss_type": ["ipo"]})[0]["loss"] == {"name": "ipo"}
    with pytest.raises(ConfigError, match="reference-free hinge"):
        translate_trl_names({"loss_type": "hinge", "cpo_alpha": 1.0})
    with pytest.raises(ConfigError, match="one loss per run"):
        translate_trl_names({"loss_type": ["sigmoid", "sft"]})
    assert translate_trl_names({"max_steps": -1, "bf16": True}) == (
        {"train": {"precision": "bf16"}},
        ["bf16=True -> train.precision='bf16'"],
    )


def test_trackers_get_trl_s_train_prefix(assets, tmp_path, monkeypatch):
    from accelerate import Accelerator

    logged = []
    monkeypatch.setattr(Accelerator, "init_trackers", lambda self, *a, **k: None)
    monkeypatch.setattr(Accelerator, "log", lambda self, values, step=None, **k: logged.append(values))
    monkeypatch.setitem(sys.modules, "tensorboard", types.ModuleType("tensorboard"))  # installed or not
    cfg = load_config(TrainConfig, trl_recipe(assets, tmp_path / "run", report_to="tensorboard"))
    train(cfg)
    assert logged and all(key.startswith("train/") for values in logged for key in values)
    assert "train/rewards/margins" in logged[-1] and "train/loss" in logged[-1]


def test_processes_that_did_not_join_one_group_stop(monkeypatch):
    class OneProcess:
        num_processes = 1

    monkeypatch.setenv("WORLD_SIZE", "8")
    with pytest.raises(ConfigError, match=r"launched as one of 8 \(WORLD_SIZE\) but joined a group of 1"):
        check_world(OneProcess())
    monkeypatch.setenv("WORLD_SIZE", "1")
    check_world(OneProcess())


def test_two_runs_never_write_one_output_directory(assets, tmp_path):
    held = lock_output_dir(tmp_path)
    cfg = load_config(TrainConfig, trl_recipe(assets, tmp_path / "run"), [f"output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=rf"in use by another alphapo run \(pid {os.getpid()}"):
        train(cfg)
    held.release()
    lock_output_dir(tmp_path).release()  # free again once the holder is gone


def test_a_hub_id_offline_says_so(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-alphapo-test")
    with pytest.raises(ConfigError, match=r"hub id.*offline \(HF_HUB_OFFLINE is set\).*hf download meta-llama/X"):
        resolve_model_source("meta-llama/X")
    assert resolve_model_source("./not/a/hub/id/at/all") == "./not/a/hub/id/at/all"  # left to the directory check


def test_gemma2_gets_an_attention_it_supports(tmp_path, caplog):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    from alphapo.train.setup import load_policy

    config = Gemma2Config(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        attention_dropout=0.1,
    )
    Gemma2ForCausalLM(config).save_pretrained(tmp_path / "gemma")
    base = {"data": {"paths": ["x.jsonl"]}, "model": {"path": str(tmp_path / "gemma")}}
    cfg = TrainConfig.model_validate(base | {"model": base["model"] | {"disable_dropout": True}})
    with caplog.at_level(logging.INFO, logger="alphapo"):
        model = load_policy(cfg, tokenizer=list(range(64)))
    assert model.config._attn_implementation == "eager" and "using eager" in caplog.text
    assert all(m.attention_dropout == 0.0 for m in model.modules() if hasattr(m, "attention_dropout"))
    explicit = TrainConfig.model_validate(base | {"model": base["model"] | {"attn_implementation": "sdpa"}})
    with pytest.raises(ConfigError, match=r"set model\.attn_implementation=eager"):
        load_policy(explicit, tokenizer=list(range(64)))


def test_disable_dropout_zeroes_every_dropout():
    layer = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.3))
    layer.config = type("C", (), {"hidden_dropout": 0.2})()
    disable_dropout(layer)
    assert layer[1].p == 0.0 and layer.config.hidden_dropout == 0.0


def _unpaired(assets, tmp_path):
    import json

    rows = [json.loads(line) for line in Path(assets["pairs"]).read_text().splitlines()]
    path = tmp_path / "unpaired.jsonl"
    with open(path, "w") as f:
        for i, r in enumerate(rows):
            good = i % 3 != 0  # unbalanced, as KTO allows
            f.write(
                json.dumps({"prompt": r["prompt"], "completion": r["chosen" if good else "rejected"], "label": good})
                + "\n"
            )
    return path


def test_unpaired_kto_trains_from_the_command_line(assets, tmp_path):
    import json

    from alphapo.cli import main

    data = _unpaired(assets, tmp_path)
    path = trl_recipe(assets, tmp_path / "run", loss_type="kto", max_steps=6, learning_rate=3e-3)
    code = main(
        ["train", str(path), f"data.paths=[{data}]", "per_device_train_batch_size=8", "gradient_accumulation_steps=1"]
    )
    assert code == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first, last = records[0], records[-1]
    # step 1: the policy is the reference, so every reward is 0 and the loss is w (1 - sigmoid(0)) = 0.5
    assert first["loss"] == pytest.approx(0.5) and first["kl"] == pytest.approx(0.0, abs=1e-9)
    assert first["rewards/chosen"] == pytest.approx(0.0, abs=1e-9)
    assert last["rewards/chosen"] > last["rewards/rejected"] and last["kl"] >= 0.0


def test_unpaired_data_with_a_paired_loss_names_kto(assets, tmp_path):
    data = _unpaired(assets, tmp_path)
    cfg = load_config(TrainConfig, trl_recipe(assets, tmp_path / "run", loss_type="ipo"), [f"data.paths=[{data}]"])
    with pytest.raises(ConfigError, match=r"unpaired rows .* train with loss\.name=kto"):
        train(cfg)


def test_quiet_and_verbose_set_what_is_logged(assets, tmp_path, capsys):
    from alphapo.cli import main
    from alphapo.log import logger, set_verbosity

    path = trl_recipe(assets, tmp_path / "run", max_steps=1)
    try:
        assert main(["-q", "train", str(path)]) == 0
        quiet_err = capsys.readouterr().err
        assert main(["train", str(path), f"output_dir={tmp_path / 'run2'}"]) == 0
        normal_err = capsys.readouterr().err
    finally:
        set_verbosity(logging.INFO)
    assert "TRL name learning_rate" not in quiet_err and "step 1/1" not in quiet_err
    assert "TRL name learning_rate" in normal_err
    assert logger.level == logging.INFO


def test_mlflow_tracks_into_the_run_without_a_file_store(assets, tmp_path, monkeypatch):
    from alphapo.train.loop import _accelerator

    monkeypatch.setitem(sys.modules, "mlflow", types.ModuleType("mlflow"))  # installed or not
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_config(TrainConfig, trl_recipe(assets, tmp_path / "run", report_to="mlflow"))
    with ExitStack() as run:
        _accelerator(cfg, tmp_path / "run", run)
        assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{(tmp_path / 'run' / 'mlflow.db').resolve()}"
    # the run is over: a second run in the same process (a pipeline, a sweep) tracks into its own store
    assert "MLFLOW_TRACKING_URI" not in os.environ
    with ExitStack() as run:
        _accelerator(cfg, tmp_path / "run2", run)
        assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{(tmp_path / 'run2' / 'mlflow.db').resolve()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    with ExitStack() as run:
        _accelerator(cfg, tmp_path / "run", run)
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://tracking:5000"  # the user's choice stands


def test_a_run_with_trackers_leaves_the_process_group_to_its_owner(assets, tmp_path, monkeypatch):
    """``Accelerator.end_training`` would destroy the group: a pipeline training its next run in the same
    process would then find none. Trackers are finished, the group stays."""
    import torch.distributed as dist
    from accelerate import Accelerator

    finished = []

    class Tracker:
        def finish(self):
            finished.append(True)

    monkeypatch.setattr(Accelerator, "init_trackers", lambda self, *a, **k: self.trackers.append(Tracker()))
    monkeypatch.setattr(Accelerator, "log", lambda self, *a, **k: None)
    monkeypatch.setitem(sys.modules, "tensorboard", types.ModuleType("tensorboard"))  # installed or not
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        train(load_config(TrainConfig, trl_recipe(assets, tmp_path / "run", report_to="tensorboard")))
        assert finished == [True] and dist.is_initialized()
    finally:
        dist.destroy_process_group()
