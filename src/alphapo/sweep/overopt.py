"""``alphapo overopt [RECIPE] [key=value ...]``: reward-model over-optimisation, shown against a gold reward.

The synthetic setup of Gao et al. (2023, "Scaling Laws for Reward Model Overoptimization"), on the
embedded task whose verifier stands in for people, with the ensembles of Coste et al. (2023):

1. The recipe's cached stages (data, SFT, on-policy samples of the train prompts, gold judgements).
2. The train prompts split in two by a stable hash of the prompt (``rm_share``): the proxies learn from
   one side, the policies train on the other (a proxy judges samples of prompts it never saw).
3. ``members`` proxy reward models (``alphapo rm`` from the SFT model, one seed each; with
   ``member_data: bootstrap`` each on its own resample) trained on ``rm_pairs`` pairs labelled by the
   gold reward (the best and worst of a prompt's samples): the number of pairs sets the proxy's quality.
   Each is evaluated on the gold pairs of the policies' side (its agreement with the gold judge on the
   very samples it will judge).
4. Judges of the policies' samples: ``gold``, ``proxy`` (the first member alone) and the ensemble of
   all members under each rule (``mean``, ``worst``, ``uncertainty``; members standardised by their
   training-pair statistics, :mod:`alphapo.judge.score`). Each judge's best and worst sample per prompt
   form its pairs.
5. For each judge and seed, the recipe's method trains on those pairs for ``epochs`` epochs, evaluated
   every ``eval_every`` steps on ``eval_prompts`` held-out prompts: greedy gold reward, the judge's
   own score of the same answers (the proxy reward; the gold judge's is the gold reward) and KL to the
   SFT model.

The report (``report.md``, ``summary.json``, ``overoptimisation.png``) gives per judge the gold and
proxy curves against KL, where the gold reward peaks with its interval (over seeds and prompts),
whether it then falls beyond the noise while the proxy rises (over-optimisation), and each ensemble's
gold peak against the single proxy's (paired over seeds and prompts). Every stage is cached and
resumable like a pipeline's.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from alphapo.config import apply_overrides, read_yaml, validate
from alphapo.data.dataset import holdout_side
from alphapo.data.stagefiles import read_jsonl, write_jsonl
from alphapo.errors import ConfigError, StageError
from alphapo.files import write_json, write_text
from alphapo.log import logger
from alphapo.pipeline.recipe import RecipeConfig
from alphapo.pipeline.run import Pipeline, deep_merge

JUDGES = ("gold", "proxy", "mean", "worst", "uncertainty")


class OverOptConfig(BaseModel):
    """The study's settings (``key=value`` on the command line; ``recipe.<key>=...`` sets the recipe's)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="overopt", pattern=r"^[A-Za-z0-9_.-]+$")
    """The study's folder under the recipe's ``out`` (several studies share the recipe's cached stages)."""
    method: str | None = None
    """The recipe's method whose loss trains the policies (default: its first)."""
    rm_pairs: int = Field(default=256, gt=1)
    """Gold-labelled pairs each proxy trains on (its quality)."""
    rm_share: float = Field(default=0.5, gt=0, lt=1)
    """Share of the train prompts whose samples train the proxies; the others' train the policies."""
    rm_label_noise: float = Field(default=0.0, ge=0, lt=0.5)
    """Share of the proxies' training pairs whose labels are flipped (seeded), as Coste et al.'s 25%
    stands in for annotators who disagree."""
    members: int = Field(default=3, ge=2)
    member_data: Literal["same", "bootstrap"] = "same"
    """``same``: members differ by seed only; ``bootstrap``: each also trains on its own resample."""
    rm: dict[str, Any] = Field(default_factory=dict)
    """TrainConfig settings of the proxies, over the defaults (e.g. ``rm.optim.lr=3e-4``)."""
    judges: list[str] = Field(default_factory=lambda: list(JUDGES))
    uncertainty_weight: float = Field(default=1.0, ge=0)
    seeds: int = Field(default=2, gt=0)
    epochs: float = Field(default=4.0, gt=0)
    """Policy training epochs: long enough for the policy to move far from the SFT model."""
    eval_every: int | None = Field(default=None, gt=0)
    """Steps between evaluations during training; None: about 8 per run."""
    eval_prompts: int = Field(default=200, gt=0)


