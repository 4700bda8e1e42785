"""The trainer's configuration: every setting of ``alphapo train`` and ``alphapo sft``, with defaults.

A recipe (YAML) sets what differs from these defaults; ``alphapo train RECIPE.yaml key=value``
overrides any of them. Unknown keys are rejected with the closest valid key suggested.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from alphapo.data.config import DataConfig
from alphapo.log import logger
from alphapo.models.tiny import TinyModelSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Strict):
    """The policy: a local Hugging Face directory (``path``) or a tiny Llama built from ``tiny``."""

    path: str | None = None
    tiny: TinyModelSpec | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weights' dtype. Mixed precision (fp32 master weights) is ``train.precision`` instead."""
    attn_implementation: str | None = "sdpa"
    """``sdpa`` by default; a model whose transformers class does not support it (Gemma-2 asks for
    ``eager``) gets the implementation it supports, with a note. None: transformers' own choice."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward pass instead of keeping them."""
    checkpoint_every_n_layers: int = Field(default=1, ge=1)
    """With ``gradient_checkpointing``: checkpoint only every N-th decoder layer (1: all of them; 2: half,
    keeping the other half's activations), memory traded back for speed where memory allows
    (transformers' ``every_n_layers``, transformers >= 5)."""
    disable_dropout: bool = False
    """Set every dropout probability to 0 (TRL's default is true; Llama, Mistral, Qwen and Gemma ship with 0)."""

    @model_validator(mode="after")
    def _one_source(self):
        if (self.path is None) == (self.tiny is None):
            raise ValueError("set exactly one of model.path (a local model directory) and model.tiny")
        if self.checkpoint_every_n_layers != 1 and not self.gradient_checkpointing:
            raise ValueError(
                f"model.checkpoint_every_n_layers={self.checkpoint_every_n_layers} needs "
                "model.gradient_checkpointing: true (without it no layer is checkpointed)"
            )
        return self


class ReferenceConfig(_Strict):
    """Where reference log-probs come from. They are always precomputed once and cached on disk, so
    training never holds a reference model.

    ``auto``: ``none`` for reference-free losses, else ``precompute`` (the starting policy, or with LoRA
    the adapter-disabled base). ``model``: another model directory (``path``). ``soup``: the weight
    average of several checkpoints (``paths``), as SALSA does.
    """

    kind: Literal["auto", "none", "precompute", "model", "soup"] = "auto"
    path: str | None = None
    paths: list[str] = Field(default_factory=list)
    batch_size: int | None = Field(default=None, gt=0)
    """Pairs per forward pass when precomputing (default: train.batch_size)."""

    @model_validator(mode="after")
    def _sources(self):
        if self.kind == "model" and not self.path:
            raise ValueError("reference.kind=model needs reference.path (a model directory)")
        if self.kind == "soup" and len(self.paths) < 2:
            raise ValueError("reference.kind=soup needs reference.paths with at least two checkpoints")
        return self


class LoraConfig(_Strict):
    """PEFT LoRA adapters; the base weights stay frozen."""

    r: int = Field(default=16, gt=0)
    alpha: float = 32.0
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] | str = "all-linear"
    merge: bool = False
    """Also write the merged model (base + adapter) to ``<output_dir>/merged``."""


