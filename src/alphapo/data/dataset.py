"""Load data end to end: read, validate, tokenise, cache, and say what happened to every row.

    from alphapo.data import DataConfig, load_dataset_for_training
    ds = load_dataset_for_training(DataConfig(paths=["prefs.jsonl"]), tokenizer, output_dir="runs/x")
    ds.kind, len(ds), ds[0], ds.report

Nothing is lost silently: with ``on_bad_row: error`` the first bad row raises a :class:`DataError`
naming the file, row and field; with ``skip`` every skipped row, with its reason and content, goes to
``<output_dir>/skipped_rows.jsonl``. Rows whose completion truncation would leave empty are always
dropped (a completion with no token carries no signal and gives NaN), counted and recorded there too.
A one-line summary is printed either way.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alphapo.data.cache import fingerprint, load_entry, save_entry, source_fingerprint, tokenizer_fingerprint
from alphapo.data.config import DataConfig
from alphapo.data.formats import BadRow, detect_format, to_example
from alphapo.data.readers import read_rows
from alphapo.data.tokenize import Tokenization
from alphapo.errors import DataError

SKIPPED_FILE = "skipped_rows.jsonl"


@dataclass
class DataReport:
    """What loading did: counts, the skipped rows (with reasons) and whether the cache served it."""

    rows_read: int = 0
    rows_kept: int = 0
    truncated: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)
    formats: dict[str, str] = field(default_factory=dict)
    cache_hit: bool = False

    def summary(self) -> str:
        reasons = Counter(s["kind"] for s in self.skipped)
        parts = [f"{self.rows_read} rows read", f"{self.rows_kept} kept"]
        if reasons["bad_row"]:
            parts.append(f"{reasons['bad_row']} bad rows skipped")
        if reasons["empty_after_truncation"]:
            parts.append(f"{reasons['empty_after_truncation']} dropped (completion truncated to zero tokens)")
        parts.append(f"{self.truncated} truncated")
        if self.cache_hit:
            parts.append("tokenised data from cache")
        return "data: " + ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("rows_read", "rows_kept", "truncated", "skipped", "formats")}


class TokenizedDataset(torch.utils.data.Dataset):
    """Tokenised items (dicts of token id lists) of one kind: ``paired``, ``unpaired`` or ``sft``.

    ``key`` fingerprints the data, tokenizer and settings that produced it (caches key on it)."""

    def __init__(self, items: list[dict[str, Any]], kind: str, report: DataReport, key: str = ""):
        self.items = items
        self.kind = kind
        self.report = report
        self.key = key
        self._lengths: list[int] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]

    def lengths(self) -> list[int]:
        """Longest sequence (prompt + completion) of each item, for length-grouped batching."""
        if self._lengths is None:
            keys = ("chosen_ids", "rejected_ids") if self.kind == "paired" else ("completion_ids",)
            self._lengths = [len(it["prompt_ids"]) + max(len(it[k]) for k in keys) for it in self.items]
        return self._lengths


def _item(index: int, source: str, row: int, kind: str, tokens, label) -> dict[str, Any]:
    item: dict[str, Any] = {"index": index, "source": source, "row": row, "prompt_ids": tokens.prompt_ids}
    if kind == "paired":
        item["chosen_ids"], item["rejected_ids"] = tokens.completion_ids
    else:
        item["completion_ids"] = tokens.completion_ids[0]
    if kind == "unpaired":
        item["label"] = label
    return item


def _tokenize_all(cfg: DataConfig, tokenizer) -> tuple[list[dict[str, Any]], str, DataReport]:
    tokenization = Tokenization(tokenizer, cfg)
    report = DataReport()
    items: list[dict[str, Any]] = []
    kind = None
    for source in cfg.paths:
        fmt = None
        for number, row in read_rows(source, cfg.split, cfg.max_rows):
            report.rows_read += 1
            if fmt is None:
                fmt = detect_format(row, cfg, source)
                report.formats[source] = fmt
            try:
                example = to_example(row, fmt, cfg)
                if kind is not None and example.kind != kind:
                    raise DataError(f"{source}: {example.kind} rows cannot be mixed with {kind} rows of earlier files")
                kind = example.kind
                tokens = tokenization(example)
            except BadRow as bad:
                if cfg.on_bad_row == "error":
                    raise DataError(
                        f"{source}: row {number}: field {bad.field!r}: {bad.reason} "
                        "(set data.on_bad_row=skip to skip such rows; they are written to skipped_rows.jsonl)"
                    ) from None
                report.skipped.append(
                    {
                        "kind": "bad_row",
                        "source": source,
                        "row": number,
                        "field": bad.field,
                        "reason": bad.reason,
                        "data": row,
                    }
                )
                continue
            report.truncated += tokens.truncated
            if any(len(c) == 0 for c in tokens.completion_ids):
                report.skipped.append(
                    {
                        "kind": "empty_after_truncation",
                        "source": source,
                        "row": number,
                        "field": "prompt",
                        "reason": "no room left for the completion under "
                        f"max_length={cfg.max_length} (prompt has {len(tokens.prompt_ids)} tokens)",
                        "data": row,
                    }
                )
                continue
            items.append(_item(len(items), source, number, example.kind, tokens, example.label))
        if fmt is None:
            raise DataError(f"{source}: no rows")
    report.rows_kept = len(items)
    if not items:
        raise DataError(f"no usable rows in {', '.join(cfg.paths)} ({report.summary()})")
    return items, kind, report


def load_dataset_for_training(
    cfg: DataConfig, tokenizer, output_dir: str | Path | None = None, *, quiet: bool = False
) -> TokenizedDataset:
    """Read, validate and tokenise ``cfg.paths``, using the on-disk cache when it matches.

    ``output_dir`` receives ``skipped_rows.jsonl`` when any row was skipped or dropped, and holds the
    cache (``<output_dir>/cache``) unless ``cfg.cache_dir`` is set.
    """
    if not cfg.paths:
        raise DataError("no data: set data.paths to one or more files")
    output = Path(output_dir) if output_dir is not None else None
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else (output / "cache" if output else None)
    key = fingerprint(
        {
            "sources": [source_fingerprint(p, cfg.split) for p in cfg.paths],
            "tokenizer": tokenizer_fingerprint(tokenizer),
            "settings": cfg.model_dump(exclude={"cache_dir"}),
        }
    )
    cached = load_entry(cache_dir, key) if cache_dir else None
    if cached is not None:
        items, stored = cached
        report = DataReport(
            **{k: stored[k] for k in ("rows_read", "rows_kept", "truncated", "skipped", "formats")}, cache_hit=True
        )
        kind = stored["kind"]
    else:
        items, kind, report = _tokenize_all(cfg, tokenizer)
        if cache_dir:
            save_entry(cache_dir, key, items, {**report.to_json(), "kind": kind})
    if output is not None:
        skipped_path = output / SKIPPED_FILE
        if report.skipped:
            output.mkdir(parents=True, exist_ok=True)
            with open(skipped_path, "w") as f:
                for entry in report.skipped:
                    f.write(json.dumps(entry, default=str) + "\n")
        elif skipped_path.exists():
            skipped_path.unlink()  # from an earlier run over other data
    if not quiet:
        where = f" (see {output / SKIPPED_FILE})" if report.skipped and output is not None else ""
        print(report.summary() + where, file=sys.stderr)
    return TokenizedDataset(items, kind, report, key)
