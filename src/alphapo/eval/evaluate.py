"""``alphapo eval``: a policy against a baseline on held-out and perturbed prompts.

    alphapo eval --model runs/alphapo/model --baseline runs/sft/model \\
                 --prompts data/heldout.jsonl data/perturbed.jsonl --out runs/alphapo/eval

For each prompt file (its name is the split's name): greedy generations of the policy and of the
baseline (cached beside the baseline's own evaluation when possible), scored by the task's gold
reward (arithmetic rows carry an ``answer``, instruction rows IFEval's ``instruction_id_list`` and
``kwargs``: :mod:`alphapo.tasks.verify`; "accuracy" is then every instruction followed). Reported
per split, each with a bootstrap interval: accuracy, gold reward, win rate against the baseline
(ties as half), the paired differences in accuracy and gold reward, mean response length
in tokens, and KL(policy || baseline) estimated from samples of the policy:
``mean over y ~ policy of log policy(y) - log baseline(y)``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from alphapo.data.config import PromptFormat
from alphapo.data.stagefiles import read_jsonl, write_jsonl
from alphapo.data.tokenize import completion_token_ids, prompt_token_ids
from alphapo.errors import StageError
from alphapo.eval.stats import bootstrap, paired_difference, win_rate
from alphapo.files import write_json
from alphapo.ops.model_logps import model_sequence_logps
from alphapo.sample.generate import generate, load_for_generation
from alphapo.tasks.verify import has_gold, verify


def greedy_records(
    model,
    tokenizer,
    rows: list[dict],
    max_new_tokens: int,
    batch_size: int,
    label: str = "eval: greedy",
    prompt_format: PromptFormat = "auto",
    require_gold: bool = True,
) -> list[dict]:
    """Greedy answers to ``rows`` with their gold reward (None for a row without a verifier when not
    ``require_gold``: a reward-model judge scores those) and length in tokens."""
    responses = generate(
        model,
        tokenizer,
        [r["prompt"] for r in rows],
        k=1,
        temperature=0.0,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        progress=label,
        prompt_format=prompt_format,
    )
    records = []
    for number, (row, (response,)) in enumerate(zip(rows, responses, strict=True), start=1):
        if require_gold or has_gold(row):
            gold, correct = verify(row, response, f"{label}: prompt {number}: ")
        else:
            gold, correct = None, None
        records.append(
            {
                "id": row.get("id"),
                "prompt": row["prompt"],
                "response": response,
                "gold_reward": gold,
                "correct": correct,
                "length": len(tokenizer(response, add_special_tokens=False)["input_ids"]),
            }
        )
    return records


@torch.no_grad()
def sequence_logps_of(
    model,
    tokenizer,
    prompts: list,
    responses: list[str],
    batch_size: int,
    label: str = "eval: log-probs",
    prompt_format: PromptFormat = "auto",
) -> torch.Tensor:
    """[N] log-prob sums of each response (plus EOS) given its prompt, tokenised as training does, via
    the fused op."""
    from alphapo.data.collate import Collator
    from alphapo.progress import Progress

    prompt_ids = prompt_token_ids(tokenizer, prompts, prompt_format)
    completions = completion_token_ids(tokenizer, prompts, responses, prompt_format)
    collate = Collator(tokenizer.pad_token_id)
    device = next(model.parameters()).device
    out = []
    progress = Progress(label, len(prompts), "sequences")
    for start in range(0, len(prompts), batch_size):
        progress.advance(min(batch_size, len(prompts) - start))
        items = []
        for i in range(start, min(start + batch_size, len(prompts))):
            items.append({"index": i, "prompt_ids": prompt_ids[i], "completion_ids": completions[i]})
        batch = {k: v.to(device) for k, v in collate(items).items()}
        out.append(model_sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"]).logps)
    progress.close()
    return torch.cat(out).double().cpu()


def kl_estimate(
    policy,
    baseline,
    tokenizer,
    rows,
    samples: int,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
    split: str = "",
    prompt_format: PromptFormat = "auto",
):
    """Per-prompt mean of log policy(y) - log baseline(y) over ``samples`` draws y ~ policy."""
    prompts = [r["prompt"] for r in rows]
    drawn = generate(
        policy,
        tokenizer,
        prompts,
        k=samples,
        temperature=1.0,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        seed=seed,
        progress=f"eval {split}: KL samples",
        prompt_format=prompt_format,
    )
    flat_prompts = [p for p, ys in zip(prompts, drawn, strict=True) for _ in ys]
    flat = [y for ys in drawn for y in ys]
    args = (tokenizer, flat_prompts, flat, batch_size)
    diff = sequence_logps_of(policy, *args, f"eval {split}: policy log-probs", prompt_format) - sequence_logps_of(
        baseline, *args, f"eval {split}: baseline log-probs", prompt_format
    )
    return diff.view(len(rows), samples).mean(dim=1).tolist()


def _judge(judge_model, rows, mine: list[dict], theirs: list[dict], prompt_format, seed: int) -> dict:
    """A reward model's verdict on the policy's and the baseline's answer to each prompt: win rate
    (ties half) and AlpacaEval's length-controlled win rate (lengths in characters), with intervals.
    Each of the policy's records gains ``judge_score`` and ``baseline_judge_score``."""
    from alphapo.eval.length_control import fit_length_control, lc_win_rate
    from alphapo.eval.stats import win_outcomes
    from alphapo.judge.score import reward_model_scores

    pairs = [
        {"prompt": r["prompt"], "completions": [a["response"], b["response"]]}
        for r, a, b in zip(rows, mine, theirs, strict=True)
    ]
    scores = reward_model_scores(judge_model, pairs, prompt_format=prompt_format)
    policy, baseline = [s[0] for s in scores], [s[1] for s in scores]
    for record, (a, b) in zip(mine, scores, strict=True):
        record["judge_score"], record["baseline_judge_score"] = a, b
    outcomes = win_outcomes(policy, baseline)
    lengths = [len(r["response"]) for r in mine], [len(r["response"]) for r in theirs]
    return {
        "model": str(judge_model),
        "win_rate": bootstrap(outcomes, seed=seed).to_json(),
        "lc_win_rate": lc_win_rate(outcomes, *lengths, seed=seed).to_json(),
        # every longer answer won (or lost): the length model has no maximum and its LC is arbitrary
        "lc_separable": fit_length_control(outcomes, [a - b for a, b in zip(*lengths, strict=True)]).separable,
        "score": bootstrap(policy, seed=seed).to_json(),
        "score_gain": paired_difference(policy, baseline, seed=seed).to_json(),
        "mean_chars": sum(lengths[0]) / len(rows),
        "baseline_mean_chars": sum(lengths[1]) / len(rows),
    }


