"""GGUF in: a tiny Llama written as GGUF (with the gguf package, as llama.cpp lays it out) goes through
alphapo's real loading code: dequantised once into a cached directory, logits equal to the original,
trainable through ``model.path``, and the cache is keyed by the file's content."""

import shutil

import pytest
import torch

from alphapo.models import TinyModelSpec, build_tiny_model, train_bpe_tokenizer
from tests.models.gguf_tiny import write_gguf

pytest.importorskip("gguf")

TEXTS = ["The quick brown fox jumps over the lazy dog.", "What is two plus two? Two plus two is four."] * 30


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("gguf")
    train_bpe_tokenizer(TEXTS, vocab_size=300).save_pretrained(root / "tok")
    tokenizer = AutoTokenizer.from_pretrained(root / "tok")
    spec = TinyModelSpec(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    special = {k: getattr(tokenizer, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    spec = spec.model_copy(update={"num_key_value_heads": 2, "vocab_size": len(tokenizer) + 1})  # + <|endoftext|>
    model = build_tiny_model(spec, None, special).eval()
    return model, tokenizer, write_gguf(model, tokenizer, root / "tiny.gguf")


def test_a_gguf_file_becomes_a_cached_directory_with_the_same_logits(tiny, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alphapo.models import gguf as gguf_module
    from alphapo.models.sources import resolve_model_source

    model, tokenizer, path = tiny
    monkeypatch.setenv("ALPHAPO_CACHE", str(tmp_path / "cache"))
    directory = resolve_model_source(str(path))
    loaded = AutoModelForCausalLM.from_pretrained(directory).eval()
    ids = tokenizer(TEXTS[:2], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.equal(model(**ids).logits, loaded(**ids).logits)
    reloaded_tokenizer = AutoTokenizer.from_pretrained(directory)
    assert reloaded_tokenizer(TEXTS[1])["input_ids"] == tokenizer(TEXTS[1])["input_ids"]
    assert reloaded_tokenizer.chat_template == tokenizer.chat_template
    assert (
        loaded.config.tie_word_embeddings
        and loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    )

    def no_conversion(*_):
        raise AssertionError("converted again")

    monkeypatch.setattr(gguf_module, "_convert", no_conversion)
    moved = shutil.copy(path, tmp_path / "renamed.gguf")  # same content elsewhere: found in the cache
    assert resolve_model_source(str(moved)) == directory


def test_a_changed_gguf_file_is_converted_anew(tiny, tmp_path, monkeypatch):
    from alphapo.models.sources import resolve_model_source

    _, _, path = tiny
    monkeypatch.setenv("ALPHAPO_CACHE", str(tmp_path / "cache"))
    first = resolve_model_source(str(path))
    changed = tmp_path / "changed.gguf"
    changed.write_bytes(path.read_bytes() + b"\0" * 32)  # padding past the tensors: another file
    assert resolve_model_source(str(changed)) != first


def test_training_from_a_gguf_model_path(tiny, tmp_path, monkeypatch):
    import json

    from alphapo.train import TrainConfig, train

    _, _, path = tiny
    monkeypatch.setenv("ALPHAPO_CACHE", str(tmp_path / "cache"))
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "What is two plus two?", "chosen": "Four.", "rejected": "The fox."}] * 4
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = TrainConfig.model_validate(
        {
            "model": {"path": str(path)},
            "data": {"paths": [str(pairs)], "max_length": 64},
            "optim": {"lr": 1e-3},
            "train": {"batch_size": 2, "max_steps": 2},
            "output_dir": str(tmp_path / "run"),
        }
    )
    result = train(cfg)
    assert result.status == "completed" and (result.model_dir / "model.safetensors").is_file()
    assert (result.model_dir / "chat_template.jinja").is_file() or "chat_template" in (
        result.model_dir / "tokenizer_config.json"
    ).read_text()


def test_a_missing_gguf_file_is_a_clear_error(tmp_path):
    from alphapo.errors import ConfigError
    from alphapo.models.sources import resolve_model_source

    with pytest.raises(ConfigError, match="no such GGUF file"):
        resolve_model_source(str(tmp_path / "nope.gguf"))
