"""Command line (DESIGN §9). Exit codes: 0 success, 1 a check failed, 2 usage or configuration
error (nothing written), 3 a run failed."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

EXIT_OK, EXIT_CHECK_FAILED, EXIT_CONFIG, EXIT_RUN_FAILED = 0, 1, 2, 3
COMMANDS = ("run", "check", "report")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse exits 2 too; keep its message short
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m tune_unlearn", description="Tune and validate machine unlearning.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = commands.add_parser("run", help="run (or resume) the study: the default command")
    run.add_argument("study", type=Path)
    run.add_argument("--output", type=Path)
    run.add_argument("--n-trials", type=int)
    run.add_argument("--storage")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite in the output folder)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    check = commands.add_parser("check", help="validate the study file only")
    check.add_argument("study", type=Path)
    report = commands.add_parser("report", help="rebuild the outputs from storage, no new trials")
    report.add_argument("study", type=Path)
    report.add_argument("--output", type=Path)
    report.add_argument("--storage")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] not in COMMANDS and not args_list[0].startswith("-"):
        args_list.insert(0, "run")  # `python -m tune_unlearn study.yaml`
    try:
        args = _parser().parse_args(args_list)
    except SystemExit as exit_:
        return int(exit_.code or 0)

    from tune_unlearn.config import ConfigError, load_study
    from tune_unlearn.tracking import TrackingUnavailable

    try:
        config = load_study(args.study)
        if getattr(args, "output", None) is not None:
            config = config.model_copy(update={"output": args.output})
        if getattr(args, "n_trials", None) is not None and args.n_trials < 1:
            raise ConfigError("--n-trials", [])
    except ConfigError as error:
        print(error if error.issues else f"error: {error.source} must be at least 1", file=sys.stderr)
        return EXIT_CONFIG

    if args.command == "check":
        print(
            f"{args.study}: OK ({config.method.name} on {config.problem.name or config.problem.factory}, "
            f"{len(config.method.search)} searched hyperparameters, {config.n_trials} trials)"
        )
        return EXIT_OK
    try:
        if args.command == "report":
            return _report(config, args.storage)
        return _run(config, args)
    except (LookupError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except TrackingUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_RUN_FAILED
    except KeyboardInterrupt:
        print("interrupted: finished trials are kept in the storage; run again to resume", file=sys.stderr)
        return EXIT_RUN_FAILED
    except Exception:  # a run failed: say so with the traceback, and exit 3
        traceback.print_exc()
        return EXIT_RUN_FAILED


def _run(config: object, args: argparse.Namespace) -> int:
    from tune_unlearn.outputs import pareto_table
    from tune_unlearn.runner import run_study

    result = run_study(
        config,  # type: ignore[arg-type]
        n_trials=args.n_trials,
        storage=args.storage,
        tracking_uri=args.tracking_uri,
        progress=not args.no_progress,
    )
    print(pareto_table(result.summary))
    print(f"outputs: {result.output}")
    return EXIT_OK


def _report(config: object, storage: str | None) -> int:
    from tune_unlearn.outputs import pareto_table
    from tune_unlearn.runner import rebuild_report

    summary = rebuild_report(config, storage)  # type: ignore[arg-type]
    print(pareto_table(summary))
    return EXIT_OK
