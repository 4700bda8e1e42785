"""Config errors are clear; every shipped recipe loads; the CLI runs a recipe end to end."""

from pathlib import Path

import pytest
import torch
import yaml

from alphapo.cli import main
from alphapo.config import load_config
from alphapo.errors import ConfigError
from alphapo.train import TrainConfig, train
from tests.train.conftest import make_config, weights

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path, data):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


BASE = {"model": {"path": "m"}, "data": {"paths": ["d.jsonl"]}}


def test_unknown_key_suggests_the_closest(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'train.batchsize' \(did you mean 'batch_size'"):
        load_config(TrainConfig, write(tmp_path, {**BASE, "train": {"batchsize": 4}}))
    with pytest.raises(ConfigError, match=r"unknown key 'optimizer' \(did you mean 'optim'"):
        load_config(TrainConfig, write(tmp_path, BASE), ["optimizer.lr=1e-5"])


def test_wrong_type_and_bad_values(tmp_path):
    with pytest.raises(ConfigError, match=r"train.batch_size: .*integer.*\(got 'four'\)"):
        load_config(TrainConfig, write(tmp_path, BASE), ["train.batch_size=four"])
    with pytest.raises(ConfigError, match=r"optim.lr: .*greater than 0"):
        load_config(TrainConfig, write(tmp_path, BASE), ["optim.lr=-1"])
    with pytest.raises(ConfigError, match=r"unknown loss 'alphpo'.*did you mean 'alphapo'"):
        load_config(TrainConfig, write(tmp_path, BASE), ["loss.name=alphpo"])
    with pytest.raises(ConfigError, match=r"no hyper-parameter 'betta'.*did you mean 'beta'"):
        load_config(TrainConfig, write(tmp_path, BASE), ["loss.betta=2"])
    with pytest.raises(ConfigError, match=r"reference-free: reference\.kind must be auto or none"):
        load_config(TrainConfig, write(tmp_path, BASE), ["reference.kind=precompute"])
    with pytest.raises(ConfigError, match=r"set exactly one of model\.path"):
        load_config(TrainConfig, write(tmp_path, {"data": BASE["data"], "model": {}}))
    with pytest.raises(ConfigError, match=r"missing required key 'model'"):
        load_config(TrainConfig, write(tmp_path, {"data": BASE["data"]}))


def test_missing_files_are_named(assets, tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found"):
        load_config(TrainConfig, tmp_path / "nope.yaml")
    from alphapo.errors import DataError
    from alphapo.train import train

    with pytest.raises(DataError, match=r"missing.jsonl: no such file or directory"):
        train(make_config(assets, tmp_path / "r", data={"paths": [str(tmp_path / "missing.jsonl")]}))
    empty_model = tmp_path / "empty_model"
    empty_model.mkdir()
    (empty_model / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"empty_model has no weights"):
        train(make_config(assets, tmp_path / "r2", model={"path": str(empty_model)}, tokenizer=assets["tokenizer"]))


def test_every_shipped_recipe_loads():
    recipes = sorted((ROOT / "src" / "alphapo" / "configs").glob("*.yaml"))
    assert recipes, "no recipes shipped"
    for recipe in recipes:
        data = yaml.safe_load(recipe.read_text())
        if data.get("kind") == "pipeline":
            from alphapo.pipeline.recipe import RecipeConfig

            load_config(RecipeConfig, recipe)
        else:
            load_config(TrainConfig, recipe)


def test_a_recipes_quick_overrides_apply_before_the_command_lines(monkeypatch):
    """``alphapo run RECIPE --quick``: the recipe's own ``quick`` list, then the command line's overrides."""
    from alphapo.pipeline import recipe as recipe_module
    from alphapo.pipeline.recipe import load_recipe

    full = load_recipe("smollm2_instructions")
    quick = load_recipe("smollm2_instructions", ["task.heldout=8"], quick=True)
    assert full.out == "smollm2-instructions" and quick.out == "smollm2-instructions-quick"
    assert quick.task.train_prompts < full.task.train_prompts and quick.task.heldout == 8
    assert quick.methods == full.methods and quick.sft == full.sft
    with pytest.raises(ConfigError, match="--quick needs the recipe's `quick:` list"):
        load_recipe("demo", quick=True)
    seen = {}
    monkeypatch.setattr(recipe_module, "load_recipe", lambda *a: seen.setdefault("args", a))
    monkeypatch.setattr("alphapo.pipeline.run.Pipeline", lambda cfg: seen.setdefault("cfg", cfg))
    with pytest.raises(AttributeError):  # the stand-in pipeline has no run(): only the parsing is tested
        main(["run", "smollm2_instructions", "seeds=2", "--quick"])
    assert seen["args"] == ("smollm2_instructions", ["seeds=2"], True)
    seen.clear()
    with pytest.raises(AttributeError):  # overrides after the flag too
        main(["run", "smollm2_instructions", "--quick", "seeds=2", "out=x"])
    assert seen["args"] == ("smollm2_instructions", ["seeds=2", "out=x"], True)
    with pytest.raises(SystemExit):
        main(["run", "smollm2_instructions", "--quick", "--bogus"])


def test_accelerate_configs_are_valid_yaml():
    configs = sorted((ROOT / "src" / "alphapo" / "configs" / "accelerate").glob("*.yaml"))
    assert {c.stem for c in configs} >= {"ddp", "fsdp2", "fsdp2_cpu", "deepspeed_zero2", "deepspeed_zero3"}
    for config in configs:
        assert isinstance(yaml.safe_load(config.read_text()), dict)


def test_cli_train_command(assets, tmp_path, capsys):
    cfg = make_config(assets, tmp_path / "run", train={"max_steps": 2})
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert main(["train", str(path), "loss.alpha=0.5", "logging.progress=lines"]) == 0
    assert "model in" in capsys.readouterr().err
    # the override reached training: the run equals a library run with alpha 0.5, bit for bit
    saved = yaml.safe_load((tmp_path / "run" / "model" / "alphapo_config.yaml").read_text())
    assert saved["loss"]["alpha"] == 0.5
    direct = train(
        make_config(assets, tmp_path / "direct", train={"max_steps": 2}, loss={"name": "alphapo", "alpha": 0.5})
    )
    cli_weights, lib_weights = weights(tmp_path / "run" / "model"), weights(direct.model_dir)
    assert all(torch.equal(cli_weights[k], lib_weights[k]) for k in lib_weights)
    assert main(["train", str(path), "train.batchsize=3"]) == 2
    assert "did you mean 'batch_size'" in capsys.readouterr().err


def test_switching_the_loss_drops_settings_of_other_losses_with_a_warning(assets, tmp_path, caplog):
    import logging

    from alphapo.errors import ConfigError

    with caplog.at_level(logging.WARNING, logger="alphapo"):
        cfg = make_config(assets, tmp_path, loss={"name": "dpo", "beta": 0.1, "gamma": 0.25, "nll_weight": 1.0})
    assert cfg.loss.hparams == {"beta": 0.1, "nll_weight": 1.0}
    assert "loss.gamma=0.25 does not apply to loss 'dpo': ignored" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="alphapo"):
        cfg = make_config(assets, tmp_path, loss={"name": "simpo", "alpha": 0.25, "gamma": 0.5})
    assert cfg.loss.hparams == {"gamma": 0.5} and "loss.alpha=0.25 does not apply to loss 'simpo'" in caplog.text
    with caplog.at_level(logging.WARNING, logger="alphapo"):
        make_config(assets, tmp_path, loss={"name": "sigmoid", "alpha": 0.25})
    assert "shapes the log-ratio of 'sigmoid'" in caplog.text
    # a name no loss knows is still an error, with the closest name suggested
    with pytest.raises((ConfigError, ValueError), match="gama"):
        make_config(assets, tmp_path, loss={"name": "simpo", "gama": 0.5})


def test_losses_command_lists_dpo(capsys):
    from alphapo.cli import main

    assert main(["losses", "--width", "250"]) == 0
    assert "another name for sigmoid" in capsys.readouterr().out


def test_report_to_takes_one_name_or_none_as_trl_does(assets, tmp_path):
    assert make_config(assets, tmp_path, logging={"report_to": "tensorboard"}).logging.report_to == ["tensorboard"]
    assert make_config(assets, tmp_path, logging={"report_to": "none"}).logging.report_to == []
    assert make_config(assets, tmp_path, logging={"report_to": ["mlflow", "wandb"]}).logging.report_to == [
        "mlflow",
        "wandb",
    ]
    with pytest.raises(ValueError, match="tensorboard"):
        make_config(assets, tmp_path, logging={"report_to": "tensorbord"})


def test_the_readme_losses_snippet_runs():
    """The README's Python example pastes and runs as it stands."""
    import re

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    snippet = re.search(r"## Losses\n\n```python\n(.*?)```", readme, re.S).group(1)
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    assert scope["out"].losses.shape == (2,) and torch.isfinite(scope["out"].loss)


def test_recipes_ship_list_copy_and_resolve_by_name(tmp_path, capsys, monkeypatch):
    from alphapo.recipes import list_recipes

    shipped = list_recipes()
    assert {"tiny_cpu", "demo", "mistral7b_instruct_alphapo", "accelerate/ddp", "accelerate/deepspeed_zero3"} <= set(
        shipped
    )
    assert all(path.is_file() for path in shipped.values())
    assert main(["recipes", "ls"]) == 0
    listing = capsys.readouterr().out
    assert "tiny_cpu" in listing and "accelerate/ddp" in listing and "pipeline" in listing
    monkeypatch.chdir(tmp_path)
    assert main(["recipes", "cp", "tiny_cpu"]) == 0
    assert (tmp_path / "tiny_cpu.yaml").read_text() == shipped["tiny_cpu"].read_text()
    assert main(["recipes", "cp", "tiny_cpu"]) == 2  # never overwrites silently
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(["recipes", "cp", "tiny_cpu", "--force"]) == 0
    assert main(["recipes", "path", "accelerate/ddp"]) == 0
    assert capsys.readouterr().out.strip() == str(shipped["accelerate/ddp"])
    assert main(["recipes", "path", "tiny_cp"]) == 2
    assert "no shipped recipe 'tiny_cp'" in capsys.readouterr().err
    # a shipped recipe's name works where a file is expected, when no such file is here
    (tmp_path / "tiny_cpu.yaml").unlink()
    assert load_config(TrainConfig, "tiny_cpu.yaml").loss.name == "alphapo"
    (tmp_path / "tiny_cpu.yaml").write_text("model: {path: mine}\ndata: {paths: [mine.jsonl]}\nloss: {name: simpo}\n")
    assert load_config(TrainConfig, "tiny_cpu.yaml").loss.name == "simpo"  # the local file wins