def parse(recipe_path: str, args: list[str]) -> tuple[RecipeConfig, OverOptConfig]:
    recipe_overrides = [a.split(".", 1)[1] for a in args if a.startswith("recipe.")]
    own = [a for a in args if not a.startswith("recipe.")]
    for arg in own:
        if "=" not in arg:
            raise ConfigError(f"overopt: expected key=value, got {arg!r}")
    data = {}
    for arg in own:
        key, value = arg.split("=", 1)
        if key == "judges":
            data["judges"] = [j for j in value.split(",") if j]
        else:
            data = apply_overrides(data, [arg])
    study = validate(OverOptConfig, data, "overopt settings")
    unknown = [j for j in study.judges if j not in JUDGES]
    if unknown:
        raise ConfigError(f"overopt: unknown judges {unknown}; choose from {', '.join(JUDGES)}")
    recipe = validate(RecipeConfig, apply_overrides(read_yaml(recipe_path), recipe_overrides), recipe_path)
    if recipe.task is None or recipe.task.name != "arithmetic":
        raise ConfigError("overopt: the study needs the embedded arithmetic task (its verifier is the gold reward)")
    return recipe, study


class JudgeScorer:
    """A judge's score of one answer per prompt, in memory: gold, one proxy (standardised with its
    ``reward_stats.json``) or the ensemble's combination. Models are loaded once."""

    def __init__(self, judge: str, members: list[Path], uncertainty_weight: float, prompt_format: str):
        self.judge, self.weight, self.prompt_format = judge, uncertainty_weight, prompt_format
        self.models = []
        if judge != "gold":
            from alphapo.judge.score import load_reward_model
            from alphapo.train.reward_model import read_stats

            for path in members[:1] if judge == "proxy" else members:
                model, tokenizer = load_reward_model(path)
                stats = read_stats(path)
                if stats is None:
                    raise StageError(f"overopt: {path} has no reward_stats.json")
                self.models.append((model, tokenizer, stats["mean"], stats["std"]))

    def __call__(self, rows: list[dict], responses: list[str]) -> list[float]:
        if self.judge == "gold":
            from alphapo.tasks.verify import verify

            return [verify(row, response)[0] for row, response in zip(rows, responses, strict=True)]
        from alphapo.judge.score import combine, scores_with

        items = [{"prompt": r["prompt"], "completions": [a]} for r, a in zip(rows, responses, strict=True)]
        raw = [[s[0] for s in scores_with(m, t, items, 64, self.prompt_format)] for m, t, _, _ in self.models]
        centres = [c for _, _, c, _ in self.models]
        scales = [s for _, _, _, s in self.models]
        rule = "mean" if self.judge == "proxy" else self.judge
        return combine(raw, rule, centres, scales, self.weight)


