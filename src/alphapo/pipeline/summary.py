"""``summary.json``: every model's evaluation per split, over training seeds, and how methods compare.

Per method and split (the fields ``alphapo run`` has always written, now over seeds): ``accuracy``,
``gold_reward``, ``win_rate_vs_sft``, ``accuracy_gain_vs_sft``, ``gold_reward_gain_vs_sft``,
``kl_to_sft``, each a mean over seeds of the per-prompt values with a bootstrap interval over prompts
(``*_ci``), plus ``per_seed`` values and their standard deviation (``*_sd``). Per method also: the
loss and its alpha (as resolved for the run), and what training did to the pairs (``training``: the
chosen and rejected displacement and the share of chosen answers that fell, per seed, from each
run's ``displacement.json``).

``comparisons``: each method against the ``reference`` method (SimPO when it runs, the alpha = 0 point
of AlphaPO), per split: the paired difference in accuracy and gold reward with two intervals, one
over prompts (seed-averaged) and one resampling seeds and prompts together.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from alphapo.eval.stats import bootstrap, paired_difference, seed_and_prompt_difference, win_outcomes
from alphapo.sample.generate import read_jsonl

REFERENCE_METHOD = "simpo"
SCORES = ("correct", "gold_reward", "kl")


def _generations(eval_dir: Path, split: str) -> list[dict]:
    return read_jsonl(eval_dir / f"generations-{split}.jsonl", "summary")


def _mean_over_seeds(columns: list[list[float]]) -> list[float]:
    return [statistics.fmean(values) for values in zip(*columns, strict=True)]


def _interval(estimate) -> list[float]:
    return [estimate.low, estimate.high]


def split_summary(runs: list[list[dict]], baseline: list[dict], seed: int) -> dict:
    """One split's fields from per-seed greedy records ``runs`` [S][N] against the SFT records [N]."""
    correct = [[float(r["correct"]) for r in run] for run in runs]
    gold = [[r["gold_reward"] for r in run] for run in runs]
    kl = [[r.get("kl", 0.0) for r in run] for run in runs]
    base_gold = [r["gold_reward"] for r in baseline]
    base_correct = [float(r["correct"]) for r in baseline]
    wins = [win_outcomes(g, base_gold) for g in gold]
    estimates = {
        "accuracy": bootstrap(_mean_over_seeds(correct), seed=seed),
        "gold_reward": bootstrap(_mean_over_seeds(gold), seed=seed),
        "win_rate_vs_sft": bootstrap(_mean_over_seeds(wins), seed=seed),
        "accuracy_gain_vs_sft": paired_difference(_mean_over_seeds(correct), base_correct, seed=seed),
        "gold_reward_gain_vs_sft": paired_difference(_mean_over_seeds(gold), base_gold, seed=seed),
        "kl_to_sft": bootstrap(_mean_over_seeds(kl), seed=seed),
    }
    ci_names = {
        "accuracy": "accuracy_ci",
        "gold_reward": "gold_reward_ci",
        "win_rate_vs_sft": "win_rate_ci",
        "accuracy_gain_vs_sft": "accuracy_gain_ci",
        "gold_reward_gain_vs_sft": "gold_reward_gain_ci",
        "kl_to_sft": "kl_ci",
    }
    per_seed = {
        "accuracy": [statistics.fmean(c) for c in correct],
        "gold_reward": [statistics.fmean(g) for g in gold],
        "win_rate_vs_sft": [statistics.fmean(w) for w in wins],
        "kl_to_sft": [statistics.fmean(k) for k in kl],
    }
    out: dict = {}
    for key, estimate in estimates.items():
        out[key], out[ci_names[key]] = estimate.mean, _interval(estimate)
    for key, values in per_seed.items():
        out[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
    out["per_seed"] = per_seed
    out["mean_length"] = statistics.fmean(r["length"] for run in runs for r in run)
    out["n"] = len(baseline)
    return out


def compare(runs: list[list[dict]], reference: list[list[dict]], seed: int) -> dict:
    """``runs`` against ``reference`` ([S][N] records each, same prompts, seed i paired with seed i)."""
    out = {}
    for key, field in (("accuracy", "correct"), ("gold_reward", "gold_reward")):
        mine = [[float(r[field]) for r in run] for run in runs]
        theirs = [[float(r[field]) for r in run] for run in reference]
        prompts = paired_difference(_mean_over_seeds(mine), _mean_over_seeds(theirs), seed=seed)
        both = seed_and_prompt_difference(mine, theirs, seed=seed)
        out[f"{key}_diff"] = prompts.mean
        out[f"{key}_diff_ci_prompts"] = _interval(prompts)
        out[f"{key}_diff_ci_seeds_and_prompts"] = _interval(both)
    return out


def training_summary(run_dirs: list[Path]) -> dict:
    """Per seed and on average: what training did to the pairs (``displacement.json``) and the alpha."""
    records = []
    for run_dir in run_dirs:
        path = run_dir / "displacement.json"
        records.append(json.loads(path.read_text()) if path.is_file() else {})
    out: dict = {"per_seed": records}
    for key in ("chosen", "rejected", "chosen_per_token", "chosen_fell", "rejected_fell"):
        values = [r[key] for r in records if key in r]
        if values:
            out[key] = statistics.fmean(values)
            out[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out


def _alpha(run_dir: Path, method: dict) -> float | None:
    """The alpha a run trained with: resolved from ``alpha_scale`` (``reward_scale.json``) or configured;
    0 for SimPO and other unshaped reference-free losses; None for a reference-based loss left unshaped."""
    from alphapo.losses import get_loss_spec

    path = run_dir / "reward_scale.json"
    if path.is_file():
        return json.loads(path.read_text())["alpha"]
    loss = method.get("loss", {})
    spec = get_loss_spec(loss.get("name", "alphapo"))
    if spec.needs_reference and "alpha" not in loss:
        return None
    return float(loss.get("alpha", spec.default_alpha))


def write_summary(pipeline, wall_time: float) -> dict:
    """Build ``summary.json`` for ``pipeline``'s finished run (see the module docstring) and write it."""
    out, cfg = pipeline.out, pipeline.cfg
    seeds = pipeline.seeds()
    eval_root = out / "eval"
    sft_eval = eval_root / "sft"
    splits = list(json.loads((sft_eval / "metrics.json").read_text())["splits"])
    records: dict[str, dict[str, list[list[dict]]]] = {}
    for name in ["sft", *cfg.methods]:
        dirs = [sft_eval] if name == "sft" else [pipeline.run_dir(name, s, eval_root) for s in seeds]
        records[name] = {split: [_generations(d, split) for d in dirs] for split in splits}
    methods = {}
    for name, by_split_records in records.items():
        baseline = {split: records["sft"][split][0] for split in splits}
        by_split = {split: split_summary(runs, baseline[split], cfg.seed) for split, runs in by_split_records.items()}
        methods[name] = {**by_split[splits[0]], "by_split": by_split}
        if name != "sft":
            method = pipeline.method_config(name)
            run_dirs = [pipeline.run_dir(name, s) for s in seeds]
            methods[name]["loss"] = method.get("loss", {}).get("name", "alphapo")
            methods[name]["alpha"] = _alpha(run_dirs[0], method)
            methods[name]["training"] = training_summary(run_dirs)
    comparisons = {}
    if REFERENCE_METHOD in cfg.methods:
        for name in cfg.methods:
            if name != REFERENCE_METHOD:
                comparisons[name] = {
                    split: compare(records[name][split], records[REFERENCE_METHOD][split], cfg.seed) for split in splits
                }
    # the starting model's scale on the pairs (the same for every run; reference-free runs record it)
    scales = [pipeline.run_dir(name, seeds[0]) / "reward_scale.json" for name in cfg.methods]
    scale_file = next((path for path in scales if path.is_file()), None)
    stats_file = Path(f"{out / 'pairs.jsonl'}.stats.json")
    summary = {
        "methods": methods,
        "primary_split": splits[0],
        "seeds": seeds,
        "comparisons": {"reference": REFERENCE_METHOD, "methods": comparisons} if comparisons else None,
        "reward_scale": json.loads(scale_file.read_text()) if scale_file else None,
        "pairs": json.loads(stats_file.read_text()) if stats_file.is_file() else None,
        "stage_seconds": pipeline.stages.timings,
        "wall_time_s": wall_time,
        "seed": cfg.seed,
    }
    tmp = out / ".tmp-summary.json"
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.replace(out / "summary.json")
    return summary
