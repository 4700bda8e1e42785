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


def test_the_command_destroys_the_process_group_it_set_up(monkeypatch, capsys):
    """A launch's Gloo group left to interpreter shutdown can abort a finished process (SIGABRT), so the
    command destroys the group it set up on the way out, after success and after an error alike; a group
    that was there before (main() called from a script) is its caller's."""
    import torch.distributed as dist

    from alphapo import cli
    from alphapo.errors import ConfigError

    def command(fails):
        def handler(args):
            dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
            if fails:
                raise ConfigError("bad recipe")
            return 0

        return handler

    for fails, code in ((False, 0), (True, 2)):
        monkeypatch.setattr(cli, "_cmd_losses", command(fails))
        assert main(["losses"]) == code
        assert not dist.is_initialized()
    monkeypatch.undo()
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        assert main(["losses"]) == 0 and dist.is_initialized()
    finally:
        dist.destroy_process_group()
