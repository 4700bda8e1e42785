"""The instruction-following task's generator: deterministic, train and held-out never share a base
request, every instruction's arguments drawn within the registry's ranges and described by its own
checker, never IFEval's prompts; the gold reward on hand-made answers; the gold judge picks the task
by the row's fields."""

import pytest

pytest.importorskip("if_verifiable")

from if_verifiable.ifeval import instructions as checkers
from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT

from alphapo.eval.ifeval import load_prompts
from alphapo.tasks.instructions import EXCLUDED, gold_reward, make_split
from alphapo.tasks.verify import verify

RANGES = {  # argument -> (low, high) as the checkers draw them
    "num_sentences": (1, checkers._MAX_NUM_SENTENCES),
    "num_placeholders": (1, checkers._NUM_PLACEHOLDERS),
    "num_bullets": (1, checkers._NUM_BULLETS),
    "num_highlights": (1, checkers._NUM_HIGHLIGHTED_SECTIONS),
    "num_sections": (1, checkers._NUM_SECTIONS),
    "num_paragraphs": (1, checkers._NUM_PARAGRAPHS),
    "frequency": (1, checkers._KEYWORD_FREQUENCY),
    "num_words": (checkers._NUM_WORDS_LOWER_LIMIT, checkers._NUM_WORDS_UPPER_LIMIT),
    "let_frequency": (1, checkers._LETTER_FREQUENCY),
    "capital_frequency": (1, checkers._ALL_CAPITAL_WORD_FREQUENCY),
}


def test_the_generator_is_deterministic_and_the_splits_never_share_a_base_request():
    train, again = make_split("train", 300, seed=0), make_split("train", 300, seed=0)
    assert [p.to_json() for p in train] == [p.to_json() for p in again]
    assert [p.prompt for p in make_split("train", 50, seed=1)] != [p.prompt for p in train[:50]]
    heldout = make_split("heldout", 200, seed=0)
    assert {p.base for p in train}.isdisjoint({p.base for p in heldout})
    assert len({p.base for p in train}) > 100 and len({p.base for p in heldout}) > 20
    ifeval_prompts = {r["prompt"] for r in load_prompts()}
    assert not ifeval_prompts & {p.prompt for p in train + heldout}
    many = make_split("train", 2000, seed=0)  # draws that repeat a prompt are drawn again
    assert len({p.prompt for p in many}) == 2000 and [p.to_json() for p in many[:300]] == [p.to_json() for p in train]
    assert [p.id for p in many] == [f"train-{i}" for i in range(2000)]


def test_every_instruction_is_described_by_its_checker_within_its_ranges():
    prompts = make_split("train", 600, seed=3)
    seen = set()
    for p in prompts:
        assert 1 <= len(p.instruction_id_list) <= 3 and len(p.kwargs) == len(p.instruction_id_list)
        assert len(set(p.instruction_id_list)) == len(p.instruction_id_list)
        for instruction, kwargs in zip(p.instruction_id_list, p.kwargs, strict=True):
            seen.add(instruction)
            checker = INSTRUCTION_DICT[instruction](instruction)
            description = checker.build_description(**kwargs)  # the arguments rebuild the description
            assert description.strip() in p.prompt
            for name, value in kwargs.items():
                if name in RANGES:
                    low, high = RANGES[name]
                    assert low <= value <= high, (instruction, name, value)
            if instruction == "combination:repeat_prompt":
                assert kwargs["prompt_to_repeat"] == p.base
    assert seen == set(INSTRUCTION_DICT) - EXCLUDED  # every instruction type occurs


def _row(instructions, kwargs):
    return {"key": "k", "prompt": "Write a poem.", "instruction_id_list": instructions, "kwargs": kwargs}


def test_the_gold_reward_by_hand():
    row = _row(["punctuation:no_comma", "startend:quotation"], [{}, {}])
    assert gold_reward('"A poem without commas."', row) == pytest.approx(1.1)  # both, strict and loose
    assert gold_reward("A poem without commas.", row) == pytest.approx(0.5 + 0.05)
    assert gold_reward('Here:\n"A poem without commas."', row) == pytest.approx(0.5 + 0.1)  # loose only: 2nd
    long = '"' + " ".join(["word"] * 260) + '"'
    assert gold_reward(long, row) == pytest.approx(1.1 - 0.0005 * 60)  # 60 words over the budget
    words = _row(["length_constraints:number_words"], [{"relation": "at least", "num_words": 250}])
    assert gold_reward(" ".join(["word"] * 260), words) == pytest.approx(1.1)  # asked for: no length term


def test_the_gold_judge_picks_the_task_by_the_row():
    from alphapo.errors import StageError

    assert verify({"answer": 12}, "7 + 5 = 12. Answer: 12") == (pytest.approx(1.15), True)
    gold, correct = verify(_row(["punctuation:no_comma"], [{}]), "No commas here.")
    assert gold == pytest.approx(1.1) and correct
    with pytest.raises(StageError, match="needs the task's 'answer'"):
        verify({"prompt": "x"}, "y", "judge: f: row 1: ")


