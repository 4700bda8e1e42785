"""Shared fixtures: tokenizers trained locally and saved/loaded from disk, and file writers."""

import gzip
import json

import pytest

from alphapo.models import CHAT_TEMPLATE, train_bpe_tokenizer

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Human: What is two plus two? Assistant: Two plus two is four.",
    "I like green apples and red apples.",
    "Please explain the answer step by step.",
    "The answer is 42 because six times seven is 42.",
] * 20


def _saved(tokenizer, path):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    """Adds BOS by itself; its chat template does not write one."""
    return _saved(train_bpe_tokenizer(SENTENCES, vocab_size=300), tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="session")
def bos_template_tokenizer(tmp_path_factory):
    """Adds BOS by itself AND its chat template writes one: the classic double-BOS trap."""
    tok = train_bpe_tokenizer(SENTENCES, vocab_size=300, chat_template="{{ bos_token }}" + CHAT_TEMPLATE)
    return _saved(tok, tmp_path_factory.mktemp("tok_bos"))


@pytest.fixture(scope="session")
def no_bos_tokenizer(tmp_path_factory):
    return _saved(train_bpe_tokenizer(SENTENCES, vocab_size=300, add_bos=False), tmp_path_factory.mktemp("tok_nb"))


def write_jsonl(path, rows, gz=False):
    opener = gzip.open if gz else open
    with opener(path, "wt") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return str(path)


def write_json(path, rows, wrap=None):
    path.write_text(json.dumps({wrap: rows} if wrap else rows))
    return str(path)


def write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


PAIRED = [
    {"prompt": "What is two plus two?", "chosen": " Four.", "rejected": " Five."},
    {"prompt": "Name a fruit.", "chosen": " An apple.", "rejected": " A dog."},
    {"prompt": "Explain step by step.", "chosen": " First, then.", "rejected": " No."},
]

CONVERSATIONAL = [
    {
        "prompt": [{"role": "user", "content": "What is two plus two?"}],
        "chosen": [{"role": "assistant", "content": "Four."}],
        "rejected": [{"role": "assistant", "content": "Five."}],
    },
    {
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit."}],
        "chosen": [{"role": "assistant", "content": "An apple."}],
        "rejected": [{"role": "assistant", "content": "A dog."}],
    },
]
