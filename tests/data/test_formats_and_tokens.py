"""Formats, chat templates, BOS/EOS rules and truncation, checked token by token."""

import pytest

from alphapo.data import Collator, DataConfig, load_dataset_for_training
from alphapo.errors import DataError
from tests.data.conftest import CONVERSATIONAL, PAIRED, write_jsonl


def load(tmp_path, rows, tokenizer, **cfg):
    source = write_jsonl(tmp_path / "d.jsonl", rows)
    cfg.setdefault("prompt_format", "plain")  # these tests check the rules for text as is
    return load_dataset_for_training(DataConfig(paths=[source], **cfg), tokenizer, tmp_path / "out", quiet=True)


def text(tokenizer, ids):
    return tokenizer.decode(ids, skip_special_tokens=False)


def test_explicit_standard(tmp_path, tokenizer):
    ds = load(tmp_path, PAIRED, tokenizer)
    assert ds.kind == "paired" and ds.report.formats[str(tmp_path / "d.jsonl")] == "paired"
    item = ds[0]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    assert item["prompt_ids"][0] == bos and item["prompt_ids"].count(bos) == 1
    assert text(tokenizer, item["prompt_ids"][1:]) == "What is two plus two?"
    assert item["chosen_ids"][-1] == eos and item["chosen_ids"].count(eos) == 1
    assert text(tokenizer, item["chosen_ids"][:-1]) == " Four."
    assert text(tokenizer, item["rejected_ids"][:-1]) == " Five."


def test_conversational_uses_the_chat_template(tmp_path, tokenizer):
    ds = load(tmp_path, CONVERSATIONAL, tokenizer)
    item = ds[1]
    assert text(tokenizer, item["prompt_ids"]) == "<s><|system|>Be brief.</s><|user|>Name a fruit.</s><|assistant|>"
    assert text(tokenizer, item["chosen_ids"]) == "An apple.</s>"
    assert item["chosen_ids"].count(tokenizer.eos_token_id) == 1


def test_template_writing_bos_gives_one_bos(tmp_path, bos_template_tokenizer):
    ds = load(tmp_path, CONVERSATIONAL, bos_template_tokenizer)
    bos = bos_template_tokenizer.bos_token_id
    for item in ds:
        assert item["prompt_ids"][0] == bos
        assert item["prompt_ids"].count(bos) == 1  # not two: template's BOS + tokenizer's BOS


def test_tokenizer_without_bos_gets_none(tmp_path, no_bos_tokenizer):
    ds = load(tmp_path, PAIRED, no_bos_tokenizer)
    assert no_bos_tokenizer.bos_token_id not in ds[0]["prompt_ids"]


def test_eos_once_even_when_the_text_has_one(tmp_path, tokenizer):
    rows = [{"prompt": "Name a fruit.", "chosen": " An apple.</s>", "rejected": " A dog.</s></s>"}]
    item = load(tmp_path, rows, tokenizer)[0]
    for key in ("chosen_ids", "rejected_ids"):
        assert item[key][-1] == tokenizer.eos_token_id and item[key].count(tokenizer.eos_token_id) == 1


def test_implicit_prompt_hh_style(tmp_path, tokenizer):
    rows = [
        {
            "chosen": "\n\nHuman: What is two plus two?\n\nAssistant: Four.\n\nHuman: Sure?\n\nAssistant: Yes, four.",
            "rejected": "\n\nHuman: What is two plus two?\n\nAssistant: Four.\n\nHuman: Sure?\n\nAssistant: No, five.",
        }
    ]
    ds = load(tmp_path, rows, tokenizer)
    assert ds.report.formats[str(tmp_path / "d.jsonl")] == "implicit"
    item = ds[0]
    assert text(tokenizer, item["prompt_ids"][1:]).endswith("\n\nHuman: Sure?\n\nAssistant:")
    assert text(tokenizer, item["chosen_ids"][:-1]) == " Yes, four."
    assert text(tokenizer, item["rejected_ids"][:-1]) == " No, five."


def test_implicit_prompt_conversational(tmp_path, tokenizer):
    rows = [
        {
            "chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
            "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go away."}],
        }
    ]
    item = load(tmp_path, rows, tokenizer)[0]
    assert text(tokenizer, item["prompt_ids"]) == "<s><|user|>Hi</s><|assistant|>"
    assert text(tokenizer, item["rejected_ids"]) == "Go away.</s>"


