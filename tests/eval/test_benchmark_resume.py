"""``alphapo eval --benchmark ifeval`` resumes after a kill: answers already written are not generated
again, a line cut by the kill is, other settings start over; the result equals an uninterrupted run."""

import json

import pytest

from alphapo.models import TinyModelSpec, build_tiny_model, train_bpe_tokenizer

pytest.importorskip("if_verifiable")

PROMPTS = [
    {"key": k, "prompt": p, "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    for k, p in enumerate(["Say hi.", "Name a fruit.", "Count to three.", "Describe the sea.", "Greet me."])
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    tokenizer = train_bpe_tokenizer([p["prompt"] for p in PROMPTS] * 20, vocab_size=300)
    tokenizer.save_pretrained(root)
    special = {k: getattr(tokenizer, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    spec = TinyModelSpec(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    build_tiny_model(spec, len(tokenizer), special).save_pretrained(root)
    return root


def _run(model_dir, out, prompts, **kwargs):
    from alphapo.eval.benchmark import run_ifeval

    return run_ifeval(model_dir, out, prompts=prompts, batch_size=2, **{"max_new_tokens": 6, **kwargs})


def test_a_killed_evaluation_generates_only_what_is_missing(model_dir, tmp_path, monkeypatch):
    import alphapo.sample.generate as generation

    prompts = tmp_path / "ifeval.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    full = _run(model_dir, tmp_path / "full", prompts)
    answers = (tmp_path / "full" / "answers-model.jsonl").read_text().splitlines()
    assert len(answers) == 5 and full["model"]["prompts"] == 5

    # a kill after two answers, half-way through writing the third
    out = tmp_path / "killed"
    out.mkdir()
    for name in ("answers-model.settings.json",):
        (out / name).write_text((tmp_path / "full" / name).read_text())
    kept = {json.loads(line)["key"] for line in answers[:2]}
    (out / "answers-model.jsonl").write_text("\n".join(answers[:2]) + "\n" + answers[2][:10])
    asked = []
    original = generation.generate

    def spy(model, tokenizer, prompts, **kwargs):
        asked.extend(prompts)
        return original(model, tokenizer, prompts, **kwargs)

    monkeypatch.setattr(generation, "generate", spy)
    resumed = _run(model_dir, out, prompts)
    assert sorted(asked) == sorted(p["prompt"] for p in PROMPTS if p["key"] not in kept)
    assert resumed["model"] == {
        **full["model"],
        "generation_seconds": resumed["model"]["generation_seconds"],
        "new_tokens_per_s": resumed["model"]["new_tokens_per_s"],
    }
    by_key = lambda text: sorted(text.splitlines(), key=lambda line: json.loads(line)["key"])  # noqa: E731
    assert by_key((out / "answers-model.jsonl").read_text()) == by_key("\n".join(answers))

    # nothing missing: nothing generated; other settings: everything again
    asked.clear()
    _run(model_dir, out, prompts)
    assert asked == []
    _run(model_dir, out, prompts, max_new_tokens=3)
    assert len(asked) == 5
    written = [json.loads(line) for line in (out / "ifeval-model.jsonl").read_text().splitlines()]
    assert [w["key"] for w in written] == [p["key"] for p in PROMPTS]
    assert all(w["new_tokens"] <= 3 and {"strict", "loose", "response", "cut"} <= set(w) for w in written)


def test_a_baseline_gives_paired_differences(model_dir, tmp_path):
    prompts = tmp_path / "ifeval.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    result = _run(model_dir, tmp_path / "pair", prompts, baseline_dir=model_dir)
    assert result["difference"]["prompt_strict"]["mean"] == 0.0  # the same model: no difference
    metrics = json.loads((tmp_path / "pair" / "metrics.json").read_text())
    assert set(metrics) >= {"model", "baseline", "difference", "punkt", "max_new_tokens"}
