"""Bradley-Terry reward models (``alphapo rm``): the loss by hand, the data's margin column and held-out
split, training through the real loading code, resume, and the saved directory scoring the same
through alphapo's judge, transformers' model class and transformers' pipeline."""

import json
import math
import os
import signal

import pytest
import torch

from alphapo.cli import main
from alphapo.data import Collator, DataConfig, load_dataset_for_training
from alphapo.data.dataset import holdout_side
from alphapo.train import train
from alphapo.train.metrics import MetricSums
from alphapo.train.objectives import StepShape
from alphapo.train.reward_model import RewardObjective, bradley_terry_loss, pair_report
from tests.train.conftest import make_config, weights


def test_bradley_terry_loss_and_gradient_by_hand():
    chosen = torch.tensor([1.5, -0.2, 0.3], dtype=torch.float64, requires_grad=True)
    rejected = torch.tensor([0.5, 0.4, 0.3], dtype=torch.float64, requires_grad=True)
    margin = torch.tensor([0.25, 0.0, -1.0], dtype=torch.float64)
    c = 0.01
    losses = bradley_terry_loss(chosen, rejected, margin, c)
    by_hand, grad_c, grad_r = [], [], []
    for rc, rr, m in zip(chosen.tolist(), rejected.tolist(), margin.tolist(), strict=True):
        d = rc - rr - m
        by_hand.append(math.log1p(math.exp(-d)) + c * (rc + rr) ** 2)
        s = 1 / (1 + math.exp(d))  # d/dd of -log sigma(d) is -sigma(-d)
        grad_c.append(-s + 2 * c * (rc + rr))
        grad_r.append(s + 2 * c * (rc + rr))
    assert losses.tolist() == pytest.approx(by_hand, rel=1e-12)
    losses.sum().backward()
    assert chosen.grad.tolist() == pytest.approx(grad_c, rel=1e-12)
    assert rejected.grad.tolist() == pytest.approx(grad_r, rel=1e-12)
    plain = bradley_terry_loss(chosen.detach(), rejected.detach())  # no margin, no centring
    assert plain.tolist() == pytest.approx(
        [math.log1p(math.exp(-(a - b))) for a, b in zip([1.5, -0.2, 0.3], [0.5, 0.4, 0.3], strict=True)]
    )


class _Scores(torch.nn.Module):
    """A 'model' whose score of each row is a learnable number per row (to check the objective's scale)."""

    def __init__(self, values):
        super().__init__()
        self.values = torch.nn.Parameter(torch.tensor(values, dtype=torch.float32))

    def forward(self, input_ids, attention_mask):
        from types import SimpleNamespace

        return SimpleNamespace(logits=self.values[: input_ids.shape[0], None])


def test_objective_is_the_mean_over_the_step_and_logs_trl_metrics():
    model = _Scores([2.0, 0.0, 1.0, 1.0])  # pairs (2, 1) and (0, 1)
    batch = {"index": torch.tensor([0, 1]), "input_ids": torch.zeros(4, 3, dtype=torch.long)}
    batch["attention_mask"], batch["margin"] = torch.ones(4, 3), torch.tensor([0.5, 0.0])
    sums = MetricSums()
    loss = RewardObjective(None)(model, batch, StepShape(examples=4, tokens=0, world_size=1), sums)
    expected = (math.log1p(math.exp(-0.5)) + math.log1p(math.exp(1.0))) / 4  # this micro-batch: 2 of the step's 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    means = sums.local_means()
    assert means["accuracy"] == 0.5 and means["margin"] == pytest.approx(0.0)
    assert means["rewards/chosen"] == pytest.approx(1.0) and means["rewards/mean"] == pytest.approx(1.0)


