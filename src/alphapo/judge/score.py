"""``alphapo judge``: score every sampled completion.

    alphapo judge --samples samples.jsonl --out judged.jsonl                       # the task's gold reward
    alphapo judge --samples samples.jsonl --out judged.jsonl --reward-model rm/    # a reward model
    alphapo judge ... --reward-model rm1/ --reward-model rm2/ --combine worst      # an ensemble

Each input row has ``prompt`` and ``completions``; the output row gains ``scores`` (one per
completion). Judges:

* ``gold``: the embedded task's computed reward; rows carry the arithmetic task's ``answer`` or the
  instruction task's (IFEval-format) ``instruction_id_list`` and ``kwargs``.
* a Hugging Face sequence-classification reward model from a local directory (one logit: the
  reward), scoring ``prompt + completion`` as training would tokenise them (through the reward
  model's chat template when it has one, ``prompt_format``), in batches.
"""

from __future__ import annotations

from pathlib import Path

import torch

from alphapo.data.config import PromptFormat
from alphapo.data.stagefiles import read_jsonl, write_jsonl
from alphapo.data.tokenize import completion_token_ids, prompt_token_ids
from alphapo.errors import StageError
from alphapo.tasks.verify import verify


def gold_scores(rows: list[dict], source: str) -> list[list[float]]:
    """The embedded task's computed reward of every completion (arithmetic or instruction following,
    by the fields each row carries: :func:`alphapo.tasks.verify.verify`)."""
    scores = []
    for number, row in enumerate(rows, start=1):
        where = f"judge: {source}: row {number}: "
        scores.append([verify(row, c, where)[0] for c in row["completions"]])
    return scores


def load_reward_model(path: str | Path):
    """(model, tokenizer) of a local sequence-classification reward model, or a StageError saying why not."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise StageError(f"judge: reward model {path} has no config.json: not a saved Hugging Face model")
    config = AutoConfig.from_pretrained(path)
    architectures = config.architectures or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise StageError(
            f"judge: {path} is a {', '.join(architectures) or 'model of unknown architecture'}, not a sequence "
            "classifier: a reward model must be saved from an AutoModelForSequenceClassification"
        )
    if getattr(config, "num_labels", 1) != 1:
        raise StageError(f"judge: {path} has {config.num_labels} labels; a reward model has one (its score)")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def reward_model_scores(
    path: str | Path, rows: list[dict], batch_size: int = 32, prompt_format: PromptFormat = "auto"
) -> list[list[float]]:
    """Every completion's score by the reward model in ``path`` (rows: ``prompt``, ``completions``)."""
    model, tokenizer = load_reward_model(path)
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    return scores_with(model, tokenizer, rows, batch_size, prompt_format)


@torch.no_grad()
def scores_with(
    model, tokenizer, rows: list[dict], batch_size: int = 32, prompt_format: PromptFormat = "auto"
) -> list[list[float]]:
    """:func:`reward_model_scores` with a reward model already loaded."""
    device = next(model.parameters()).device
    prompt_ids = prompt_token_ids(tokenizer, [r["prompt"] for r in rows], prompt_format)
    owners = [i for i, row in enumerate(rows) for _ in row["completions"]]  # each completion's row
    completions = completion_token_ids(
        tokenizer, [rows[i]["prompt"] for i in owners], [c for row in rows for c in row["completions"]], prompt_format
    )
    sequences = [prompt_ids[i] + ids for i, ids in zip(owners, completions, strict=True)]
    flat: list[float] = []
    pad = tokenizer.pad_token_id
    for start in range(0, len(sequences), batch_size):
        batch = sequences[start : start + batch_size]
        width = max(len(s) for s in batch)
        # right padding: sequence-classification models read the last non-pad token
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in batch], device=device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in batch], device=device)
        flat.extend(model(input_ids=ids, attention_mask=mask).logits[:, 0].float().tolist())
    scores, i = [], 0
    for row in rows:
        n = len(row["completions"])
        scores.append(flat[i : i + n])
        i += n
    return scores