def run_overopt(recipe_path: str, args: list[str], quiet: bool = False) -> dict:
    """Run the study (see the module docstring); returns its summary."""
    from alphapo.judge.pairs import PairOptions, make_pairs, pair_file
    from alphapo.judge.score import judge_file
    from alphapo.sweep.run import FrontierProbe
    from alphapo.train import TrainConfig, train
    from alphapo.train.reward_model import evaluate_reward_model

    t0 = time.monotonic()
    recipe, study = parse(recipe_path, args)
    method = study.method or next(iter(recipe.methods))
    if method not in recipe.methods:
        raise ConfigError(f"overopt: method={method!r} is not in the recipe's methods ({', '.join(recipe.methods)})")
    pipeline = Pipeline(recipe, quiet=quiet)
    pipeline.prepare()
    stages, sft = pipeline.stages, pipeline.sft_model()
    root = pipeline.out / study.name
    _, eval_files = pipeline.prompt_files()

    # ---- split the judged train prompts: proxies' side and policies' side
    def split() -> None:
        rows = read_jsonl(pipeline.out / "judged.jsonl", "overopt", required=("prompt", "completions", "scores"))
        sides = {"rm": [], "policy": []}
        for row in rows:
            sides["rm" if holdout_side(row["prompt"], study.rm_share) == "heldout" else "policy"].append(row)
        pairs, _ = make_pairs(sides["rm"], options=PairOptions())
        rng = random.Random(recipe.seed)
        rng.shuffle(pairs)
        if len(pairs) < study.rm_pairs:
            logger.warning(f"overopt: only {len(pairs)} gold pairs on the proxies' side (rm_pairs={study.rm_pairs})")
        pairs = pairs[: study.rm_pairs]
        flipped = rng.sample(range(len(pairs)), round(study.rm_label_noise * len(pairs)))
        for i in flipped:  # label noise: the annotator preferred the worse answer
            pairs[i] = {**pairs[i], "chosen": pairs[i]["rejected"], "rejected": pairs[i]["chosen"], "flipped": True}
        write_jsonl(root / "rm" / "pairs.jsonl", pairs)
        samples = ({k: v for k, v in r.items() if k != "scores"} for r in sides["policy"])
        write_jsonl(root / "policy" / "samples.jsonl", samples)
        gold_pairs, _ = make_pairs(sides["policy"], options=PairOptions())
        write_jsonl(root / "policy" / "gold-pairs.jsonl", gold_pairs)

    stages.run(
        f"{study.name}-split",
        {"rm_share": study.rm_share, "rm_pairs": study.rm_pairs, "noise": study.rm_label_noise, "seed": recipe.seed},
        [pipeline.out / "judged.jsonl"],
        [root / "rm" / "pairs.jsonl", root / "policy" / "samples.jsonl", root / "policy" / "gold-pairs.jsonl"],
        split,
    )

    # ---- the proxies
    members = []
    for i in range(study.members):
        member_dir = root / "rm" / f"member{i}"
        data = root / "rm" / "pairs.jsonl"
        if study.member_data == "bootstrap":
            data = root / "rm" / f"pairs-member{i}.jsonl"
        rm_cfg = deep_merge(
            {
                "task": "reward",
                "model": {"path": str(sft)},
                "data": {
                    "paths": [str(data)],
                    "max_length": 128,
                    "max_prompt_length": 96,
                    "prompt_format": recipe.prompt_format,
                    "cache_dir": str(pipeline.out / "cache"),
                },
                "optim": {"lr": 1e-3},
                "schedule": {"name": "cosine", "warmup_ratio": 0.1},
                "train": {"batch_size": 32, "epochs": 4, "seed": recipe.seed + i},
                "reward": {"eval_data": [str(root / "policy" / "gold-pairs.jsonl")]},
                "logging": {"every": 10, "progress": "lines"},
                "output_dir": str(member_dir),
                "resume": True,
                "resume_mismatch": "fresh",
            },
            study.rm,
        )

        def train_member(rm_cfg=rm_cfg, data=data, i=i) -> None:
            if study.member_data == "bootstrap":
                rows = read_jsonl(root / "rm" / "pairs.jsonl", "overopt")
                rng = random.Random(recipe.seed * 1000 + i)
                write_jsonl(data, (rows[rng.randrange(len(rows))] for _ in rows))
            cfg = validate(TrainConfig, rm_cfg, f"proxy {i}")
            result = train(cfg)
            if result.status != "completed":
                raise StageError(f"overopt: proxy {i} interrupted; run again to resume")
            evaluate_reward_model(result.model_dir, cfg, result.output_dir)

        stages.run(
            f"{study.name}-rm{i}",
            {"rm": rm_cfg, "member_data": study.member_data},
            [sft, root / "rm" / "pairs.jsonl", root / "policy" / "gold-pairs.jsonl"],
            [member_dir / "model" / "reward_stats.json", member_dir / "eval.json"],
            train_member,
        )
        members.append(member_dir / "model")

    # ---- each judge's pairs, and its policies
    runs: dict[str, list[Path]] = {}
    for judge in study.judges:
        folder = root / "judges" / judge
        rms = [] if judge == "gold" else members[:1] if judge == "proxy" else members
        rule = judge if judge in ("mean", "worst", "uncertainty") else "mean"

        def judge_and_pair(folder=folder, rms=rms, rule=rule) -> None:
            judge_file(
                root / "policy" / "samples.jsonl",
                folder / "judged.jsonl",
                [str(p) for p in rms] or None,
                recipe.prompt_format,
                rule,
                study.uncertainty_weight,
            )
            pair_file(folder / "judged.jsonl", folder / "pairs.jsonl", options=PairOptions(seed=recipe.seed))

        stages.run(
            f"{study.name}-judge-{judge}",
            {"judge": judge, "uncertainty_weight": study.uncertainty_weight, "format": recipe.prompt_format},
            [root / "policy" / "samples.jsonl", *rms],
            [folder / "pairs.jsonl"],
            judge_and_pair,
        )
        scorer = None
        runs[judge] = []
        for s in range(study.seeds):
            seed = recipe.seed + s
            run_dir = folder / f"seed{seed}"
            train_cfg = deep_merge(
                pipeline.method_config(method, seed),
                {
                    "data": {"paths": [str(folder / "pairs.jsonl")]},
                    "output_dir": str(run_dir),
                    "train": {"seed": seed, "epochs": study.epochs, "max_steps": None},
                },
            )

            def train_and_probe(train_cfg=train_cfg, run_dir=run_dir, judge=judge, rms=rms, folder=folder) -> None:
                nonlocal scorer
                if scorer is None:
                    scorer = JudgeScorer(judge, rms, study.uncertainty_weight, recipe.prompt_format)
                config = validate(TrainConfig, train_cfg, f"overopt {judge}")
                probe = FrontierProbe(
                    sft,
                    eval_files[0],
                    study.eval_prompts,
                    study.eval_every,
                    config.train.epochs,
                    run_dir / "frontier.jsonl",
                    recipe,
                    scorer=scorer,
                )
                if probe.every is None:  # about 8 evaluations per run
                    pairs = len((folder / "pairs.jsonl").read_text().splitlines())
                    steps = max(1, round(config.train.epochs * pairs / config.train.batch_size))
                    probe.every = max(1, round(steps / 8))
                probe.measure(probe.baseline, 0)
                result = train(config, on_step=probe)
                if result.status != "completed":
                    raise StageError(f"overopt: {judge} seed {train_cfg['train']['seed']} interrupted; run again")
                if probe.records[-1]["step"] != result.step:  # the end of training is always measured
                    probe.measure(_load(result.model_dir), result.step)
                probe.save()

            stages.run(
                f"{study.name}-train-{judge}-seed{seed}",
                {
                    "train": train_cfg,
                    "eval_every": study.eval_every,
                    "eval_prompts": study.eval_prompts,
                    "eval": recipe.eval.model_dump(),
                    "uncertainty_weight": study.uncertainty_weight,
                },
                [sft, folder / "pairs.jsonl", *rms],
                [run_dir / "frontier.jsonl"],
                train_and_probe,
            )
            runs[judge].append(run_dir)
    summary = summarise(root, study, runs, members, recipe.seed)
    summary["seconds"] = round(time.monotonic() - t0, 1)
    summary["stage_seconds"] = {k: round(v, 1) for k, v in stages.timings.items()}
    write_json(root / "summary.json", summary)
    write_text(root / "report.md", markdown(summary))
    return summary


