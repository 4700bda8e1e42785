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
