"""``alphapo sweep RECIPE.yaml alpha=-1,-0.5,0,0.25,0.5,1 [beta=...] [seeds=3]``.

Every setting trains from the same starting model and pairs (the recipe's cached data, SFT, sample,
judge and pair stages, run first if needed), with the loss diagnostics on, periodic evaluations
during training (gold reward and KL to the starting model on held-out prompts: the
over-optimisation frontier), and a full evaluation at the end. Each run is a resumable stage under
``<out>/sweeps/<name>/``; the sweep report goes beside them.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from alphapo.config import apply_overrides, read_yaml, validate
from alphapo.errors import ConfigError
from alphapo.files import write_jsonl
from alphapo.log import logger
from alphapo.pipeline.recipe import RecipeConfig
from alphapo.pipeline.run import Pipeline, deep_merge
from alphapo.sweep.grid import Setting, SweepSpec, expand, nested, parse_sweep


class FrontierProbe:
    """Evaluates the policy during training: greedy gold reward, accuracy and KL to the start model."""

    def __init__(
        self,
        sft_dir: Path,
        prompts_file: Path,
        n: int,
        every: int | None,
        epochs: float | None,
        out: Path,
        cfg: RecipeConfig,
        scorer=None,
    ):
        """``scorer``: a callable ``(rows, responses) -> one score per prompt`` (a proxy reward), whose
        mean (``proxy``) each evaluation records beside the gold reward, with both per prompt."""
        from alphapo.data.stagefiles import read_jsonl
        from alphapo.sample.generate import load_for_generation

        self.baseline, self.tokenizer = load_for_generation(sft_dir, "sweep")
        self.rows = read_jsonl(prompts_file, "sweep", required=("prompt",))[:n]
        self.every, self.epochs, self.out, self.cfg = every, epochs, out, cfg
        self.scorer = scorer
        self.records: list[dict] = []

    def measure(self, policy, step: int) -> dict:
        from alphapo.eval.evaluate import greedy_records, kl_estimate

        e = self.cfg.eval
        fmt = self.cfg.prompt_format
        records = greedy_records(policy, self.tokenizer, self.rows, e.max_new_tokens, e.batch_size, prompt_format=fmt)
        kl = 0.0
        if policy is not self.baseline:
            per_prompt = kl_estimate(
                policy,
                self.baseline,
                self.tokenizer,
                self.rows,
                e.kl_samples,
                e.max_new_tokens,
                e.batch_size,
                step,
                prompt_format=fmt,
            )
            kl = sum(per_prompt) / len(per_prompt)
        record = {
            "step": step,
            "gold_reward": sum(r["gold_reward"] for r in records) / len(records),
            "accuracy": sum(r["correct"] for r in records) / len(records),
            "kl": kl,
        }
        if self.scorer is not None:
            proxy = self.scorer(self.rows, [r["response"] for r in records])
            record["proxy"] = sum(proxy) / len(proxy)
            record["proxy_per_prompt"] = proxy
            record["gold_per_prompt"] = [r["gold_reward"] for r in records]
            record["mean_length"] = sum(r["length"] for r in records) / len(records)
        self.records.append(record)
        return record

    def __call__(self, step, metrics, model) -> None:
        if self.every is None:  # about six evaluations per run: the epoch fraction at step 1 gives its length
            total = (self.epochs or 1.0) / metrics["epoch"]
            self.every = max(1, round(total / 6))
        if step % self.every:
            return
        from alphapo.ops.model_logps import unwrap

        policy = unwrap(model)
        was_training = policy.training
        policy.eval()
        with torch.no_grad():
            self.measure(policy, step)
        policy.train(was_training)

    def save(self) -> None:
        write_jsonl(self.out, self.records)


class SweepETA:
    """One log line per run: which run of how many, time so far and an ETA from the wall time of the
    runs done so far, training *and* their periodic and final evaluations (runs found finished in the
    cache take no time and do not count)."""

    CACHED_S = 2.0

    def __init__(self, total: int):
        self.total, self.index, self.t0 = total, 0, time.monotonic()
        self.durations: list[float] = []

    def starting(self, label: str) -> None:
        self.index += 1
        self.started = time.monotonic()
        remaining = self.total - self.index + 1
        eta = ""
        if self.durations:
            eta = f", eta {remaining * sum(self.durations) / len(self.durations):,.0f}s (training and evaluations)"
        elapsed = time.monotonic() - self.t0
        logger.info("sweep: run %d/%d (%s), %.0fs elapsed%s", self.index, self.total, label, elapsed, eta)

    def finished(self) -> None:
        took = time.monotonic() - self.started
        if took > self.CACHED_S:
            self.durations.append(took)


def sweep_name(spec: SweepSpec, method: str) -> str:
    axes = "_".join(k.split(".")[-1] for k in spec.axes) or "base"
    return f"{method}-{axes}"


def run_sweep(recipe_path: str, args: list[str], quiet: bool = False) -> dict:
    """Run the sweep described by ``args`` on the recipe at ``recipe_path``; returns its summary."""
    from alphapo.eval.evaluate import evaluate
    from alphapo.sweep.report import write_sweep_report

    spec = parse_sweep(args)
    data = apply_overrides(read_yaml(recipe_path), spec.recipe_overrides)
    cfg = validate(RecipeConfig, data, recipe_path)
    method = spec.method or next(iter(cfg.methods))
    if method not in cfg.methods:
        raise ConfigError(f"sweep: method={method!r} is not in the recipe's methods ({', '.join(cfg.methods)})")
    pipeline = Pipeline(cfg, quiet=quiet)
    pipeline.prepare()  # data, SFT, sample, judge, pair: cached stages
    sft = pipeline.sft_model()
    _, eval_files = pipeline.prompt_files()
    root = pipeline.out / "sweeps" / sweep_name(spec, method)
    runs = []
    settings = expand(spec)
    eta = SweepETA(len(settings))
    for setting in settings:
        eta.starting(f"{setting.label} seed {setting.seed}")
        run_dir = root / setting.label / f"seed{setting.seed}"
        train_cfg = _train_config(pipeline, method, spec, setting, run_dir)

        def train_and_eval(run_dir=run_dir, train_cfg=train_cfg):
            from alphapo.train import TrainConfig, train

            config = validate(TrainConfig, train_cfg, "sweep run")
            loop = config.train
            every = spec.eval_every or (max(1, loop.max_steps // 6) if loop.max_steps else None)
            epochs = None if loop.max_steps else loop.epochs
            frontier = FrontierProbe(
                sft, eval_files[0], spec.eval_prompts, every, epochs, run_dir / "frontier.jsonl", cfg
            )
            frontier.measure(frontier.baseline, 0)
            result = train(config, on_step=frontier)
            if result.status != "completed":
                raise ConfigError(f"sweep run {run_dir} was interrupted; run the sweep again to resume")
            frontier.save()
            e = cfg.eval
            evaluate(
                run_dir / "model",
                sft,
                eval_files,
                run_dir / "eval",
                kl_samples=e.kl_samples,
                max_new_tokens=e.max_new_tokens,
                batch_size=e.batch_size,
                seed=cfg.seed,
                prompt_format=cfg.prompt_format,
            )

        pipeline.stages.run(
            f"sweep-{root.name}-{setting.label}-seed{setting.seed}",
            {
                "train": train_cfg,
                "eval": cfg.eval.model_dump(),
                "eval_every": spec.eval_every,
                "eval_prompts": spec.eval_prompts,
            },
            [sft, pipeline.out / "pairs.jsonl"],
            [run_dir / "eval" / "metrics.json"],
            train_and_eval,
        )
        eta.finished()
        runs.append((setting, run_dir))
    return write_sweep_report(root, runs, spec, method, pipeline.stages.timings)


def _train_config(pipeline: Pipeline, method: str, spec: SweepSpec, setting: Setting, run_dir: Path) -> dict:
    base = pipeline.method_config(method)
    merged = deep_merge(base, nested(spec.fixed))
    merged = deep_merge(merged, nested(setting.overrides()))
    merged = deep_merge(
        merged,
        {
            "output_dir": str(run_dir),
            "train": {"seed": setting.seed},
            "diagnostics": {"every": merged.get("diagnostics", {}).get("every") or 5},
        },
    )
    return merged
