"""Every class of broken input a user's file can hold, in both ``on_bad_row`` modes.

For each: ``error`` mode raises a :class:`DataError` naming the file (and the row where there is one);
``skip`` mode either skips the bad rows (each recorded in ``skipped_rows.jsonl`` with its reason,
the good ones kept) or, for a file that cannot be read at all, raises the same clear error. Never a
raw traceback, never a silently lost row: ``rows_read == rows_kept + skipped`` in every case.
"""

import gzip
import json

import pytest

from alphapo.data import DataConfig, load_dataset_for_training
from alphapo.errors import DataError
from tests.data.conftest import PAIRED, write_jsonl, write_parquet

GOOD = [json.dumps(r).encode() for r in PAIRED * 4]  # 12 good rows: one bad row stays under 10%


def _lines(path, lines, gz=False):
    data = b"".join(line + b"\n" for line in lines)
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return str(path)


def corrupt_gzip(tmp):
    data = bytearray(gzip.compress(b"".join(line + b"\n" for line in GOOD * 20), mtime=0))
    for i in range(len(data) // 2, len(data) // 2 + 8):
        data[i] ^= 0xFF
    (tmp / "d.jsonl.gz").write_bytes(bytes(data))
    return str(tmp / "d.jsonl.gz")


def truncated_gzip(tmp):
    data = gzip.compress(b"".join(line + b"\n" for line in GOOD * 20), mtime=0)
    (tmp / "d.jsonl.gz").write_bytes(data[: len(data) * 2 // 3])
    return str(tmp / "d.jsonl.gz")


def plain_named_gz(tmp):
    return _lines(tmp / "d.jsonl.gz", GOOD)


def non_utf8(tmp):
    bad = json.dumps({"prompt": "Q?", "chosen": " A", "rejected": " B"}).encode().replace(b" A", b" \xff\xfeA")
    return _lines(tmp / "d.jsonl", [*GOOD[:5], bad, *GOOD[5:]])


def bom(tmp):
    return _lines(tmp / "d.jsonl", [b"\xef\xbb\xbf" + GOOD[0], *GOOD[1:]])


def missing_column(tmp):
    return _lines(tmp / "d.jsonl", [*GOOD[:5], json.dumps({"prompt": "Q?", "chosen": " A"}).encode(), *GOOD[5:]])


def bad_first_row(tmp):  # the format must be detected past it
    return _lines(tmp / "d.jsonl", [json.dumps({"prompt": "Q?", "chosen": " A"}).encode(), *GOOD])


def wrong_type(tmp):
    return _lines(tmp / "d.jsonl", [*GOOD, json.dumps({"prompt": "Q?", "chosen": ["x"], "rejected": " B"}).encode()])


def empty_text(tmp):
    return _lines(tmp / "d.jsonl", [*GOOD, json.dumps({"prompt": "Q?", "chosen": "  ", "rejected": " B"}).encode()])


def empty_after_prompt(tmp):  # HH-RLHF's rows whose chosen answer is nothing after the shared prompt
    rows = [
        {
            "chosen": f"\n\nHuman: {r['prompt']}\n\nAssistant:{r['chosen']}",
            "rejected": f"\n\nHuman: {r['prompt']}\n\nAssistant:{r['rejected']}",
        }
        for r in PAIRED * 4
    ]
    rows.insert(3, {"chosen": "\n\nHuman: Hi\n\nAssistant:", "rejected": "\n\nHuman: Hi\n\nAssistant: Go away."})
    return write_jsonl(tmp / "d.jsonl", rows)


def identical_pair(tmp):
    return _lines(tmp / "d.jsonl", [*GOOD, json.dumps({"prompt": "Q?", "chosen": " S", "rejected": " S"}).encode()])


def bad_role(tmp):
    row = {
        "prompt": [{"role": "bot", "content": "Hi"}],
        "chosen": [{"role": "assistant", "content": "A"}],
        "rejected": [{"role": "assistant", "content": "B"}],
    }
    return _lines(tmp / "d.jsonl", [*GOOD, json.dumps(row).encode()])


def invalid_json(tmp):
    return _lines(tmp / "d.jsonl", [*GOOD[:2], b'{"prompt": "Q?", "chosen": " A",', *GOOD[2:]])


def null_row(tmp):
    return _lines(tmp / "d.jsonl", [*GOOD[:2], b"null", *GOOD[2:]])


def lone_surrogate(tmp):
    return _lines(tmp / "d.jsonl", [*GOOD, b'{"prompt": "Q?", "chosen": " A \\ud800 B", "rejected": " C"}'])


def json_array_as_jsonl(tmp):
    return _lines(tmp / "d.jsonl", [json.dumps(PAIRED).encode()])


def empty_file(tmp):
    (tmp / "d.jsonl").write_bytes(b"")
    return str(tmp / "d.jsonl")


def garbage_parquet(tmp):
    (tmp / "d.parquet").write_bytes(b"PAR1 this is not parquet at all" * 10)
    return str(tmp / "d.parquet")


def parquet_wrong_types(tmp):
    rows = [*PAIRED * 4, {"prompt": "Q?", "chosen": None, "rejected": " B"}]
    return write_parquet(tmp / "d.parquet", rows)


def not_a_dataset_dir(tmp):
    (tmp / "folder").mkdir()
    (tmp / "folder" / "notes.txt").write_text("hello")
    return str(tmp / "folder")


def too_many_bad(tmp):  # 3 of 12 rows bad: over the default max_bad_fraction of 0.1
    return _lines(tmp / "d.jsonl", [*GOOD[:9], b"{", b"[1]", b"null"])


# name -> (writer, what error mode says, what skip mode does: ("error", match) or ("skip", kept, reason))
CASES = {
    "corrupt gzip": (
        corrupt_gzip,
        r"d.jsonl.gz: cannot read (after row \d+|before its first row): the compressed data is corrupt",
        None,
    ),
    "truncated gzip": (truncated_gzip, r"d.jsonl.gz: cannot read after row \d+: .*truncated", None),
    "plain JSONL named .gz": (plain_named_gz, r"d.jsonl.gz: cannot read before its first row: not a gzip file", None),
    "non-UTF-8 bytes": (non_utf8, r"d.jsonl: row 6: not valid UTF-8 \(byte 0xff", ("skip", 12, "not valid UTF-8")),
    "byte-order mark": (bom, None, ("skip", 12, None)),
    "missing column": (missing_column, r"row 6: field 'rejected': missing column", ("skip", 12, "missing column")),
    "bad first row": (bad_first_row, r"row 1: field 'rejected': missing column", ("skip", 12, "missing column")),
    "wrong type": (wrong_type, r"row 13: field 'chosen': message 0 is not a", ("skip", 12, "message 0 is not a")),
    "empty text": (empty_text, r"row 13: field 'chosen': empty text", ("skip", 12, "empty text")),
    "empty completion after the shared prompt": (
        empty_after_prompt,
        r"row 4: field 'chosen': empty text after the shared prompt",
        ("skip", 12, "empty text after the shared prompt"),
    ),
    "identical pair": (identical_pair, r"row 13: field 'rejected': identical to chosen", ("skip", 12, "identical")),
    "bad role": (bad_role, r"row 13: field 'prompt': message 0 has unknown role 'bot'", ("skip", 12, "unknown role")),
    "invalid JSON line": (invalid_json, r"d.jsonl: row 3: not valid JSON", ("skip", 12, "not valid JSON")),
    "null row": (null_row, r"d.jsonl: row 3: expected a JSON object, got null", ("skip", 12, "got null")),
    "lone surrogate": (
        lone_surrogate,
        r"row 13: field 'chosen': not valid Unicode: an unpaired surrogate \\ud800",
        ("skip", 12, "unpaired surrogate"),
    ),
    "JSON array in a .jsonl file": (
        json_array_as_jsonl,
        r"d.jsonl: row 1: expected a JSON object, got an array \(is this a .json file",
        ("error", r"no usable rows.*got an array"),
    ),
    "empty file": (empty_file, r"d.jsonl: no rows", ("error", r"d.jsonl: no rows")),
    "garbage named .parquet": (garbage_parquet, r"d.parquet: not a readable Parquet file", None),
    "parquet with a null text": (parquet_wrong_types, r"row 13: field 'chosen': is null", ("skip", 12, "is null")),
    "folder that is not a dataset": (not_a_dataset_dir, r"folder: a directory, but not a dataset written by", None),
    "too many bad rows": (
        too_many_bad,
        r"d.jsonl: row 10: not valid JSON",
        ("error", r"3 of 12 rows \(25.0%\) could not be used, more than data.max_bad_fraction=0.1"),
    ),
}


def _load(source, tokenizer, out, **cfg):
    return load_dataset_for_training(DataConfig(paths=[source], **cfg), tokenizer, out, quiet=True)


@pytest.mark.parametrize("name", list(CASES))
def test_error_mode(tmp_path, tokenizer, name):
    writer, error, _ = CASES[name]
    source = writer(tmp_path)
    if error is None:  # nothing wrong for this mode
        assert len(_load(source, tokenizer, tmp_path / "out", on_bad_row="error")) == 12
        return
    with pytest.raises(DataError, match=error) as info:
        _load(source, tokenizer, tmp_path / "out", on_bad_row="error")
    assert source in str(info.value)


@pytest.mark.parametrize("name", list(CASES))
def test_skip_mode(tmp_path, tokenizer, name):
    writer, error, skip = CASES[name]
    source = writer(tmp_path)
    if skip is None or skip[0] == "error":  # a file that cannot be read at all, or too much of it is bad
        with pytest.raises(DataError, match=error if skip is None else skip[1]) as info:
            _load(source, tokenizer, tmp_path / "out")
        assert source in str(info.value)
        return
    _, kept, reason = skip
    ds = _load(source, tokenizer, tmp_path / "out")
    report = ds.report
    assert len(ds) == kept and report.rows_read == kept + len(report.skipped)
    skipped_file = tmp_path / "out" / "skipped_rows.jsonl"
    if reason is None:
        assert not report.skipped and not skipped_file.exists()
        return
    entries = [json.loads(line) for line in skipped_file.read_text().splitlines()]
    assert len(entries) == 1 and reason in entries[0]["reason"] and entries[0]["source"] == source


def test_a_megabyte_line_is_read_and_truncated(tmp_path, tokenizer):
    long = {"prompt": "apples " * 150_000, "chosen": " Four.", "rejected": " Five."}
    source = _lines(tmp_path / "d.jsonl", [*GOOD, json.dumps(long).encode()])
    ds = _load(source, tokenizer, tmp_path / "out", max_length=64, max_prompt_length=32)
    assert len(ds) == 13 and len(ds[12]["prompt_ids"]) == 32
    listed = [json.loads(line) for line in (tmp_path / "out" / "truncated_rows.jsonl").read_text().splitlines()]
    assert [e["row"] for e in listed] == [13]
    assert listed[0]["prompt_tokens"][0] > 100_000 and listed[0]["prompt_tokens"][1] == 32


def test_truncation_report_splits_prompts_and_completions(tmp_path, tokenizer):
    rows = [
        {"prompt": "What is two plus two?", "chosen": " Four.", "rejected": " Five."},  # fits
        {"prompt": "apples " * 40, "chosen": " Four.", "rejected": " Five."},  # prompt cut only
        {"prompt": "Q?", "chosen": " pears" * 40, "rejected": " No."},  # one completion cut
    ]
    ds = _load(
        write_jsonl(tmp_path / "d.jsonl", rows * 4), tokenizer, tmp_path / "out", max_length=32, max_prompt_length=16
    )
    report = ds.report
    assert (report.truncated, report.truncated_prompts, report.truncated_completions) == (8, 4, 4)
    listed = [json.loads(line) for line in (tmp_path / "out" / "truncated_rows.jsonl").read_text().splitlines()]
    assert [e["row"] for e in listed] == [2, 3, 5, 6, 8, 9, 11, 12]
    prompt_cut, completion_cut = listed[0], listed[1]
    assert prompt_cut["prompt_tokens"][1] == 16 and prompt_cut["prompt_tokens"][0] > 16
    assert all(before == after for before, after in prompt_cut["completion_tokens"])
    (chosen_before, chosen_after), (rej_before, rej_after) = completion_cut["completion_tokens"]
    assert chosen_after == 32 - completion_cut["prompt_tokens"][1] < chosen_before and rej_before == rej_after
    # the kept sequence fills max_length exactly
    item = ds[2]
    assert len(item["prompt_ids"]) + len(item["chosen_ids"]) == 32
    assert "8 truncated (4 prompts, 4 completions cut)" in report.summary()


def test_threshold_is_an_option(tmp_path, tokenizer):
    source = too_many_bad(tmp_path)
    ds = _load(source, tokenizer, tmp_path / "out", max_bad_fraction=0.3)
    assert len(ds) == 9 and len(ds.report.skipped) == 3
    assert ds.report.reasons() == {
        "(row): not valid JSON (Expecting property name enclosed in double quotes at character 3)": 1,
        "(row): expected a JSON object, got an array (is this a .json file named .jsonl?)": 1,
        "(row): expected a JSON object, got null": 1,
    }


def test_cli_reports_a_broken_file_without_a_traceback(tmp_path, tokenizer):
    import subprocess
    import sys

    tokenizer.save_pretrained(tmp_path / "tok")
    source = corrupt_gzip(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"model: {{tiny: {{hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2}}}}\n"
        f"tokenizer: {tmp_path / 'tok'}\ndata: {{paths: [{source}]}}\noutput_dir: {tmp_path / 'run'}\n"
    )
    done = subprocess.run([sys.executable, "-m", "alphapo", "train", str(recipe)], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"{source}: cannot read before its first row: the compressed data is corrupt" in done.stderr
