"""The embedded task, pairing, win rate and the bootstrap, on hand examples."""

import re

import pytest

from alphapo.eval.stats import bootstrap, paired_difference, win_outcomes, win_rate
from alphapo.judge.pairs import make_pairs
from alphapo.tasks import extract_answer, gold_reward, make_split
from alphapo.tasks.arithmetic import held_out_numbers


def _operands(problem):
    """a, b (and c) of a problem, from its reference solution's equations."""
    equations = re.findall(r"(\d+) [+\-*] (\d+) = (\d+)", problem.solution)
    a, b = int(equations[0][0]), int(equations[0][1])
    values = {"a": a, "b": b}
    if problem.kind == "add_sub":
        values["c"] = int(equations[1][1])
    return values


def test_generator_is_deterministic_and_splits_differ():
    assert make_split("train", 50, 3) == make_split("train", 50, 3)
    assert make_split("train", 50, 3) != make_split("train", 50, 4)

    def combination(p):
        return (p.kind, *sorted(_operands(p).items()))

    train = make_split("train", 2000, 0)
    heldout = make_split("heldout", 300, 0)
    # held-out operand combinations never appear in training (multiplication facts excepted)
    seen = {combination(p) for p in train if p.kind != "mul"}
    assert not seen & {combination(p) for p in heldout if p.kind != "mul"}
    assert all(held_out_numbers(p.kind, _operands(p)) for p in heldout if p.kind != "mul")
    assert not any(held_out_numbers(p.kind, _operands(p)) for p in train if p.kind != "mul")
    perturbed = make_split("perturbed", 50, 0)
    assert all(p.split == "perturbed" for p in perturbed)
    for problem in make_split("train", 200, 1) + heldout + perturbed:
        assert extract_answer(problem.solution) == problem.answer  # every reference solution is correct
        assert gold_reward(problem.solution, problem.answer) > 1.0


def test_perturbed_prompts_use_unseen_templates_and_an_irrelevant_clause():
    train_starts = {p.prompt.split(" ")[1] for p in make_split("train", 300, 0)}
    perturbed = make_split("perturbed", 100, 0)
    clauses = ("sunny day", "years old", "cats at home", "shop opens")
    assert all(any(c in p.prompt for c in clauses) for p in perturbed)
    assert {p.prompt.split(" ")[1] for p in perturbed} - train_starts  # wordings training never saw


@pytest.mark.parametrize(
    ("response", "answer", "expected"),
    [
        # correct: 1 + 0.1 (one well-formed answer line) + 0.05 (one valid equation)
        ("7 + 5 = 12. Answer: 12", 12, 1.15),
        # wrong answer, valid format, invalid equation: 0 + 0.1 - 0.1
        ("7 + 5 = 13. Answer: 13", 12, 0.0),
        # right number but no answer line (malformed): 0 - 0.2 + 0.05
        ("7 + 5 = 12.", 12, -0.15),
        # answer line but not at the end (malformed): 0 - 0.2
        ("Answer: 12 because 7 and 5", 12, -0.2),
        # two answer lines (malformed even if the last is right): 1 - 0.2
        ("Answer: 11. Answer: 12", 12, 0.8),
        # correct, two valid equations: 1 + 0.1 + 0.1
        ("18 + 17 = 35. 35 - 26 = 9. Answer: 9", 9, 1.2),
        # correct answer, one wrong step: 1 + 0.1 + 0.05 - 0.1
        ("18 + 17 = 36. 35 - 26 = 9. Answer: 9", 9, 1.05),
        # 100 characters: 40 beyond the 60-character budget cost 0.002 each
        ("7 + 5 = 12. " + "x" * 77 + " Answer: 12", 12, round(1.15 - 0.002 * 40, 6)),
        ("", 3, -0.2),
    ],
)
def test_gold_reward_cases(response, answer, expected):
    assert gold_reward(response, answer) == pytest.approx(expected)


def test_pairing_best_against_worst_with_ties_dropped_and_counted():
    rows = [
        {"id": "a", "prompt": "p1", "completions": ["x", "y", "z"], "scores": [0.5, 1.2, 0.1]},
        {"id": "b", "prompt": "p2", "completions": ["u", "v"], "scores": [1.0, 1.0]},  # all tied
        {"id": "c", "prompt": "p3", "completions": ["s", "t"], "scores": [0.2, 0.1]},  # gap 0.1
        {"id": "d", "prompt": "p4", "completions": ["w", "w"], "scores": [1.0, 0.0]},  # same text
    ]
    pairs, stats = make_pairs(rows)
    assert [(p["id"], p["chosen"], p["rejected"]) for p in pairs] == [("a", "y", "z"), ("c", "s", "t")]
    assert pairs[0]["chosen_score"] == 1.2 and pairs[0]["rejected_score"] == 0.1
    assert (stats.pairs, stats.dropped_all_tied, stats.dropped_small_gap, stats.dropped_same_text) == (2, 1, 0, 1)
    pairs, stats = make_pairs(rows, min_gap=0.5)
    assert [p["id"] for p in pairs] == ["a"] and stats.dropped_small_gap == 1


def test_win_rate_counts_ties_as_half():
    # wins on 2 prompts, ties on 1, loses on 1: (1 + 1 + 0.5 + 0) / 4
    policy, baseline = [1.0, 0.5, 0.2, 0.0], [0.5, 0.1, 0.2, 1.0]
    assert win_outcomes(policy, baseline) == [1.0, 1.0, 0.5, 0.0]
    assert win_rate(policy, baseline).mean == pytest.approx(0.625)
    with pytest.raises(ValueError, match="different prompt counts"):
        win_rate([1.0], [1.0, 2.0])


def test_bootstrap_on_a_hand_example():
    # a constant sample has a zero-width interval
    flat = bootstrap([0.3] * 10)
    assert (flat.mean, flat.low, flat.high) == pytest.approx((0.3, 0.3, 0.3))
    # 0/1 outcomes, 100 prompts, 60 successes: mean 0.6, interval about +-1.96 * sqrt(0.24 / 100) = +-0.096
    est = bootstrap([1.0] * 60 + [0.0] * 40, resamples=4000, seed=1)
    assert est.mean == pytest.approx(0.6)
    assert est.low == pytest.approx(0.6 - 0.096, abs=0.02) and est.high == pytest.approx(0.6 + 0.096, abs=0.02)
    assert est == bootstrap([1.0] * 60 + [0.0] * 40, resamples=4000, seed=1)  # seeded: reproducible
    # a paired difference of +1 on every prompt is beyond noise; random signs are not
    assert paired_difference([1.0] * 30, [0.0] * 30).excludes(0.0)
    assert not paired_difference([1.0, 0.0] * 15, [0.0, 1.0] * 15).excludes(0.0)
