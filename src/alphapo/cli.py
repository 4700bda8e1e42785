"""The ``alphapo`` command line: one subcommand per pipeline stage.

Run ``alphapo --help`` for the list and ``alphapo <command> --help`` for each. Errors alphapo
raises on purpose (bad config, bad data, a missing stage output) are printed as one message and
exit with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from alphapo import __version__
from alphapo.errors import AlphapoError

Handler = Callable[[argparse.Namespace], int | None]


def _cmd_losses(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from alphapo.losses import available_losses, get_loss_spec

    table = Table(title="alphapo losses (preference_loss names)")
    for column in ("name", "reference", "per-token", "alpha", "defaults", "paper"):
        table.add_column(column)
    for name in available_losses():
        spec = get_loss_spec(name)
        defaults = ", ".join(f"{k}={v}" for k, v in spec.defaults.items())
        alpha = f"{spec.default_alpha:g}" if spec.shapeable else "-"
        table.add_row(
            name,
            "yes" if spec.needs_reference else "no",
            "yes" if spec.length_normalize else "no",
            alpha,
            defaults,
            spec.paper,
        )
    Console(width=args.width).print(table)
    return 0


def _train_command(task: str) -> Handler:
    def run(args: argparse.Namespace) -> int:
        from alphapo.config import load_config
        from alphapo.train import TrainConfig, train

        overrides = list(args.overrides)
        if task == "sft":
            overrides.insert(0, "task=sft")
        result = train(load_config(TrainConfig, args.config, overrides))
        if result.status == "interrupted":
            print(
                f"alphapo {args.command}: interrupted at step {result.step}; checkpoint {result.checkpoint}. "
                f"Resume with: alphapo {args.command} {args.config} {' '.join(args.overrides)} resume=true",
                file=sys.stderr,
            )
            return 130
        print(f"alphapo {args.command}: done, {result.step} steps; model in {result.model_dir}", file=sys.stderr)
        return 0

    return run


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="recipe YAML (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override any setting, e.g. loss.alpha=0.5")


def _commands() -> dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Handler]]:
    """name -> (help, add_arguments, handler). Stage modules are imported lazily by their handlers."""

    def losses_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--width", type=int, default=None, help="table width (default: terminal width)")

    return {
        "train": (
            "train a policy with a preference loss (AlphaPO, SimPO, DPO, ...)",
            _config_args,
            _train_command("preference"),
        ),
        "sft": (
            "supervised fine-tuning on prompt/completion data (the same trainer)",
            _config_args,
            _train_command("sft"),
        ),
        "losses": ("list every loss with its defaults", losses_args, _cmd_losses),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alphapo",
        description="Align language models to preferences with direct alignment algorithms "
        "(AlphaPO, SimPO, DPO and the DAA family).",
    )
    parser.add_argument("--version", action="version", version=f"alphapo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_arguments, handler) in _commands().items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(handler=handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.handler(args) or 0)
    except AlphapoError as err:
        print(f"alphapo {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"alphapo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
