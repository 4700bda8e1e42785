"""Formats: detect a source's format from its columns and turn each row into a normalised example.

Every format becomes an :class:`Example` whose prompt and completions are either all text or all
conversations (lists of ``{"role", "content"}`` messages). A row that cannot be used raises
:class:`BadRow` naming the field; the caller turns it into an error or a skipped row.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

from alphapo.data.config import DataConfig
from alphapo.errors import DataError

ROLES = {"system", "user", "assistant", "tool"}
Text = str | list[dict[str, str]]


class BadRow(Exception):
    """A row that cannot be used: ``field`` and ``reason`` say why."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass
class Example:
    """One normalised row. ``kind``: paired (chosen/rejected), unpaired (completion + label), sft."""

    kind: str
    prompt: Text
    completions: list[Text]  # paired: [chosen, rejected]; unpaired/sft: [completion]
    label: bool | None = None
    conversational: bool = False
    margin: float | None = None  # paired rows with data.margin_column set


def row_format(row: dict[str, Any], cfg: DataConfig) -> str | None:
    """The format one row's columns suggest, or None when they fit none."""
    cols = set(row)
    if {cfg.completion_column, cfg.label_column} <= cols:
        return "unpaired"
    if {cfg.chosen_column, cfg.rejected_column} <= cols:
        return "paired" if cfg.prompt_column in cols else "implicit"
    if cfg.completion_column in cols or cfg.messages_column in cols:
        return "sft"
    return None


def detect_format(rows: list[dict[str, Any]], cfg: DataConfig, source: str) -> str:
    """The format of ``source``: ``cfg.format``, or the one most of ``rows`` (its first readable rows)
    suggest, so that a few bad rows at the top of a file do not decide it."""
    if cfg.format != "auto":
        return cfg.format
    votes = Counter(f for f in (row_format(r, cfg) for r in rows) if f is not None)
    if votes:
        return votes.most_common(1)[0][0]
    columns = sorted(rows[0]) if rows else []
    raise DataError(
        f"{source}: cannot tell the data format from its columns {columns}: expected prompt/chosen/rejected, "
        f"chosen/rejected, prompt/completion/label or prompt/completion (rename with data.*_column, or set data.format)"
    )


def _get(row: dict[str, Any], column: str) -> Any:
    if column not in row:
        raise BadRow(column, "missing column")
    value = row[column]
    if value is None:
        raise BadRow(column, "is null")
    return value


