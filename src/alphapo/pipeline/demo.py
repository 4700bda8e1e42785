"""``alphapo demo``: the built-in recipe on the embedded task, end to end, offline, on a CPU.

    alphapo demo                                   # AlphaPO, SimPO and DPO from the same SFT model and pairs
    alphapo demo --compare alphapo,ipo --seed 1    # any loss name; methods not in the recipe use its defaults
    alphapo demo --sft-from-scratch                # rebuild the SFT checkpoint with the embedded recipe

The recipe is ``alphapo/configs/demo.yaml`` inside the package. The SFT model is the checkpoint
shipped with alphapo (``alphapo/assets/demo/sft``), built by exactly this recipe's SFT stage (see its
``manifest.json``); ``--sft-from-scratch`` runs that stage instead (several minutes on 2 cores).
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from alphapo.config import apply_overrides, read_yaml, validate
from alphapo.errors import ConfigError
from alphapo.losses import available_losses
from alphapo.pipeline.recipe import RecipeConfig
from alphapo.pipeline.run import Pipeline


def demo_recipe_path() -> Path:
    return Path(str(resources.files("alphapo") / "configs" / "demo.yaml"))


def demo_config(out: str, compare: list[str], seed: int, sft_from_scratch: bool, overrides: list[str]) -> RecipeConfig:
    data = read_yaml(demo_recipe_path())
    known = data.get("methods", {})
    methods = {}
    for name in compare:
        if name in known:
            methods[name] = known[name]
        elif name in available_losses() or name == "dpo":
            methods[name] = {"loss": {"name": name}}
        else:
            raise ConfigError(
                f"--compare: {name!r} is neither a method of the demo recipe ({', '.join(known)}) "
                f"nor a loss ({', '.join(available_losses())})"
            )
    if not methods:
        raise ConfigError("--compare: name at least one method")
    data.update(out=out, seed=seed, methods=methods)
    if sft_from_scratch:
        data.setdefault("sft", {})["checkpoint"] = "train"
    return validate(RecipeConfig, apply_overrides(data, overrides), str(demo_recipe_path()))


def print_results(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=False, width=None if sys.stdout.isatty() else 140)
    for split in summary["methods"]["sft"]["by_split"]:
        table = Table(title=f"{split} prompts (95% bootstrap intervals)")
        for column in ("model", "accuracy", "gold reward", "win rate vs SFT", "gain vs SFT", "KL to SFT"):
            table.add_column(column)
        for name, m in summary["methods"].items():
            s = m["by_split"][split]
            gain = (
                "-"
                if name == "sft"
                else f"{s['accuracy_gain_vs_sft']:+.3f} [{s['accuracy_gain_ci'][0]:+.3f}, "
                f"{s['accuracy_gain_ci'][1]:+.3f}]"
            )
            table.add_row(
                name,
                f"{s['accuracy']:.3f} [{s['accuracy_ci'][0]:.3f}, {s['accuracy_ci'][1]:.3f}]",
                f"{s['gold_reward']:.3f}",
                f"{s['win_rate_vs_sft']:.3f}",
                gain,
                f"{s['kl_to_sft']:.3f}",
            )
        console.print(table)
    console.print(f"wall time {summary['wall_time_s']:.0f}s; report: {summary.get('report', 'report.md')}")


def export_sft_checkpoint(run_dir: str | Path, target: str | Path) -> dict:
    """Copy ``run_dir``'s SFT model (built with ``--sft-from-scratch``) to ``target`` with a manifest:
    the recipe it was built from, the SHA-256 of its weights and the versions that built it. This is
    how ``alphapo/assets/demo/sft`` is made; the manifest lets a test catch a recipe that drifted."""
    import hashlib
    import json
    import shutil

    import tokenizers
    import torch
    import transformers

    source, target = Path(run_dir) / "sft" / "model", Path(target)
    recipe = read_yaml(demo_recipe_path())
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("alphapo_config.yaml", "final_metrics.json"))
    manifest = {
        "built_by": "alphapo demo --sft-from-scratch (the sft stage of alphapo/configs/demo.yaml)",
        "sft": recipe["sft"] | {"checkpoint": "train"},
        "task": recipe["task"],
        "seed": recipe["seed"],
        "sha256": hashlib.sha256((target / "model.safetensors").read_bytes()).hexdigest(),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
        },
        "threads": torch.get_num_threads(),
    }
    (target / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def run_demo(out: str, compare: list[str], seed: int, sft_from_scratch: bool, overrides: list[str]) -> dict:
    summary = Pipeline(demo_config(out, compare, seed, sft_from_scratch, overrides)).run()
    summary["report"] = str(Path(out) / "report.md")
    print_results(summary)
    return summary
