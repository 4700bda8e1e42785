"""The stage files of the pipeline (prompts, samples, judged samples, pairs, generations): reading them
with errors that name the stage, file, row and field, and writing them atomically.

    rows = read_jsonl("samples.jsonl", "judge", required=("prompt", "completions"))
    write_jsonl("judged.jsonl", rows)

Every stage (``sample``, ``judge``, ``pair``, ``eval``, the pipeline) reads and writes through here, so
no stage reaches into another for these helpers.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from alphapo import files
from alphapo.errors import DataError, StageError


def read_jsonl(path: str | Path, stage: str, required: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Rows of a stage's input file (JSONL, or any format the data layer reads); a clear error naming
    the stage, file, row and field when one is unusable."""
    from alphapo.data.readers import UnreadableRow, read_rows

    path = Path(path)
    if not path.is_file():
        raise StageError(f"{stage}: input file {path} does not exist (did the previous stage run?)")
    rows = []
    try:
        for number, row in read_rows(str(path)):
            if isinstance(row, UnreadableRow):
                raise StageError(f"{stage}: {path}: row {number}: {row.reason}")
            for field in required:
                if field not in row:
                    raise StageError(f"{stage}: {path}: row {number}: missing field {field!r}")
            rows.append(row)
    except DataError as err:
        raise StageError(f"{stage}: {err}") from None
    if not rows:
        raise StageError(f"{stage}: {path} has no rows")
    return rows


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write rows atomically (temporary file, then rename)."""
    files.write_jsonl(path, rows)