COMBINE_RULES = ("mean", "worst", "uncertainty")


def combine(
    members: list[list[float]],
    rule: str,
    centres: list[float],
    scales: list[float],
    uncertainty_weight: float = 1.0,
    uncertainty_penalty: str = "var",
) -> list[float]:
    """One ensemble score per completion from ``members`` ([M][N] raw scores): each member
    standardised with its (centre, scale), then combined by ``rule`` (see the module docstring)."""
    import numpy as np

    if rule not in COMBINE_RULES:
        raise StageError(f"judge: unknown combination rule {rule!r}; one of {', '.join(COMBINE_RULES)}")
    raw = np.asarray(members, dtype=np.float64)
    z = (raw - np.asarray(centres)[:, None]) / np.asarray(scales)[:, None]
    if rule == "mean":
        out = z.mean(axis=0)
    elif rule == "worst":
        out = z.min(axis=0)
    else:
        spread = z.var(axis=0) if uncertainty_penalty == "var" else z.std(axis=0)
        out = z.mean(axis=0) - uncertainty_weight * spread
    return out.tolist()


def _standardisers(paths: list[str], members: list[list[float]], standardize: str) -> tuple[list, list]:
    """Each member's (centre, scale): from its ``reward_stats.json`` or from this file's scores."""
    import statistics

    from alphapo.train.reward_model import STATS_FILE, read_stats

    centres, scales = [], []
    for path, scores in zip(paths, members, strict=True):
        if standardize == "file":
            centre, scale = statistics.fmean(scores), statistics.pstdev(scores) if len(scores) > 1 else 0.0
        else:
            stats = read_stats(path)
            if stats is None:
                raise StageError(
                    f"judge: {path} has no {STATS_FILE} (written by alphapo rm) to standardise its scores in an "
                    "ensemble; use --standardize file to standardise each member on the judged file instead"
                )
            centre, scale = stats["mean"], stats["std"]
        if not scale > 0:
            raise StageError(f"judge: {path}'s scores do not vary ({standardize} statistics): cannot standardise")
        centres.append(centre)
        scales.append(scale)
    return centres, scales


def judge_file(
    samples_path: str | Path,
    out_path: str | Path,
    reward_model: str | list[str] | None = None,
    prompt_format: PromptFormat = "auto",
    combine_rule: str = "mean",
    uncertainty_weight: float = 1.0,
    uncertainty_penalty: str = "var",
    standardize: str = "stats",
) -> int:
    """Score ``samples_path`` into ``out_path`` with the gold judge, a reward model or an ensemble of
    them (``reward_model`` a list of two or more); returns the number of rows."""
    rows = read_jsonl(samples_path, "judge", required=("prompt", "completions"))
    paths = [reward_model] if isinstance(reward_model, str | Path) else list(reward_model or [])
    extra: list[dict] = [{} for _ in rows]
    if len(paths) == 1:
        scores = reward_model_scores(paths[0], rows, prompt_format=prompt_format)
    elif paths:
        per_member = [reward_model_scores(p, rows, prompt_format=prompt_format) for p in paths]
        flat = [[s for row in member for s in row] for member in per_member]
        centres, scales = _standardisers([str(p) for p in paths], flat, standardize)
        combined = combine(flat, combine_rule, centres, scales, uncertainty_weight, uncertainty_penalty)
        scores, i = [], 0
        for number, row in enumerate(rows):
            n = len(row["completions"])
            scores.append(combined[i : i + n])
            extra[number] = {"member_scores": [member[number] for member in per_member]}
            i += n
    else:
        scores = gold_scores(rows, str(samples_path))
    write_jsonl(out_path, ({**row, **e, "scores": s} for row, e, s in zip(rows, extra, scores, strict=True)))
    return len(rows)
