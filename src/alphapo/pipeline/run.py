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
from alphapo.data.stagefiles import write_jsonl
from alphapo.errors import StageError
from alphapo.pipeline.recipe import RecipeConfig
from alphapo.pipeline.stages import Stages

BUILTIN_SFT = "assets/demo/sft"
EVAL_SPLITS = ("heldout", "noop", "unseen_templates")
"""The arithmetic task's evaluation splits (see :mod:`alphapo.tasks.arithmetic`)."""
INSTRUCTION_SPLITS = ("heldout",)
"""The instruction task's evaluation split (IFEval itself: ``eval.ifeval``)."""
ROUND_KL_PROMPTS = 100
"""Held-out prompts on which each round's policy is compared with the previous round's (KL, win rate)."""


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
        self._start: Path | None = None  # the given starting model's local directory, once resolved

    # ---- data and the starting policy
    def eval_splits(self) -> tuple[str, ...]:
        """The embedded task's evaluation splits."""
        return INSTRUCTION_SPLITS if self.cfg.task.name == "instructions" else EVAL_SPLITS

    def task_files(self) -> list[Path]:
        sft = ("sft",) if self.cfg.task.name == "arithmetic" else ()
        return [self.data / f"{s}.jsonl" for s in (*sft, "train", *self.eval_splits())]

    def task_split(self, split: str, n: int, seed: int) -> list[dict]:
        """``n`` rows of the embedded task's ``split``, deterministic for ``seed``."""
        if self.cfg.task.name == "instructions":
            from alphapo.tasks.instructions import make_split
        else:
            from alphapo.tasks import make_split
        return [p.to_json() for p in make_split(split, n, seed)]

    def make_task_data(self) -> None:
        import random

        from alphapo.tasks import demonstration, make_split

        task, seed = self.cfg.task, self.cfg.seed
        if task.name == "arithmetic":  # SFT demonstrations (the instruction task starts from an instruct model)
            styles = random.Random(seed)
            write_jsonl(
                self.data / "sft.jsonl",
                (
                    {"prompt": p.prompt, "completion": " " + demonstration(p, styles)}
                    for p in make_split("train", task.sft_examples, seed)
                ),
            )
        # on-policy prompts: train-split problems the SFT stage did not see
        write_jsonl(self.data / "train.jsonl", self.task_split("train", task.train_prompts, seed + 1))
        for split in self.eval_splits():
            write_jsonl(self.data / f"{split}.jsonl", self.task_split(split, getattr(task, split), seed))

    def prompt_files(self) -> tuple[Path, list[Path]]:
        if self.cfg.task is not None:
            return self.data / "train.jsonl", [self.data / f"{split}.jsonl" for split in self.eval_splits()]
        return Path(self.cfg.prompts.train), [Path(p) for p in self.cfg.prompts.eval]

    def sft_model(self) -> Path:
        """The starting policy: copied or trained into ``out/sft/model``, or the given model (a directory,
        a ``.gguf`` file or a name of ``alphapo models ls``, resolved once to its local directory)."""
        checkpoint = self.cfg.sft.checkpoint
        if checkpoint in ("builtin", "train"):
            return self.out / "sft" / "model"
        if self._start is None:
            from alphapo.models.sources import resolve_model_source

            self._start = Path(resolve_model_source(checkpoint, "sft.checkpoint"))
        return self._start

    def sft_config(self) -> dict[str, Any]:
        base = {
            "task": "sft",
            "tokenizer": str(self.out / "tokenizer"),
            "data": {
                "paths": [str(self.data / "sft.jsonl")],
                "cache_dir": str(self.out / "cache"),
                "prompt_format": self.cfg.prompt_format,
            },
            "output_dir": str(self.out / "sft"),
            "resume": True,
            "resume_mismatch": "fresh",
        }
        return deep_merge(base, self.cfg.sft.recipe)

    def run_sft(self) -> None:
        from alphapo.data.stagefiles import read_jsonl
        from alphapo.models import train_bpe_tokenizer
        from alphapo.train import TrainConfig, train

        rows = read_jsonl(self.data / "sft.jsonl", "sft", required=("prompt", "completion"))
        tokenizer = train_bpe_tokenizer(  # plain text in and out: no chat template, so every stage reads it as is
            [r["prompt"] + r["completion"] for r in rows],
            vocab_size=self.cfg.sft.vocab_size,
            split_digits=True,
            chat_template=None,
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

    def run_dir(self, name: str, seed: int, root: Path | None = None, round: int = 1) -> Path:
        """Where method ``name``'s run (training seed ``seed``, round ``round``) lives, under ``root``
        (default ``out``): ``<root>[/round<r>]/<name>[/seed<k>]``."""
        base = (root or self.out) / (f"round{round}" if round > 1 else "") / name
        return base if self.cfg.seeds == 1 else base / f"seed{seed}"

    def pairs_dir(self, name: str, seed: int, round: int) -> Path:
        """Where round ``round``'s samples, judgements and pairs live (round 1: shared, in ``out``; later
        rounds: ``<out>/round<r>/data/<method>[/seed<k>]``, apart from the training run's own folder)."""
        return self.out if round == 1 else self.run_dir(name, seed, self.out / f"round{round}" / "data")

    def method_config(self, name: str, seed: int | None = None, round: int = 1) -> dict[str, Any]:
        """Method ``name``'s TrainConfig settings for one seed and round: round r trains from round
        r-1's policy on pairs sampled from it (reference per ``round_reference``)."""
        seed = self.cfg.seed if seed is None else seed
        start = self.sft_model() if round == 1 else self.run_dir(name, seed, round=round - 1) / "model"
        base = {
            "model": {"path": str(start)},
            "data": {
                "paths": [str(self.pairs_dir(name, seed, round) / "pairs.jsonl")],
                "cache_dir": str(self.out / "cache"),
                "prompt_format": self.cfg.prompt_format,
            },
            "output_dir": str(self.run_dir(name, seed, round=round)),
            "resume": True,
            "resume_mismatch": "fresh",  # a stage rerun for changed settings or inputs starts over
            "train": {"seed": seed},
            "diagnostics": {"final_displacement_pairs": None},  # the report's displacement is every pair's
        }
        merged = deep_merge(base, deep_merge(self.cfg.method_defaults, self.cfg.methods[name]))
        if round > 1:
            merged = deep_merge(merged, self.round_reference(merged, start))
        return merged

    def round_reference(self, merged: dict, start: Path) -> dict:
        """The reference of a reference-based loss after round 1: the previous round's policy (the run's
        own starting policy, precomputed), the SFT model, or the weight average of both (``soup``)."""
        from alphapo.losses import get_loss_spec

        if not get_loss_spec(merged.get("loss", {}).get("name", "alphapo")).needs_reference:
            return {}
        choice = self.cfg.round_reference
        if choice == "previous":
            return {"reference": {"kind": "precompute"}}
        if choice == "start":
            return {"reference": {"kind": "model", "path": str(self.sft_model())}}
        return {"reference": {"kind": "soup", "paths": [str(self.sft_model()), str(start)]}}

    def train_method(self, name: str, seed: int, round: int = 1) -> None:
        from alphapo.train import TrainConfig, train

        result = train(validate(TrainConfig, self.method_config(name, seed, round), f"method {name}"))
        if result.status != "completed":
            raise StageError(f"train {name} (seed {seed}, round {round}): interrupted; run again to resume")

    # ---- the chain
    def prepare(self) -> None:
        """The stages every method shares: data, SFT, sample, judge, pair."""
        cfg, stages = self.cfg, self.stages
        self.out.mkdir(parents=True, exist_ok=True)
        if cfg.task is not None:
            stages.run(
                "data",
                {"task": cfg.task.model_dump(), "seed": cfg.seed},
                [],
                self.task_files(),
                self.make_task_data,
            )
        if cfg.sft.checkpoint == "builtin":
            stages.run("sft", {"builtin": True}, [builtin_sft_dir()], [self.sft_model()], self.copy_builtin)
        elif cfg.sft.checkpoint == "train":
            stages.run("sft", self.sft_config(), [self.data / "sft.jsonl"], [self.sft_model()], self.run_sft)
        self.sample_judge_pair(self.sft_model(), self.round_prompts(1), self.out, "")

    def sample_judge_pair(self, policy: Path, prompts: Path, folder: Path, tag: str) -> None:
        """Sample K answers per prompt from ``policy``, judge and pair them, into ``folder`` (stage
        names end with ``tag``: each round's are its own)."""
        from alphapo.judge.pairs import pair_file
        from alphapo.judge.score import judge_file
        from alphapo.sample.generate import sample_file

        cfg, stages, s = self.cfg, self.stages, self.cfg.sample
        stages.run(
            f"sample{tag}",
            {**s.model_dump(), "seed": cfg.seed, "prompt_format": cfg.prompt_format},
            [policy, prompts],
            [folder / "samples.jsonl"],
            lambda: sample_file(
                policy,
                prompts,
                folder / "samples.jsonl",
                k=s.k,
                temperature=s.temperature,
                top_p=s.top_p,
                max_new_tokens=s.max_new_tokens,
                batch_size=s.batch_size,
                seed=cfg.seed,
                prompt_format=cfg.prompt_format,
            ),
        )
        judge = cfg.judge
        rms = judge.paths()
        stages.run(
            f"judge{tag}",
            judge.settings() | ({"prompt_format": cfg.prompt_format} if rms else {}),
            [folder / "samples.jsonl"] + [Path(p) for p in rms],
            [folder / "judged.jsonl"],
            lambda: judge_file(
                folder / "samples.jsonl",
                folder / "judged.jsonl",
                rms,
                cfg.prompt_format,
                judge.combine,
                judge.uncertainty_weight,
                judge.uncertainty_penalty,
                judge.standardize,
            ),
        )
        stages.run(
            f"pair{tag}",
            {**cfg.pair.model_dump(), "seed": cfg.seed},
            [folder / "judged.jsonl"],
            [folder / "pairs.jsonl"],
            lambda: pair_file(folder / "judged.jsonl", folder / "pairs.jsonl", options=cfg.pair.options(cfg.seed)),
        )

    def run(self) -> dict:
        """The whole chain, every round; returns the summary (also written to ``summary.json``)."""
        from alphapo.pipeline.summary import write_summary
        from alphapo.report import write_report

        start = time.monotonic()
        cfg = self.cfg
        self.prepare()
        runs = [(name, seed) for name in cfg.methods for seed in self.seeds()]
        self.train_and_eval(runs, 1)
        for round in range(2, cfg.rounds + 1):
            prompts = self.round_prompts(round)
            for name, seed in runs:
                previous = self.run_dir(name, seed, round=round - 1) / "model"
                tag = f"-r{round}-{name}" + (f"-seed{seed}" if cfg.seeds > 1 else "")
                self.sample_judge_pair(previous, prompts, self.pairs_dir(name, seed, round), tag)
            self.train_and_eval(runs, round)
        summary = write_summary(self, time.monotonic() - start)
        write_report(self.out, summary)
        return summary

    def train_and_eval(self, runs: list[tuple[str, int]], round: int) -> None:
        """Train every (method, seed) of ``round`` and evaluate it against the SFT model (and, after
        round 1, against the previous round's policy on held-out prompts: the KL between rounds)."""
        from alphapo.eval.evaluate import evaluate

        cfg, stages, e = self.cfg, self.stages, self.cfg.eval
        sft = self.sft_model()
        _, eval_files = self.prompt_files()
        for name, seed in runs:
            config = self.method_config(name, seed, round)
            stages.run(
                self.stage_name("train", name, seed, round),
                config,
                [Path(config["model"]["path"]), Path(config["data"]["paths"][0])],
                [self.run_dir(name, seed, round=round) / "model"],
                lambda name=name, seed=seed: self.train_method(name, seed, round),
            )
        sft_eval = self.out / "eval" / "sft"
        evals = [("sft", cfg.seed)] if round == 1 else []
        settings = {**e.model_dump(), "seed": cfg.seed, "prompt_format": cfg.prompt_format}
        kwargs = {
            "kl_samples": e.kl_samples,
            "max_new_tokens": e.max_new_tokens,
            "batch_size": e.batch_size,
            "prompt_format": cfg.prompt_format,
        }
        for name, seed in [*evals, *runs]:
            model = sft if name == "sft" else self.run_dir(name, seed, round=round) / "model"
            target = sft_eval if name == "sft" else self.run_dir(name, seed, self.out / "eval", round)
            stages.run(
                self.stage_name("eval", name, seed, round),
                settings,
                [model, sft, *eval_files],
                [target / "metrics.json"],
                lambda model=model, target=target: evaluate(
                    model, sft, eval_files, target, **kwargs, seed=cfg.seed, baseline_eval=sft_eval
                ),
            )
            if e.ifeval is not None:
                self.run_ifeval(model, target / "ifeval", self.stage_name("ifeval", name, seed, round))
            if round > 1:
                previous = self.run_dir(name, seed, round=round - 1) / "model"
                stages.run(
                    self.stage_name("eval-previous", name, seed, round),
                    {**settings, "prompts": ROUND_KL_PROMPTS},
                    [model, previous, eval_files[0]],
                    [target / "vs-previous" / "metrics.json"],
                    lambda model=model, previous=previous, target=target: evaluate(
                        model,
                        previous,
                        eval_files[:1],
                        target / "vs-previous",
                        **kwargs,
                        seed=cfg.seed,
                        max_prompts=ROUND_KL_PROMPTS,
                    ),
                )

    def run_ifeval(self, model: Path, target: Path, stage: str) -> None:
        """IFEval for ``model`` into ``target`` (answers resume inside the stage after a kill)."""
        from alphapo.eval.benchmark import run_ifeval

        spec, cfg = self.cfg.eval.ifeval, self.cfg
        self.stages.run(
            stage,
            {**spec.model_dump(), "prompt_format": cfg.prompt_format, "seed": cfg.seed},
            [model],
            [target / "metrics.json"],
            lambda: run_ifeval(
                model,
                target,
                limit=spec.limit,
                max_new_tokens=spec.max_new_tokens,
                batch_size=spec.batch_size,
                prompt_format=cfg.prompt_format,
                seed=cfg.seed,
            ),
        )

    def round_prompts(self, round: int) -> Path:
        """Round ``round``'s prompts: the same as round 1's (``round_prompts: reuse``) or new ones
        (``fresh``: new problems of the embedded task for rounds after the first, or, with your own
        prompt file, its ``round``-th share: rows ``round - 1``, ``round - 1 + rounds``, ... so that no
        two rounds, the first included, sample the same prompt)."""
        train_prompts, _ = self.prompt_files()
        own = self.cfg.task is None
        if self.cfg.round_prompts == "reuse" or self.cfg.rounds == 1 or (round == 1 and not own):
            return train_prompts
        target = self.out / f"round{round}" / "prompts.jsonl"

        def write() -> None:
            from alphapo.data.stagefiles import read_jsonl

            if not own:  # new problems, none asked in an earlier round (a repeat is skipped, the next one taken)
                n = self.cfg.task.train_prompts
                earlier = [train_prompts] + [self.out / f"round{r}" / "prompts.jsonl" for r in range(2, round)]
                asked = {row["prompt"] for path in earlier for row in read_jsonl(path, "rounds", required=("prompt",))}
                drawn = self.task_split("train", 2 * n + 16, self.cfg.seed + round)
                rows = [row for row in drawn if row["prompt"] not in asked][:n]
                if len(rows) < n:
                    raise StageError(
                        f"rounds: round {round} found only {len(rows)} of {n} train prompts not asked in earlier "
                        "rounds; the task has too few distinct prompts for this many rounds (use fewer, or "
                        "round_prompts: reuse)"
                    )
            else:
                every = read_jsonl(train_prompts, "rounds", required=("prompt",))
                rows = every[round - 1 :: self.cfg.rounds]
                if not rows:
                    raise StageError(
                        f"rounds: {train_prompts} has {len(every)} prompts, too few for {self.cfg.rounds} rounds of "
                        "fresh prompts (round_prompts: fresh gives each round its own share)"
                    )
            write_jsonl(target, rows)

        self.stages.run(
            f"prompts-r{round}",
            {"round": round, "seed": self.cfg.seed, "rounds": self.cfg.rounds},
            [train_prompts],
            [target],
            write,
        )
        return target

    def stage_name(self, kind: str, name: str, seed: int, round: int = 1) -> str:
        suffix = "" if name == "sft" or self.cfg.seeds == 1 else f"-seed{seed}"
        return f"{kind}-{name}{suffix}" + (f"-r{round}" if round > 1 else "")