def _valid_unicode(text: str, field: str, where: str = "") -> str:
    """``text`` unless it holds a lone surrogate (JSON allows ``\\ud800``; no tokenizer does)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise BadRow(
            field,
            f"{where}not valid Unicode: an unpaired surrogate \\u{ord(text[err.start]):04x} at character {err.start}",
        ) from None
    return text


def _check_messages(value: Any, field: str, *, final_assistant: bool) -> list[dict[str, str]]:
    if not value:
        raise BadRow(field, "empty conversation")
    for i, message in enumerate(value):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise BadRow(field, f"message {i} is not a {{'role', 'content'}} object")
        if message["role"] not in ROLES:
            raise BadRow(field, f"message {i} has unknown role {message['role']!r} (expected one of {sorted(ROLES)})")
        if not isinstance(message["content"], str):
            raise BadRow(field, f"message {i} content must be a string, got {type(message['content']).__name__}")
        _valid_unicode(message["content"], field, f"message {i} is ")
        if not message["content"].strip() and message["role"] == "assistant":
            raise BadRow(field, f"message {i} is an empty assistant turn")
    if final_assistant and value[-1]["role"] != "assistant":
        raise BadRow(field, f"the conversation ends with a {value[-1]['role']!r} turn, not an assistant turn")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _text_or_messages(value: Any, field: str, *, completion: bool) -> Text:
    if isinstance(value, str):
        if not value.strip():
            raise BadRow(field, "empty text")
        return _valid_unicode(value, field)
    if isinstance(value, list):
        return _check_messages(value, field, final_assistant=completion)
    raise BadRow(field, f"expected a string or a list of messages, got {type(value).__name__}")


def _same_kind(values: dict[str, Text]) -> bool:
    kinds = {name: isinstance(v, list) for name, v in values.items()}
    if len(set(kinds.values())) > 1:
        detail = ", ".join(f"{k} is {'a conversation' if c else 'text'}" for k, c in kinds.items())
        raise BadRow(next(iter(values)), f"mixes text and conversations ({detail})")
    return next(iter(kinds.values()))


def _implicit_text_prompt(chosen: str, rejected: str, marker: str, cfg: DataConfig) -> tuple[str, str, str]:
    shared = os.path.commonprefix([chosen, rejected])  # noqa: RUF071 (a string prefix is meant, not a path)
    cut = shared.rfind(marker)
    if cut < 0:
        raise BadRow(
            cfg.chosen_column,
            f"no shared prompt: the common prefix of chosen and rejected has no turn marker {marker!r} "
            "(set data.turn_marker, or give an explicit prompt column)",
        )
    end = cut + len(marker)
    return chosen[:end], chosen[end:], rejected[end:]


def _split_last_turn(conversation: list[dict[str, str]]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    return conversation[:-1], conversation[-1:]


def _margin(row: dict[str, Any], column: str) -> float:
    import math

    value = _get(row, column)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRow(column, f"expected a finite number (the pair's margin), got {value!r}")
    return float(value)


def to_example(row: dict[str, Any], fmt: str, cfg: DataConfig, margins: bool = False) -> Example:
    """Validate ``row`` as format ``fmt`` and normalise it; raise :class:`BadRow` if unusable.
    ``margins``: paired rows carry ``cfg.margin_column`` (its file has that column)."""
    if fmt in ("paired", "implicit"):
        chosen = _text_or_messages(_get(row, cfg.chosen_column), cfg.chosen_column, completion=True)
        rejected = _text_or_messages(_get(row, cfg.rejected_column), cfg.rejected_column, completion=True)
        if fmt == "paired":
            prompt = _text_or_messages(_get(row, cfg.prompt_column), cfg.prompt_column, completion=False)
            conv = _same_kind({cfg.prompt_column: prompt, cfg.chosen_column: chosen, cfg.rejected_column: rejected})
        else:
            conv = _same_kind({cfg.chosen_column: chosen, cfg.rejected_column: rejected})
            if conv:
                prompt, chosen_turn = _split_last_turn(chosen)
                rejected_prompt, rejected_turn = _split_last_turn(rejected)
                if prompt != rejected_prompt:
                    raise BadRow(cfg.rejected_column, "chosen and rejected differ before their last assistant turn")
                if not prompt:
                    raise BadRow(cfg.chosen_column, "no prompt: the conversation has only the assistant turn")
                chosen, rejected = chosen_turn, rejected_turn
            else:
                prompt, chosen, rejected = _implicit_text_prompt(chosen, rejected, cfg.turn_marker, cfg)
                if not chosen.strip() or not rejected.strip():
                    raise BadRow(
                        cfg.chosen_column if not chosen.strip() else cfg.rejected_column,
                        "empty text after the shared prompt",
                    )
        if chosen == rejected:
            raise BadRow(cfg.rejected_column, "identical to chosen")
        margin = _margin(row, cfg.margin_column) if margins and cfg.margin_column else None
        return Example("paired", prompt, [chosen, rejected], conversational=conv, margin=margin)
    if fmt == "unpaired":
        prompt = _text_or_messages(_get(row, cfg.prompt_column), cfg.prompt_column, completion=False)
        completion = _text_or_messages(_get(row, cfg.completion_column), cfg.completion_column, completion=True)
        label = _get(row, cfg.label_column)
        if not isinstance(label, bool) and label not in (0, 1):
            raise BadRow(cfg.label_column, f"expected true/false (or 1/0), got {label!r}")
        conv = _same_kind({cfg.prompt_column: prompt, cfg.completion_column: completion})
        return Example("unpaired", prompt, [completion], label=bool(label), conversational=conv)
    if fmt == "sft":
        if cfg.completion_column in row:
            prompt = _text_or_messages(_get(row, cfg.prompt_column), cfg.prompt_column, completion=False)
            completion = _text_or_messages(_get(row, cfg.completion_column), cfg.completion_column, completion=True)
            conv = _same_kind({cfg.prompt_column: prompt, cfg.completion_column: completion})
            return Example("sft", prompt, [completion], conversational=conv)
        messages = _get(row, cfg.messages_column)
        if not isinstance(messages, list):
            raise BadRow(cfg.messages_column, f"expected a list of messages, got {type(messages).__name__}")
        conversation = _check_messages(messages, cfg.messages_column, final_assistant=True)
        prompt, completion = _split_last_turn(conversation)
        if not prompt:
            raise BadRow(cfg.messages_column, "no prompt: the conversation has only the assistant turn")
        return Example("sft", prompt, [completion], conversational=True)
    raise DataError(f"unknown data format {fmt!r}")
