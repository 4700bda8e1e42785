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

from alphapo.data.stagefiles import read_jsonl
from alphapo.eval.stats import bootstrap, paired_difference, seed_and_prompt_difference, win_outcomes
from alphapo.files import write_json

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
    lengths = _mean_over_seeds([[float(r["length"]) for r in run] for run in runs])
    length = bootstrap(lengths, seed=seed)
    out["mean_length"], out["length_ci"] = length.mean, _interval(length)
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
    """Per seed and on average: what training did to the pairs (each run's ``displacement.json``)."""
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


def _settings(method: dict) -> dict:
    """The loss's resolved hyper-parameters (the loss's defaults filled in) and the learning rate."""
    from alphapo.losses import get_loss_spec

    loss = dict(method.get("loss", {}))
    spec = get_loss_spec(loss.pop("name", "alphapo"))
    loss.pop("alpha", None)  # reported separately (resolved from alpha_scale where set)
    resolved = {**spec.defaults, **loss}
    return {**resolved, "lr": method.get("optim", {}).get("lr")}


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


def _records(pipeline, names: list[str], splits: list[str], round: int) -> dict[str, dict[str, list[list[dict]]]]:
    """Per model and split: each seed's greedy records of round ``round`` (``sft``: its own)."""
    eval_root = pipeline.out / "eval"
    out = {}
    for name in names:
        dirs = (
            [eval_root / "sft"]
            if name == "sft"
            else [pipeline.run_dir(name, s, eval_root, round) for s in pipeline.seeds()]
        )
        out[name] = {split: [_generations(d, split) for d in dirs] for split in splits}
    return out


def round_summaries(pipeline, splits: list[str], records_by_round: list[dict]) -> dict[str, list[dict]]:
    """Per method, one entry per round: results per split, KL to the previous round's policy, pairs
    kept, displacement, and the held-out difference against round 1 (intervals over seeds and prompts)."""
    cfg, seeds = pipeline.cfg, pipeline.seeds()
    sft = records_by_round[0]["sft"]
    out: dict[str, list[dict]] = {}
    for name in cfg.methods:
        entries = []
        for round, records in enumerate(records_by_round, start=1):
            by_split = {}
            for split in splits:
                full = split_summary(records[name][split], sft[split][0], cfg.seed)
                keep = ("accuracy", "accuracy_ci", "gold_reward", "gold_reward_ci", "kl_to_sft", "kl_ci")
                by_split[split] = {k: full[k] for k in keep}
            pair_stats = [
                json.loads(Path(f"{pipeline.pairs_dir(name, s, round) / 'pairs.jsonl'}.stats.json").read_text())
                for s in seeds
            ]
            entry = {
                "round": round,
                "pairs": statistics.fmean(p["pairs"] for p in pair_stats),
                "by_split": by_split,
                "training": training_summary([pipeline.run_dir(name, s, round=round) for s in seeds]),
            }
            if round > 1:
                versus = [
                    json.loads(
                        (
                            pipeline.run_dir(name, s, pipeline.out / "eval", round) / "vs-previous" / "metrics.json"
                        ).read_text()
                    )["splits"]
                    for s in seeds
                ]
                first = next(iter(versus[0]))
                entry["kl_to_previous"] = statistics.fmean(v[first]["kl_to_baseline"]["mean"] for v in versus)
                entry["win_rate_vs_previous"] = statistics.fmean(
                    v[first]["win_rate_vs_baseline"]["mean"] for v in versus
                )
                entry["vs_round1"] = compare(records[name][splits[0]], records_by_round[0][name][splits[0]], cfg.seed)
            entries.append(entry)
        out[name] = entries
    return out


