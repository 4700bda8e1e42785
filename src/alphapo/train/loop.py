"""The training loop: ``setup -> train -> save``, explicit, with Accelerate as a utility.

    from alphapo.train import train
    result = train(cfg)            # cfg: TrainConfig; result.model_dir holds the trained model

Batches: every optimiser step takes one length-grouped batch of ``batch_size * processes *
grad_accum`` examples (deterministic for the seed and epoch) and splits it into micro-batches, so one
process with accumulation 2 and two processes with accumulation 1 see the same examples per step
and compute the same gradient. A resumed run restarts at the next step of the same order.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from alphapo.config import dump_config, flatten
from alphapo.data import Collator, length_grouped_batches, load_dataset_for_training
from alphapo.errors import ConfigError, TrainingError
from alphapo.files import write_json
from alphapo.log import logger
from alphapo.ops.model_logps import verify_against_logits
from alphapo.train.checkpoint import load_checkpoint, remove_stale, resolve_resume, save_checkpoint
from alphapo.train.config import TrainConfig
from alphapo.train.diagnostics import probe
from alphapo.train.displacement import DisplacementProbe, automatic_every, final_displacement, final_displacement_rows
from alphapo.train.distributed import check_diagnostics, check_engine, describe, enable_fsdp_on_cpu
from alphapo.train.fingerprint import apply_peak_lr, claim_output_dir, resume_or_start_over, run_fingerprint
from alphapo.train.guards import WeightGuard, guarded_save, nan_message, non_finite
from alphapo.train.in_backward import StepInBackward, processes_refusal
from alphapo.train.kto import KTOObjective, KTOView
from alphapo.train.metrics import MetricsLog, MetricSums, Progress
from alphapo.train.objectives import PreferenceObjective, SFTObjective, StepShape
from alphapo.train.output import lock_output_dir, save_final_model
from alphapo.train.reference import compute_table
from alphapo.train.reward_model import RewardObjective, add_std, train_only_top
from alphapo.train.reward_scale import completion_lengths, resolve_hparams
from alphapo.train.setup import (
    add_lora,
    load_policy,
    load_tokenizer,
    local_sources,
    make_optimizer,
    make_scheduler,
)
from alphapo.train.tables import prepare_tables


@dataclass
class TrainResult:
    status: str  # "completed" or "interrupted"
    step: int
    output_dir: Path
    model_dir: Path | None
    checkpoint: Path | None = None
    metrics: dict = field(default_factory=dict)


class _Interrupt:
    """SIGINT sets a flag (the step finishes, a checkpoint is saved); a second SIGINT aborts."""

    def __init__(self):
        self.requested = False
        self.previous = None

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
            self.previous = None
        return self

    def _handle(self, *_):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        # a plain write: logging takes locks, which a signal handler must not wait on
        print("\ninterrupt: finishing this step and saving a checkpoint (Ctrl-C again to abort)", file=sys.stderr)

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _accelerator(cfg: TrainConfig, output_dir: Path, cleanup: ExitStack):
    from accelerate import Accelerator

    trackers = list(cfg.logging.report_to)
    for name in trackers:
        module = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}[name]
        try:
            __import__(module)
        except ImportError:
            raise ConfigError(
                f"logging.report_to includes {name}, which is not installed: pip install {module}"
            ) from None
    if "mlflow" in trackers and not os.environ.get("MLFLOW_TRACKING_URI"):
        # MLflow 3 refuses its old default (a ./mlruns file store): keep the run's tracking in a
        # SQLite store inside the output directory instead, for this run only (a pipeline or sweep
        # trains several runs in one process, each into its own store)
        uri = f"sqlite:///{(output_dir / 'mlflow.db').resolve()}"
        os.environ["MLFLOW_TRACKING_URI"] = uri
        cleanup.callback(os.environ.pop, "MLFLOW_TRACKING_URI", None)
        logger.info("mlflow: tracking to %s (set MLFLOW_TRACKING_URI to choose)", uri)
    precision = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[cfg.train.precision]
    # step_scheduler_with_optimizer=False: Accelerate's prepared scheduler otherwise steps once per
    # process at every optimizer step (it assumes per-process step counts); alphapo's step counts are global
    acc = Accelerator(
        mixed_precision=precision,
        log_with=trackers or None,
        project_dir=str(output_dir),
        step_scheduler_with_optimizer=False,
    )
    enable_fsdp_on_cpu(acc)
    check_world(acc)
    check_engine(acc)
    if acc.is_main_process:
        logger.info(describe(acc))
    return acc


def check_world(acc) -> None:
    """Stop when the launcher started a group of processes that did not join one group: each would
    train alone and all would write the same output directory (``accelerate launch`` with a GPU
    config on a machine without GPUs did this)."""
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched != acc.num_processes:
        raise ConfigError(
            f"this process was launched as one of {launched} (WORLD_SIZE) but joined a group of "
            f"{acc.num_processes}: the launcher's config does not fit this machine (a GPU config without GPUs?). "
            "Launch with a config that matches the devices here (`accelerate config`), or without "
            "accelerate launch for one process; on CPU processes set ACCELERATE_USE_CPU=1 (accelerate launch "
            "passes a config's use_cpu only to a single process)"
        )


def rng_untouched(device: torch.device):
    """Run diagnostics without drawing from the RNG streams training uses (dropout in a probe's
    forward pass would otherwise shift every later step's dropout masks, on the main process only):
    the diagnostics settings are then truly safe to change on resume."""
    devices = [device.index or 0] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)


def _micro_batches(step_items: list[int], parts: int) -> list[list[int]]:
    """Split one step's items into ``parts`` contiguous, near-equal micro-batches."""
    base, extra = divmod(len(step_items), parts)
    out, start = [], 0
    for k in range(parts):
        size = base + (k < extra)
        out.append(step_items[start : start + size])
        start += size
    return out


def _step_batches(dataset, cfg: TrainConfig, world: int, epoch: int) -> list[list[int]]:
    size = cfg.train.batch_size * world * cfg.train.grad_accum
    group = 16 if cfg.train.group_by_length else 1
    batches = length_grouped_batches(dataset.lengths(), size, cfg.train.seed, epoch, group_batches=group)
    return [b for b in batches if len(b) >= world * cfg.train.grad_accum]  # every micro-batch non-empty


def train(cfg: TrainConfig, on_step=None) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data``; ``on_step(step, metrics, model)`` runs after every step."""
    with ExitStack() as cleanup:  # releases the output directory's lock however the run ends
        return _train(cfg, on_step, cleanup)


def _train(cfg: TrainConfig, on_step, cleanup: ExitStack) -> TrainResult:
    from accelerate.utils import set_seed

    cfg = local_sources(cfg)
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    acc = _accelerator(cfg, output_dir, cleanup)
    if cfg.optim.in_backward and (why := processes_refusal(acc.num_processes, acc.distributed_type.value)):
        raise ConfigError(why)
    main = acc.is_main_process
    lock = lock_output_dir(output_dir) if main else None
    if lock is not None:
        cleanup.callback(lock.release)
    set_seed(cfg.train.seed)

    # ---- setup
    tokenizer = load_tokenizer(cfg)
    with acc.main_process_first():
        dataset = load_dataset_for_training(cfg.data, tokenizer, output_dir, quiet=not main)
    if cfg.task == "preference" and dataset.kind == "unpaired":
        if cfg.loss.name != "kto":
            raise ConfigError(
                f"{', '.join(cfg.data.paths)} holds unpaired rows (prompt, completion, label): they train with "
                f"loss.name=kto, not {cfg.loss.name!r} (or build pairs from them first: alphapo pair)"
            )
        dataset = KTOView(dataset, cfg.train.seed, cfg.data.max_length)  # + a mismatched completion (KL)
        no_pairs = {"displacement": "off", "every": 0}  # both measure chosen against rejected answers
        cfg = cfg.model_copy(update={"diagnostics": cfg.diagnostics.model_copy(update=no_pairs)})
    expected = "sft" if cfg.task == "sft" else "paired"
    if dataset.kind != expected:
        raise ConfigError(f"task {cfg.task} needs {expected} data, but {cfg.data.paths} holds {dataset.kind} rows")
    model = load_policy(cfg, tokenizer).to(acc.device)
    collator = Collator(tokenizer.pad_token_id, cfg.data.pad_to_multiple_of)
    if cfg.task == "reward":
        _reward_setup(cfg, model, dataset, main)
    elif cfg.train.logps == "fused" and cfg.train.verify_logps:
        one = {k: v[:1].to(acc.device) for k, v in collator([dataset[0]]).items()}
        verify_against_logits(model, one["input_ids"], one["attention_mask"], one["labels"])
    share_prompt = _share_prompt(cfg, model, dataset, collator, acc.device, main)
    if main:
        for stale in remove_stale(output_dir, incomplete=True):
            logger.info(f"train: removed {stale}, a checkpoint whose save or removal was interrupted")
    acc.wait_for_everyone()  # every process reads the output directory as the main process left it
    checkpoint = resolve_resume(output_dir, cfg.resume)
    fingerprint = run_fingerprint(cfg, dataset.content_key, acc.num_processes)
    if checkpoint is not None and resume_or_start_over(checkpoint, fingerprint, cfg, acc) == "fresh":
        checkpoint = None
    if checkpoint is None:
        claim_output_dir(cfg, acc)
    if main:  # after an earlier run was moved aside: its own config.yaml went with it
        dump_config(cfg, output_dir / "config.yaml")
    tables = prepare_tables(
        cfg,
        model,
        tokenizer,
        dataset,
        collator,
        acc,
        checkpoint,
        share_prompt,
        lambda other: _share_prompt(cfg, other, dataset, collator, acc.device, main),
    )
    hparams = resolve_hparams(cfg, model, dataset, collator, acc, tables.initial, checkpoint)
    if cfg.lora is not None:
        model = add_lora(cfg, model)
    world, accum = acc.num_processes, cfg.train.grad_accum
    first_epoch = _step_batches(dataset, cfg, world, 0)
    per_epoch = len(first_epoch)
    if per_epoch == 0:
        raise ConfigError(f"{len(dataset)} examples cannot fill one step of {world * accum} micro-batches")
    left_out = len(dataset) - sum(len(b) for b in first_epoch)
    if left_out and main:
        logger.info(
            f"train: {left_out} example(s) per epoch left out: the last batch is smaller than "
            f"{world} process(es) x {accum} accumulation steps (they fall elsewhere in other epochs)",
        )
    total_steps = cfg.train.max_steps or math.ceil(cfg.train.epochs * per_epoch)
    optimizer = make_optimizer(cfg, model, fused_allowed=_plain_or_ddp(acc))
    scheduler = make_scheduler(cfg, optimizer, total_steps)
    model, optimizer, scheduler = acc.prepare(model, optimizer, scheduler)
    in_backward = None  # optim.in_backward: the update is applied during the backward pass
    if cfg.optim.in_backward:
        in_backward = StepInBackward(optimizer, [p for p in model.parameters() if p.requires_grad])
        cleanup.callback(in_backward.remove)
    step_pairs = cfg.train.batch_size * world * accum
    displacement = None  # the first-visit probe, for losses without a starting log-prob table
    if cfg.displacement_mode() == "probe":
        displacement = DisplacementProbe(math.ceil(cfg.diagnostics.displacement_pairs / world))
        probe_every = cfg.diagnostics.displacement_every or automatic_every(
            cfg.diagnostics.displacement_pairs, step_pairs, cfg.logging.every
        )
    if cfg.task == "sft":
        objective = SFTObjective(cfg.train.logps, cfg.train.chunk_size)
    elif cfg.task == "reward":
        objective = RewardObjective(cfg.reward.center_rewards_coefficient)
    elif isinstance(dataset, KTOView):
        objective = KTOObjective(hparams, tables.reference, cfg.train.logps, cfg.train.chunk_size)
    else:
        objective = PreferenceObjective(
            cfg.loss.name,
            hparams,
            tables.reference,
            tables.initial,
            cfg.train.logps,
            cfg.train.chunk_size,
            displacement,
            cfg.train.pair_schedule,
            _pair_budget(cfg, acc),
            share_prompt,
        )
    probe_batch = None
    check_diagnostics(cfg, acc)
    if cfg.diagnostics.every and cfg.task == "preference" and main:
        items = [dataset[i] for i in range(min(cfg.diagnostics.probe_pairs, len(dataset)))]
        probe_batch = {k: v.to(acc.device) for k, v in collator(items).items()}
    state = {"step": 0, "num_tokens": 0, "skipped_steps": 0, "fingerprint": fingerprint, **tables.keys}
    if cfg.loss.alpha_scale is not None:
        state["alpha_from_scale"] = hparams["alpha"]
    if checkpoint is not None:
        state.update(load_checkpoint(acc, checkpoint), fingerprint=fingerprint)
        if isinstance(objective, PreferenceObjective) and cfg.train.logits_budget_mb is None:
            objective.budget = state.get("pair_budget_bytes", objective.budget)  # the run's own chunks
        apply_peak_lr(scheduler, cfg.optim.lr)
        if displacement is not None:
            displacement.load(state.get("displacement_probe", {}).get(str(acc.process_index), {}))
        if main:
            logger.info(f"train: resuming from {checkpoint} (step {state['step']} of {total_steps})")
    log = MetricsLog(output_dir / "metrics.jsonl", state["step"] if checkpoint else None) if main else None
    if cfg.logging.report_to:
        acc.init_trackers(cfg.logging.project, config=_tracker_config(cfg))

    # ---- train
    model.train()
    guard = WeightGuard(model, acc, cfg.train.max_update_ratio)
    progress = Progress(cfg.logging.progress, total_steps, state["step"], enabled=main)
    result_status, saved, metrics = "completed", None, {}
    t_last, tokens_last = time.monotonic(), state["num_tokens"]
    epoch_cache: dict[int, list[list[int]]] = {}
    window = MetricSums()  # per-example metrics since the last logged step
    last_logged: dict = {}
    skipped_in_a_row = 0
    with _Interrupt() as interrupt:
        while state["step"] < total_steps:
            step = state["step"]
            epoch, position = divmod(step, per_epoch)
            if epoch not in epoch_cache:
                epoch_cache = {epoch: _step_batches(dataset, cfg, world, epoch)}
            items = epoch_cache[epoch][position]
            if displacement is not None:
                displacement.step = step + 1  # the visits this step's forward passes offer
            micro = _micro_batches(items, world * accum)
            shape = StepShape(len(items), sum(_completion_tokens(dataset[i]) for i in items), world)
            sums = MetricSums()
            step_tokens = 0
            held_back = False  # an in-backward step whose loss or log-probs were not finite: no backward pass
            if in_backward is not None:
                in_backward.reset()
            for a in range(accum):
                ids = micro[a * world + acc.process_index]
                batch = {k: v.to(acc.device) for k, v in collator([dataset[i] for i in ids]).items()}
                step_tokens += int(batch["attention_mask"].sum())
                sync = nullcontext() if a == accum - 1 else acc.no_sync(model)
                with sync, acc.autocast():
                    loss = objective(model, batch, shape, sums)
                    if in_backward is None:
                        acc.backward(loss)
                    elif _finite(loss, sums):
                        in_backward.backward(acc, loss)
                    else:  # skipped (or stopped) below, with the weights untouched
                        held_back = True
                del loss  # frees the graph (and the fused op's buffers) before the next forward
            grad_norm = _clip(acc, model, cfg.optim.max_grad_norm) if in_backward is None else in_backward.grad_norm()
            totals = sums.reduce_totals(acc)
            for name, (total, count) in totals.items():
                window.add_sum(name, total, count)  # logged values average every example since the last log
            bad_logps = totals.pop("nonfinite_logps", (0.0, 0.0))[0]
            metrics = add_std({name: total / max(count, 1) for name, (total, count) in totals.items()})
            culprit = non_finite(bad_logps, metrics["loss"], grad_norm)
            if held_back and culprit is None:  # the loss tensor, not its per-example parts, was not finite
                culprit = "a non-finite loss"
            if culprit is not None and in_backward is not None and in_backward.applied:
                applied = in_backward.applied
                raise TrainingError(nan_message(step + 1, culprit, metrics, grad_norm, output_dir, applied=applied))
            if culprit is not None:
                if cfg.train.nan_policy == "stop":
                    raise TrainingError(nan_message(step + 1, culprit, metrics, grad_norm, output_dir))
                optimizer.zero_grad(set_to_none=True)
                state["skipped_steps"] += 1
                skipped_in_a_row += 1
                if main:
                    logger.warning(f"train: step {step + 1} skipped: {culprit} (nan_policy=skip)")
                if skipped_in_a_row >= cfg.train.nan_skip_limit:
                    raise TrainingError(
                        nan_message(step + 1, culprit, metrics, grad_norm, output_dir, in_a_row=skipped_in_a_row)
                    )
            else:
                if in_backward is None:
                    optimizer.step()
                if not getattr(optimizer, "step_was_skipped", False):  # fp16's scaler skipped an overflow
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                skipped_in_a_row = 0
                guard.check(step + 1, output_dir)
            tokens = torch.tensor(float(step_tokens), device=acc.device)
            state["num_tokens"] += int(acc.reduce(tokens, reduction="sum").item() if world > 1 else step_tokens)
            state["step"] = step = step + 1
            metrics.update(
                grad_norm=grad_norm,
                learning_rate=scheduler.get_last_lr()[0],
                num_tokens=state["num_tokens"],
                epoch=step / per_epoch,
                skipped_steps=state["skipped_steps"],
            )
            now = time.monotonic()
            rate = (state["num_tokens"] - tokens_last) / max(now - t_last, 1e-9)
            t_last, tokens_last = now, state["num_tokens"]
            if probe_batch is not None and (step % cfg.diagnostics.every == 0 or step == 1):
                with acc.autocast(), rng_untouched(acc.device):
                    metrics.update(probe(model, probe_batch, cfg, tables.reference, hparams))
            if displacement is not None and (step % probe_every == 0 or step == total_steps):
                with acc.autocast(), rng_untouched(acc.device):
                    measured = displacement.measure(
                        acc.unwrap_model(model),
                        dataset,
                        collator,
                        cfg.reference.batch_size or cfg.train.batch_size,
                        acc,
                        cfg.train.logps,
                        share_prompt,
                    )
                metrics.update(measured.reduce(acc))
            logged = (
                step % cfg.logging.every == 0
                or step == total_steps
                or "diagnostics/grad_cosine" in metrics
                or "displacement/chosen" in metrics
            )
            if logged:  # per-example metrics averaged over the window, step values (lr, grad_norm) as they are
                last_logged = {**metrics, **add_std(window.local_means())}
                window = MetricSums()
                if log is not None:
                    log.write({"step": step, **last_logged})
                if cfg.logging.report_to:
                    acc.log({f"train/{k}": v for k, v in last_logged.items()}, step=step)  # TRL's prefix
            progress.update(step, rate, last_logged if logged else None)
            if on_step is not None:
                on_step(step, metrics, model)
            stop = _any(acc, interrupt.requested)
            if stop or (cfg.checkpoint.every and step % cfg.checkpoint.every == 0 and step < total_steps):
                saved = _save_checkpoint(acc, output_dir, state, cfg, displacement, objective)
            if stop:
                result_status = "interrupted"
                break
    progress.close()
    if result_status == "completed" and state["step"] - state["skipped_steps"] <= 0:
        raise TrainingError(
            f"all {state['step']} steps were skipped (non-finite values, nan_policy=skip): nothing was trained "
            "and no model was written. Lower the learning rate or check the data"
        )

    # ---- save
    model_dir = None
    if result_status == "completed":
        if saved is None or saved.name != f"step-{state['step']:08d}":  # so that a failed final write loses nothing
            saved = _save_checkpoint(acc, output_dir, state, cfg, displacement, objective)
        if tables.initial is not None:  # every pair's displacement at the end, against the starting table
            _write_final_displacement(cfg, acc, model, dataset, collator, tables.initial, output_dir, share_prompt)
        model_dir = guarded_save(
            "the final model",
            output_dir / "model",
            output_dir,
            lambda: save_final_model(acc, model, tokenizer, cfg, output_dir, last_logged),
            [output_dir / ".tmp-model", output_dir / ".tmp-merged", output_dir / ".tmp-adapter"],
        )
    for tracker in acc.trackers:  # not ``acc.end_training()``: that also destroys the process group, which
        tracker.finish()  # belongs to the command (a pipeline trains several runs in one process)
    return TrainResult(result_status, state["step"], output_dir, model_dir, saved, last_logged)


def _reward_setup(cfg: TrainConfig, model, dataset, main: bool) -> None:
    """A reward model's trainable part (``reward.train_layers``) and a note on how it reads scores."""
    if cfg.reward.train_layers is not None:
        trainable, total = train_only_top(model, cfg.reward.train_layers)
        if main:
            logger.info(
                f"rm: training the last {cfg.reward.train_layers} blocks, the final norm and the score head: "
                f"{trainable:,} of {total:,} weights (reward.train_layers)"
            )
    margins = sum("margin" in dataset[i] for i in range(len(dataset)))
    if main and margins:
        logger.info(f"rm: {margins} of {len(dataset)} pairs carry a margin (data.{cfg.data.margin_column})")


def _write_final_displacement(cfg, acc, model, dataset, collator, initial, output_dir: Path, share_prompt) -> None:
    """``displacement.json``: the end-of-training displacement of every pair, or of a seeded sample of
    ``diagnostics.final_displacement_pairs`` of them (the same rows on every process); pairs packed
    where training packed them."""
    batch_size = cfg.reference.batch_size or cfg.train.batch_size
    policy = acc.unwrap_model(model)
    rows = final_displacement_rows(len(dataset), cfg.diagnostics.final_displacement_pairs, cfg.train.seed)
    final = compute_table(
        policy, dataset, collator, batch_size, acc, cfg.train.logps, "final log-probs", rows, share_prompt
    )
    if acc.is_main_process:
        keep = slice(None) if rows is None else torch.tensor(rows)
        record = final_displacement(initial[keep], final[keep], completion_lengths(dataset)[keep])
        record["of"] = len(dataset)
        write_json(output_dir / "displacement.json", record)


def _save_checkpoint(acc, output_dir: Path, state: dict, cfg: TrainConfig, displacement, objective) -> Path:
    """A checkpoint of ``state["step"]`` (with every process's displacement probe and the pair
    schedule's budget), or a :class:`TrainingError` saying why it could not be written."""
    step = state["step"]
    if getattr(objective, "budget", None) is not None:
        state["pair_budget_bytes"] = objective.budget
    if displacement is not None:
        state["displacement_probe"] = _gather_probe(acc, displacement)
    target = output_dir / "checkpoints" / f"step-{step:08d}"
    return guarded_save(
        f"the checkpoint of step {step}",
        target,
        output_dir,
        lambda: save_checkpoint(acc, output_dir, step, state, cfg.checkpoint.keep_last),
        [target.with_name(f".tmp-{target.name}")],
    )


def _pair_budget(cfg: TrainConfig, acc) -> int:
    """The pair schedule's budget of held logits for the whole run: ``train.logits_budget_mb``, or the
    default share of the free memory read once here (every process takes the smallest, so all chunk
    alike); a resumed run replaces it with the one its checkpoint recorded."""
    from alphapo.ops.pair_loss import default_budget_bytes

    if cfg.train.logits_budget_mb is not None:
        return int(cfg.train.logits_budget_mb * 2**20)
    budget = default_budget_bytes(acc.device)
    if acc.num_processes > 1:
        budget = int(acc.gather(torch.tensor([budget], device=acc.device)).min())
    if acc.is_main_process:
        logger.info(f"train: pair schedule budget {budget / 2**20:.0f} MiB of logits (train.logits_budget_mb)")
    return budget


def _completion_tokens(item: dict) -> int:
    if "label" in item and "chosen_ids" in item:  # KTO: the example's own completion (rejected_ids: the KL row)
        return len(item["chosen_ids"])
    if "chosen_ids" in item:
        return len(item["chosen_ids"]) + len(item["rejected_ids"])
    return len(item["completion_ids"])


def _share_prompt(cfg: TrainConfig, model, dataset, collator, device, main: bool) -> torch.dtype | None:
    """The mask dtype the objective packs pairs with (``train.share_prompt``), or None to run them
    unpacked: where the loss is a paired one on fused log-probs, the model takes packed rows, and the
    first pairs' log-probs packed equal them unpacked."""
    from alphapo.ops.model_logps import shared_prompt_support, verify_shared_prompt

    if not cfg.train.share_prompt or cfg.task != "preference" or cfg.train.logps != "fused":
        return None
    if isinstance(dataset, KTOView) or dataset.kind != "paired":
        return None
    why = shared_prompt_support(model)
    if why is not None:
        if main:
            logger.info(f"train: pairs run unpacked (train.share_prompt): {why}")
        return None
    implementation = getattr(model.config, "_attn_implementation", "sdpa")
    dtype = torch.bool if implementation == "sdpa" else next(model.parameters()).dtype
    first = collator([dataset[i] for i in range(min(2, len(dataset)))])
    batch = {k: v.to(device) for k, v in first.items()}
    with torch.random.fork_rng(devices=[]):  # dropout in this check must not shift training's stream
        gap = verify_shared_prompt(
            model, batch["input_ids"], batch["attention_mask"], batch["labels"], None if dtype == torch.bool else dtype
        )
    if gap is None:
        if main:
            logger.warning(
                "train: pairs run unpacked: their log-probs with the prompt shared differ from the unpacked "
                "ones on this model (set train.share_prompt: false to skip this check)"
            )
        return None
    return dtype


def _plain_or_ddp(acc) -> bool:
    """One process or DDP: the setups where torch's fused AdamW sees plain parameters."""
    from accelerate.utils import DistributedType

    return acc.distributed_type in (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU)


def _clip(acc, model, max_norm: float | None) -> float:
    if max_norm is not None:
        return float(acc.clip_grad_norm_(model.parameters(), max_norm))
    # each tensor's norm in fp32 without a copy, as clipping computes it (an fp64 copy of every gradient
    # took 0.26 s a step and 226 MiB at once on a 135M model), summed in fp64; sharded gradients
    # (DTensor) as they reduce
    grads = [
        p.grad.detach().double().norm()
        if hasattr(p.grad, "to_local")
        else torch.linalg.vector_norm(p.grad, dtype=torch.float32).double()
        for p in model.parameters()
        if p.grad is not None
    ]
    return float(torch.stack(grads).norm()) if grads else 0.0


def _finite(loss: torch.Tensor, sums: MetricSums) -> bool:
    """Whether a micro-batch's loss and policy log-probs are finite (checked before an in-backward
    update, which cannot be undone)."""
    bad = sums.sums.get("nonfinite_logps", 0)
    return bool(torch.isfinite(loss.detach()).all()) and not float(bad)


def _any(acc, flag: bool) -> bool:
    if acc.num_processes == 1:
        return flag
    return bool(acc.reduce(torch.tensor(float(flag), device=acc.device), reduction="sum").item() > 0)


def _gather_probe(acc, displacement) -> dict:
    """Every process's probe state, keyed by process index (for the checkpoint)."""
    if acc.num_processes == 1:
        return {"0": displacement.state()}
    from accelerate.utils import gather_object

    return {str(i): s for i, s in enumerate(gather_object([displacement.state()]))}


def _tracker_config(cfg: TrainConfig) -> dict:
    """The resolved config as trackers take it: dotted keys, scalar values (others as text)."""
    flat = flatten(cfg.model_dump(mode="json"))
    return {k: v if isinstance(v, int | float | str | bool) or v is None else str(v) for k, v in flat.items()}
