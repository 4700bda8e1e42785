"""``alphapo eval --benchmark ifeval``: a model (and optionally a baseline) on IFEval, resumable.

    alphapo eval --benchmark ifeval --model runs/alphapo/model --baseline smollm2.gguf --out eval/ifeval

Greedy answers with the chat template (``--prompt-format``), at most ``max_new_tokens`` new tokens
(:data:`DEFAULT_MAX_NEW_TOKENS`; IFEval's prompts ask for up to 800 words, so some answers are cut:
the count is reported). Written to ``<out>``:

* ``answers-<side>.jsonl``: every answer as it is generated (one line per prompt, appended batch by
  batch), with ``answers-<side>.settings.json`` naming the model and settings. A killed run resumes:
  answers already written for the same model and settings are not generated again (a line cut by
  the kill is generated again); other settings start the file over.
* ``ifeval-<side>.jsonl``: every answer with its per-instruction strict and loose verdicts.
* ``metrics.json``: per side the four numbers with 95% bootstrap intervals over prompts, accuracy per
  instruction type, mean answer length in tokens, answers cut at ``max_new_tokens``, generation time
  and new tokens/s; with a baseline, the paired differences (policy minus baseline) with intervals.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from alphapo.data.config import PromptFormat
from alphapo.errors import StageError
from alphapo.eval import ifeval
from alphapo.files import write_json, write_jsonl
from alphapo.log import logger

DEFAULT_MAX_NEW_TOKENS = 512
"""Greedy answers stop here. IFEval asks for up to 800 words (about 1,100 tokens); 512 keeps a full
run of a 135M model within about half an hour on 2 CPU cores and cuts few answers that a small
model would have finished (the count of cut answers is in ``metrics.json``)."""


def _signature(model_dir: str) -> str:
    from alphapo.models.sources import resolve_model_source
    from alphapo.train.fingerprint import model_signature

    return model_signature(resolve_model_source(str(model_dir), "eval --model"))


def _read_answers(path: Path, settings: dict) -> dict[Any, dict]:
    """Answers already written for ``settings`` (keyed by prompt key); a changed setting starts over."""
    settings_path = path.with_suffix(".settings.json")
    if not path.is_file() or not settings_path.is_file() or json.loads(settings_path.read_text()) != settings:
        path.unlink(missing_ok=True)
        write_json(settings_path, settings)
        return {}
    done = {}
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # the line a kill cut short: generated again
                continue
            done[row["key"]] = row
    return done


def generate_answers(
    model_dir: str | Path,
    rows: list[dict],
    path: Path,
    *,
    max_new_tokens: int,
    batch_size: int,
    prompt_format: PromptFormat,
    label: str,
) -> tuple[list[dict], float]:
    """Greedy answers of ``model_dir`` to ``rows``, resumed from and appended to ``path``; returns
    (answers in ``rows`` order, seconds spent generating in this call)."""
    from alphapo.sample.generate import generate, load_for_generation

    settings = {
        "model": _signature(str(model_dir)),
        "max_new_tokens": max_new_tokens,
        "prompt_format": prompt_format,
        "decoding": "greedy",
    }
    done = _read_answers(path, settings)
    todo = [r for r in rows if r["key"] not in done]
    seconds = 0.0
    if todo:
        if done:
            logger.info(f"{label}: {len(done)} answers already in {path}; generating the other {len(todo)}")
        model, tokenizer = load_for_generation(model_dir, "eval")
        # a fresh file keeps the rewritten lines only: a cut last line would otherwise stay in it
        with open(path, "w") as f:
            f.writelines(json.dumps(done[r["key"]]) + "\n" for r in rows if r["key"] in done)

        def write(indices, texts, counts, ended):
            with open(path, "a") as f:
                for i, (text,), (n,), (stop,) in zip(indices, texts, counts, ended, strict=True):
                    answer = {"key": todo[i]["key"], "response": text, "new_tokens": n, "cut": not stop}
                    done[todo[i]["key"]] = answer
                    f.write(json.dumps(answer) + "\n")
                f.flush()
                os.fsync(f.fileno())

        start = time.monotonic()
        generate(
            model,
            tokenizer,
            [r["prompt"] for r in todo],
            k=1,
            temperature=0.0,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            progress=label,
            prompt_format=prompt_format,
            on_batch=write,
        )
        seconds = time.monotonic() - start
    return [done[r["key"]] for r in rows], seconds


def _side(rows, answers, seconds: float, seed: int) -> tuple[list[dict], dict]:
    records = [
        {"key": r["key"], "prompt": r["prompt"], **a, **ifeval.score(r, a["response"])}
        for r, a in zip(rows, answers, strict=True)
    ]
    summary = ifeval.summarize(records, seed=seed)
    tokens = sum(a["new_tokens"] for a in answers)
    summary.update(
        mean_length=tokens / len(answers),
        cut=sum(a["cut"] for a in answers),
        generation_seconds=seconds,
        new_tokens_per_s=(tokens / seconds) if seconds else None,
    )
    return records, summary


def run_ifeval(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    baseline_dir: str | Path | None = None,
    prompts: str | Path | None = None,
    limit: int | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = 16,
    prompt_format: PromptFormat = "auto",
    seed: int = 0,
) -> dict:
    """Evaluate ``model_dir`` (and ``baseline_dir``) on IFEval into ``out_dir``; returns ``metrics.json``."""
    if max_new_tokens <= 0 or batch_size <= 0:
        raise StageError("eval: --max-new-tokens and --batch-size must be positive")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = ifeval.load_prompts(prompts, limit)
    punkt = ifeval.ensure_punkt()
    result: dict[str, Any] = {
        "benchmark": "ifeval",
        "prompts": len(rows),
        "max_new_tokens": max_new_tokens,
        "prompt_format": prompt_format,
        "punkt": punkt,
        "model": str(model_dir),
    }
    sides = {"model": model_dir} | ({"baseline": baseline_dir} if baseline_dir is not None else {})
    records = {}
    for side, directory in sides.items():
        answers, seconds = generate_answers(
            directory,
            rows,
            out / f"answers-{side}.jsonl",
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            prompt_format=prompt_format,
            label=f"ifeval {side}",
        )
        records[side], result[side] = _side(rows, answers, seconds, seed)
        write_jsonl(out / f"ifeval-{side}.jsonl", records[side])
    if baseline_dir is not None:
        result["baseline_dir"] = str(baseline_dir)
        result["difference"] = ifeval.compare(records["model"], records["baseline"], seed=seed)
    write_json(out / "metrics.json", result)
    return result


def format_result(result: dict) -> list[str]:
    """Console lines: the four numbers per side and the paired differences."""
    lines = []
    for side in ("model", "baseline"):
        if side not in result:
            continue
        m = result[side]
        numbers = ", ".join(
            f"{name.replace('_', ' ')} {m[name]['mean']:.3f} [{m[name]['low']:.3f}, {m[name]['high']:.3f}]"
            for name in ifeval.METRICS
        )
        lines.append(
            f"ifeval {side} ({m['prompts']} prompts): {numbers}; mean length {m['mean_length']:.0f} tokens, "
            f"{m['cut']} cut at {result['max_new_tokens']}"
        )
    for name, d in result.get("difference", {}).items():
        lines.append(
            f"ifeval model - baseline, {name.replace('_', ' ')}: {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
        )
    return lines
