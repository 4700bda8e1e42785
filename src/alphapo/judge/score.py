"""``alphapo judge``: score every sampled completion.

    alphapo judge --samples samples.jsonl --out judged.jsonl                       # the task's gold reward
    alphapo judge --samples samples.jsonl --out judged.jsonl --reward-model rm/    # a reward model

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


@torch.no_grad()
def reward_model_scores(
    path: str | Path, rows: list[dict], batch_size: int = 32, prompt_format: PromptFormat = "auto"
) -> list[list[float]]:
    model, tokenizer = load_reward_model(path)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
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


def judge_file(
    samples_path: str | Path,
    out_path: str | Path,
    reward_model: str | None = None,
    prompt_format: PromptFormat = "auto",
) -> int:
    """Score ``samples_path`` into ``out_path`` with the gold judge or ``reward_model``; returns rows."""
    rows = read_jsonl(samples_path, "judge", required=("prompt", "completions"))
    if reward_model:
        scores = reward_model_scores(reward_model, rows, prompt_format=prompt_format)
    else:
        scores = gold_scores(rows, str(samples_path))
    write_jsonl(out_path, ({**row, "scores": s} for row, s in zip(rows, scores, strict=True)))
    return len(rows)
