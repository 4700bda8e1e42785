"""Bad input anywhere in the chain: a clear error naming the stage and the file."""

import json

import pytest

from alphapo.errors import StageError
from alphapo.judge.pairs import pair_file
from alphapo.judge.score import judge_file, load_reward_model
from alphapo.sample.generate import sample_file


def test_missing_stage_output(tmp_path):
    with pytest.raises(StageError, match=r"judge: input file .*samples.jsonl does not exist \(did the previous stage"):
        judge_file(tmp_path / "samples.jsonl", tmp_path / "judged.jsonl")
    with pytest.raises(StageError, match=r"pair: input file .*judged.jsonl does not exist"):
        pair_file(tmp_path / "judged.jsonl", tmp_path / "pairs.jsonl")


def test_empty_prompt_file(tmp_path):
    (tmp_path / "prompts.jsonl").write_text("")
    with pytest.raises(StageError, match=r"sample: .*prompts.jsonl has no rows"):
        sample_file(tmp_path / "m", tmp_path / "prompts.jsonl", tmp_path / "out.jsonl")


def test_model_directory_without_weights(tmp_path):
    (tmp_path / "prompts.jsonl").write_text(json.dumps({"prompt": "hi"}) + "\n")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with pytest.raises(StageError, match=r"sample: model directory .*model has no weights"):
        sample_file(model, tmp_path / "prompts.jsonl", tmp_path / "out.jsonl")


def test_row_without_required_field(tmp_path):
    (tmp_path / "samples.jsonl").write_text(json.dumps({"prompt": "p", "completions": ["a"]}) + "\n")
    with pytest.raises(StageError, match=r"judge: .*samples.jsonl: row 1: the gold judge needs the task's 'answer'"):
        judge_file(tmp_path / "samples.jsonl", tmp_path / "judged.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "p"}\n')
    with pytest.raises(StageError, match=r"judge: .*bad.jsonl: row 1: missing field 'completions'"):
        judge_file(tmp_path / "bad.jsonl", tmp_path / "judged.jsonl")


def test_reward_model_that_is_not_a_sequence_classifier(tmp_path):
    from alphapo.models import TinyModelSpec, build_tiny_model

    build_tiny_model(
        TinyModelSpec(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    ).save_pretrained(tmp_path / "causal")
    with pytest.raises(StageError, match=r"judge: .*causal is a LlamaForCausalLM, not a sequence classifier"):
        load_reward_model(tmp_path / "causal")
    with pytest.raises(StageError, match=r"has no config\.json"):
        load_reward_model(tmp_path / "nothing")
