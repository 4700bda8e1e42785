"""Readers: every supported source as an iterator of ``(row_number, dict)``.

Row numbers are 1-based positions in the source (the line number for JSONL), so an error message
can point at the exact row. Supported: ``.jsonl`` and ``.jsonl.gz`` (read line by line, so a broken
line is reported with its number), ``.json`` (a list of objects, or an object holding one list),
``.parquet``, a directory written by ``datasets.Dataset.save_to_disk`` (or a ``DatasetDict``: pick
it with ``split``), and a Hugging Face dataset name, which needs the hub.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alphapo.errors import DataError

Row = dict[str, Any]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # "name" or "org/name"


def _jsonl(path: Path) -> Iterator[tuple[int, Row]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: row {number}: not valid JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}: row {number}: expected a JSON object, got {type(row).__name__}")
            yield number, row


def _json(path: Path) -> Iterator[tuple[int, Row]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(f"{path}: expected a list of rows, or an object holding exactly one list")
        data = lists[0]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of rows, got {type(data).__name__}")
    for number, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {number}: expected an object, got {type(row).__name__}")
        yield number, row


def _parquet(path: Path) -> Iterator[tuple[int, Row]]:
    import pyarrow.parquet as pq

    number = 0
    for batch in pq.ParquetFile(path).iter_batches():
        for row in batch.to_pylist():
            number += 1
            yield number, row


def _saved_dataset(path: Path, split: str | None) -> Iterator[tuple[int, Row]]:
    import datasets

    loaded = datasets.load_from_disk(str(path))
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


def read_rows(source: str, split: str | None = None, max_rows: int | None = None) -> Iterator[tuple[int, Row]]:
    """Rows of ``source`` (a path or a hub dataset name) with their 1-based row numbers."""
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
