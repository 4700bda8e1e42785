"""The sweep: grid expansion, and a micro sweep that writes every file of its report."""

import json

import pytest
import yaml

from alphapo.errors import ConfigError
from alphapo.sweep import expand, parse_sweep, run_sweep
from tests.pipeline.test_run import micro_recipe


def test_grid_expands_settings_and_seeds():
    spec = parse_sweep(["alpha=-1,0,0.5", "beta=2.5", "lr=1e-4,3e-4", "seeds=2", "recipe.sample.k=4", "method=simpo"])
    assert spec.axes == {"loss.alpha": [-1, 0, 0.5], "optim.lr": [1e-4, 3e-4]}
    assert spec.fixed == {"loss.beta": 2.5} and spec.recipe_overrides == ["sample.k=4"] and spec.method == "simpo"
    settings = expand(spec)
    assert len(settings) == 3 * 2 * 2
    assert [(s.label, s.seed) for s in settings[:3]] == [
        ("alpha=-1,lr=0.0001", 0),
        ("alpha=-1,lr=0.0001", 1),
        ("alpha=-1,lr=0.0003", 0),
    ]
    assert settings[-1].overrides() == {"loss.alpha": 0.5, "optim.lr": 3e-4} and settings[-1].seed == 1
    assert [s.seed for s in expand(parse_sweep(["alpha=0.1"]))] == [0]  # no axis: one setting, one seed


def test_grid_errors():
    with pytest.raises(ConfigError, match="not key=value"):
        parse_sweep(["alpha"])
    with pytest.raises(ConfigError, match="unknown key 'alhpa'"):
        parse_sweep(["alhpa=1,2"])
    with pytest.raises(ConfigError, match="seeds must be a positive integer"):
        parse_sweep(["seeds=0"])


@pytest.mark.slow
def test_micro_sweep_writes_every_file_of_the_report(tmp_path):
    recipe = micro_recipe(tmp_path / "run")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe.model_dump(mode="json")))
    summary = run_sweep(str(path), ["alpha=0,0.5", "max_steps=4", "eval_every=2", "eval_prompts=6"], quiet=True)
    root = tmp_path / "run" / "sweeps" / "alphapo-alpha"
    for name in (
        "report.md",
        "sweep_summary.json",
        "plots/displacement.png",
        "plots/frontier.png",
        "plots/margin_vs_chosen.png",
    ):
        assert (root / name).is_file(), name
    assert set(summary["settings"]) == {"alpha=0", "alpha=0.5"}
    for label in ("alpha=0", "alpha=0.5"):
        run = root / label / "seed0"
        frontier = [json.loads(line) for line in (run / "frontier.jsonl").read_text().splitlines()]
        assert [r["step"] for r in frontier] == [0, 2, 4] and frontier[0]["kl"] == 0.0
        assert (run / "eval" / "metrics.json").is_file()
        assert any("diagnostics/grad_cosine" in json.loads(line) for line in (run / "metrics.jsonl").open())
    assert summary["verdict"]["best"] in {"alpha=0", "alpha=0.5"} and "beyond_noise" in summary["verdict"]
    report = (root / "report.md").read_text()
    assert "Best by held-out gold reward" in report and "frontier.png" in report
