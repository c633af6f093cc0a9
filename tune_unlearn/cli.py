"""Command line. Exit codes: 0 success, 1 a check failed, 2 usage or configuration
error (nothing written), 3 a run failed, 130 interrupted (finished trials kept; run again to
resume)."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from tune_unlearn.config.study_config import StudyConfig

from tune_unlearn.errors import EXIT_CHECK_FAILED, EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_OK, EXIT_RUN_FAILED

COMMANDS = ("run", "check", "report", "apply", "gate", "worker", "compare", "list")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse exits 2 too; keep its message short
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m tune_unlearn", description="Tune and validate machine unlearning.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    study = {"type": Path, "metavar": "STUDY.yaml"}
    run = commands.add_parser("run", help="run (or resume) the study: the default command")
    run.add_argument("study", **study)  # type: ignore[arg-type]
    run.add_argument("--output", type=Path, metavar="DIR")
    run.add_argument("--n-trials", type=int, metavar="N", help="trials the study holds in all")
    run.add_argument("--add-trials", type=int, metavar="N", help="run N trials more than the study holds")
    run.add_argument("--storage", metavar="URL")
    run.add_argument(
        "--tracking-uri", metavar="URI", help="MLflow tracking URI (default: sqlite in the output folder)"
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    _threads_and_trust(run)
    check = commands.add_parser("check", help="validate the study file only")
    check.add_argument("study", **study)  # type: ignore[arg-type]
    report = commands.add_parser("report", help="rebuild the outputs from storage, no new trials")
    report.add_argument("study", **study)  # type: ignore[arg-type]
    report.add_argument("--output", type=Path, metavar="DIR")
    report.add_argument("--storage", metavar="URL")
    apply = commands.add_parser("apply", help="run one configuration and save the unlearned model")
    apply.add_argument("study", **study)  # type: ignore[arg-type]
    which = apply.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, metavar="N", help="a trial of the study (its params and seed)")
    which.add_argument(
        "--params", metavar="k=v,...", help="k=v,... (the study's fixed hyperparameters fill the rest)"
    )
    apply.add_argument("--seed", type=int, default=0, metavar="S", help="with --params (default 0)")
    apply.add_argument(
        "--save", type=Path, required=True, metavar="MODEL.pt", help="MODEL.pt; its metrics go to MODEL.json"
    )
    apply.add_argument("--storage", metavar="URL")
    _threads_and_trust(apply)
    gate = commands.add_parser("gate", help="validate a model; exit 0 only if every check passes")
    gate.add_argument("study", **study)  # type: ignore[arg-type]
    gate.add_argument("--suite", type=Path, required=True, metavar="SUITE.yaml")
    gate.add_argument(
        "--candidate", required=True, metavar="MODEL", help="MODEL.pt, models:/NAME@ALIAS or runs:/ID/PATH"
    )
    gate.add_argument(
        "--output", type=Path, metavar="DIR", help="report folder (default: <study output>/gate)"
    )
    gate.add_argument("--junit", type=Path, metavar="FILE")
    gate.add_argument("--register", metavar="NAME", help="register a passing candidate in MLflow")
    gate.add_argument("--alias", metavar="ALIAS", help="with --register: the alias to point at it")
    gate.add_argument("--tracking-uri", metavar="URI", help="the store models:/ and runs:/ resolve against")
    _threads_and_trust(gate)
    worker = commands.add_parser("worker", help="join a distributed study until its n_trials exist")
    worker.add_argument("study", **study)  # type: ignore[arg-type]
    worker.add_argument("--storage", metavar="URL")
    worker.add_argument("--tracking-uri", metavar="URI")
    worker.add_argument("--no-progress", action="store_true")
    _threads_and_trust(worker)
    compare = commands.add_parser(
        "compare", help="tune several methods at the same budget and seeds; write a leaderboard"
    )
    compare.add_argument("study", **study)  # type: ignore[arg-type]
    compare.add_argument(
        "--methods", required=True, metavar="A,B,...", help="comma-separated method names (see `list`)"
    )
    compare.add_argument(
        "--seeds", type=int, default=3, metavar="N", help="studies per method, sampler seeds 0..N-1 (3)"
    )
    compare.add_argument(
        "--n-trials", type=int, metavar="N", help="trials per study (default: the study file's)"
    )
    compare.add_argument("--output", type=Path, metavar="DIR")
    compare.add_argument("--storage", metavar="URL")
    compare.add_argument("--tracking-uri", metavar="URI")
    compare.add_argument("--no-progress", action="store_true")
    _threads_and_trust(compare)
    commands.add_parser("list", help="registered problems, methods, metrics, probe families and checks")
    return parser


def synopsis() -> str:
    """One line per command, generated from the parser: docs/reference.md and docs/tutorial.md
    show it, and a test regenerates it, so the documented options cannot drift from the real
    ones."""
    parser = _parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    lines = []
    for name, command in commands.choices.items():
        words = [parser.prog, "[run]" if name == "run" else name]
        grouped = {id(a): group for group in command._mutually_exclusive_groups for a in group._group_actions}
        done: set[int] = set()
        for action in command._actions:
            if isinstance(action, argparse._HelpAction) or id(action) in done:
                continue
            group = grouped.get(id(action))
            if group is None:
                words.append(_usage(action, action.required or not action.option_strings))
                continue
            done.update(id(a) for a in group._group_actions)
            inner = " | ".join(_usage(a, True) for a in group._group_actions)
            words.append(f"({inner})" if group.required else f"[{inner}]")
        lines.append(" ".join(words))
    return "\n".join(lines)


def _usage(action: argparse.Action, required: bool) -> str:
    if not action.option_strings:
        return str(action.metavar or action.dest.upper())
    flag = action.option_strings[0]
    text = flag if action.nargs == 0 else f"{flag} {action.metavar or action.dest.upper()}"
    return text if required else f"[{text}]"


def _threads_and_trust(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch CPU threads (default: half the cores, at most 4; side-by-side processes: "
        "cores / processes)",
    )
    command.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow unpickling an MLflow model that carries no state dict (runs its code)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] not in COMMANDS and not args_list[0].startswith("-"):
        args_list.insert(0, "run")  # `python -m tune_unlearn study.yaml`
    try:
        args = _parser().parse_args(args_list)
    except SystemExit as exit_:
        return int(exit_.code or 0)

    if args.command == "list":
        from tune_unlearn.catalog import render_catalog

        print(render_catalog())
        return EXIT_OK

    from tune_unlearn.config.schema import ConfigError
    from tune_unlearn.study_file import load_study
    from tune_unlearn.tracking.runs import TrackingUnavailable

    try:
        config = load_study(args.study)
        if getattr(args, "output", None) is not None and args.command != "gate":
            config = config.model_copy(update={"output": args.output})
        if getattr(args, "n_trials", None) is not None and args.n_trials < 1:
            raise ConfigError("--n-trials", [])
    except ConfigError as error:
        print(error if error.issues else f"error: {error.source} must be at least 1", file=sys.stderr)
        return EXIT_CONFIG

    if args.command == "check":
        from tune_unlearn.check_command import check_study

        return check_study(config, args.study)
    problem = _set_threads(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    from tune_unlearn.errors import OutputNotWritable, UsageError
    from tune_unlearn.study.runner import TrackingLost, TrialError

    _stop_on_sigterm()
    try:
        if args.command == "report":
            return _report(config, args.storage)
        if args.command == "apply":
            return _apply(config, args)
        if args.command == "gate":
            return _gate(config, args)
        if config.requests is not None and args.command not in ("run",):
            raise UsageError(
                f"{args.study} is a request stream: `run` runs it; each request is a study of its own "
                "under <output>/stream/request-<i> for the other commands"
            )
        from tune_unlearn.study.objective import probe_storages

        probe_storages(config, getattr(args, "storage", None))  # before references train
        if args.command == "worker":
            return _worker(config, args)
        if args.command == "compare":
            return _compare(config, args)
        return _run(config, args)
    except (UsageError, OutputNotWritable) as error:
        # Found before anything ran: the study file, the arguments or the folders are wrong.
        print(f"error: {_redacted(error)}", file=sys.stderr)
        return EXIT_CONFIG
    except (TrackingUnavailable, TrackingLost, TrialError) as error:
        print(f"error: {_redacted(error)}", file=sys.stderr)
        return EXIT_RUN_FAILED
    except KeyboardInterrupt as interrupt:
        signal_name = getattr(interrupt, "signal_name", "SIGINT")
        print(
            f"interrupted ({signal_name}): finished trials are kept in the storage and the trial in "
            "flight will be retried; run the same command again to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except Exception as error:  # a run failed: say so with the traceback, and exit 3
        traceback.print_exc()
        print(f"error: the run failed: {_redacted(error)}", file=sys.stderr)
        return EXIT_RUN_FAILED


def _redacted(error: BaseException) -> str:
    from tune_unlearn.config.storages import redact

    return redact(str(error))


def _set_threads(args: argparse.Namespace) -> str | None:
    """Torch's CPU threads for a command that trains or evaluates; a problem, or None."""
    if not hasattr(args, "threads"):
        return None
    if args.threads is not None and args.threads < 1:
        return "--threads must be at least 1"
    import torch

    from tune_unlearn.study.runner import default_threads

    torch.set_num_threads(args.threads or default_threads())
    return None


