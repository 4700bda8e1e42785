"""Every reader on small files the test writes; errors name the file and row."""

import pytest

from alphapo.data import DataConfig, load_dataset_for_training
from alphapo.data.readers import UnreadableRow, read_rows
from alphapo.errors import DataError
from tests.data.conftest import PAIRED, write_json, write_jsonl, write_parquet


@pytest.mark.parametrize("kind", ["jsonl", "jsonl.gz", "json", "json-wrapped", "parquet", "saved", "saved-dict"])
def test_each_reader_gives_the_same_rows(tmp_path, kind):
    if kind == "jsonl":
        source = write_jsonl(tmp_path / "d.jsonl", PAIRED)
    elif kind == "jsonl.gz":
        source = write_jsonl(tmp_path / "d.jsonl.gz", PAIRED, gz=True)
    elif kind == "json":
        source = write_json(tmp_path / "d.json", PAIRED)
    elif kind == "json-wrapped":
        source = write_json(tmp_path / "d.json", PAIRED, wrap="data")
    elif kind == "parquet":
        source = write_parquet(tmp_path / "d.parquet", PAIRED)
    else:
        import datasets

        ds = datasets.Dataset.from_list(PAIRED)
        if kind == "saved-dict":
            ds = datasets.DatasetDict({"train": ds, "test": ds.select([0])})
        ds.save_to_disk(str(tmp_path / "saved"))
        source = str(tmp_path / "saved")
    rows = list(read_rows(source, split="train" if kind == "saved-dict" else None))
    assert [n for n, _ in rows] == [1, 2, 3]
    assert [r for _, r in rows] == PAIRED


def test_dataset_dict_needs_a_split(tmp_path):
    import datasets

    datasets.DatasetDict(
        {"a": datasets.Dataset.from_list(PAIRED), "b": datasets.Dataset.from_list(PAIRED)}
    ).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError, match=r"choose one with data.split"):
        list(read_rows(str(tmp_path / "dd")))
    with pytest.raises(DataError, match=r"no split 'c'"):
        list(read_rows(str(tmp_path / "dd"), split="c"))


def test_broken_json_line_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", \n')
    rows = list(read_rows(str(path)))
    assert rows[0] == (1, {"prompt": "a", "chosen": "b", "rejected": "c"})
    number, bad = rows[1]
    assert number == 2 and isinstance(bad, UnreadableRow)
    assert bad.reason == "not valid JSON (Expecting property name enclosed in double quotes at character 18)"
    assert bad.raw.startswith('{"prompt": "a",')


def test_a_control_character_is_named_once(tmp_path):
    path = tmp_path / "ctl.jsonl"
    path.write_text('{"prompt": "a\tb"}\n')  # a raw tab inside a JSON string
    ((_number, bad),) = list(read_rows(str(path)))
    assert bad.reason == "not valid JSON (Invalid control character at character 14)"


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(DataError, match=r"nope.jsonl: no such file or directory"):
        list(read_rows(str(tmp_path / "nope.jsonl")))
    (tmp_path / "d.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unknown file type"):
        list(read_rows(str(tmp_path / "d.csv")))


def test_hub_name_fails_clearly_offline(monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # both libraries read the variable at import time, which happened before this test
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(
        DataError, match=r"alphapo-tests/no-such-dataset: not a local file.*hub failed \(HF_HUB_OFFLINE"
    ):
        list(read_rows("alphapo-tests/no-such-dataset"))


def test_max_rows_reads_only_the_first_rows(tmp_path, tokenizer):
    source = write_jsonl(tmp_path / "d.jsonl", PAIRED)
    ds = load_dataset_for_training(DataConfig(paths=[source], max_rows=2), tokenizer, tmp_path, quiet=True)
    assert len(ds) == 2 and ds.report.rows_read == 2
