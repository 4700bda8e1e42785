"""The embedded task, pairing, win rate and the bootstrap, on hand examples."""

import re
from dataclasses import replace

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
    others = make_split("noop", 50, 0) + make_split("unseen_templates", 50, 0)
    assert make_split("noop", 50, 0) == make_split("noop", 50, 0)
    assert make_split("unseen_templates", 40, 2) == make_split("unseen_templates", 40, 2)
    for problem in make_split("train", 200, 1) + heldout + others:
        assert extract_answer(problem.solution) == problem.answer  # every reference solution is correct
        assert gold_reward(problem.solution, problem.answer) > 1.0
    with pytest.raises(ValueError, match="unknown split 'perturbed'"):
        make_split("perturbed", 1, 0)


def _template_of(problem, kind_templates):
    """The template (tuple of sentences) that produced ``problem``'s prompt, by matching its sentences."""
    for template in kind_templates:
        pattern = re.escape(" ".join(template))
        pattern = re.sub(r"\\\{[a-z]\\\}", "[^.?]+?", pattern)
        if re.fullmatch(pattern, problem.prompt):
            return template
    return None


def test_noop_prompts_differ_from_their_problem_only_by_one_irrelevant_sentence():
    from alphapo.tasks.templates import NUMBER_CLAUSES

    for problem in make_split("noop", 200, 0):
        statements, question = problem.base_prompt.rsplit(". ", 1)
        assert problem.prompt.startswith(statements + ". ") and problem.prompt.endswith(" " + question)
        clause = problem.prompt[len(statements) + 2 : -len(question) - 1]
        # the inserted sentence is one of the distractor clauses, with a number that changes nothing
        patterns = [re.escape(c).replace(r"\{y\}", "[A-Z][a-z]+").replace(r"\{d\}", r"\d+") for c in NUMBER_CLAUSES]
        assert any(re.fullmatch(p, clause) for p in patterns), clause
        assert re.search(r"\d", clause)
        assert problem.to_json()["base_prompt"] == problem.base_prompt
    # a heldout problem has no base_prompt field
    assert "base_prompt" not in make_split("heldout", 1, 0)[0].to_json()


def test_unseen_templates_are_never_used_in_training_and_training_sees_every_other_sentence():
    from alphapo.tasks.templates import NEUTRAL_CLAUSES, SLOTS, UNSEEN_ONLY, templates

    for kind in SLOTS:
        seen, unseen = set(templates(kind, True)), set(templates(kind, False))
        assert seen and unseen and not seen & unseen
        assert {s for t in seen for s in t} == {s for slot in SLOTS[kind] for s in slot}  # every sentence trained
        assert all(t[0] not in UNSEEN_ONLY[kind] for t in seen)
        assert any(t[0] in UNSEEN_ONLY[kind] for t in unseen) and any(t[0] not in UNSEEN_ONLY[kind] for t in unseen)
    kinds = {k: templates(k, True) + templates(k, False) for k in SLOTS}
    neutral = [re.escape(c).replace(r"\{y\}", "[A-Z][a-z]+") for c in NEUTRAL_CLAUSES]
    train, with_clause = make_split("train", 3000, 0), 0
    for p in train:
        template = _template_of(p, kinds[p.kind])
        if template is None:  # a neutral sentence just before the question: remove it and match again
            statements, clause, question = re.fullmatch(r"(.*\.) ([^.]+\.) ([^.]+\?)", p.prompt).groups()
            assert any(re.fullmatch(c, clause) for c in neutral), p.prompt
            template = _template_of(replace(p, prompt=f"{statements} {question}"), kinds[p.kind])
            with_clause += 1
        assert template in templates(p.kind, True), p.prompt
    assert 0.15 < with_clause / len(train) < 0.25  # a fifth carry a neutral sentence
    for p in make_split("unseen_templates", 300, 0):
        assert _template_of(p, kinds[p.kind]) in templates(p.kind, False)


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


def test_seed_and_prompt_difference_by_hand():
    from alphapo.eval.stats import seed_and_prompt_difference

    # a constant difference has a zero-width interval; the mean is over seeds and prompts
    same = seed_and_prompt_difference([[1.0, 2.0], [3.0, 4.0]], [[0.5, 1.5], [2.5, 3.5]])
    assert (same.mean, same.low, same.high, same.n) == (0.5, 0.5, 0.5, 2)
    # seeds that disagree widen the interval beyond the prompt-only one of the seed average
    a = [[1.0] * 50, [0.0] * 50, [1.0] * 50]
    b = [[0.0] * 50] * 3
    both = seed_and_prompt_difference(a, b, seed=1)
    prompts = paired_difference([2 / 3] * 50, [0.0] * 50)
    assert both.mean == pytest.approx(2 / 3) and prompts.low == prompts.high == pytest.approx(2 / 3)
    assert both.low == 0.0 and both.high == 1.0  # resampling 3 seeds can draw all-0 or all-1 runs
    with pytest.raises(ValueError, match="two \\[seeds, prompts\\] arrays"):
        seed_and_prompt_difference([[1.0, 2.0]], [[1.0]])


def test_split_summary_averages_seeds_per_prompt():
    from alphapo.pipeline.summary import compare, split_summary

    def rec(correct, gold, kl=0.0):
        return {"correct": correct, "gold_reward": gold, "kl": kl, "length": 4}

    sft = [rec(False, 0.0), rec(True, 1.0), rec(False, 0.2)]
    runs = [
        [rec(True, 1.1), rec(True, 1.0, 0.5), rec(False, 0.1, 0.3)],
        [rec(False, 0.0), rec(True, 1.2), rec(True, 1.1)],
    ]
    s = split_summary(runs, sft, seed=0)
    assert s["accuracy"] == pytest.approx(4 / 6) and s["per_seed"]["accuracy"] == pytest.approx([2 / 3, 2 / 3])
    assert s["accuracy_sd"] == 0.0 and s["n"] == 3
    assert s["gold_reward"] == pytest.approx((1.1 + 1.0 + 0.1 + 0.0 + 1.2 + 1.1) / 6)
    # wins per seed vs SFT: seed 0: win, tie, lose -> 0.5; seed 1: tie, win, win -> 5/6
    assert s["per_seed"]["win_rate_vs_sft"] == pytest.approx([0.5, 5 / 6])
    assert s["win_rate_vs_sft"] == pytest.approx(2 / 3)
    assert s["accuracy_gain_vs_sft"] == pytest.approx(4 / 6 - 1 / 3)
    assert s["kl_to_sft"] == pytest.approx((0.5 + 0.3) / 6)
    assert s["gold_reward_sd"] == pytest.approx(abs((2.2 / 3) - (2.3 / 3)) / 2**0.5)
    c = compare(runs, [sft, sft], seed=0)
    assert c["accuracy_diff"] == pytest.approx(1 / 3)
    assert c["accuracy_diff_ci_prompts"][0] <= 1 / 3 <= c["accuracy_diff_ci_prompts"][1]