def _stop_on_sigterm() -> None:
    """SIGTERM (a scheduler stopping a worker) ends a run as Ctrl-C does: cleanly, resumable."""
    import signal

    from tune_unlearn.errors import Interrupted

    def handler(signum: int, frame: object) -> None:
        raise Interrupted("SIGTERM")

    signal.signal(signal.SIGTERM, handler)


def _run(config: StudyConfig, args: argparse.Namespace) -> int:
    from tune_unlearn.report.outputs import pareto_table
    from tune_unlearn.report.study_record import StudyRecord
    from tune_unlearn.study.runner import run_study

    if config.requests is not None:
        return _stream(config, args)

    if args.add_trials is not None and args.add_trials < 1:
        print("error: --add-trials must be at least 1", file=sys.stderr)
        return EXIT_CONFIG
    if args.add_trials is not None and args.n_trials is not None:
        print("error: give --n-trials (the total) or --add-trials (more), not both", file=sys.stderr)
        return EXIT_CONFIG
    result = run_study(config, add_trials=args.add_trials, **_run_options(args))
    print(pareto_table(result.summary))
    ran = f"ran {result.trials_run} trial(s) of a budget of {result.budget}"
    releasable = StudyRecord.of(result.study).releasable_trial
    if releasable is not None:
        ran += f"; stopped at trial {releasable}, the first the validation suite passed"
    print(f"{ran}; outputs: {result.output}")
    return EXIT_OK


