"""The pipeline recipe: every stage of ``alphapo run`` (and ``alphapo demo``) in one typed config.

    kind: pipeline
    out: alphapo-demo
    task: {train_prompts: 1000, heldout: 300, noop: 300}        # the embedded task's data ...
    prompts: {}                                                 # ... or your own prompt files
    sft: {checkpoint: builtin}                                  # builtin | train | a model directory
    sample: {k: 8, temperature: 1.0}
    judge: {reward_model: null}                                 # null: the task's gold reward
    pair: {min_gap: 0.5}
    methods: {alphapo: {loss: {name: alphapo}}, dpo: {loss: {name: sigmoid}}}
    eval: {kl_samples: 2}

A method's settings are any :class:`~alphapo.train.config.TrainConfig` keys; ``model``, ``data`` and
``output_dir`` are filled in by the pipeline (the SFT model, the pairs, ``<out>/<method>``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from alphapo.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskSpec(_Strict):
    """An embedded task: how many problems of each split (seeded by the recipe's seed). ``arithmetic``
    (``alphapo.tasks.arithmetic``: SFT data and four splits) or ``instructions`` (verifiable
    instruction following, ``alphapo.tasks.instructions``: train prompts and a held-out split of
    ``heldout`` prompts; the starting policy is an instruct model, ``sft.checkpoint: DIR``)."""

    name: Literal["arithmetic", "instructions"] = "arithmetic"
    sft_examples: int = Field(default=20000, gt=0)
    train_prompts: int = Field(default=1000, gt=0)
    heldout: int = Field(default=300, gt=0)
    noop: int = Field(default=300, gt=0)
    unseen_templates: int = Field(default=300, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data):
        if isinstance(data, dict) and "perturbed" in data:
            raise ValueError("task.perturbed was replaced by two splits: task.noop and task.unseen_templates")
        return data


class PromptFiles(_Strict):
    """Your own prompt files (JSONL with ``prompt``; ``answer`` for the gold judge and accuracy)."""

    train: str | None = None
    eval: list[str] = Field(default_factory=list)


class SFTSpec(_Strict):
    """Where the starting policy comes from.

    ``builtin``: the checkpoint shipped with alphapo for the embedded task (built by ``train`` below
    on the recipe's defaults); ``train``: run ``alphapo sft`` with ``recipe`` on the task's SFT data;
    any other value: a model directory to start from.
    """

    checkpoint: str = "builtin"
    vocab_size: int = Field(default=400, gt=0)
    recipe: dict[str, Any] = Field(default_factory=dict)
    """TrainConfig settings for the SFT stage (merged over the embedded SFT defaults)."""


class SampleSpec(_Strict):
    k: int = Field(default=8, gt=0)
    temperature: float = Field(default=1.0, gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    max_new_tokens: int = Field(default=40, gt=0)
    batch_size: int = Field(default=128, gt=0)


class JudgeSpec(_Strict):
    reward_model: str | list[str] | None = None
    """A local sequence-classification reward model directory, or a list of them (an ensemble,
    ``alphapo.judge.score``); None: the task's gold reward."""
    combine: Literal["mean", "worst", "uncertainty"] = "mean"
    """How an ensemble's standardised scores combine: mean, worst (WCO) or uncertainty (UWO)."""
    uncertainty_weight: float = Field(default=1.0, ge=0)
    uncertainty_penalty: Literal["var", "std"] = "var"
    standardize: Literal["stats", "file"] = "stats"

    def paths(self) -> list[str]:
        rm = self.reward_model
        return [] if rm is None else [rm] if isinstance(rm, str) else list(rm)

    def settings(self) -> dict:
        """What the judge stage's output depends on (its cache key)."""
        if len(self.paths()) < 2:
            return {"reward_model": self.reward_model}
        return self.model_dump()


class PairSpec(_Strict):
    """How pairs are built from judged samples (``alphapo.judge.pairs``)."""

    strategy: Literal["best_worst", "best_random", "rank", "all_above_gap", "rso"] = "best_worst"
    min_gap: float = Field(default=0.0, ge=0)
    rank_quantile: float = Field(default=1.0, ge=0, le=1)
    max_pairs_per_prompt: int = Field(default=4, gt=0)
    rso_temperature: float = Field(default=0.5, gt=0)

    def options(self, seed: int):
        from alphapo.judge.pairs import PairOptions

        return PairOptions(**self.model_dump(), seed=seed)


class IFEvalSpec(_Strict):
    """IFEval for every model of the run (``alphapo eval --benchmark ifeval``): the first ``limit``
    prompts (None: all 541), greedy, at most ``max_new_tokens`` new tokens."""

    limit: int | None = Field(default=None, gt=0)
    max_new_tokens: int = Field(default=512, gt=0)
    batch_size: int = Field(default=16, gt=0)


class EvalSpec(_Strict):
    kl_samples: int = Field(default=2, ge=1)
    max_new_tokens: int = Field(default=40, gt=0)
    batch_size: int = Field(default=128, gt=0)
    ifeval: IFEvalSpec | None = None
    """Also evaluate every model on IFEval (``eval.ifeval: {limit: 100}``); the summary and report give
    the four numbers and each method's paired difference from the starting model."""


class RecipeConfig(_Strict):
    kind: Literal["pipeline"] = "pipeline"
    out: str = "alphapo-run"
    seed: int = 0
    prompt_format: Literal["auto", "chat", "plain"] = "auto"
    """How text prompts are rendered in every stage (sampling, judging with a reward model, training,
    evaluation): ``auto`` through the tokenizer's chat template when it has one, ``chat`` always,
    ``plain`` as is (``data.prompt_format``). The embedded task's model was trained on plain text."""
    rounds: int = Field(default=1, gt=0)
    """Rounds of on-policy training: round r samples from round r-1's policy (round 1 from the SFT
    model), judges, pairs and trains from it (Iterative DPO / RPO, the SimPO recipe repeated); each
    round's files live in ``<out>/round<r>/<method>[/seed<k>]``, evaluations in ``<out>/eval/round<r>``."""
    round_prompts: Literal["reuse", "fresh"] = "reuse"
    """Each round samples the same prompts, or new ones (new problems of the embedded task; with your
    own prompts, disjoint shares of the file: round r, the first included, takes rows r, r + rounds, ...)."""
    round_reference: Literal["previous", "start", "soup"] = "previous"
    """Reference of reference-based losses after round 1: the previous round's policy, the SFT model,
    or the weight average of both."""
    seeds: int = Field(default=1, gt=0)
    """Training runs per method, with ``train.seed`` = seed, seed + 1, ... (data order and any
    dropout), all from the same SFT model and pairs; the summary gives their mean, spread and
    intervals over seeds and prompts. With more than one, each run lives in ``<out>/<method>/seed<k>``."""
    task: TaskSpec | None = Field(default_factory=TaskSpec)
    prompts: PromptFiles = Field(default_factory=PromptFiles)
    sft: SFTSpec = Field(default_factory=SFTSpec)
    sample: SampleSpec = Field(default_factory=SampleSpec)
    judge: JudgeSpec = Field(default_factory=JudgeSpec)
    pair: PairSpec = Field(default_factory=PairSpec)
    method_defaults: dict[str, Any] = Field(default_factory=dict)
    """TrainConfig settings shared by every method (each method's own settings win)."""
    methods: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"alphapo": {"loss": {"name": "alphapo"}}})
    eval: EvalSpec = Field(default_factory=EvalSpec)
    quick: list[str] = Field(default_factory=list)
    """``key=value`` overrides that ``alphapo run RECIPE --quick`` applies (before the command line's
    own): a smaller look at the same recipe, best into its own ``out``."""

    @model_validator(mode="after")
    def _sources(self):
        if self.task is None and self.prompts.train is None:
            raise ValueError("set task (the embedded task) or prompts.train (your own prompt file)")
        if self.task is None and self.sft.checkpoint in ("builtin", "train"):
            raise ValueError("with your own prompts, sft.checkpoint must be a model directory")
        if self.task is not None and self.task.name == "instructions" and self.sft.checkpoint in ("builtin", "train"):
            raise ValueError(
                "task.name=instructions starts from an instruct model: set sft.checkpoint to its directory or "
                ".gguf file (the built-in SFT model is the arithmetic task's)"
            )
        if not self.methods:
            raise ValueError("methods: at least one method to train")
        for name in self.methods:
            reserved = name in ("sft", "data", "eval", "tokenizer", "plots", "cache") or re.fullmatch(r"round\d+", name)
            if reserved or not name.replace("_", "").isalnum():
                raise ValueError(f"method name {name!r} is reserved or not a plain name")
        return self


def load_recipe(path: str | Path, overrides: list[str] | None = None, quick: bool = False) -> RecipeConfig:
    """Read a pipeline recipe (a file or a shipped recipe's name) with ``overrides``; ``quick``: its
    ``quick`` overrides first (the command line's still win)."""
    from alphapo.config import load_config

    overrides = list(overrides or [])
    if quick:
        recipe = load_config(RecipeConfig, path, overrides)
        if not recipe.quick:
            raise ConfigError(f"{path}: --quick needs the recipe's `quick:` list of key=value overrides; it has none")
        overrides = [*recipe.quick, *overrides]
    return load_config(RecipeConfig, path, overrides)
