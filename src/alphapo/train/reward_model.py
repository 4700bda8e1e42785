"""Bradley-Terry reward models: ``alphapo rm RECIPE`` (``task: reward``) on the trainer's machinery.

    alphapo rm rm.yaml                    # data, checkpoints, resume, LoRA, trackers as for alphapo train

The model is an ``AutoModelForSequenceClassification`` with one label (a causal LM directory gains a
fresh ``score`` head; an existing reward model trains on). Its score of ``prompt + completion`` is the
model's own logit: transformers reads it at the last token that is not padding, as alphapo's judge and
transformers' pipelines do, so the saved directory scores the same everywhere. Per pair::

    loss = -log sigma(r_chosen - r_rejected - margin) + c * (r_chosen + r_rejected)^2

with ``margin`` from the data's margin column (0 without one) and ``c`` =
``reward.center_rewards_coefficient`` (Eisenstein et al. 2023, as TRL's ``RewardTrainer``), averaged
over every pair of the optimiser step. Metrics: ``loss``, ``accuracy`` (ties count half), ``margin``
(``r_chosen - r_rejected``), ``rewards/chosen``, ``rewards/rejected``, ``rewards/mean``, ``rewards/std``.

After training, the saved model scores a seeded sample of its training pairs once
(``reward_stats.json`` in the model directory: mean and standard deviation of its scores), which the
judge uses to standardise the model's scores when it is one member of an ensemble, and the held-out
pairs (``data.holdout`` with ``part: heldout``, or ``reward.eval_data``) with a bootstrap interval on
the accuracy (``eval.json``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from alphapo.errors import ConfigError
from alphapo.log import logger
from alphapo.train.metrics import MetricSums
from alphapo.train.objectives import StepShape, mark_non_finite

STATS_FILE = "reward_stats.json"
EVAL_FILE = "eval.json"


def bradley_terry_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    margin: torch.Tensor | None = None,
    center_coefficient: float | None = None,
) -> torch.Tensor:
    """Per-pair Bradley-Terry losses ``-log sigma(r_c - r_r - margin) + c (r_c + r_r)^2`` ([B])."""
    diff = chosen - rejected
    if margin is not None:
        diff = diff - margin.to(diff)
    losses = -F.logsigmoid(diff)
    if center_coefficient:
        losses = losses + center_coefficient * (chosen + rejected) ** 2
    return losses


def pair_scores(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) scores [B] of a paired batch (chosen rows above rejected rows), in fp32."""
    pairs = batch["index"].shape[0]
    scores = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0].float()
    return scores[:pairs], scores[pairs:]


class RewardObjective:
    """The Bradley-Terry loss of one micro-batch, scaled so the step's gradient is the mean over its pairs."""

    def __init__(self, center_coefficient: float | None):
        self.center = center_coefficient

    def __call__(self, model, batch, shape: StepShape, sums: MetricSums) -> torch.Tensor:
        scale = shape.world_size / shape.examples
        chosen, rejected = pair_scores(model, batch)
        scores = torch.cat([chosen, rejected])
        if not torch.isfinite(scores.detach()).all():
            return mark_non_finite(scores, sums).sum() * 0.0
        losses = bradley_terry_loss(chosen, rejected, batch.get("margin"), self.center)
        c, r = chosen.detach(), rejected.detach()
        sums.add("loss", losses)
        sums.add("accuracy", (c > r).double() + 0.5 * (c == r).double())
        sums.add("margin", c - r)
        sums.add("rewards/chosen", c)
        sums.add("rewards/rejected", r)
        sums.add("rewards/mean", scores.detach())
        sums.add("rewards/squared", scores.detach() ** 2)
        return losses.sum() * scale


def add_std(metrics: dict[str, float]) -> dict[str, float]:
    """``rewards/squared`` (the mean square) replaced by ``rewards/std`` in a metrics dict."""
    if "rewards/squared" in metrics:
        square = metrics.pop("rewards/squared")
        mean = metrics.get("rewards/mean", 0.0)
        metrics["rewards/std"] = math.sqrt(max(square - mean * mean, 0.0))
    return metrics


def decoder_layers(model) -> torch.nn.ModuleList:
    """The model's stack of transformer blocks: the ``ModuleList`` with ``num_hidden_layers`` entries."""
    count = getattr(model.config, "num_hidden_layers", None)
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return module
    raise ConfigError(
        f"reward.train_layers: cannot find the {count} transformer blocks of {type(model).__name__} "
        "(train all weights, or use LoRA)"
    )


def train_only_top(model, layers: int) -> tuple[int, int]:
    """Freeze everything but the last ``layers`` blocks, the modules after them (the final norm) and
    the score head. Returns (trainable, total) parameter counts."""
    blocks = decoder_layers(model)
    if layers > len(blocks):
        raise ConfigError(f"reward.train_layers={layers}, but the model has {len(blocks)} blocks")
    for p in model.parameters():
        p.requires_grad_(False)
    keep = list(blocks)[len(blocks) - layers :]
    inner = model.base_model if hasattr(model, "base_model") else model
    after = [m for name, m in inner.named_children() if "norm" in name.lower()]  # the final norm
    head = [model.score] if hasattr(model, "score") else [model.get_output_embeddings()]
    for module in [*keep, *after, *head]:
        for p in module.parameters():
            p.requires_grad_(True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


@torch.no_grad()
def score_pairs(
    model, dataset, collator, batch_size: int, rows: list[int] | None = None, label: str = "rm: scoring pairs"
) -> torch.Tensor:
    """Scores [N, 2] (chosen, rejected) of ``rows`` of a paired dataset (default: all), in that order.
    Batches hold pairs of similar length (longest first), so little of a batch is padding."""
    from alphapo.progress import Progress

    model.eval()
    device = next(model.parameters()).device
    rows = list(range(len(dataset))) if rows is None else rows
    lengths = dataset.lengths()
    order = sorted(range(len(rows)), key=lambda k: -lengths[rows[k]])
    out = torch.zeros(len(rows), 2)
    with Progress(label, len(rows), "pairs") as progress:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = {k: v.to(device) for k, v in collator([dataset[rows[k]] for k in chunk]).items()}
            chosen, rejected = pair_scores(model, batch)
            out[chunk] = torch.stack([chosen, rejected], dim=1).cpu()
            progress.advance(len(chunk))
    return out


def stats_rows(n: int, sample: int, seed: int) -> list[int]:
    """A seeded sample of ``sample`` row indices out of ``n`` (all when ``n <= sample``), sorted."""
    if n <= sample:
        return list(range(n))
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=generator)[:sample].tolist())


