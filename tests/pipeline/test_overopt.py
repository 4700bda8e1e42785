"""The over-optimisation study (``alphapo overopt``): settings, label noise, and a micro run whose summary
holds every judge's gold and proxy curves, peaks with intervals and the report."""

import json

import pytest
import yaml

from alphapo.errors import ConfigError
from alphapo.sweep.overopt import parse, run_overopt
from tests.pipeline.test_run import micro_recipe


def _recipe(tmp_path, train_prompts=48):
    recipe = micro_recipe(tmp_path / "run").model_dump(mode="json")
    recipe["task"]["train_prompts"] = train_prompts
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_settings_are_checked(tmp_path):
    path = _recipe(tmp_path)
    recipe, study = parse(str(path), ["rm_pairs=32", "judges=gold,worst", "recipe.seeds=2"])
    assert study.rm_pairs == 32 and study.judges == ["gold", "worst"] and recipe.seeds == 2
    with pytest.raises(ConfigError, match="unknown judges"):
        parse(str(path), ["judges=gold,best"])
    with pytest.raises(ConfigError):
        parse(str(path), ["rm_pair=3"])
    with pytest.raises(ConfigError, match="arithmetic"):
        parse(str(path), ["recipe.task.name=instructions"])


@pytest.mark.slow
def test_micro_study_holds_both_curves_for_every_judge(tmp_path):
    path = _recipe(tmp_path)
    settings = [
        "rm_pairs=16",
        "rm_label_noise=0.25",
        "members=2",
        "seeds=2",
        "epochs=2",
        "eval_prompts=8",
        "judges=gold,proxy,worst,uncertainty",
        "rm.train.batch_size=4",
        "rm.train.epochs=2",
    ]
    summary = run_overopt(str(path), settings, quiet=True)
    root = tmp_path / "run" / "overopt"
    pairs = [json.loads(line) for line in (root / "rm" / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == 16 and sum(bool(p.get("flipped")) for p in pairs) == 4
    curves = json.loads((root / "curves.json").read_text())
    assert set(curves) == set(summary["judges"]) == {"gold", "proxy", "worst", "uncertainty"}
    for judge, c in curves.items():
        assert len(c["kl"]) == len(c["gold"]) == len(c["proxy"]) >= 3 and c["step"][0] == 0 and c["kl"][0] == 0
        peak = summary["judges"][judge]["peak"]
        assert peak["gold"]["low"] <= peak["gold"]["mean"] <= peak["gold"]["high"]
        assert peak["gold"]["mean"] == pytest.approx(max(c["gold"]))
    assert curves["gold"]["proxy"] == curves["gold"]["gold"]  # the gold judge's own score is the gold reward
    assert curves["proxy"]["proxy"] != curves["proxy"]["gold"]
    assert set(summary["ensemble_peak_vs_proxy"]) == {"worst", "uncertainty"}
    assert len(summary["proxies"]) == 2 and all("gold_pair_accuracy" in p for p in summary["proxies"])
    report = (root / "report.md").read_text()
    assert "over-optimisation" in report and (root / "overoptimisation.png").stat().st_size > 10_000
    # a second call finds every stage done
    again = run_overopt(str(path), settings, quiet=True)
    assert again["judges"] == summary["judges"] and all(v == 0 for v in again["stage_seconds"].values())
