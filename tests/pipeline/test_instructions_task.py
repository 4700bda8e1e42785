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