def write_stats(model_dir: Path, scores: torch.Tensor, source: str) -> dict[str, Any]:
    """``reward_stats.json`` in ``model_dir``: the mean and standard deviation of ``scores`` (every
    chosen and rejected completion of the sample) that an ensemble standardises this member with."""
    flat = scores.flatten().double()
    record = {
        "mean": float(flat.mean()),
        "std": float(flat.std(unbiased=False)),
        "completions": int(flat.numel()),
        "source": source,
    }
    tmp = model_dir / f".{STATS_FILE}.tmp"
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(model_dir / STATS_FILE)
    return record


def read_stats(model_dir: str | Path) -> dict[str, Any] | None:
    path = Path(model_dir) / STATS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def pair_report(scores: torch.Tensor, seed: int = 0) -> dict[str, Any]:
    """Accuracy (ties half) with its bootstrap interval over pairs, margin, and reward mean/sd."""
    from alphapo.eval.stats import bootstrap

    chosen, rejected = scores[:, 0].double(), scores[:, 1].double()
    correct = ((chosen > rejected).double() + 0.5 * (chosen == rejected).double()).tolist()
    flat = scores.flatten().double()
    return {
        "pairs": int(scores.shape[0]),
        "accuracy": bootstrap(correct, seed=seed).to_json(),
        "margin": bootstrap((chosen - rejected).tolist(), seed=seed).to_json(),
        "reward_mean": float(flat.mean()),
        "reward_std": float(flat.std(unbiased=False)),
    }


def evaluate_reward_model(model_dir: str | Path, cfg, out_dir: str | Path, examples: int = 10) -> dict[str, Any]:
    """Score the held-out pairs with the saved reward model in ``model_dir`` and the sample of training
    pairs for its ``reward_stats.json``; write ``eval.json`` (with ``examples`` pairs shown) into
    ``out_dir``. ``cfg``: the run's TrainConfig (its data settings read both parts)."""
    from alphapo.data import Collator, load_dataset_for_training
    from alphapo.judge.score import load_reward_model

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    model, tokenizer = load_reward_model(model_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    collator = Collator(tokenizer.pad_token_id, cfg.data.pad_to_multiple_of)
    batch_size = cfg.reference.batch_size or cfg.train.batch_size * 2
    training = load_dataset_for_training(cfg.data, tokenizer, out_dir, quiet=True)
    rows = stats_rows(len(training), cfg.reward.stats_pairs, cfg.train.seed)
    scores = score_pairs(model, training, collator, batch_size, rows, "rm: scoring training pairs (reward_stats.json)")
    stats = write_stats(model_dir, scores, "training pairs")
    logger.info(
        f"rm: {model_dir / STATS_FILE}: scores of {len(rows)} training pairs: mean "
        f"{stats['mean']:.4f}, sd {stats['std']:.4f}"
    )
    held = heldout_config(cfg)
    if held is None:
        return {"stats": stats}
    heldout = load_dataset_for_training(held, tokenizer, out_dir / "heldout", quiet=True)
    scores = score_pairs(model, heldout, collator, batch_size, label="rm: scoring held-out pairs")
    report = {"data": held.paths, "part": held.part if held.holdout else "all", **pair_report(scores)}
    shown = []
    for i in range(min(examples, len(heldout))):
        item = heldout[i]
        shown.append(
            {
                "source": item["source"],
                "row": item["row"],
                "chosen_score": float(scores[i, 0]),
                "rejected_score": float(scores[i, 1]),
                "prompt": _short(tokenizer.decode(item["prompt_ids"]), keep_end=True),
                "chosen": _short(tokenizer.decode(item["chosen_ids"])),
                "rejected": _short(tokenizer.decode(item["rejected_ids"])),
            }
        )
    report["examples"] = shown
    out = {"stats": stats, "heldout": report}
    (out_dir / EVAL_FILE).write_text(json.dumps(out, indent=1))
    return out


def heldout_config(cfg):
    """The DataConfig of the pairs a reward-model run is evaluated on, or None: ``reward.eval_data``,
    else the other side of ``data.holdout``."""
    if cfg.reward.eval_data:
        return cfg.data.model_copy(update={"paths": list(cfg.reward.eval_data), "holdout": 0.0, "max_rows": None})
    if cfg.data.holdout:
        return cfg.data.model_copy(update={"part": "heldout" if cfg.data.part == "train" else "train"})
    return None


def _short(text: str, limit: int = 300, keep_end: bool = False) -> str:
    if len(text) <= limit:
        return text
    return "..." + text[3 - limit :] if keep_end else text[: limit - 3] + "..."