def _stored_records(eval_dir: str | Path | None, split: str, rows: list[dict]) -> list[dict] | None:
    """The greedy records of ``split`` in ``eval_dir`` if they are for exactly ``rows``' prompts."""
    path = Path(eval_dir) / f"generations-{split}.jsonl" if eval_dir is not None else None
    if path is None or not path.is_file():
        return None
    records = read_jsonl(path, "eval")
    if [r["prompt"] for r in records] != [r["prompt"] for r in rows]:
        return None
    return records


def evaluate(
    model_dir: str | Path,
    baseline_dir: str | Path,
    prompt_files: list[str | Path],
    out_dir: str | Path,
    *,
    kl_samples: int = 2,
    max_new_tokens: int = 48,
    batch_size: int = 128,
    seed: int = 0,
    max_prompts: int | None = None,
    baseline_eval: str | Path | None = None,
    prompt_format: PromptFormat = "auto",
    judge_model: str | Path | None = None,
) -> dict:
    """Evaluate ``model_dir`` against ``baseline_dir``; writes ``metrics.json`` and generations.

    ``baseline_eval``: the baseline's own evaluation directory; its greedy generations are reused
    when they cover the same prompts (greedy decoding is deterministic), instead of generating again.
    ``judge_model``: a reward model that also judges the two answers to each prompt: its win rate and
    length-controlled win rate against the baseline (``judge`` in each split's metrics); prompts then
    need no gold verifier (the gold metrics appear when every prompt has one)."""
    out = Path(out_dir)
    policy, tokenizer = load_for_generation(model_dir, "eval")
    same = Path(model_dir).resolve() == Path(baseline_dir).resolve()
    baseline = policy if same else load_for_generation(baseline_dir, "eval")[0]
    metrics: dict[str, dict] = {}
    for path in prompt_files:
        split = Path(path).name.split(".")[0]
        rows = read_jsonl(path, "eval", required=("prompt",))[:max_prompts]
        args = (tokenizer, rows, max_new_tokens, batch_size)
        require_gold = judge_model is None
        mine = greedy_records(policy, *args, f"eval {split}: greedy", prompt_format, require_gold)
        theirs = mine if same else _stored_records(baseline_eval, split, rows)
        if theirs is None:
            theirs = greedy_records(baseline, *args, f"eval {split}: baseline", prompt_format, require_gold)
        judged = _judge(judge_model, rows, mine, theirs, prompt_format, seed) if judge_model is not None else None
        gold = [r["gold_reward"] for r in mine]
        correct = [float(r["correct"] or 0) for r in mine]
        base_gold = [r["gold_reward"] for r in theirs]
        base_correct = [float(r["correct"] or 0) for r in theirs]
        kl = (
            [0.0] * len(rows)
            if same
            else kl_estimate(
                policy, baseline, tokenizer, rows, kl_samples, max_new_tokens, batch_size, seed, split, prompt_format
            )
        )
        for record, value in zip(mine, kl, strict=True):
            record["kl"] = value
        write_jsonl(out / f"generations-{split}.jsonl", mine)
        if any(g is None for g in gold):  # a reward-model judge on prompts without a verifier
            metrics[split] = {
                "n": len(rows),
                "judge": judged,
                "mean_length": sum(r["length"] for r in mine) / len(mine),
                "kl_to_baseline": bootstrap(kl, seed=seed).to_json(),
            }
            continue
        metrics[split] = {
            **({"judge": judged} if judged is not None else {}),
            "n": len(rows),
            "accuracy": bootstrap(correct, seed=seed).to_json(),
            "gold_reward": bootstrap(gold, seed=seed).to_json(),
            "win_rate_vs_baseline": win_rate(gold, base_gold, seed=seed).to_json(),
            "accuracy_gain": paired_difference(correct, base_correct, seed=seed).to_json(),
            "gold_reward_gain": paired_difference(gold, base_gold, seed=seed).to_json(),
            "mean_length": sum(r["length"] for r in mine) / len(mine),
            "kl_to_baseline": bootstrap(kl, seed=seed).to_json(),
        }
    if not metrics:
        raise StageError("eval: no prompt files given")
    out.mkdir(parents=True, exist_ok=True)
    result = {"model": str(model_dir), "baseline": str(baseline_dir), "splits": metrics}
    write_json(out / "metrics.json", result)
    return result