class LossConfig(BaseModel):
    """``name`` and the loss's hyper-parameters (beta, gamma, alpha, label_smoothing, nll_weight, ...):
    ``alphapo losses`` lists each loss's names and defaults. Checked against the loss at load time."""

    model_config = ConfigDict(extra="allow")

    name: str = "alphapo"
    alpha_scale: float | None = None
    """Set the reward shape on the task's own scale instead of ``alpha``: ``alpha = alpha_scale /
    |l_bar|`` with ``l_bar`` the starting policy's mean log-prob per token of the chosen answers, so the
    typical chosen answer's gradient weight ``p^-alpha`` is ``e^alpha_scale``
    (``alphapo.train.reward_scale``). Reference-free losses with a shape (alphapo, cpo) only."""

    @property
    def hparams(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def _drop_settings_of_other_losses(self) -> None:
        """Switching ``loss.name`` on a recipe written for another loss (``loss.name=dpo`` on an AlphaPO
        recipe): settings that belong to other losses but not to this one (``gamma``, a non-zero
        ``alpha`` for an unshaped loss) are dropped with a warning naming them; a name no loss knows is
        still an error with the closest names suggested."""

        from alphapo.losses import available_losses, get_loss_spec

        spec = get_loss_spec(self.name)
        others = {k for name in available_losses() for k in get_loss_spec(name).defaults}
        dropped = [k for k in self.hparams if k not in spec.defaults and k in others]
        if not spec.shapeable and self.hparams.get("alpha") not in (None, 0, 0.0):
            dropped.append("alpha")
        if spec.needs_reference and self.hparams.get("alpha") not in (None, 0, 0.0):
            logger.warning(
                "loss.alpha=%r shapes the log-ratio of %r (a shaped variant); set loss.alpha=0 for the loss as "
                "published",
                self.hparams["alpha"],
                self.name,
            )
        for key in dropped:
            value = self.__pydantic_extra__.pop(key)
            logger.warning(
                "loss.%s=%r does not apply to loss %r: ignored (remove it from the recipe to silence this)",
                key,
                value,
                self.name,
            )

    @model_validator(mode="after")
    def _known(self):
        import math

        from alphapo.losses import get_loss_spec
        from alphapo.losses.api import check_loss_settings

        self._drop_settings_of_other_losses()
        check_loss_settings(self.name, self.hparams)
        if self.alpha_scale is not None:
            spec = get_loss_spec(self.name)
            if "alpha" in self.hparams:
                raise ValueError("give loss.alpha or loss.alpha_scale, not both")
            if not math.isfinite(self.alpha_scale):
                raise ValueError(f"loss.alpha_scale must be a finite number, got {self.alpha_scale}")
            if spec.needs_reference or not spec.shapeable:
                why = "its log-ratio is 0 at the start" if spec.needs_reference else "it has no reward shape"
                raise ValueError(f"loss.alpha_scale does not apply to {self.name!r}: {why} (set loss.alpha)")
        return self


class OptimConfig(_Strict):
    name: Literal["adamw"] = "adamw"
    lr: float = Field(default=5e-7, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(default=1e-8, gt=0)
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    fused: bool | None = None
    """torch's fused AdamW kernel (one pass over all parameters: about 7x faster than the per-tensor
    loop on CPU, the same update within fp32 rounding). None: fused on one process or DDP in fp32/bf16
    on CPU or CUDA; FSDP, DeepSpeed and fp16 (its loss scaler) keep torch's default implementation."""
    in_backward: bool = False
    """Update each parameter as soon as its gradient is complete and free the gradient
    (``alphapo.train.in_backward``): the backward pass never holds all gradients at once (513 MiB for a
    135M model in fp32). The same AdamW update; needs ``max_grad_norm: null``, ``train.grad_accum: 1``,
    one process and no fp16. A non-finite gradient (with a finite loss) then stops the run."""


class ScheduleConfig(_Strict):
    name: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    warmup_steps: int | None = Field(default=None, ge=0)
    """When set, overrides warmup_ratio."""


class LoopConfig(_Strict):
    batch_size: int = Field(default=8, gt=0)
    """Pairs (or examples) per micro-batch per process."""
    grad_accum: int = Field(default=1, gt=0)
    max_steps: int | None = Field(default=None, gt=0)
    """Optimizer steps; None: ``epochs`` passes over the data."""
    epochs: float = Field(default=1.0, gt=0)
    seed: int = 42
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Mixed precision through Accelerate (autocast); fp32 runs without."""
    logps: Literal["fused", "logits"] = "fused"
    """``fused``: log-probs without the full logits (alphapo.ops); ``logits``: the model's own logits."""
    chunk_size: int | None = Field(default=None, gt=0)
    """Token block of the two-pass fused op (``alphapo.ops.sequence_logps``); None: sized from memory."""
    pair_schedule: Literal["auto", "pair", "two-pass"] = "auto"
    """Fused preference training (``alphapo.ops.fused_pair_loss``). ``pair``: a chunk of pairs at a
    time, gradients formed in the forward pass (6NHV FLOPs; holds that chunk's logits). ``two-pass``:
    logits recomputed in the backward pass (8NHV; holds none). ``auto``: pair when one pair's logits
    fit ``logits_budget_mb`` and the loss does not couple pairs (BCO without ``delta``), else two-pass.
    Same values and gradients either way."""
    logits_budget_mb: float | None = Field(default=None, gt=0)
    """Most logits (MiB) the pair schedule holds at once; None: 1/8 of the device's free memory, at most 8 GiB."""
    verify_logps: bool = True
    """Before training, check the fused log-probs against the model's own logits on one example (a
    model whose code changes its logits after the head, in a way alphapo cannot see, is refused)."""
    nan_policy: Literal["stop", "skip"] = "stop"
    """On a non-finite log-prob, loss or gradient: stop with a message (naming the step, what was
    non-finite and the last good checkpoint), or skip the step (counted as ``skipped_steps``)."""
    nan_skip_limit: int = Field(default=5, gt=0)
    """With ``nan_policy: skip``, stop after this many skipped steps in a row."""
    max_update_ratio: float | None = Field(default=1.0, gt=0)
    """Stop when one update changes the trainable weights' norm by more than this fraction of it
    (diverging training with finite values; ``alphapo.train.guards``). None: no check."""
    group_by_length: bool = True
    """Steps draw their pairs from groups of similar length (less padding); every pair once an epoch."""
    share_prompt: bool = True
    """A pair's chosen and rejected rows run their common prefix (the prompt) through the model once:
    fewer positions, the same log-probs and gradients (``alphapo.ops.model_logps.share_prompts``). With
    fused log-probs on models whose attention takes the packed rows' mask (sdpa, eager; no sliding
    window); checked once on the first pairs against the unpacked batch, and off with a warning where
    they differ."""


class LoggingConfig(_Strict):
    every: int = Field(default=10, gt=0)
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(default_factory=list)
    """Trackers: a list, one name (``report_to: tensorboard``, as TRL takes it) or ``none``."""
    project: str = "alphapo"
    progress: Literal["auto", "bar", "lines", "none"] = "auto"
    """``auto``: a progress bar on an interactive terminal, plain log lines otherwise."""

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_or_none(cls, value):
        if value is None or value == "none" or value == ["none"]:
            return []
        return [value] if isinstance(value, str) else value


class CheckpointConfig(_Strict):
    every: int | None = Field(default=None, gt=0)
    """Save every N optimizer steps (None: only on interruption; the final model is always written)."""
    keep_last: int = Field(default=2, gt=0)


class DiagnosticsConfig(_Strict):
    """Cheap training diagnostics, every N steps (0: off): share of pairs whose chosen log-prob fell,
    chosen/rejected gradient cosine (entanglement), quantiles of the loss's per-sequence weights."""

    every: int = Field(default=0, ge=0)
    probe_pairs: int = Field(default=4, gt=0)
    entanglement: Literal["parameters", "last_hidden"] = "parameters"
    displacement: Literal["auto", "dataset", "probe", "off"] = "auto"
    """Likelihood displacement metrics (``displacement/*``: current minus starting log-prob).
    ``dataset``: every pair's starting log-prob, from a pass over the data before training (free when
    the reference table is the starting policy, as for DPO with the default reference), reported on
    each step's batch. ``probe``: the first ``displacement_pairs`` pairs training visits, with their
    log-probs at that first visit, re-measured every ``displacement_every`` steps
    (``alphapo.train.displacement``); no pass before the first step. ``auto``: dataset when it is
    free, else probe. ``off``: none."""
    displacement_pairs: int = Field(default=256, gt=0)
    displacement_every: int | None = Field(default=None, gt=0)
    """None: every logging step, or less often where re-measuring the probe would cost over 10% of
    training time."""
    final_displacement_pairs: int | None = Field(default=256, gt=0)
    """With ``dataset`` displacement: how many pairs ``displacement.json`` re-measures at the end of
    training (a sample drawn with ``train.seed``), so that a large dataset does not end with a hidden
    forward pass over all of it; None: every pair (``alphapo run`` pipelines default to every pair)."""


class RewardConfig(_Strict):
    """Reward-model training (``alphapo rm``, ``task: reward``; ``alphapo.train.reward_model``)."""

    center_rewards_coefficient: float | None = Field(default=None, ge=0)
    """Adds ``c * (r_chosen + r_rejected)^2`` per pair, which keeps scores centred on 0 (TRL's name)."""
    train_layers: int | None = Field(default=None, gt=0)
    """Train only the last N transformer blocks, the final norm and the score head (the rest frozen,
    and the backward pass stops there); None: every weight (or the LoRA adapters, with ``lora``)."""
    stats_pairs: int = Field(default=256, gt=0)
    """Training pairs scored after training for ``reward_stats.json`` (a seeded sample)."""
    eval_data: list[str] = Field(default_factory=list)
    """Pairs to evaluate on after training; default: the other side of ``data.holdout``, if set."""

    @field_validator("eval_data", mode="before")
    @classmethod
    def _one_path(cls, value):
        return [value] if isinstance(value, str) else value


class TrainConfig(_Strict):
    """Everything ``alphapo train`` (``task: preference``), ``alphapo sft`` (``task: sft``) and
    ``alphapo rm`` (``task: reward``) need."""

    task: Literal["preference", "sft", "reward"] = "preference"
    model: ModelConfig
    tokenizer: str | None = None
    """A tokenizer directory; default: the model's directory (required with model.tiny)."""
    data: DataConfig
    loss: LossConfig = Field(default_factory=LossConfig)
    reference: ReferenceConfig = Field(default_factory=ReferenceConfig)
    lora: LoraConfig | None = None
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: LoopConfig = Field(default_factory=LoopConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    diagnostics: DiagnosticsConfig = Field(default_factory=DiagnosticsConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    output_dir: str = "runs/alphapo"
    resume: bool | str = False
    """``true``: continue from the latest complete checkpoint in output_dir; a path: from that one."""
    resume_mismatch: Literal["stop", "fresh", "continue"] = "stop"
    """When the checkpoint belongs to other settings, data or model (``alphapo.train.fingerprint``):
    ``stop`` with the list of differences; ``fresh``: move the old run to ``previous-<n>/`` and start
    over; ``continue``: resume anyway, only where just ``train.max_steps``/``train.epochs`` changed."""

    @classmethod
    def translate_settings(cls, data: dict[str, Any], source: str) -> dict[str, Any]:
        """TRL's top-level names (``learning_rate``, ``loss_type``, ...) moved onto alphapo's keys, each
        mapping logged (``alphapo.train.trl_names``); names without an equivalent are an error."""

        from alphapo.train.trl_names import translate_trl_names

        data, notes = translate_trl_names(data, source, frozenset(cls.model_fields))
        for note in notes:
            logger.info("%s: TRL name %s", source, note)
        return data

    @field_validator("data", mode="before")
    @classmethod
    def _data(cls, value):
        return {"paths": value} if isinstance(value, str | list) else value

    @model_validator(mode="after")
    def _consistent(self):
        if self.model.tiny is not None and self.tokenizer is None:
            raise ValueError("model.tiny needs tokenizer (a tokenizer directory): a tiny model has none of its own")
        if self.task == "reward":
            if "margin_column" not in self.data.model_fields_set:
                self.data.margin_column = "margin"  # TRL's column, read from files that have it
            if self.reward.train_layers is not None and self.lora is not None:
                raise ValueError("reward.train_layers and lora both choose what trains: set one")
        elif self.data.margin_column is not None:
            raise ValueError("data.margin_column is read by reward models only (alphapo rm)")
        if self.task == "preference":
            from alphapo.losses import get_loss_spec

            spec = get_loss_spec(self.loss.name)
            if not spec.needs_reference and self.reference.kind not in ("auto", "none"):
                raise ValueError(f"loss {self.loss.name!r} is reference-free: reference.kind must be auto or none")
            if spec.needs_reference and self.reference.kind == "none":
                raise ValueError(f"loss {self.loss.name!r} needs a reference: reference.kind cannot be none")
        if self.optim.in_backward:
            from alphapo.train.in_backward import settings_refusal

            why = settings_refusal(self)
            if why is not None:
                raise ValueError(why)
        return self

    def displacement_mode(self) -> str:
        """The resolved displacement source: dataset, probe or off."""
        mode = self.diagnostics.displacement
        if self.task != "preference":
            return "off"
        if mode == "auto":
            return "dataset" if self.reference_kind() == "precompute" else "probe"
        return mode

    def reference_kind(self) -> str:
        """The resolved reference source: none, precompute, model or soup."""
        if self.task != "preference":
            return "none"
        from alphapo.losses import get_loss_spec

        if self.reference.kind == "auto":
            return "precompute" if get_loss_spec(self.loss.name).needs_reference else "none"
        return self.reference.kind
