"""``alphapo run RECIPE.yaml``: data -> SFT -> sample -> judge -> pair -> train (each method) -> eval -> report.

Every stage reads and writes plain files under the recipe's ``out`` directory, so any stage can also
run alone (``alphapo sample``, ``alphapo train``, ...) and the chain resumes where it stopped:

    out/data/{sft,train,heldout,noop,unseen_templates}.jsonl   out/sft/model/        out/samples.jsonl
    out/judged.jsonl   out/pairs.jsonl (+ .stats.json)   out/<method>/model/   out/eval/<model>/metrics.json
    out/summary.json   out/report.md   out/plots/*.png

With ``seeds: N`` (N > 1) each method trains N times from the same SFT model and pairs, in
``out/<method>/seed<k>/`` (evaluations in ``out/eval/<method>/seed<k>/``).
"""

from __future__ import annotations

import shutil
import time
from importlib import resources
from pathlib import Path
from typing import Any

from alphapo.config import validate
from alphapo.errors import StageError
from alphapo.pipeline.recipe import RecipeConfig
from alphapo.pipeline.stages import Stages
from alphapo.sample.generate import write_jsonl

BUILTIN_SFT = "assets/demo/sft"
EVAL_SPLITS = ("heldout", "noop", "unseen_templates")
"""The embedded task's evaluation splits (see :mod:`alphapo.tasks.arithmetic`)."""


def deep_merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def builtin_sft_dir() -> Path:
    path = Path(str(resources.files("alphapo") / BUILTIN_SFT))
    if not (path / "model.safetensors").is_file():
        raise StageError(f"sft: the built-in checkpoint is missing from the installed package ({path})")
    return path


