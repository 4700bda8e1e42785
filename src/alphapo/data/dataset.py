"""Load data end to end: read, validate, tokenise, cache, and say what happened to every row.

    from alphapo.data import DataConfig, load_dataset_for_training
    ds = load_dataset_for_training(DataConfig(paths=["prefs.jsonl"]), tokenizer, output_dir="runs/x")
    ds.kind, len(ds), ds[0], ds.report

Nothing is lost silently. With ``on_bad_row: skip`` (the default) a row that cannot be trained on
(unreadable JSON or bytes, a missing or mistyped field, an empty completion, identical chosen and
rejected, ...) is skipped, and every skipped row goes, with its reason and content, to
``<output_dir>/skipped_rows.jsonl``; if more than ``max_bad_fraction`` of the rows are skipped the
run stops, since then the data or the settings are wrong rather than a few rows. With ``error`` the
first bad row raises a :class:`DataError` naming the file, row and field. Rows whose completion
truncation would leave empty are dropped in both modes and recorded the same way. Every truncated
row is listed in ``truncated_rows.jsonl`` (how many prompt and completion tokens it had and kept).
A summary is printed either way.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alphapo.data.cache import fingerprint, load_entry, save_entry, source_fingerprint, tokenizer_fingerprint
from alphapo.data.config import DataConfig
from alphapo.data.formats import BadRow, detect_format, to_example
from alphapo.data.readers import UnreadableRow, count_rows, read_rows
from alphapo.data.tokenize import Tokenization
from alphapo.errors import DataError
from alphapo.log import logger
from alphapo.progress import Progress

SKIPPED_FILE = "skipped_rows.jsonl"
TRUNCATED_FILE = "truncated_rows.jsonl"
_DETECT_ROWS = 64  # readable rows the format is detected from
_REPORT_FIELDS = ("rows_read", "rows_kept", "truncated_rows", "skipped", "formats", "other_part", "no_margin")


@dataclass
class DataReport:
    """What loading did: counts, the skipped rows (with reasons), the truncated rows (each with its
    prompt's and completions' ``[tokens before, tokens kept]``), and whether the cache served it."""

    rows_read: int = 0
    rows_kept: int = 0
    truncated_rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    formats: dict[str, str] = field(default_factory=dict)
    other_part: int = 0  # rows on the other side of data.holdout
    no_margin: list[str] = field(default_factory=list)  # files without data.margin_column
    cache_hit: bool = False
    part: str = "train"

    @property
    def truncated(self) -> int:
        """Rows with anything cut."""
        return len(self.truncated_rows)

    @property
    def truncated_prompts(self) -> int:
        return sum(before > kept for before, kept in (r["prompt_tokens"] for r in self.truncated_rows))

    @property
    def truncated_completions(self) -> int:
        """Completions cut (two per pair)."""
        return sum(before > kept for r in self.truncated_rows for before, kept in r["completion_tokens"])

    def reasons(self) -> Counter:
        """Skipped rows counted by ``field: reason``."""
        return Counter(f"{s['field']}: {s['reason']}" for s in self.skipped)

    def summary(self) -> str:
        parts = [f"{self.rows_read} rows read", f"{self.rows_kept} kept"]
        if self.other_part:
            other = "held-out" if self.part == "train" else "training"
            parts.append(f"{self.other_part} in the {other} part (data.holdout)")
        if self.no_margin:
            parts.append(f"no margin column in {', '.join(self.no_margin)} (margin 0)")
        if self.skipped:
            reasons = self.reasons()
            top = reasons.most_common(3)
            shown = "; ".join(f"{n} x {reason}" for reason, n in top)
            more = len(reasons) - len(top)
            parts.append(f"{len(self.skipped)} skipped ({shown}{f'; {more} other reasons' if more > 0 else ''})")
        cut = f"{self.truncated} truncated"
        if self.truncated:
            cut += f" ({self.truncated_prompts} prompts, {self.truncated_completions} completions cut)"
        parts.append(cut)
        if self.cache_hit:
            parts.append("tokenised data from cache")
        return "data: " + ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _REPORT_FIELDS}


class TokenizedDataset(torch.utils.data.Dataset):
    """Tokenised items (dicts of token id lists) of one kind: ``paired``, ``unpaired`` or ``sft``.

    ``key`` fingerprints the data, tokenizer and settings that produced it (caches key on it);
    ``content_key`` the same without the files' paths (what a checkpoint's fingerprint records)."""

    def __init__(self, items: list[dict[str, Any]], kind: str, report: DataReport, key: str = ""):
        self.items = items
        self.kind = kind
        self.report = report
        self.key = key
        self.content_key = key
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


def _skip_entry(kind: str, source: str, number: int, field_name: str, reason: str, data: Any) -> dict[str, Any]:
    return {"kind": kind, "source": source, "row": number, "field": field_name, "reason": reason, "data": data}


def holdout_side(prompt: Any, holdout: float) -> str:
    """``heldout`` or ``train``: where ``data.holdout`` puts a prompt, by a stable hash of its text
    (a conversation as canonical JSON), the same on every machine and in every file order."""
    import hashlib

    text = prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, ensure_ascii=False)
    draw = int(hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16], 16) / 16**16
    return "heldout" if draw < holdout else "train"


def _with_format(source: str, cfg: DataConfig, report: DataReport):
    """``(format, has margins, number, row)`` of ``source`` with its format (and whether it carries
    ``data.margin_column``) detected from the first readable rows."""
    rows = read_rows(source, cfg.split, cfg.max_rows)
    head, readable = [], []
    for number, row in rows:
        head.append((number, row))
        if isinstance(row, dict):
            readable.append(row)
            if len(readable) >= _DETECT_ROWS:
                break
    if not head:
        raise DataError(f"{source}: no rows")
    if not readable:
        if cfg.on_bad_row == "error":
            number, bad = head[0]
            raise DataError(f"{source}: row {number}: {bad.reason}")
        fmt = cfg.format if cfg.format != "auto" else "unknown"
    else:
        fmt = detect_format(readable, cfg, source)
    report.formats[source] = fmt
    margins = bool(cfg.margin_column) and any(cfg.margin_column in r for r in readable)
    if cfg.margin_column and not margins and fmt in ("paired", "implicit"):
        report.no_margin.append(source)
    yield from ((fmt, margins, number, row) for number, row in head)
    yield from ((fmt, margins, number, row) for number, row in rows)


def _tokenize_all(cfg: DataConfig, tokenizer, quiet: bool) -> tuple[list[dict[str, Any]], str, DataReport]:
    tokenization = Tokenization(tokenizer, cfg)
    report = DataReport(part=cfg.part)
    items: list[dict[str, Any]] = []
    kind = None
    for source in cfg.paths:
        with Progress(f"tokenise {source}", count_rows(source), "rows", enabled=not quiet) as progress:
            for fmt, margins, number, row in _with_format(source, cfg, report):
                report.rows_read += 1
                progress.advance()
                try:
                    if isinstance(row, UnreadableRow):
                        raise BadRow("(row)", row.reason)
                    example = to_example(row, fmt, cfg, margins)
                    if kind is not None and example.kind != kind:
                        raise DataError(
                            f"{source}: {example.kind} rows cannot be mixed with {kind} rows of earlier files"
                        )
                    if cfg.holdout and holdout_side(example.prompt, cfg.holdout) != cfg.part:
                        report.other_part += 1
                        continue
                    tokens = tokenization(example)
                except BadRow as bad:
                    if cfg.on_bad_row == "error":
                        where = f"field {bad.field!r}: " if bad.field != "(row)" else ""
                        raise DataError(
                            f"{source}: row {number}: {where}{bad.reason} "
                            "(set data.on_bad_row=skip to skip such rows; they are written to skipped_rows.jsonl)"
                        ) from None
                    data = row.raw if isinstance(row, UnreadableRow) else row
                    report.skipped.append(_skip_entry("bad_row", source, number, bad.field, bad.reason, data))
                    continue
                kind = example.kind
                if tokens.truncated:
                    report.truncated_rows.append(
                        {
                            "source": source,
                            "row": number,
                            "prompt_tokens": [tokens.prompt_length, len(tokens.prompt_ids)],
                            "completion_tokens": [
                                [n, len(c)]
                                for n, c in zip(tokens.completion_lengths, tokens.completion_ids, strict=True)
                            ],
                        }
                    )
                if any(len(c) == 0 for c in tokens.completion_ids):
                    reason = (
                        f"no room left for the completion under max_length={cfg.max_length} "
                        f"(prompt has {len(tokens.prompt_ids)} tokens)"
                    )
                    report.skipped.append(_skip_entry("empty_after_truncation", source, number, "prompt", reason, row))
                    continue
                items.append(_item(len(items), source, number, example.kind, tokens, example.label))
                if example.margin is not None:
                    items[-1]["margin"] = example.margin
    report.rows_kept = len(items)
    if not items:
        raise DataError(f"no usable rows in {', '.join(cfg.paths)} ({report.summary()})")
    return items, kind, report


def _check_bad_share(cfg: DataConfig, report: DataReport, where: str) -> None:
    share = len(report.skipped) / max(report.rows_read, 1)
    if share > cfg.max_bad_fraction:
        raise DataError(
            f"{', '.join(cfg.paths)}: {len(report.skipped)} of {report.rows_read} rows ({share:.1%}) could not be "
            "used, more than "
            f"data.max_bad_fraction={cfg.max_bad_fraction:g}: {report.summary()}{where}. Fix the data or the "
            "settings (columns, format, max_length), or raise data.max_bad_fraction"
        )


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    if rows:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            for entry in rows:
                f.write(json.dumps(entry, default=str) + "\n")
    elif path.exists():
        path.unlink()  # from an earlier run over other data


def load_dataset_for_training(
    cfg: DataConfig, tokenizer, output_dir: str | Path | None = None, *, quiet: bool = False
) -> TokenizedDataset:
    """Read, validate and tokenise ``cfg.paths``, using the on-disk cache when it matches.

    ``output_dir`` receives ``skipped_rows.jsonl`` when any row was skipped or dropped and
    ``truncated_rows.jsonl`` when any was truncated, and holds the cache (``<output_dir>/cache``)
    unless ``cfg.cache_dir`` is set.
    """
    if not cfg.paths:
        raise DataError("no data: set data.paths to one or more files")
    output = Path(output_dir) if output_dir is not None else None
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else (output / "cache" if output else None)
    sources = [source_fingerprint(p, cfg.split) for p in cfg.paths]
    tokens = tokenizer_fingerprint(tokenizer)
    key = fingerprint({"sources": sources, "tokenizer": tokens, "settings": cfg.model_dump(exclude={"cache_dir"})})
    # what was trained on, wherever the files live and whatever a bad row would have done (checkpoints
    # compare this: alphapo.train.fingerprint lists on_bad_row and max_bad_fraction as safe to change)
    content_key = fingerprint(
        {
            "sources": sources,
            "tokenizer": tokens,
            "settings": cfg.model_dump(exclude={"cache_dir", "paths", "on_bad_row", "max_bad_fraction"}),
        }
    )
    cached = load_entry(cache_dir, key) if cache_dir else None
    if cached is not None:
        items, stored = cached
        report = DataReport(**{k: stored[k] for k in _REPORT_FIELDS if k in stored}, cache_hit=True, part=cfg.part)
        kind = stored["kind"]
    else:
        items, kind, report = _tokenize_all(cfg, tokenizer, quiet)
        if cache_dir:
            save_entry(cache_dir, key, items, {**report.to_json(), "kind": kind})
    where = ""
    if output is not None:
        _write_rows(output / SKIPPED_FILE, report.skipped)
        _write_rows(output / TRUNCATED_FILE, report.truncated_rows)
        files = [
            name for name, rows in ((SKIPPED_FILE, report.skipped), (TRUNCATED_FILE, report.truncated_rows)) if rows
        ]
        where = f" (see {', '.join(str(output / f) for f in files)})" if files else ""
    _check_bad_share(cfg, report, where)
    if not quiet:
        logger.info(report.summary() + where)
    dataset = TokenizedDataset(items, kind, report, key)
    dataset.content_key = content_key
    return dataset