def _rows(n, margin=True):
    words = ["apple", "pear", "plum", "fig", "kiwi", "lime", "date", "grape", "melon", "berry"]
    rows = []
    for i in range(n):
        row = {
            "prompt": f"Name a fruit like {words[i % 10]} #{i}:",
            "chosen": f" {words[(3 * i + 1) % 10]} ok",
            "rejected": f" no {words[(7 * i + 2) % 10]} bad",
        }
        if margin:
            row["margin"] = (i % 3) * 0.5
        rows.append(row)
    return rows


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_margin_column_is_read_checked_and_absent_files_say_so(assets, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(assets["tokenizer"])
    rows = _rows(12)
    rows[4]["margin"] = "big"
    del rows[7]["margin"]
    with_margin = _write(tmp_path / "m.jsonl", rows)
    without = _write(tmp_path / "n.jsonl", _rows(4, margin=False))
    cfg = DataConfig(paths=[with_margin, without], prompt_format="plain", margin_column="margin", max_bad_fraction=0.5)
    data = load_dataset_for_training(cfg, tokenizer, tmp_path / "out", quiet=True)
    skipped = {(s["row"], s["field"]) for s in data.report.skipped}
    assert skipped == {(5, "margin"), (8, "margin")}  # rows are numbered from 1
    assert data.report.no_margin == [without] and "no margin column" in data.report.summary()
    batch = Collator(tokenizer.pad_token_id)([data[i] for i in range(len(data))])
    assert batch["margin"].tolist()[:3] == [0.0, 0.5, 1.0] and batch["margin"].tolist()[-4:] == [0.0] * 4
    bad = DataConfig(paths=[with_margin], prompt_format="plain", margin_column="margin", on_bad_row="error")
    with pytest.raises(Exception, match=r"row 5: field 'margin': expected a finite number"):
        load_dataset_for_training(bad, tokenizer, tmp_path / "out2", quiet=True)


def test_holdout_splits_by_prompt_stably_and_completely(assets, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(assets["tokenizer"])
    rows = _rows(60, margin=False)
    rows += [dict(r, chosen=r["chosen"] + " again") for r in rows[:10]]  # a prompt's second pair
    path = _write(tmp_path / "p.jsonl", rows)
    shuffled = _write(tmp_path / "q.jsonl", rows[::-1])
    parts = {}
    for name, source in (("a", path), ("b", shuffled)):
        for part in ("train", "heldout"):
            cfg = DataConfig(paths=[source], prompt_format="plain", holdout=0.25, part=part)
            data = load_dataset_for_training(cfg, tokenizer, tmp_path / name / part, quiet=True)
            parts[name, part] = sorted(tokenizer.decode(data[i]["prompt_ids"]) for i in range(len(data)))
            assert data.report.other_part == len(rows) - len(data) > 0
            assert "part (data.holdout)" in data.report.summary()
    assert parts["a", "train"] == parts["b", "train"] and parts["a", "heldout"] == parts["b", "heldout"]
    train_prompts, held_prompts = set(parts["a", "train"]), set(parts["a", "heldout"])
    assert not train_prompts & held_prompts and len(parts["a", "train"]) + len(parts["a", "heldout"]) == len(rows)
    assert 0.1 < len(parts["a", "heldout"]) / len(rows) < 0.4
    assert holdout_side("Name a fruit like apple #0:", 0.25) == holdout_side("Name a fruit like apple #0:", 0.25)
    conversation = [{"role": "user", "content": "hi"}]
    assert holdout_side(conversation, 0.999999) == "heldout" and holdout_side(conversation, 0.0) == "train"


def rm_config(assets, out, **sections):
    base = {
        "task": "reward",
        "loss": {"name": "alphapo"},
        "optim": {"lr": 3e-3},
        "train": {"batch_size": 4, "max_steps": 8, "seed": 0},
        "reward": {"center_rewards_coefficient": 0.01},
    }
    return make_config(assets, out, **(base | sections))


def test_reward_model_learns_and_saves_a_sequence_classifier(assets, tmp_path):
    result = train(rm_config(assets, tmp_path / "rm", train={"batch_size": 4, "max_steps": None, "epochs": 6}))
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(result.model_dir)
    assert config.architectures == ["LlamaForSequenceClassification"] and config.num_labels == 1
    lines = [json.loads(x) for x in (result.output_dir / "metrics.jsonl").read_text().splitlines()]
    assert {"accuracy", "margin", "rewards/chosen", "rewards/rejected", "rewards/mean", "rewards/std"} <= set(lines[-1])
    assert "rewards/squared" not in lines[-1]
    assert len(lines) == 36  # 6 epochs of 6 steps
    early, late = lines[:6], lines[-6:]  # an epoch at the start and at the end
    mean = lambda rows, key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
    assert mean(late, "loss") < mean(early, "loss") - 0.2 and mean(late, "accuracy") >= 0.9  # easy pairs
    assert not (result.output_dir / "displacement.json").exists()


def test_train_layers_freezes_all_but_the_top(assets, tmp_path):
    result = train(rm_config(assets, tmp_path / "rm", reward={"train_layers": 1}, train={"max_steps": 2}))
    from transformers import AutoModelForSequenceClassification

    start = AutoModelForSequenceClassification.from_pretrained(assets["model"], num_labels=1).state_dict()
    end = weights(result.model_dir)
    changed = {n for n in end if n in start and n != "score.weight" and not torch.equal(start[n], end[n])}
    assert changed and all(n.startswith(("model.layers.1.", "model.norm.")) for n in changed), changed
    assert "score.weight" in end


def test_interrupted_reward_model_resumes_bit_identical(assets, tmp_path):
    cfg = dict(train={"batch_size": 4, "max_steps": 6, "seed": 0}, checkpoint={"every": 2})
    full = train(rm_config(assets, tmp_path / "full", **cfg))

    def interrupt_at_3(step, metrics, model):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    first = train(rm_config(assets, tmp_path / "resumed", **cfg), on_step=interrupt_at_3)
    assert first.status == "interrupted" and first.step == 3
    second = train(rm_config(assets, tmp_path / "resumed", resume=True, **cfg))
    a, b = weights(full.model_dir), weights(second.model_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


def _cli_recipe(assets, tmp_path, **extra):
    rows = _rows(80)
    data = _write(tmp_path / "pairs.jsonl", rows)
    recipe = {
        "model": {"path": assets["model"]},
        "data": {"paths": [data], "max_length": 64, "prompt_format": "plain", "holdout": 0.2},
        "optim": {"lr": 3e-3},
        "train": {"batch_size": 8, "epochs": 2, "seed": 0},
        "logging": {"every": 5, "progress": "none"},
        "output_dir": str(tmp_path / "rm"),
        **extra,
    }
    path = tmp_path / "rm.yaml"
    import yaml

    path.write_text(yaml.safe_dump(recipe))
    return path


def test_alphapo_rm_evaluates_held_out_pairs_and_scores_the_same_everywhere(assets, tmp_path, capsys):
    recipe = _cli_recipe(assets, tmp_path)
    assert main(["rm", str(recipe)]) == 0
    printed = capsys.readouterr().out
    assert "held-out pairs:" in printed and "accuracy" in printed
    out = tmp_path / "rm"
    report = json.loads((out / "eval.json").read_text())
    held = report["heldout"]
    assert 8 <= held["pairs"] <= 24 and len(held["examples"]) == 10
    assert held["accuracy"]["low"] <= held["accuracy"]["mean"] <= held["accuracy"]["high"]
    stats = json.loads((out / "model" / "reward_stats.json").read_text())
    assert stats["std"] > 0 and stats["completions"] == 2 * min(256, 80 - held["pairs"])

    # the saved directory scores identically through alphapo judge, the model class and the pipeline
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    samples = tmp_path / "samples.jsonl"
    texts = [(" ".join(["Name a fruit like plum #3:"]), [" pear ok", " no fig bad"])]
    _write(samples, [{"prompt": p, "completions": c} for p, c in texts])
    assert (
        main(
            [
                "judge",
                "--samples",
                str(samples),
                "--out",
                str(tmp_path / "j.jsonl"),
                "--reward-model",
                str(out / "model"),
                "--prompt-format",
                "plain",
            ]
        )
        == 0
    )
    judged = json.loads((tmp_path / "j.jsonl").read_text())["scores"]
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    model = AutoModelForSequenceClassification.from_pretrained(out / "model").eval()
    classify = pipeline("text-classification", model=str(out / "model"), function_to_apply="none")
    from alphapo.data.tokenize import completion_token_ids, prompt_token_ids

    prompt, completions = texts[0]
    prompt_ids = prompt_token_ids(tokenizer, [prompt], "plain")[0]
    tails = completion_token_ids(tokenizer, [prompt, prompt], completions, "plain")
    assert all(t[-1] == tokenizer.eos_token_id for t in tails)  # as training tokenised them
    piped_any = False
    for tail, score in zip(tails, judged, strict=True):
        ids = prompt_ids + tail
        with torch.no_grad():
            direct = model(input_ids=torch.tensor([ids])).logits[0, 0].item()
        assert direct == pytest.approx(score, abs=1e-5)
        text = tokenizer.decode(ids, skip_special_tokens=False)
        if tokenizer(text, add_special_tokens=False)["input_ids"] == ids:  # the text round-trips to the same tokens
            piped = classify(text, top_k=None, add_special_tokens=False)
            assert piped[0]["score"] == pytest.approx(score, abs=1e-5)
            piped_any = True
    assert piped_any
    # held-out accuracy recomputed from the example scores it shows
    shown = held["examples"]
    assert all(set(e) >= {"prompt", "chosen", "rejected", "chosen_score", "rejected_score"} for e in shown)


def test_lora_reward_model_is_written_merged_for_the_judge(assets, tmp_path):
    result = train(rm_config(assets, tmp_path / "rm", lora={"r": 4, "alpha": 8, "target_modules": "all-linear"}))
    assert (result.output_dir / "adapter" / "adapter_config.json").is_file()
    from alphapo.judge.score import load_reward_model

    model, _ = load_reward_model(result.model_dir)
    assert type(model).__name__ == "LlamaForSequenceClassification"
    assert not any("lora" in n for n, _ in model.named_parameters())


def test_reward_settings_are_checked():
    from alphapo.config import validate
    from alphapo.train import TrainConfig

    base = {"model": {"path": "x"}, "data": {"paths": ["p.jsonl"]}}
    with pytest.raises(Exception, match="reward models only"):
        validate(TrainConfig, base | {"data": {"paths": ["p"], "margin_column": "m"}})
    with pytest.raises(Exception, match="set one"):
        validate(TrainConfig, base | {"task": "reward", "lora": {}, "reward": {"train_layers": 2}})
    cfg = validate(TrainConfig, base | {"task": "reward"})
    assert cfg.data.margin_column == "margin" and cfg.reference_kind() == "none" and cfg.displacement_mode() == "off"


def test_pair_report_counts_ties_half():
    report = pair_report(torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [2.0, 1.0]]))
    assert report["accuracy"]["mean"] == pytest.approx((1 + 0.5 + 0 + 1) / 4) and report["pairs"] == 4
    assert report["margin"]["mean"] == pytest.approx(0.25)


def test_shipped_hh_reward_model_recipe_validates(capsys):
    from alphapo.config import load_config
    from alphapo.train import TrainConfig

    cfg = load_config(TrainConfig, "smollm2_hh_rm", ["data.paths=hh.jsonl.gz"])
    assert cfg.task == "reward" and cfg.data.holdout == 0.2 and cfg.reward.train_layers == 4
    assert cfg.data.margin_column == "margin"
    assert main(["recipes", "ls"]) == 0
    assert any(line.startswith("smollm2_hh_rm") and " reward " in line for line in capsys.readouterr().out.splitlines())