def ifeval_summary(pipeline, names: list[str], round: int) -> dict | None:
    """Per model: the IFEval numbers (means over seeds, with the intervals over prompts of the
    seed-averaged per-prompt values) and the paired difference from the SFT model on the same prompts."""
    from alphapo.eval.stats import bootstrap_ratio

    if pipeline.cfg.eval.ifeval is None:
        return None
    eval_root = pipeline.out / "eval"

    def verdicts(name: str) -> list[list[dict]]:
        dirs = (
            [eval_root / "sft"]
            if name == "sft"
            else [pipeline.run_dir(name, s, eval_root, round) for s in pipeline.seeds()]
        )
        return [read_jsonl(d / "ifeval" / "ifeval-model.jsonl", "summary") for d in dirs]

    sft = verdicts("sft")[0]
    seed = pipeline.cfg.seed
    out = {}
    for name in names:
        runs = verdicts(name)
        per_prompt = {
            "prompt_strict": _mean_over_seeds([[float(v["prompt_strict"]) for v in run] for run in runs]),
            "prompt_loose": _mean_over_seeds([[float(v["prompt_loose"]) for v in run] for run in runs]),
        }
        entry = {"prompts": len(sft)}
        for key, values in per_prompt.items():
            entry[key] = bootstrap(values, seed=seed).to_json()
        for mode in ("strict", "loose"):
            followed = _mean_over_seeds([[float(sum(v[mode])) for v in run] for run in runs])
            entry[f"instruction_{mode}"] = bootstrap_ratio(
                followed, [float(len(v[mode])) for v in sft], seed=seed
            ).to_json()
        entry["mean_length"] = statistics.fmean(statistics.fmean(v["new_tokens"] for v in run) for run in runs)
        if name != "sft":
            base = [float(v["prompt_strict"]) for v in sft]
            entry["prompt_strict_vs_sft"] = paired_difference(per_prompt["prompt_strict"], base, seed=seed).to_json()
        out[name] = entry
    return out


def write_summary(pipeline, wall_time: float) -> dict:
    """Build ``summary.json`` for ``pipeline``'s finished run (see the module docstring) and write it.
    With several rounds, ``methods`` holds the last round's policies and ``rounds`` every round."""
    out, cfg = pipeline.out, pipeline.cfg
    seeds = pipeline.seeds()
    splits = list(json.loads((out / "eval" / "sft" / "metrics.json").read_text())["splits"])
    names = ["sft", *cfg.methods]
    records_by_round = [_records(pipeline, names, splits, 1)]
    for round in range(2, cfg.rounds + 1):
        records_by_round.append(
            {"sft": records_by_round[0]["sft"], **_records(pipeline, list(cfg.methods), splits, round)}
        )
    records = records_by_round[-1]
    methods = {}
    for name, by_split_records in records.items():
        baseline = {split: records["sft"][split][0] for split in splits}
        by_split = {split: split_summary(runs, baseline[split], cfg.seed) for split, runs in by_split_records.items()}
        methods[name] = {**by_split[splits[0]], "by_split": by_split}
        if name != "sft":
            method = pipeline.method_config(name, round=cfg.rounds)
            run_dirs = [pipeline.run_dir(name, s, round=cfg.rounds) for s in seeds]
            methods[name]["loss"] = method.get("loss", {}).get("name", "alphapo")
            methods[name]["alpha"] = _alpha(run_dirs[0], method)
            methods[name]["settings"] = _settings(method)
            methods[name]["training"] = training_summary(run_dirs)
    comparisons = {}
    if REFERENCE_METHOD in cfg.methods:
        for name in cfg.methods:
            if name != REFERENCE_METHOD:
                comparisons[name] = {
                    split: compare(records[name][split], records[REFERENCE_METHOD][split], cfg.seed) for split in splits
                }
    # the SFT model's scale on round 1's pairs (the same for every run; reference-free runs record it)
    scales = [pipeline.run_dir(name, seeds[0]) / "reward_scale.json" for name in cfg.methods]
    scale_file = next((path for path in scales if path.is_file()), None)
    stats_file = Path(f"{out / 'pairs.jsonl'}.stats.json")
    summary = {
        "methods": methods,
        "primary_split": splits[0],
        "seeds": seeds,
        "rounds": round_summaries(pipeline, splits, records_by_round) if cfg.rounds > 1 else None,
        "ifeval": ifeval_summary(pipeline, names, cfg.rounds),
        "comparisons": {"reference": REFERENCE_METHOD, "methods": comparisons} if comparisons else None,
        "reward_scale": json.loads(scale_file.read_text()) if scale_file else None,
        "pairs": json.loads(stats_file.read_text()) if stats_file.is_file() else None,
        "stage_seconds": pipeline.stages.timings,
        "wall_time_s": wall_time,
        "seed": cfg.seed,
    }
    write_json(out / "summary.json", summary)
    return summary