class Pipeline:
    def __init__(self, cfg: RecipeConfig, quiet: bool = False):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.stages = Stages(self.out, quiet=quiet)
        self.data = self.out / "data"

    # ---- data and the starting policy
    def make_task_data(self) -> None:
        import random

        from alphapo.tasks import demonstration, make_split

        task, seed = self.cfg.task, self.cfg.seed
        styles = random.Random(seed)
        write_jsonl(
            self.data / "sft.jsonl",
            (
                {"prompt": p.prompt, "completion": " " + demonstration(p, styles)}
                for p in make_split("train", task.sft_examples, seed)
            ),
        )
        # on-policy prompts: train-template problems the SFT stage did not see
        write_jsonl(self.data / "train.jsonl", (p.to_json() for p in make_split("train", task.train_prompts, seed + 1)))
        for split in EVAL_SPLITS:
            problems = make_split(split, getattr(task, split), seed)
            write_jsonl(self.data / f"{split}.jsonl", (p.to_json() for p in problems))

    def prompt_files(self) -> tuple[Path, list[Path]]:
        if self.cfg.task is not None:
            return self.data / "train.jsonl", [self.data / f"{split}.jsonl" for split in EVAL_SPLITS]
        return Path(self.cfg.prompts.train), [Path(p) for p in self.cfg.prompts.eval]

    def sft_model(self) -> Path:
        """The starting policy: copied or trained into ``out/sft/model``, or the given directory."""
        checkpoint = self.cfg.sft.checkpoint
        return self.out / "sft" / "model" if checkpoint in ("builtin", "train") else Path(checkpoint)

    def sft_config(self) -> dict[str, Any]:
        base = {
            "task": "sft",
            "tokenizer": str(self.out / "tokenizer"),
            "data": {"paths": [str(self.data / "sft.jsonl")], "cache_dir": str(self.out / "cache")},
            "output_dir": str(self.out / "sft"),
            "resume": True,
            "resume_mismatch": "fresh",
        }
        return deep_merge(base, self.cfg.sft.recipe)

    def run_sft(self) -> None:
        from alphapo.models import train_bpe_tokenizer
        from alphapo.sample.generate import read_jsonl
        from alphapo.train import TrainConfig, train

        rows = read_jsonl(self.data / "sft.jsonl", "sft", required=("prompt", "completion"))
        tokenizer = train_bpe_tokenizer(
            [r["prompt"] + r["completion"] for r in rows], vocab_size=self.cfg.sft.vocab_size, split_digits=True
        )
        tokenizer.save_pretrained(self.out / "tokenizer")
        result = train(validate(TrainConfig, self.sft_config(), "sft recipe"))
        if result.status != "completed":
            raise StageError("sft: interrupted; run again to resume")

    def copy_builtin(self) -> None:
        target = self.out / "sft" / "model"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(builtin_sft_dir(), target)

    # ---- methods
    def seeds(self) -> list[int]:
        """The training seeds of every method."""
        return [self.cfg.seed + i for i in range(self.cfg.seeds)]

    def run_dir(self, name: str, seed: int, root: Path | None = None) -> Path:
        """Where method ``name``'s run with training seed ``seed`` lives (under ``root``, default ``out``)."""
        base = (root or self.out) / name
        return base if self.cfg.seeds == 1 else base / f"seed{seed}"

    def method_config(self, name: str, seed: int | None = None) -> dict[str, Any]:
        seed = self.cfg.seed if seed is None else seed
        base = {
            "model": {"path": str(self.sft_model())},
            "data": {"paths": [str(self.out / "pairs.jsonl")], "cache_dir": str(self.out / "cache")},
            "output_dir": str(self.run_dir(name, seed)),
            "resume": True,
            "resume_mismatch": "fresh",  # a stage rerun for changed settings or inputs starts over
            "train": {"seed": seed},
        }
        return deep_merge(base, deep_merge(self.cfg.method_defaults, self.cfg.methods[name]))

    def train_method(self, name: str, seed: int) -> None:
        from alphapo.train import TrainConfig, train

        result = train(validate(TrainConfig, self.method_config(name, seed), f"method {name}"))
        if result.status != "completed":
            raise StageError(f"train {name} (seed {seed}): interrupted; run again to resume")

    # ---- the chain
    def prepare(self) -> None:
        """The stages every method shares: data, SFT, sample, judge, pair."""
        from alphapo.judge.pairs import pair_file
        from alphapo.judge.score import judge_file
        from alphapo.sample.generate import sample_file

        cfg, stages = self.cfg, self.stages
        self.out.mkdir(parents=True, exist_ok=True)
        if cfg.task is not None:
            stages.run(
                "data",
                {"task": cfg.task.model_dump(), "seed": cfg.seed},
                [],
                [self.data / f"{s}.jsonl" for s in ("sft", "train", *EVAL_SPLITS)],
                self.make_task_data,
            )
        if cfg.sft.checkpoint == "builtin":
            stages.run("sft", {"builtin": True}, [builtin_sft_dir()], [self.sft_model()], self.copy_builtin)
        elif cfg.sft.checkpoint == "train":
            stages.run("sft", self.sft_config(), [self.data / "sft.jsonl"], [self.sft_model()], self.run_sft)
        sft = self.sft_model()
        train_prompts, _ = self.prompt_files()
        s = cfg.sample
        stages.run(
            "sample",
            {**s.model_dump(), "seed": cfg.seed},
            [sft, train_prompts],
            [self.out / "samples.jsonl"],
            lambda: sample_file(
                sft,
                train_prompts,
                self.out / "samples.jsonl",
                k=s.k,
                temperature=s.temperature,
                top_p=s.top_p,
                max_new_tokens=s.max_new_tokens,
                batch_size=s.batch_size,
                seed=cfg.seed,
            ),
        )
        rm = cfg.judge.reward_model
        stages.run(
            "judge",
            {"reward_model": rm},
            [self.out / "samples.jsonl"] + ([Path(rm)] if rm else []),
            [self.out / "judged.jsonl"],
            lambda: judge_file(self.out / "samples.jsonl", self.out / "judged.jsonl", rm),
        )
        stages.run(
            "pair",
            cfg.pair.model_dump(),
            [self.out / "judged.jsonl"],
            [self.out / "pairs.jsonl"],
            lambda: pair_file(self.out / "judged.jsonl", self.out / "pairs.jsonl", cfg.pair.min_gap),
        )

    def run(self) -> dict:
        """The whole chain; returns the summary (also written to ``summary.json``)."""
        from alphapo.eval.evaluate import evaluate
        from alphapo.pipeline.summary import write_summary
        from alphapo.report import write_report

        start = time.monotonic()
        cfg, stages = self.cfg, self.stages
        self.prepare()
        sft = self.sft_model()
        _, eval_files = self.prompt_files()
        runs = [(name, seed) for name in cfg.methods for seed in self.seeds()]
        for name, seed in runs:
            stages.run(
                self.stage_name("train", name, seed),
                self.method_config(name, seed),
                [sft, self.out / "pairs.jsonl"],
                [self.run_dir(name, seed) / "model"],
                lambda name=name, seed=seed: self.train_method(name, seed),
            )
        e = cfg.eval
        sft_eval = self.out / "eval" / "sft"
        for name, seed in [("sft", cfg.seed), *runs]:
            model = sft if name == "sft" else self.run_dir(name, seed) / "model"
            target = sft_eval if name == "sft" else self.run_dir(name, seed, self.out / "eval")
            stages.run(
                self.stage_name("eval", name, seed),
                {**e.model_dump(), "seed": cfg.seed},
                [model, sft, *eval_files],
                [target / "metrics.json"],
                lambda model=model, target=target: evaluate(
                    model,
                    sft,
                    eval_files,
                    target,
                    kl_samples=e.kl_samples,
                    max_new_tokens=e.max_new_tokens,
                    batch_size=e.batch_size,
                    seed=cfg.seed,
                    baseline_eval=sft_eval,
                ),
            )
        summary = write_summary(self, time.monotonic() - start)
        write_report(self.out, summary)
        return summary

    def stage_name(self, kind: str, name: str, seed: int) -> str:
        return f"{kind}-{name}" if name == "sft" or self.cfg.seeds == 1 else f"{kind}-{name}-seed{seed}"
