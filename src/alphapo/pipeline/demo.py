"""``alphapo demo``: the built-in recipe on the embedded task, end to end, offline, on a CPU.

    alphapo demo                                   # AlphaPO at alpha < 0 and > 0 and SimPO; 3 seeds each
    alphapo demo --quick                           # one seed, fewer prompts: a smoke run in about a minute
    alphapo demo --rounds 3                        # 3 on-policy rounds (one seed): the per-round report
    alphapo demo --compare simpo,simpo_nll,dpo     # recipe methods or loss names; NAME_nll adds an NLL term
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
from alphapo.files import write_json
from alphapo.losses import available_losses
from alphapo.pipeline.recipe import RecipeConfig
from alphapo.pipeline.run import Pipeline


def demo_recipe_path() -> Path:
    return Path(str(resources.files("alphapo") / "configs" / "demo.yaml"))


QUICK = [
    "seeds=1",
    "task.train_prompts=300",
    "task.heldout=100",
    "task.noop=100",
    "task.unseen_templates=100",
    "eval.kl_samples=1",
]
"""``--quick``: one seed and fewer prompts (overrides given after it still win)."""


def _method(name: str, known: dict) -> dict:
    """A recipe method, a loss with the recipe's defaults, or ``NAME_nll``: NAME plus an NLL term on the
    chosen answer (weight 1, as in RPO / iterative reasoning preference optimisation)."""
    import copy

    if name in known:
        return copy.deepcopy(known[name])
    if name in available_losses() or name == "dpo":
        return {"loss": {"name": name}}
    if name.endswith("_nll") and name != "_nll":
        method = _method(name[: -len("_nll")], known)
        method.setdefault("loss", {})["nll_weight"] = 1.0
        return method
    raise ConfigError(
        f"--compare: {name!r} is neither a method of the demo recipe ({', '.join(known)}), a loss "
        f"({', '.join(available_losses())}) nor one of them with _nll"
    )


def demo_config(
    out: str,
    compare: list[str] | None,
    seed: int,
    sft_from_scratch: bool,
    overrides: list[str],
    quick: bool = False,
    rounds: int = 1,
) -> RecipeConfig:
    data = read_yaml(demo_recipe_path())
    known = data.get("methods", {})
    methods = {name: _method(name, known) for name in (known if compare is None else compare)}
    if not methods:
        raise ConfigError("--compare: name at least one method")
    data.update(out=out, seed=seed, methods=methods)
    if sft_from_scratch:
        data.setdefault("sft", {})["checkpoint"] = "train"
    if rounds > 1:  # one seed per round keeps three rounds within ten minutes on 2 cores
        data.update(rounds=rounds, seeds=1)
    overrides = [*QUICK, *overrides] if quick else overrides
    return validate(RecipeConfig, apply_overrides(data, overrides), str(demo_recipe_path()))


def print_results(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from alphapo.report.shape import label, shape_rows

    console = Console(stderr=False, width=None if sys.stdout.isatty() else 160)
    seeds = len(summary.get("seeds") or [summary.get("seed")])
    spread = f", mean of {seeds} seeds ± sd" if seeds > 1 else ""
    for split in summary["methods"]["sft"]["by_split"]:
        table = Table(title=f"{split} prompts (95% bootstrap intervals over prompts{spread})")
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
            sd = f" ±{s['accuracy_sd']:.3f}" if seeds > 1 and name != "sft" else ""
            table.add_row(
                label(name, m),
                f"{s['accuracy']:.3f} [{s['accuracy_ci'][0]:.3f}, {s['accuracy_ci'][1]:.3f}]{sd}",
                f"{s['gold_reward']:.3f}",
                f"{s['win_rate_vs_sft']:.3f}",
                gain,
                f"{s['kl_to_sft']:.3f}",
            )
        console.print(table)
    scale = summary.get("reward_scale")
    if scale:
        console.print(
            f"reward scale (SFT model, training pairs): mean log-prob per token of chosen answers "
            f"{scale['chosen']['mean_logp']:.3f}, rejected {scale['rejected']['mean_logp']:.3f}"
        )
    rows = shape_rows(summary)
    if rows:
        table = Table(title="What the reward shape did (displacement: end minus start, every pair)")
        for column in rows[0]:
            table.add_column(column)
        for row in rows[1:]:
            table.add_row(*row)
        console.print(table)
    console.print(f"wall time {summary['wall_time_s']:.0f}s; report: {summary.get('report', 'report.md')}")


def export_sft_checkpoint(run_dir: str | Path, target: str | Path) -> dict:
    """Copy ``run_dir``'s SFT model (built with ``--sft-from-scratch``) to ``target`` with a manifest:
    the recipe it was built from, the SHA-256 of its weights and the versions that built it. This is
    how ``alphapo/assets/demo/sft`` is made; the manifest lets a test catch a recipe that drifted."""
    import hashlib
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
        "task": {"sft_examples": recipe["task"]["sft_examples"]},  # what the SFT data depends on
        "seed": recipe["seed"],
        "sha256": hashlib.sha256((target / "model.safetensors").read_bytes()).hexdigest(),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
        },
        "threads": torch.get_num_threads(),
    }
    write_json(target / "manifest.json", manifest)
    return manifest


def run_demo(
    out: str,
    compare: list[str] | None,
    seed: int,
    sft_from_scratch: bool,
    overrides: list[str],
    quick: bool = False,
    rounds: int = 1,
) -> dict:
    summary = Pipeline(demo_config(out, compare, seed, sft_from_scratch, overrides, quick, rounds)).run()
    summary["report"] = str(Path(out) / "report.md")
    print_results(summary)
    return summary