def _tiny_chat_model(tmp_path):
    """A tiny random chat model (a tokenizer trained on the task's prompts, with a chat template)."""
    from alphapo.models import TinyModelSpec, build_tiny_model, train_bpe_tokenizer

    texts = [p.prompt for p in make_split("train", 60, seed=0)] + ["Sure, here it is. P.S. thanks"] * 20
    tokenizer = train_bpe_tokenizer(texts, vocab_size=500)
    special = {k: getattr(tokenizer, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    spec = TinyModelSpec(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    model_dir = tmp_path / "chat-model"
    build_tiny_model(spec, len(tokenizer), special).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return model_dir


def _micro_recipe(tmp_path, **changes):
    from alphapo.config import validate
    from alphapo.pipeline.recipe import RecipeConfig

    settings = {
        "out": str(tmp_path / "run"),
        "task": {"name": "instructions", "train_prompts": 12, "heldout": 6},
        "sft": {"checkpoint": str(_tiny_chat_model(tmp_path))},
        "sample": {"k": 4, "temperature": 1.0, "max_new_tokens": 24, "batch_size": 16},
        "pair": {"min_gap": 0.0},
        "method_defaults": {
            "data": {"max_length": 512, "max_prompt_length": 384},
            "optim": {"lr": 1e-3},
            "train": {"batch_size": 2, "max_steps": 2},
            "logging": {"every": 1, "progress": "none"},
        },
        "methods": {"alphapo": {"loss": {"name": "alphapo", "alpha": 0.25}}, "simpo": {"loss": {"name": "simpo"}}},
        "eval": {
            "kl_samples": 1,
            "max_new_tokens": 16,
            "batch_size": 16,
            "ifeval": {"limit": 3, "max_new_tokens": 8},
        },
    }
    return validate(RecipeConfig, settings | changes)


@pytest.mark.slow
def test_a_micro_run_on_a_tiny_chat_model(tmp_path):
    """task: instructions end to end from a (tiny, random) chat model: on-policy samples through the
    chat template, the verifier as judge, pairs, two methods, the held-out split and IFEval."""
    import json

    from alphapo.pipeline.run import Pipeline

    recipe = _micro_recipe(tmp_path)
    summary = Pipeline(recipe, quiet=True).run()
    stored = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(stored["methods"]) == {"sft", "alphapo", "simpo"}
    heldout = stored["methods"]["alphapo"]["by_split"]["heldout"]
    records = [
        json.loads(line)
        for line in (tmp_path / "run" / "eval" / "alphapo" / "generations-heldout.jsonl").read_text().splitlines()
    ]
    assert len(records) == 6 and heldout["gold_reward"] == pytest.approx(sum(r["gold_reward"] for r in records) / 6)
    assert heldout["accuracy"] == pytest.approx(sum(r["correct"] for r in records) / 6)  # every instruction followed
    assert set(stored["ifeval"]) == {"sft", "alphapo", "simpo"}
    for numbers in stored["ifeval"].values():
        assert {"prompt_strict", "instruction_strict", "prompt_loose", "instruction_loose"} <= set(numbers)
    assert "prompt_strict_vs_sft" in stored["ifeval"]["simpo"] and summary["comparisons"]["reference"] == "simpo"
    samples = [json.loads(line) for line in (tmp_path / "run" / "judged.jsonl").read_text().splitlines()]
    assert all("instruction_id_list" in s and len(s["scores"]) == 4 for s in samples)


@pytest.mark.slow
def test_two_fresh_rounds_on_the_instruction_task(tmp_path):
    """rounds: 2 with fresh prompts: round 2 samples new instruction prompts (none asked in round 1)
    from round 1's policy, trains from it, and the summary reports both rounds."""
    import json

    from alphapo.data.stagefiles import read_jsonl
    from alphapo.pipeline.run import Pipeline

    recipe = _micro_recipe(
        tmp_path,
        rounds=2,
        round_prompts="fresh",
        methods={"alphapo": {"loss": {"name": "alphapo", "alpha": 0.25}}},
        eval={"kl_samples": 1, "max_new_tokens": 8, "batch_size": 16},
    )
    Pipeline(recipe, quiet=True).run()
    out = tmp_path / "run"
    first = {r["prompt"] for r in read_jsonl(out / "data" / "train.jsonl", "t")}
    second = read_jsonl(out / "round2" / "prompts.jsonl", "t")
    assert len(second) == 12 and not first & {r["prompt"] for r in second}
    assert all("instruction_id_list" in r for r in second)
    judged = read_jsonl(out / "round2" / "data" / "alphapo" / "judged.jsonl", "t")
    assert {r["prompt"] for r in judged} == {r["prompt"] for r in second}
    stored = json.loads((out / "summary.json").read_text())
    assert [e["round"] for e in stored["rounds"]["alphapo"]] == [1, 2]
    config = (out / "round2" / "alphapo" / "config.yaml").read_text()
    assert str(out / "alphapo" / "model") in config  # round 2 starts from round 1's policy


def test_fresh_rounds_refuse_when_the_task_runs_out_of_new_prompts(tmp_path, monkeypatch):
    from alphapo.errors import StageError
    from alphapo.pipeline.run import Pipeline

    recipe = _micro_recipe(tmp_path, rounds=2, round_prompts="fresh")
    pipeline = Pipeline(recipe, quiet=True)
    pipeline.make_task_data()
    round1_and_8_more = [p.to_json() for p in make_split("train", 20, recipe.seed + 1)]
    monkeypatch.setattr(pipeline, "task_split", lambda split, n, seed: round1_and_8_more)
    with pytest.raises(StageError, match="found only 8 of 12 train prompts not asked in earlier rounds"):
        pipeline.round_prompts(2)
