"""``alphapo run RECIPE.yaml``: data -> SFT -> sample -> judge -> pair -> train (each method) -> eval -> report.

Every stage reads and writes plain files under the recipe's ``out`` directory, so any stage can also
run alone (``alphapo sample``, ``alphapo train``, ...) and the chain resumes where it stopped:

    out/data/{sft,train,heldout,perturbed}.jsonl   out/sft/model/        out/samples.jsonl
    out/judged.jsonl   out/pairs.jsonl (+ .stats.json)   out/<method>/model/   out/eval/<model>/metrics.json
    out/summary.json   out/report.md   out/plots/*.png
"""

from __future__ import annotations

import json
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
        write_jsonl(self.data / "heldout.jsonl", (p.to_json() for p in make_split("heldout", task.heldout, seed)))
        write_jsonl(self.data / "perturbed.jsonl", (p.to_json() for p in make_split("perturbed", task.perturbed, seed)))

    def prompt_files(self) -> tuple[Path, list[Path]]:
        if self.cfg.task is not None:
            return self.data / "train.jsonl", [self.data / "heldout.jsonl", self.data / "perturbed.jsonl"]
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
    def method_config(self, name: str) -> dict[str, Any]:
        base = {
            "model": {"path": str(self.sft_model())},
            "data": {"paths": [str(self.out / "pairs.jsonl")], "cache_dir": str(self.out / "cache")},
            "output_dir": str(self.out / name),
            "resume": True,
            "train": {"seed": self.cfg.seed},
        }
        return deep_merge(base, deep_merge(self.cfg.method_defaults, self.cfg.methods[name]))

    def train_method(self, name: str) -> None:
        from alphapo.train import TrainConfig, train

        result = train(validate(TrainConfig, self.method_config(name), f"method {name}"))
        if result.status != "completed":
            raise StageError(f"train {name}: interrupted; run again to resume")

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
                [self.data / f"{s}.jsonl" for s in ("sft", "train", "heldout", "perturbed")],
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

        start = time.monotonic()
        cfg, stages = self.cfg, self.stages
        self.prepare()
        sft = self.sft_model()
        _, eval_files = self.prompt_files()
        for name in cfg.methods:
            stages.run(
                f"train-{name}",
                self.method_config(name),
                [sft, self.out / "pairs.jsonl"],
                [self.out / name / "model"],
                lambda name=name: self.train_method(name),
            )
        e = cfg.eval
        for name in ["sft", *cfg.methods]:
            model = sft if name == "sft" else self.out / name / "model"
            target = self.out / "eval" / name
            stages.run(
                f"eval-{name}",
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
                ),
            )
        summary = self.summary(time.monotonic() - start)
        from alphapo.report import write_report

        write_report(self.out, summary)
        return summary

    def summary(self, wall_time: float) -> dict:
        models = {}
        for name in ["sft", *self.cfg.methods]:
            splits = json.loads((self.out / "eval" / name / "metrics.json").read_text())["splits"]
            models[name] = {split: _flatten_split(m) for split, m in splits.items()}
        stats_file = Path(f"{self.out / 'pairs.jsonl'}.stats.json")
        summary = {
            "methods": {
                name: {**by_split[next(iter(by_split))], "by_split": by_split} for name, by_split in models.items()
            },
            "primary_split": next(iter(models["sft"])),
            "pairs": json.loads(stats_file.read_text()) if stats_file.is_file() else None,
            "stage_seconds": self.stages.timings,
            "wall_time_s": wall_time,
            "seed": self.cfg.seed,
        }
        tmp = self.out / ".tmp-summary.json"
        tmp.write_text(json.dumps(summary, indent=1))
        tmp.replace(self.out / "summary.json")
        return summary


def _flatten_split(m: dict) -> dict:
    """The summary's fields for one split: point estimates plus their intervals."""

    def est(key):
        return m[key]["mean"], [m[key]["low"], m[key]["high"]]

    accuracy, accuracy_ci = est("accuracy")
    gold, gold_ci = est("gold_reward")
    win, win_ci = est("win_rate_vs_baseline")
    gain, gain_ci = est("accuracy_gain")
    gold_gain, gold_gain_ci = est("gold_reward_gain")
    kl, kl_ci = est("kl_to_baseline")
    return {
        "accuracy": accuracy,
        "accuracy_ci": accuracy_ci,
        "gold_reward": gold,
        "gold_reward_ci": gold_ci,
        "win_rate_vs_sft": win,
        "win_rate_ci": win_ci,
        "accuracy_gain_vs_sft": gain,
        "accuracy_gain_ci": gain_ci,
        "gold_reward_gain_vs_sft": gold_gain,
        "gold_reward_gain_ci": gold_gain_ci,
        "kl_to_sft": kl,
        "kl_ci": kl_ci,
        "mean_length": m["mean_length"],
        "n": m["n"],
    }
