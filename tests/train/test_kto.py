"""Unpaired KTO's KL reference point: mismatched completions from other prompts (never the same
prompt's other answers), cut to max_length, and the estimate compares policy and reference on those
very completions (by value, at a point where the policy has moved)."""

import json
from pathlib import Path

import pytest
import torch

from alphapo.data import Collator, DataConfig, load_dataset_for_training
from alphapo.train.kto import KTOObjective, KTOView, mismatched_partners
from alphapo.train.metrics import MetricSums
from alphapo.train.objectives import StepShape


def test_partners_never_share_a_prompt_and_use_each_answer_once():
    # TRL's unpair_preference_dataset: each prompt's chosen and rejected rows side by side; or K samples
    for prompts in ([(p,) for p in range(10) for _ in range(2)], [(p,) for p in range(5) for _ in range(4)]):
        partners, shared = mismatched_partners(prompts, seed=3)
        assert shared == 0 and sorted(partners) == list(range(len(prompts)))
        assert all(prompts[i] != prompts[j] for i, j in enumerate(partners))
        assert mismatched_partners(prompts, seed=3)[0] == partners != mismatched_partners(prompts, seed=4)[0]
    _, shared = mismatched_partners([(0,), (0,), (0,), (1,)], seed=0)  # one prompt holds most of the data
    assert shared > 0  # counted (and logged by KTOView), not hidden


def _unpaired(assets, tmp_path, **data):
    rows = [json.loads(line) for line in Path(assets["pairs"]).read_text().splitlines()]
    path = tmp_path / "unpaired.jsonl"
    with open(path, "w") as f:
        for r in rows:  # chosen and rejected of one prompt side by side, as TRL writes them
            f.write(json.dumps({"prompt": r["prompt"], "completion": r["chosen"], "label": True}) + "\n")
            f.write(json.dumps({"prompt": r["prompt"], "completion": r["rejected"], "label": False}) + "\n")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(assets["tokenizer"])
    cfg = DataConfig(paths=[str(path)], prompt_format="plain", **data)
    return load_dataset_for_training(cfg, tokenizer, tmp_path / "out", quiet=True), tokenizer


def test_kl_rows_come_from_other_prompts_and_fit_max_length(assets, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(assets["tokenizer"])
    words = ["apple", "pear", "plum", "fig", "kiwi", "lime", "date", "grape", "melon", "berry"]
    path = tmp_path / "mixed.jsonl"
    with open(path, "w") as f:  # short prompts with long answers, long prompts with short ones
        for i in range(8):
            short = i % 2 == 0
            prompt = "Fruit?" if short else "Name a fruit like " + " and ".join(words[:4]) + ":"
            completion = " " + " ".join(words[i % 3 :] if short else words[:1])
            f.write(json.dumps({"prompt": prompt, "completion": completion, "label": short}) + "\n")
    cfg = DataConfig(paths=[str(path)], prompt_format="plain", max_length=16, max_prompt_length=12)
    base = load_dataset_for_training(cfg, tokenizer, tmp_path / "out", quiet=True)
    view = KTOView(base, seed=0, max_length=16)
    assert max(len(base[view.partners[i]]["completion_ids"]) + len(base[i]["prompt_ids"]) for i in range(8)) > 16
    for i in range(len(view)):
        item = view[i]
        partner = view.partners[i]
        assert base[partner]["prompt_ids"] != item["prompt_ids"]
        assert len(item["prompt_ids"]) + len(item["rejected_ids"]) <= 16
        assert item["rejected_ids"] == base[partner]["completion_ids"][: len(item["rejected_ids"])]
        assert view.lengths()[i] == len(item["prompt_ids"]) + max(len(item["chosen_ids"]), len(item["rejected_ids"]))


@pytest.mark.parametrize("length_normalize", [False, True])
def test_the_kl_estimate_compares_policy_and_reference_on_the_mismatched_completions(
    assets, tmp_path, length_normalize
):
    """With a reference table whose own-completion and mismatched columns differ, the estimate must be
    mean(policy(mismatched) - reference(mismatched)) (per token when length-normalised): subtracting the
    reference of the example's own completion gives another, also positive, number."""
    from transformers import AutoModelForCausalLM

    from alphapo.train.reference import batch_logps

    base, tokenizer = _unpaired(assets, tmp_path, max_length=64, max_prompt_length=32)
    view = KTOView(base, seed=0, max_length=64)
    model = AutoModelForCausalLM.from_pretrained(assets["model"]).eval()
    ids = list(range(8))
    batch = Collator(tokenizer.pad_token_id)([view[i] for i in ids])
    with torch.no_grad():
        mine = batch_logps(model, {k: v[8:] for k, v in batch.items() if k != "index" and k != "label"}, "fused")
    policy_other, other_n = mine[0].double(), mine[1].double()
    reference = torch.zeros(len(view), 2, dtype=torch.float64)
    reference[:, 0] = -500.0  # own completions: far below, so a wrong column gives a large KL
    reference[:8, 1] = policy_other - torch.linspace(0.5, 2.0, 8, dtype=torch.float64)  # the policy moved up
    hparams = {"beta": 0.1, "length_normalize": length_normalize}
    objective = KTOObjective(hparams, reference, "fused", None)
    sums = MetricSums()
    objective(model, batch, StepShape(8, 0, 1), sums)
    gap = torch.linspace(0.5, 2.0, 8, dtype=torch.float64)
    expected = (gap / other_n).mean() if length_normalize else gap.mean()
    assert float(sums.sums["kl"]) == pytest.approx(float(expected), rel=1e-6)
