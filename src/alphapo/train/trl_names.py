"""TRL's setting names in an alphapo recipe: mapped onto alphapo's settings, or refused by name.

A recipe (or ``key=value`` override) may use the flat names of TRL's ``DPOConfig`` / ``CPOConfig``
and of ``transformers.TrainingArguments`` at the top level::

    learning_rate: 5.0e-7            # -> optim.lr
    per_device_train_batch_size: 2   # -> train.batch_size
    loss_type: sigmoid               # -> loss.name
    beta: 0.1                        # -> loss.beta

:func:`translate_trl_names` moves each onto its alphapo key and returns one note per mapping (the
trainer logs them); a TRL name that has no alphapo equivalent is an error that names, for every such
key at once, what to use instead. A CPO recipe (``cpo_alpha``, ``simpo_gamma``, ``alpha`` or
``loss_type`` simpo/alphapo) keeps CPO's meaning: TRL adds ``cpo_alpha`` times the chosen NLL to
every CPO loss, so ``loss_type: simpo`` with the default ``cpo_alpha`` 1.0 is SimPO plus NLL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alphapo.errors import ConfigError


def _positive_or_none(value):
    return None if value is None or value <= 0 else value  # TRL's -1 / 0: not set


def _precision(name):
    return lambda value: name if value else None


MAPPED: dict[str, tuple[str, Callable[[Any], Any] | None]] = {
    "model_name_or_path": ("model.path", None),
    "dataset_name": ("data.paths", lambda v: [v] if isinstance(v, str) else v),  # local files and hub names
    "output_dir": ("output_dir", None),
    "resume_from_checkpoint": ("resume", lambda v: True if v in (True, "true", "True") else v),
    "learning_rate": ("optim.lr", None),
    "weight_decay": ("optim.weight_decay", None),
    "adam_epsilon": ("optim.eps", None),
    "max_grad_norm": ("optim.max_grad_norm", lambda v: None if v in (None, 0) else v),
    "per_device_train_batch_size": ("train.batch_size", None),
    "gradient_accumulation_steps": ("train.grad_accum", None),
    "num_train_epochs": ("train.epochs", None),
    "max_steps": ("train.max_steps", _positive_or_none),
    "seed": ("train.seed", None),
    "bf16": ("train.precision", _precision("bf16")),
    "fp16": ("train.precision", _precision("fp16")),
    "warmup_ratio": ("schedule.warmup_ratio", None),
    "warmup_steps": ("schedule.warmup_steps", None),
    "logging_steps": ("logging.every", None),
    "report_to": ("logging.report_to", None),
    "save_steps": ("checkpoint.every", None),
    "save_total_limit": ("checkpoint.keep_last", None),
    "gradient_checkpointing": ("model.gradient_checkpointing", None),
    "activation_checkpointing": ("model.gradient_checkpointing", None),  # transformers 5's name for it
    "disable_dropout": ("model.disable_dropout", None),
    "max_length": ("data.max_length", None),
    "max_prompt_length": ("data.max_prompt_length", None),
    "truncation_mode": ("data.truncation_mode", None),
    "pad_to_multiple_of": ("data.pad_to_multiple_of", lambda v: None if v == "auto" else v),
    "precompute_ref_batch_size": ("reference.batch_size", None),
    "beta": ("loss.beta", None),
    "label_smoothing": ("loss.label_smoothing", None),
    "simpo_gamma": ("loss.gamma", None),
    "alpha": ("loss.alpha", None),
    "rpo_alpha": ("loss.nll_weight", None),
    "discopop_tau": ("loss.tau", None),
    "desirable_weight": ("loss.desirable_weight", None),
    "undesirable_weight": ("loss.undesirable_weight", None),
    "center_rewards_coefficient": ("reward.center_rewards_coefficient", None),
}
"""TRL name -> (alphapo key, value transform or None). ``loss_type``, ``cpo_alpha``, ``lr_scheduler_type``,
``adam_beta1/2``, ``precompute_ref_log_probs`` and ``use_liger_loss`` are handled by their own rules."""

NO_EQUIVALENT: dict[str, str] = {
    "ref_model_init_kwargs": "the reference is precomputed from a model directory: reference.kind=model, "
    "reference.path",
    "model_init_kwargs": "model.dtype and model.attn_implementation",
    "sync_ref_model": "the reference is fixed (TR-DPO's syncing is not implemented); reference.kind=soup "
    "averages checkpoints",
    "ref_model_mixup_alpha": "the reference is fixed; reference.kind=soup averages checkpoints",
    "ref_model_sync_steps": "the reference is fixed; reference.kind=soup averages checkpoints",
    "reference_free": "choose a reference-free loss: loss.name=simpo, alphapo, cpo or orpo",
    "f_divergence_type": "no f-divergence DPO; the reward shape loss.alpha changes the loss's shape instead",
    "f_alpha_divergence_coef": "no f-divergence DPO; the reward shape loss.alpha changes the loss's shape instead",
    "loss_weights": "one loss per run; add an NLL term with loss.nll_weight",
    "use_weighting": "not implemented (WPO weighting)",
    "ld_alpha": "not implemented (LD-DPO); see loss.name=rdpo for length regularisation",
    "padding_free": "batches are padded; data.pad_to_multiple_of and train.group_by_length keep padding small",
    "generate_during_eval": "evaluation is its own stage: alphapo eval",
    "eval_strategy": "evaluation is its own stage: alphapo eval",
    "eval_steps": "evaluation is its own stage: alphapo eval",
    "per_device_eval_batch_size": "evaluation is its own stage: alphapo eval --batch-size",
    "push_to_hub": "the model is written to output_dir/model; upload it with huggingface-cli",
    "hub_model_id": "the model is written to output_dir/model; upload it with huggingface-cli",
    "dataset_num_proc": "tokenisation is cached (data.cache_dir)",
    "activation_offloading": "model.gradient_checkpointing",
    "torch_compile": "not supported",
    "optim": "optim.name (adamw only)",
    "logging_dir": "trackers log under output_dir",
    "run_name": "logging.project names the tracker project; the run is output_dir",
    "max_completion_length": "data.max_length bounds prompt + completion, data.max_prompt_length the prompt",
    "is_encoder_decoder": "decoder-only models only",
    "trust_remote_code": "only models transformers implements natively",
}
"""TRL names alphapo refuses, with what to use instead."""

CPO_MARKERS = ("cpo_alpha", "simpo_gamma", "alpha")
_DPO_LOSSES = {"sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "apo_zero"}
_DPO_LOSSES |= {"apo_down", "discopop", "kto"}  # kto: KTOConfig (unpaired data trains with it too)
_SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant", "constant_with_warmup": "constant"}


def is_trl_name(key: str) -> bool:
    rules = ("loss_type", "cpo_alpha", "lr_scheduler_type", "adam_beta1", "adam_beta2")
    rules += ("precompute_ref_log_probs", "use_liger_loss", "use_liger_kernel")
    return key in MAPPED or key in NO_EQUIVALENT or key in rules


def translate_trl_names(
    data: dict[str, Any], source: str = "config", own: frozenset[str] = frozenset()
) -> tuple[dict[str, Any], list[str]]:
    """``data`` with TRL's top-level names moved onto alphapo's keys, and the notes of what moved.
    ``own``: alphapo's own top-level keys (``optim``, ``output_dir``, ...), never taken as TRL's.

    Raises :class:`ConfigError` naming every TRL key without an equivalent (and what to use) and every
    key given both ways."""
    trl = {k: data[k] for k in list(data) if is_trl_name(k) and k not in own}
    if not trl:
        return data, []
    out = {k: v for k, v in data.items() if k not in trl}
    notes, errors = [], []
    if trl.get("bf16") and trl.get("fp16"):
        errors.append("bf16 and fp16 are both true: choose one precision (TRL refuses this too)")
    cpo = any(k in trl for k in CPO_MARKERS) or _loss_type(trl) in ("simpo", "alphapo")
    given = out.get("loss", {}).get("name") if isinstance(out.get("loss"), dict) else None
    if cpo and "loss_type" not in trl and given is None:  # CPOConfig's default loss_type is sigmoid: CPO
        trl["loss_type"] = "sigmoid"
        notes.append("CPO settings without loss_type: CPOConfig's default loss_type='sigmoid' -> loss.name='cpo'")
    name = _loss_type(trl) or given
    if cpo and name in ("simpo", "alphapo") and "cpo_alpha" not in trl and "nll_weight" not in out.get("loss", {}):
        trl["cpo_alpha"] = 1.0  # TRL's CPO adds cpo_alpha (default 1.0) times the chosen NLL to every loss
    targets: dict[str, Any] = {}
    for key, value in trl.items():
        if key in NO_EQUIVALENT:
            errors.append(f"{key}: no alphapo equivalent ({NO_EQUIVALENT[key]})")
            continue
        for target, mapped, note in _rules(key, value, trl, cpo):
            if target is None:
                notes.append(note)
                continue
            if mapped is None and key in ("bf16", "fp16", "max_steps"):
                continue  # false / unset: alphapo's default holds
            targets[target] = mapped
            notes.append(note or f"{key}={value!r} -> {target}={mapped!r}")
    for target, value in targets.items():
        node = out
        *parents, leaf = target.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                errors.append(f"{target}: {part!r} is a value, not a section")
                break
        else:
            if leaf in node and node[leaf] != value:
                errors.append(f"{target} is given twice: {node[leaf]!r} and, by its TRL name, {value!r}")
            else:
                node[leaf] = value
    if errors:
        raise ConfigError(f"{source}: TRL settings alphapo cannot take:\n  " + "\n  ".join(errors))
    return out, notes


def _loss_type(trl: dict[str, Any]) -> str | None:
    value = trl.get("loss_type")
    if isinstance(value, list):  # TRL >= 0.20 takes a list (with loss_weights); one entry maps
        return value[0] if len(value) == 1 else ",".join(map(str, value))
    return value


def _rules(key, value, trl, cpo) -> list[tuple[str | None, Any, str | None]]:
    """(alphapo key or None for a note only, value, note) for one TRL key."""
    if key == "loss_type":
        name = _loss_type(trl)
        if "," in str(name):
            raise ConfigError(f"loss_type={value!r}: one loss per run (add an NLL term with loss.nll_weight)")
        if cpo and name == "sigmoid":
            return [("loss.name", "cpo", "loss_type='sigmoid' (CPOConfig) -> loss.name='cpo'")]
        if cpo and name in ("hinge", "ipo"):
            raise ConfigError(
                f"loss_type={name!r} in a CPO recipe is CPO's reference-free {name}, which alphapo does not have; "
                f"loss.name={name} is the reference-based (DPO-style) loss"
            )
        if name not in _DPO_LOSSES | {"simpo", "alphapo"}:
            raise ConfigError(f"loss_type={name!r}: no alphapo loss of that name (`alphapo losses` lists them)")
        return [("loss.name", name, None)]
    if key == "cpo_alpha":
        name = _loss_type(trl) or "sigmoid"
        if name in ("sigmoid", "cpo"):
            return [("loss.cpo_alpha", value, None)]
        note = f"cpo_alpha={value!r} -> loss.nll_weight={value!r} (TRL's CPO adds the chosen NLL to {name})"
        return [("loss.nll_weight", value, note)]
    if key == "lr_scheduler_type":
        if value not in _SCHEDULES:
            raise ConfigError(f"lr_scheduler_type={value!r}: schedule.name takes linear, cosine or constant")
        return [("schedule.name", _SCHEDULES[value], None)]
    if key in ("adam_beta1", "adam_beta2"):
        betas = [trl.get("adam_beta1", 0.9), trl.get("adam_beta2", 0.999)]
        return [("optim.betas", betas, None)]
    if key == "precompute_ref_log_probs":
        return [(None, None, f"{key}={value!r}: alphapo always precomputes and caches reference log-probs")]
    if key in ("use_liger_loss", "use_liger_kernel"):
        return [(None, None, f"{key}={value!r}: alphapo's fused loss is on by default (train.logps=fused)")]
    target, transform = MAPPED[key]
    return [(target, value if transform is None else transform(value), None)]
