"""Every bad-row case, in both policies, with the message checked; nothing disappears silently."""

import json

import pytest

from alphapo.data import DataConfig, load_dataset_for_training
from alphapo.errors import DataError
from tests.data.conftest import PAIRED, write_jsonl

USER = {"role": "user", "content": "Hi"}
BAD_ROWS = [
    ({"prompt": "Q?", "chosen": " A."}, "rejected", "missing column"),
    ({"prompt": "Q?", "chosen": 3, "rejected": " A."}, "chosen", "expected a string or a list of messages, got int"),
    ({"prompt": "Q?", "chosen": "   ", "rejected": " A."}, "chosen", "empty text"),
    ({"prompt": "Q?", "chosen": " Same.", "rejected": " Same."}, "rejected", "identical to chosen"),
    (
        {
            "prompt": [{"role": "wizard", "content": "Hi"}],
            "chosen": [{"role": "assistant", "content": "A"}],
            "rejected": [{"role": "assistant", "content": "B"}],
        },
        "prompt",
        "unknown role 'wizard'",
    ),
    (
        {
            "prompt": [USER],
            "chosen": [{"role": "assistant", "content": "A"}, USER],
            "rejected": [{"role": "assistant", "content": "B"}],
        },
        "chosen",
        "ends with a 'user' turn, not an assistant turn",
    ),
    ({"prompt": "Q?", "chosen": None, "rejected": " A."}, "chosen", "is null"),
    (
        {"prompt": "Q?", "chosen": [{"role": "assistant", "content": "A"}], "rejected": " B."},
        "prompt",
        "mixes text and conversations",
    ),
]


def write(tmp_path, bad):
    return write_jsonl(tmp_path / "d.jsonl", [PAIRED[0], bad, PAIRED[1]])


@pytest.mark.parametrize(("bad", "field", "reason"), BAD_ROWS, ids=[r for _, _, r in BAD_ROWS])
def test_error_policy_names_file_row_and_field(tmp_path, tokenizer, bad, field, reason):
    source = write(tmp_path, bad)
    with pytest.raises(DataError) as info:
        load_dataset_for_training(
            DataConfig(paths=[source], on_bad_row="error"), tokenizer, tmp_path / "out", quiet=True
        )
    message = str(info.value)
    assert message.startswith(f"{source}: row 2: field '{field}': ")
    assert reason in message and "on_bad_row=skip" in message


@pytest.mark.parametrize(("bad", "field", "reason"), BAD_ROWS, ids=[r for _, _, r in BAD_ROWS])
def test_skip_policy_records_every_skipped_row(tmp_path, tokenizer, capsys, bad, field, reason):
    source = write(tmp_path, bad)
    cfg = DataConfig(paths=[source], max_bad_fraction=0.5)  # skip is the default
    ds = load_dataset_for_training(cfg, tokenizer, tmp_path / "out")
    assert len(ds) == 2 and ds.report.rows_read == 3
    lines = (tmp_path / "out" / "skipped_rows.jsonl").read_text().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["source"] == source and entry["row"] == 2 and entry["field"] == field
    assert reason in entry["reason"] and entry["data"] == json.loads(json.dumps(bad))
    printed = capsys.readouterr().err
    assert f"data: 3 rows read, 2 kept, 1 skipped (1 x {field}: " in printed and "skipped_rows.jsonl" in printed


def test_conversations_that_differ_before_the_last_turn(tmp_path, tokenizer):
    rows = [
        {
            "chosen": [USER, {"role": "assistant", "content": "A"}],
            "rejected": [{"role": "user", "content": "Other"}, {"role": "assistant", "content": "B"}],
        }
    ]
    source = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError, match="row 1: field 'rejected': chosen and rejected differ before"):
        load_dataset_for_training(
            DataConfig(paths=[source], on_bad_row="error"), tokenizer, tmp_path / "out", quiet=True
        )


def test_no_usable_rows_is_an_error(tmp_path, tokenizer):
    source = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Q?", "chosen": " A.", "rejected": " A."}])
    with pytest.raises(DataError, match="no usable rows"):
        load_dataset_for_training(DataConfig(paths=[source], on_bad_row="skip"), tokenizer, tmp_path / "o", quiet=True)


def test_implicit_text_without_marker(tmp_path, tokenizer):
    source = write_jsonl(tmp_path / "d.jsonl", [{"chosen": "Hello there", "rejected": "Hello world"}])
    with pytest.raises(DataError, match=r"no shared prompt.*turn marker"):
        load_dataset_for_training(DataConfig(paths=[source]), tokenizer, tmp_path / "o", quiet=True)


def test_a_short_max_length_derives_the_prompt_length():
    """TRL-named recipes often set only max_length: the default prompt length (512) follows it."""
    from alphapo.data import DataConfig

    assert DataConfig(max_length=160).max_prompt_length == 80
    assert DataConfig().max_prompt_length == 512 and DataConfig(max_length=2048).max_prompt_length == 512
    with pytest.raises(ValueError, match="must be below max_length"):
        DataConfig(max_length=160, max_prompt_length=512)  # given explicitly: still an error