def test_unpaired_and_sft_formats(tmp_path, tokenizer):
    unpaired = load(
        tmp_path,
        [{"prompt": "Q?", "completion": " Yes.", "label": True}, {"prompt": "Q?", "completion": " No.", "label": 0}],
        tokenizer,
    )
    assert unpaired.kind == "unpaired" and [it["label"] for it in unpaired] == [True, False]
    batch = Collator(tokenizer.pad_token_id)([unpaired[0], unpaired[1]])
    assert batch["label"].tolist() == [True, False] and batch["input_ids"].shape[0] == 2
    sft = load(
        tmp_path,
        [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo."}]}],
        tokenizer,
    )
    assert sft.kind == "sft" and text(tokenizer, sft[0]["completion_ids"]) == "Yo.</s>"


def test_column_mapping_and_format_override(tmp_path, tokenizer):
    rows = [{"q": "Name a fruit.", "good": " An apple.", "bad": " A dog."}]
    ds = load(tmp_path, rows, tokenizer, prompt_column="q", chosen_column="good", rejected_column="bad")
    assert text(tokenizer, ds[0]["chosen_ids"][:-1]) == " An apple."
    with pytest.raises(DataError, match="cannot tell the data format from its columns"):
        load(tmp_path, rows, tokenizer)
    with pytest.raises(DataError, match=r"row 1: field 'prompt': missing column"):
        load(tmp_path, [{"chosen": "a", "rejected": "b"}], tokenizer, format="paired", on_bad_row="error")


def test_labels_mask_prompt_and_padding(tmp_path, tokenizer):
    ds = load(tmp_path, PAIRED, tokenizer)
    batch = Collator(tokenizer.pad_token_id, pad_to_multiple_of=8)([ds[0], ds[1]])
    assert batch["input_ids"].shape[0] == 4 and batch["input_ids"].shape[1] % 8 == 0
    for row, item, key in [(0, ds[0], "chosen_ids"), (1, ds[1], "chosen_ids"), (2, ds[0], "rejected_ids")]:
        n_prompt, n = len(item["prompt_ids"]), len(item["prompt_ids"]) + len(item[key])
        assert (batch["labels"][row, :n_prompt] == -100).all()
        assert batch["labels"][row, n_prompt:n].tolist() == item[key]
        assert (batch["labels"][row, n:] == -100).all() and (batch["attention_mask"][row, n:] == 0).all()
    assert batch["index"].tolist() == [0, 1]


def test_truncation_keep_end_keeps_bos_and_latest_tokens(tmp_path, tokenizer):
    long_prompt = "The quick brown fox jumps over the lazy dog. " * 10 + "Name a fruit."
    ds = load(
        tmp_path,
        [{"prompt": long_prompt, "chosen": " An apple.", "rejected": " A dog."}],
        tokenizer,
        max_prompt_length=8,
        max_length=12,
    )
    item = ds[0]
    full = tokenizer(long_prompt, add_special_tokens=False)["input_ids"]
    assert len(item["prompt_ids"]) == 8 and item["prompt_ids"][0] == tokenizer.bos_token_id
    assert item["prompt_ids"][1:] == full[-7:]  # BOS kept, then the latest 7 tokens
    assert len(item["prompt_ids"]) + len(item["chosen_ids"]) <= 12
    assert ds.report.truncated == 1
    start = load(
        tmp_path,
        [{"prompt": long_prompt, "chosen": " An apple.", "rejected": " A dog."}],
        tokenizer,
        max_prompt_length=8,
        truncation_mode="keep_start",
    )[0]
    assert start["prompt_ids"] == [tokenizer.bos_token_id, *full[:7]]


def test_completion_truncated_to_zero_is_dropped_and_recorded(tmp_path, tokenizer):
    import json

    long_prompt = "The quick brown fox jumps over the lazy dog. " * 10
    rows = [*PAIRED, {"prompt": long_prompt, "chosen": " An apple.", "rejected": " A dog."}]
    ds = load(tmp_path, rows, tokenizer, max_length=16, max_prompt_length=None, max_bad_fraction=0.5)
    assert len(ds) == 3 and ds.report.rows_read == 4
    skipped = [json.loads(line) for line in (tmp_path / "out" / "skipped_rows.jsonl").read_text().splitlines()]
    assert len(skipped) == 1 and skipped[0]["kind"] == "empty_after_truncation" and skipped[0]["row"] == 4
    assert skipped[0]["data"]["prompt"] == long_prompt
    assert "1 skipped (1 x prompt: no room left for the completion under max_length=16" in ds.report.summary()


def test_no_template_for_conversations_is_a_clear_error(tmp_path):
    from alphapo.errors import ConfigError
    from alphapo.models import train_bpe_tokenizer
    from tests.data.conftest import SENTENCES

    tok = train_bpe_tokenizer(SENTENCES, vocab_size=300, chat_template=None)
    with pytest.raises(ConfigError, match="needs a tokenizer with a chat template"):
        load(tmp_path, CONVERSATIONAL, tok)