def _load(model_dir: Path):
    from alphapo.sample.generate import load_for_generation

    return load_for_generation(model_dir, "overopt")[0]


# ---- the analysis
def summarise(root: Path, study: OverOptConfig, runs: dict[str, list[Path]], members: list[Path], seed: int) -> dict:
    from alphapo.eval.stats import seed_and_prompt_difference

    proxies = []
    for m in members:
        report = json.loads((m.parent / "eval.json").read_text())
        proxies.append({"model": str(m), "gold_pair_accuracy": report["heldout"]["accuracy"]})
    judges: dict[str, dict] = {}
    curves: dict[str, dict] = {}
    for judge, dirs in runs.items():
        logs = [read_jsonl(d / "frontier.jsonl", "overopt") for d in dirs]
        steps = [r["step"] for r in logs[0]]
        if any([r["step"] for r in log] != steps for log in logs):
            raise StageError(f"overopt: the {judge} runs were evaluated at different steps")
        gold = [[r["gold_per_prompt"] for r in log] for log in logs]  # [seed][point][prompt]
        proxy = [[r["proxy_per_prompt"] for r in log] for log in logs]

        def at(table, point):
            return [table[s][point] for s in range(len(table))]  # [seed][prompt]

        def mean(rows):
            return sum(sum(r) for r in rows) / sum(len(r) for r in rows)

        gold_curve = [mean(at(gold, k)) for k in range(len(steps))]
        proxy_curve = [mean(at(proxy, k)) for k in range(len(steps))]
        kl_curve = [sum(log[k]["kl"] for log in logs) / len(logs) for k in range(len(steps))]
        peak = max(range(len(steps)), key=lambda k: gold_curve[k])
        last = len(steps) - 1
        zeros = [[0.0] * len(r) for r in at(gold, peak)]
        fall = seed_and_prompt_difference(at(gold, last), at(gold, peak), seed=seed)
        proxy_change = seed_and_prompt_difference(at(proxy, last), at(proxy, peak), seed=seed)
        gain = seed_and_prompt_difference(at(gold, peak), at(gold, 0), seed=seed)
        seen = peak < last and fall.high < 0 and proxy_change.low > 0
        judges[judge] = {
            "runs": [str(d) for d in dirs],
            "peak": {
                "step": steps[peak],
                "kl": kl_curve[peak],
                "gold": seed_and_prompt_difference(at(gold, peak), zeros, seed=seed).to_json(),
                "gain_over_start": gain.to_json(),
            },
            "final": {"step": steps[last], "kl": kl_curve[last], "gold": gold_curve[last], "proxy": proxy_curve[last]},
            "gold_fall_after_peak": fall.to_json(),
            "proxy_change_after_peak": proxy_change.to_json(),
            "overoptimisation": bool(seen),
        }
        curves[judge] = {"step": steps, "kl": kl_curve, "gold": gold_curve, "proxy": proxy_curve}
        judges[judge]["_peak_table"] = at(gold, peak)
    versus = {}
    if "proxy" in judges:
        for judge in judges:
            if judge in ("gold", "proxy"):
                continue
            d = seed_and_prompt_difference(judges[judge]["_peak_table"], judges["proxy"]["_peak_table"], seed=seed)
            versus[judge] = d.to_json()
    for entry in judges.values():
        entry.pop("_peak_table")
    plot_overoptimisation(curves, root / "overoptimisation.png")
    write_json(root / "curves.json", curves)
    return {
        "settings": study.model_dump(),
        "proxies": proxies,
        "judges": judges,
        "ensemble_peak_vs_proxy": versus,
        "plot": str(root / "overoptimisation.png"),
    }


