"""Deterministic length-grouped batches, and the tokenised-data cache: hit and invalidation."""

import pytest

from alphapo.data import DataConfig, length_grouped_batches, load_dataset_for_training
from alphapo.data import dataset as dataset_module
from tests.data.conftest import PAIRED, write_jsonl


def test_batches_are_deterministic_and_cover_every_item_once():
    lengths = [(i * 37) % 101 for i in range(203)]
    a = length_grouped_batches(lengths, 8, seed=3, epoch=0)
    assert a == length_grouped_batches(lengths, 8, seed=3, epoch=0)
    assert a != length_grouped_batches(lengths, 8, seed=3, epoch=1)
    assert a != length_grouped_batches(lengths, 8, seed=4, epoch=0)
    assert sorted(i for b in a for i in b) == list(range(203))
    assert length_grouped_batches(lengths, 8, seed=3, drop_last=True)[-1].__len__() == 8
    assert length_grouped_batches(lengths, 8, seed=0, shuffle=False)[0] == list(range(8))


def test_length_grouping_cuts_padding():
    import random

    lengths = [random.Random(i).randint(10, 500) for i in range(1024)]

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    grouped = length_grouped_batches(lengths, 16, seed=0)
    plain = [list(range(i, i + 16)) for i in range(0, 1024, 16)]
    assert padding(grouped) < 0.25 * padding(plain)


def test_identical_batches_for_the_same_seed(tmp_path, tokenizer):
    from alphapo.data import Collator

    source = write_jsonl(tmp_path / "d.jsonl", PAIRED * 5)
    ds = load_dataset_for_training(DataConfig(paths=[source]), tokenizer, tmp_path, quiet=True)
    collate = Collator(tokenizer.pad_token_id)

    def epoch(seed):
        return [collate([ds[i] for i in b])["input_ids"] for b in length_grouped_batches(ds.lengths(), 4, seed=seed)]

    first, second = epoch(11), epoch(11)
    assert all((a == b).all() for a, b in zip(first, second, strict=True))


@pytest.fixture
def count_tokenizations(monkeypatch):
    calls = []
    original = dataset_module._tokenize_all

    def counting(cfg, tokenizer, quiet):
        calls.append(1)
        return original(cfg, tokenizer, quiet)

    monkeypatch.setattr(dataset_module, "_tokenize_all", counting)
    return calls


def test_cache_hit_and_invalidation(tmp_path, tokenizer, bos_template_tokenizer, count_tokenizations):
    source = write_jsonl(tmp_path / "d.jsonl", PAIRED)
    cfg = DataConfig(paths=[source])
    first = load_dataset_for_training(cfg, tokenizer, tmp_path / "out", quiet=True)
    second = load_dataset_for_training(cfg, tokenizer, tmp_path / "out", quiet=True)
    assert len(count_tokenizations) == 1 and second.report.cache_hit and not first.report.cache_hit
    assert second.items == first.items and second.kind == "paired"
    # settings changed -> re-tokenised
    load_dataset_for_training(
        DataConfig(paths=[source], max_length=64, max_prompt_length=32), tokenizer, tmp_path / "out", quiet=True
    )
    assert len(count_tokenizations) == 2
    # tokenizer changed (its chat template) -> re-tokenised
    load_dataset_for_training(cfg, bos_template_tokenizer, tmp_path / "out", quiet=True)
    assert len(count_tokenizations) == 3
    # data content changed (same path) -> re-tokenised
    write_jsonl(tmp_path / "d.jsonl", PAIRED[:2])
    changed = load_dataset_for_training(cfg, tokenizer, tmp_path / "out", quiet=True)
    assert len(count_tokenizations) == 4 and len(changed) == 2


def test_cache_keeps_the_skipped_rows_report(tmp_path, tokenizer):
    source = write_jsonl(tmp_path / "d.jsonl", [*PAIRED, {"prompt": "Q?", "chosen": " A.", "rejected": " A."}])
    cfg = DataConfig(paths=[source], max_bad_fraction=0.5)
    first = load_dataset_for_training(cfg, tokenizer, tmp_path / "out", quiet=True)
    (tmp_path / "out" / "skipped_rows.jsonl").unlink()
    again = load_dataset_for_training(cfg, tokenizer, tmp_path / "out", quiet=True)
    assert again.report.cache_hit and again.report.skipped == first.report.skipped
    assert (tmp_path / "out" / "skipped_rows.jsonl").exists()


def test_half_written_cache_entry_is_not_trusted(tmp_path, tokenizer, count_tokenizations):
    source = write_jsonl(tmp_path / "d.jsonl", PAIRED)
    cfg = DataConfig(paths=[source])
    load_dataset_for_training(cfg, tokenizer, tmp_path / "out", quiet=True)
    entry = next((tmp_path / "out" / "cache").glob("tokenized-*"))
    (entry / "report.json").unlink()  # as if killed before the report was written
    load_dataset_for_training(cfg, tokenizer, tmp_path / "out", quiet=True)
    assert len(count_tokenizations) == 2
