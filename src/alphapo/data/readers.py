"""Readers: every supported source as an iterator of ``(row_number, row)``.

Row numbers are 1-based positions in the source (the line number for JSONL), so a message can point
at the exact row. A row that cannot be read (invalid JSON, bytes that are not UTF-8, a JSON value that
is not an object) comes as an :class:`UnreadableRow` with the reason, so the caller can skip it like
any other bad row; a file that cannot be read at all (a corrupt or truncated gzip stream, a file that
is not Parquet, a directory that ``datasets`` did not write) raises a :class:`DataError` naming it.

Supported: ``.jsonl``/``.ndjson`` and ``.jsonl.gz`` (read line by line), ``.json`` (a list of
objects, or an object holding one list), ``.parquet``, a directory written by
``datasets.Dataset.save_to_disk`` (or a ``DatasetDict``: pick it with ``split``), and a Hugging Face
dataset name, which needs the hub.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alphapo.errors import DataError

Row = dict[str, Any]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # "name" or "org/name"
_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number"}


@dataclass
class UnreadableRow:
    """A row the reader could not turn into a dict: ``reason`` says why, ``raw`` holds its text."""

    reason: str
    raw: str


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _parse_line(raw: bytes, first: bool) -> Row | UnreadableRow:
    shown = raw[:200].decode("utf-8", errors="replace")
    try:
        text = raw.decode("utf-8-sig" if first else "utf-8")  # a byte-order mark may open the file
    except UnicodeDecodeError as err:
        return UnreadableRow(f"not valid UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start})", shown)
    try:
        row = json.loads(text)
    except json.JSONDecodeError as err:
        message = err.msg.removesuffix(" at")  # "Invalid control character at" names no place itself
        return UnreadableRow(f"not valid JSON ({message} at character {err.pos + 1})", shown)
    except RecursionError:
        return UnreadableRow("not valid JSON (nested too deeply)", shown)
    if not isinstance(row, dict):
        hint = " (is this a .json file named .jsonl?)" if isinstance(row, list) else ""
        return UnreadableRow(f"expected a JSON object, got {_json_type(row)}{hint}", shown)
    return row


def _jsonl(path: Path) -> Iterator[tuple[int, Row | UnreadableRow]]:
    gz = path.name.lower().endswith(".gz")
    number = 0
    try:
        with gzip.open(path, "rb") if gz else open(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                if raw.strip():
                    yield number, _parse_line(raw, number == 1)
    except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as err:
        if isinstance(err, FileNotFoundError | PermissionError | IsADirectoryError):
            raise DataError(f"{path}: cannot open: {err.strerror}") from None
        where = f"after row {number}" if number else "before its first row"
        if isinstance(err, gzip.BadGzipFile) and not number:
            what = "not a gzip file (is it plain JSONL named .gz?)"
        elif isinstance(err, EOFError):
            what = "the gzip stream ends early: the file is truncated"
        else:
            what = f"the compressed data is corrupt ({type(err).__name__}: {err})"
        raise DataError(f"{path}: cannot read {where}: {what}") from None


def _json(path: Path) -> Iterator[tuple[int, Row | UnreadableRow]]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 (byte 0x{err.object[err.start]:02x} at offset {err.start})") from None
    except json.JSONDecodeError as err:
        hint = " (one object per line? name the file .jsonl)" if err.msg == "Extra data" else ""
        raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}){hint}") from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(f"{path}: expected a list of rows, or an object holding exactly one list")
        data = lists[0]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of rows, got {_json_type(data)}")
    for number, row in enumerate(data, start=1):
        if isinstance(row, dict):
            yield number, row
        else:
            yield number, UnreadableRow(f"expected a JSON object, got {_json_type(row)}", json.dumps(row)[:200])


def _parquet(path: Path) -> Iterator[tuple[int, Row]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches()
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: not a readable Parquet file ({type(err).__name__}: {err})") from None
    number = 0
    try:
        for batch in batches:
            for row in batch.to_pylist():
                number += 1
                yield number, row
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: cannot read past row {number}: {type(err).__name__}: {err}") from None


def _saved_dataset(path: Path, split: str | None) -> Iterator[tuple[int, Row]]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as err:
        raise DataError(
            f"{path}: a directory, but not a dataset written by datasets' save_to_disk "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
            "pass the data file(s) inside it instead"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        if split is None:
            if len(loaded) != 1:
                raise DataError(f"{path}: a DatasetDict with splits {sorted(loaded)}: choose one with data.split")
            split = next(iter(loaded))
        if split not in loaded:
            raise DataError(f"{path}: no split {split!r}; it has {sorted(loaded)}")
        loaded = loaded[split]
    yield from enumerate(loaded, start=1)


def _hub_dataset(name: str, split: str | None) -> Iterator[tuple[int, Row]]:
    import datasets

    try:
        loaded = datasets.load_dataset(name, split=split or "train")
    except Exception as err:  # the hub's errors vary by version; all mean the same thing to the user
        offline = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("HF_DATASETS_OFFLINE")
        hint = " (HF_HUB_OFFLINE is set)" if offline else ""
        raise DataError(
            f"{name}: not a local file or directory, and loading it from the Hugging Face hub failed{hint}: "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}. Offline, download it elsewhere "
            "and pass the saved directory or a JSONL/Parquet file."
        ) from None
    yield from enumerate(loaded, start=1)


def count_rows(source: str) -> int | None:
    """How many rows ``source`` holds, when that is cheap to know (for progress); else None."""
    path = Path(source)
    name = path.name.lower()
    try:
        if path.is_file() and name.endswith((".jsonl", ".ndjson")):
            with open(path, "rb") as f:
                return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
        if path.is_file() and name.endswith(".parquet"):
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
    except Exception:  # a broken file: the reader says why, with its name
        return None
    return None


def read_rows(
    source: str, split: str | None = None, max_rows: int | None = None
) -> Iterator[tuple[int, Row | UnreadableRow]]:
    """Rows of ``source`` (a path or a hub dataset name) with their 1-based row numbers; rows that
    could not be parsed come as :class:`UnreadableRow`."""
    path = Path(source)
    if path.is_dir():
        rows = _saved_dataset(path, split)
    elif path.is_file():
        name = path.name.lower()
        if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
            rows = _jsonl(path)
        elif name.endswith(".json"):
            rows = _json(path)
        elif name.endswith(".parquet"):
            rows = _parquet(path)
        else:
            raise DataError(f"{path}: unknown file type (expected .jsonl, .jsonl.gz, .json or .parquet)")
    elif _HUB_ID.match(source) and not path.suffix:
        rows = _hub_dataset(source, split)
    else:
        raise DataError(f"{source}: no such file or directory")
    for number, row in rows:
        if max_rows is not None and number > max_rows:
            return
        yield number, row
