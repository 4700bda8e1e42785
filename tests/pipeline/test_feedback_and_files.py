"""Long stages report progress in a log (not only on a terminal); the sweep's ETA counts its
evaluations; results files are written atomically."""

import json
import os

import pytest

import alphapo.progress as progress_module
from alphapo.files import write_atomically, write_json, write_jsonl
from alphapo.sweep.run import SweepETA


@pytest.fixture
def slow_clock(monkeypatch):
    """Every reading of the progress clock is 10 s after the previous one."""
    now = [0.0]

    def tick():
        now[0] += 10.0
        return now[0]

    monkeypatch.setattr(progress_module.time, "monotonic", tick)
    monkeypatch.delenv("ALPHAPO_PROGRESS", raising=False)


def test_generation_reports_progress_lines_in_a_log(slow_clock, capsys):
    from alphapo.models import TinyModelSpec, build_tiny_model, train_bpe_tokenizer
    from alphapo.sample.generate import generate

    tokenizer = train_bpe_tokenizer(["what is one plus two? three."] * 20, vocab_size=60)
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    model = build_tiny_model(
        TinyModelSpec(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2),
        vocab_size=len(tokenizer),
        special_tokens={**special, "pad_token_id": tokenizer.pad_token_id},
    )
    prompts = [{"prompt": f"what is {i} plus two?"} for i in range(5)]
    generate(
        model,
        tokenizer,
        [p["prompt"] for p in prompts],
        k=1,
        temperature=0.0,
        max_new_tokens=2,
        batch_size=2,
        progress="eval heldout: greedy",
    )
    err = capsys.readouterr().err
    assert "eval heldout: greedy: 2/5 prompts (40%)" in err and "eta" in err
    assert "eval heldout: greedy: 5/5 prompts (100%)" in err and err.rstrip().endswith("- done")


def test_the_sweep_eta_counts_training_and_evaluations(monkeypatch, caplog):
    import logging

    import alphapo.sweep.run as sweep_module

    now = [0.0]
    monkeypatch.setattr(sweep_module.time, "monotonic", lambda: now[0])
    eta = SweepETA(4)
    with caplog.at_level(logging.INFO, logger="alphapo"):
        eta.starting("alpha=0 seed 0")
        now[0] += 0.5  # found finished in the cache: does not count
        eta.finished()
        eta.starting("alpha=1 seed 0")
        now[0] += 300.0  # training plus its evaluations
        eta.finished()
        eta.starting("alpha=2 seed 0")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "sweep: run 1/4 (alpha=0 seed 0), 0s elapsed"
    assert lines[2] == "sweep: run 3/4 (alpha=2 seed 0), 300s elapsed, eta 600s (training and evaluations)"


def test_atomic_writes_leave_the_old_file_when_writing_fails(tmp_path):
    target = write_json(tmp_path / "sub" / "summary.json", {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}

    def half_then_fail(tmp):
        tmp.write_text('{"a": ')
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomically(target, half_then_fail)
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(os.listdir(target.parent)) == ["summary.json"]  # no temporary file left behind
    write_jsonl(tmp_path / "rows.jsonl", [{"x": 1}, {"x": 2}])
    assert (tmp_path / "rows.jsonl").read_text() == '{"x": 1}\n{"x": 2}\n'


def _captured_figure(monkeypatch, module):
    figures = []
    monkeypatch.setattr(module, "save_figure", lambda fig, path: figures.append(fig))
    return figures


def test_rewards_of_different_losses_are_shown_scale_free(monkeypatch, tmp_path):
    import alphapo.report.plots as plots

    figures = _captured_figure(monkeypatch, plots)
    logs = {
        "dpo": [{"step": s, "rewards/margins": 0.1 * s, "rewards/accuracies": 0.5} for s in (1, 2)],
        "simpo": [{"step": s, "rewards/margins": -4.0 * s, "rewards/accuracies": 0.7} for s in (1, 2)],
    }
    plots.plot_training_curves(logs, tmp_path / "c.png", comparable_rewards=False)
    first, second = figures[0].axes[:2]
    assert first.get_title().startswith("Reward accuracy") and "own scale" in second.get_title()
    assert [list(line.get_ydata()) for line in second.get_lines()[:2]] == [[0.5, 1.0], [-0.5, -1.0]]
    plots.plot_training_curves(logs, tmp_path / "c.png")
    assert figures[1].axes[0].get_title() == "Rewards"


def test_frontier_labels_one_point_per_setting_and_margin_ends_are_the_logged_values(monkeypatch, tmp_path):
    import alphapo.sweep.plots as sweep_plots

    figures = _captured_figure(monkeypatch, sweep_plots)
    runs = [[{"step": s, "gold_reward": 0.1 * s, "kl": 0.01 * s} for s in range(0, 60, 10)]]
    sweep_plots.plot_frontier({"alpha=0": runs, "alpha=1": runs}, tmp_path / "f.png")
    assert [t.get_text() for t in figures[0].axes[0].texts] == ["step 50", "step 50"]
    log = [
        {"step": s, "rewards/margins": m, "displacement/chosen": d}
        for s, m, d in [(1, 0.0, 0.0), (2, 5.0, -1.0), (3, 1.0, -3.0)]
    ]
    sweep_plots.plot_margin_vs_chosen({"alpha=0": [log]}, tmp_path / "m.png")
    lines = figures[1].axes[0].get_lines()
    assert (list(lines[1].get_xdata()), list(lines[1].get_ydata())) == ([0.0], [0.0])  # first logged
    assert (list(lines[2].get_xdata()), list(lines[2].get_ydata())) == ([-3.0], [1.0])  # last logged, as the table