def plot_overoptimisation(curves: dict[str, dict], path: Path) -> None:
    from alphapo.report.plots import pyplot, save_figure

    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    colours = plt.cm.tab10.colors
    for (judge, c), colour in zip(curves.items(), colours, strict=False):
        left.plot(c["kl"], c["gold"], "o-", color=colour, label=judge, markersize=4)
        if judge != "gold":
            right.plot(c["kl"], c["proxy"], "o-", color=colour, label=judge, markersize=4)
    left.set_title("gold reward (the verifier) of greedy answers")
    right.set_title("the judge's own score of the same answers (standardised)")
    for ax in (left, right):
        ax.set_xlabel("KL(policy || SFT), nats per answer")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    left.set_ylabel("held-out gold reward")
    right.set_ylabel("proxy reward (z)")
    fig.suptitle("Over-optimisation: policies trained on pairs judged by each judge (mean over seeds)")
    save_figure(fig, path)


def markdown(summary: dict) -> str:
    def est(e: dict) -> str:
        return f"{e['mean']:.3f} [{e['low']:.3f}, {e['high']:.3f}]"

    s = summary["settings"]
    lines = [
        "# Over-optimisation on the embedded task",
        "",
        f"{s['members']} proxy reward models ({s['member_data']} data), {s['rm_pairs']} gold-labelled pairs each "
        f"({s['rm_label_noise']:.0%} of labels flipped); "
        f"policies: {s['seeds']} seeds x {s['epochs']:g} epochs per judge; {s['eval_prompts']} held-out prompts "
        "per evaluation. Intervals: 95% bootstrap over seeds and prompts.",
        "",
        "## Proxies: agreement with the gold judge on the policies' samples (gold best vs worst pairs)",
        "",
        *[f"- {p['model']}: {est(p['gold_pair_accuracy'])}" for p in summary["proxies"]],
        "",
        "## Judges",
        "",
        "| judge | gold peak (step, KL) | gold at peak | gain over SFT at peak | gold change after peak | "
        "proxy change after peak | over-optimisation |",
        "|---|---|---|---|---|---|---|",
    ]
    for judge, j in summary["judges"].items():
        p = j["peak"]
        lines.append(
            f"| {judge} | {p['step']} ({p['kl']:.3f}) | {est(p['gold'])} | {est(p['gain_over_start'])} | "
            f"{est(j['gold_fall_after_peak'])} | {est(j['proxy_change_after_peak'])} | "
            f"{'yes' if j['overoptimisation'] else 'no'} |"
        )
    if summary["ensemble_peak_vs_proxy"]:
        lines += ["", "## Ensembles' gold peak against the single proxy's (paired over seeds and prompts)", ""]
        lines += [f"- {j}: {est(e)}" for j, e in summary["ensemble_peak_vs_proxy"].items()]
    lines += [
        "",
        "Over-optimisation here: the gold reward falls after its peak beyond the noise (the interval of its "
        "change excludes 0) while the judge's own score still rises.",
        "",
        f"![over-optimisation]({Path(summary['plot']).name})",
        "",
    ]
    return "\n".join(lines)