def _run_options(args: argparse.Namespace) -> dict[str, Any]:
    """What `run`, a stream and `compare` pass on alike."""
    return {
        "n_trials": args.n_trials,
        "storage": args.storage,
        "tracking_uri": args.tracking_uri,
        "progress": not args.no_progress,
        "trust_pickle": args.trust_pickle,
    }


def _stream(config: StudyConfig, args: argparse.Namespace) -> int:
    from tune_unlearn.study.stream import retrain_at, run_stream, stream_folder, stream_markdown

    if args.add_trials is not None:
        print("error: --add-trials applies to one study; a stream's budget is per request", file=sys.stderr)
        return EXIT_CONFIG
    rows = run_stream(config, **_run_options(args))
    print(stream_markdown(rows).split("\n![")[0])
    stop = retrain_at(rows)
    advice = "no retrain needed" if stop is None else f"retrain at request {stop.request}"
    print(f"{len(rows)} request(s); {advice}; outputs: {stream_folder(config)}")
    return EXIT_OK


def _compare(config: StudyConfig, args: argparse.Namespace) -> int:
    from tune_unlearn.config.schema import ConfigError
    from tune_unlearn.study.compare import run_comparison

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    try:
        result = run_comparison(config, methods, seeds=args.seeds, **_run_options(args))
    except ConfigError as error:  # a member study the file's settings make invalid
        print(error, file=sys.stderr)
        return EXIT_CONFIG
    print(result.leaderboard.markdown())
    print(
        f"ran {result.trials_run} trial(s) in {len(result.members)} studies; leaderboard: {result.files[0]}"
    )
    return EXIT_OK


