"""The console script works as a new user would run it."""

import subprocess
import sys

import alphapo
from alphapo.cli import main


def test_version_and_help_through_the_console_script():
    out = subprocess.run(["alphapo", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"alphapo {alphapo.__version__}"
    helped = subprocess.run([sys.executable, "-m", "alphapo", "--help"], capture_output=True, text=True, check=True)
    assert "losses" in helped.stdout


def test_losses_command_lists_every_loss(capsys):
    from alphapo.losses import available_losses

    assert main(["losses", "--width", "250"]) == 0
    printed = capsys.readouterr().out
    for name in available_losses():
        assert name in printed


def test_pair_command_takes_a_strategy(tmp_path, capsys):
    import json

    from tests.pipeline.test_pairs import ROWS

    judged = tmp_path / "judged.jsonl"
    judged.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = tmp_path / "pairs.jsonl"
    args = ["pair", "--judged", str(judged), "--out", str(out), "--strategy", "all_above_gap", "--min-gap", "0.5"]
    assert main([*args, "--max-pairs-per-prompt", "2"]) == 0
    printed = capsys.readouterr().err
    assert "2 pairs from 4 prompts" in printed and "3 over the cap" in printed
    assert [json.loads(x)["rejected"] for x in out.read_text().splitlines()] == ["z", "v"]
    assert json.loads((tmp_path / "pairs.jsonl.stats.json").read_text())["capped"] == 3


def test_the_command_destroys_its_process_group_before_exiting(tmp_path, capsys):
    """A launch's Gloo group left to interpreter shutdown can abort a finished process (SIGABRT), so the
    command destroys it on the way out, after success and after an error alike."""
    import torch.distributed as dist

    for argv, code in ((["losses"], 0), (["train", str(tmp_path / "missing.yaml")], 2)):
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        assert main(argv) == code
        assert not dist.is_initialized(), argv