def _worker(config: StudyConfig, args: argparse.Namespace) -> int:
    from tune_unlearn.study.runner import run_worker

    result = run_worker(
        config,
        storage=args.storage,
        tracking_uri=args.tracking_uri,
        progress=not args.no_progress,
        trust_pickle=args.trust_pickle,
    )
    trained = ", ".join(result.trained_references) or "none (cached)"
    print(f"worker ran {result.trials_run} trials; trained references: {trained}")
    if not result.complete:
        print("study not finished: trials are still running or waiting; run a worker again to finish it")
    elif result.finalized:
        print(f"study complete: outputs in {config.output_dir()}")
    else:
        print(f"study complete: another worker wrote the outputs in {config.output_dir()}")
    return EXIT_OK


def _apply(config: StudyConfig, args: argparse.Namespace) -> int:
    from tune_unlearn.report.trial_record import TrialRecord
    from tune_unlearn.study.replay import apply_configuration, load_summary

    if args.trial is not None:
        trials = {t.number: t for t in load_summary(config, args.storage).trials}
        if args.trial not in trials or TrialRecord.of(trials[args.trial]).seed is None:
            print(f"error: the study has no trial {args.trial} with a configuration", file=sys.stderr)
            return EXIT_CONFIG
        trial = trials[args.trial]
        params, seed = dict(trial.params), int(TrialRecord.of(trial).seed or 0)
    else:
        params, seed = _parse_params(args.params), args.seed
    metrics = apply_configuration(config, params, seed, args.save, trust_pickle=args.trust_pickle)
    print(
        f"saved {args.save} (forget_efficacy {metrics['forget_efficacy']:.4f}, "
        f"retained_utility {metrics['retained_utility']:.4f})"
    )
    return EXIT_OK


def _parse_params(text: str) -> dict[str, object]:
    import yaml

    from tune_unlearn.errors import UsageError

    params: dict[str, object] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--params expects k=v,...; got {item!r}")
        params[key.strip()] = yaml.safe_load(value)
    return params


def _gate(config: StudyConfig, args: argparse.Namespace) -> int:
    from tune_unlearn.config.schema import ConfigError
    from tune_unlearn.gate import CandidateError, run_gate
    from tune_unlearn.validation import load_suite, render_markdown

    if args.alias and not args.register:
        print("error: --alias needs --register NAME", file=sys.stderr)
        return EXIT_CONFIG
    try:
        suite = load_suite(args.suite)
        outcome = run_gate(
            config,
            suite,
            args.candidate,
            output=args.output or config.output_dir() / "gate",
            junit=args.junit,
            register=args.register,
            alias=args.alias,
            tracking_uri=args.tracking_uri,
            trust_pickle=args.trust_pickle,
        )
    except ConfigError as error:
        print(error, file=sys.stderr)
        return EXIT_CONFIG
    except CandidateError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    print(render_markdown(outcome.report))
    print(f"reports: {outcome.json_path}, {outcome.junit_path}, {outcome.markdown_path}")
    if outcome.registered:
        print(f"registered {outcome.registered}" + (f" as @{args.alias}" if args.alias else ""))
    elif args.register:
        print(f"not registered: the candidate did not pass, so {args.register} is unchanged")
    if outcome.attached_to:
        print(f"reports attached to MLflow run {outcome.attached_to}")
    print(
        f"verdict: {outcome.report.verdict} (exit {EXIT_OK if outcome.report.passed else EXIT_CHECK_FAILED})"
    )
    return EXIT_OK if outcome.report.passed else EXIT_CHECK_FAILED


def _report(config: StudyConfig, storage: str | None) -> int:
    from tune_unlearn.report.outputs import pareto_table
    from tune_unlearn.study.replay import rebuild_report

    summary = rebuild_report(config, storage)
    print(pareto_table(summary))
    return EXIT_OK
