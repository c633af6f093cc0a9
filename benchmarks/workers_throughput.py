"""Trials per hour with one worker and with two, sharing a study on PostgreSQL.

The quickstart study (tracking off) with one fixed configuration, so that every trial costs
the same whatever the samplers suggest; a fresh database for each run, references cached
beforehand so both runs measure trials only; the machine's cores are split between the workers
(``--threads``), as one would run them.

    python benchmarks/workers_throughput.py [--trials 20] [--postgres postgresql://postgres@127.0.0.1:5432]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from _quickstart import quickstart_search

ROOT = Path(__file__).resolve().parents[1]


def timed_workers(study: Path, storage: str, count: int) -> float:
    start = time.perf_counter()
    # The cores split between the workers: N workers each using every core oversubscribe
    # the machine, and OpenMP's spinning threads then slow every trial several-fold.
    threads = max(1, (os.cpu_count() or 1) // count)
    command = [
        sys.executable,
        "-m",
        "tune_unlearn",
        "worker",
        str(study),
        "--storage",
        storage,
        "--no-progress",
        "--threads",
        str(threads),
    ]
    processes = [
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(count)
    ]
    if any(p.wait() != 0 for p in processes):
        raise RuntimeError("a worker failed")
    return time.perf_counter() - start


def timeline(storage: str) -> str:
    """Trial time against wall time: how much of the run the trials themselves filled."""
    import optuna

    from tune_unlearn.study.objective import open_storage

    trials = optuna.load_study(study_name="quickstart", storage=open_storage(storage)).trials
    first = min(t.datetime_start for t in trials if t.datetime_start)
    last = max(t.datetime_complete for t in trials if t.datetime_complete)
    busy = sum(
        (t.datetime_complete - t.datetime_start).total_seconds() for t in trials if t.datetime_complete
    )
    span = (last - first).total_seconds()
    parallel = busy / span
    return (
        f"  trials span {span:.1f} s holding {busy:.1f} trial-seconds ({parallel:.2f} in parallel on average)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--cache", help="reference cache (default: the user's); warmed before the timing")
    args = parser.parse_args()
    raw = quickstart_search()
    with tempfile.TemporaryDirectory() as tmp:
        raw.update(n_trials=args.trials, tracking={"enabled": False}, constraints=[])
        if args.cache:
            raw.update(references={"cache_dir": args.cache})
        raw["method"]["fixed"].update(retain_lr=0.1, projection_strength=0.5, subspace_rank=4)
        raw["method"]["search"] = {"ascent_lr": {"type": "categorical", "choices": [0.002]}}
        rates = {}
        for count in (1, 2):
            database = f"tune_unlearn_bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(f"{args.postgres}/postgres", autocommit=True) as connection:
                connection.execute(f'CREATE DATABASE "{database}"')
            try:
                study = Path(tmp) / f"study{count}.yaml"
                study.write_text(json.dumps({**raw, "output": f"{tmp}/out{count}"}))
                if count == 1:  # warm the reference cache outside the timing
                    subprocess.run([sys.executable, "-m", "tune_unlearn", "check", str(study)], check=True)
                    warm = {**raw, "n_trials": 1, "output": f"{tmp}/warm", "storage": f"{tmp}/warm.log"}
                    (Path(tmp) / "warm.yaml").write_text(json.dumps(warm))
                    timed_workers(Path(tmp) / "warm.yaml", f"{tmp}/warm.log", 1)
                seconds = timed_workers(study, f"{args.postgres}/{database}", count)
            finally:
                with psycopg.connect(f"{args.postgres}/postgres", autocommit=True) as connection:
                    connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            rates[count] = args.trials / seconds * 3600
            print(
                f"{count} worker(s): {args.trials} trials in {seconds:.1f} s = {rates[count]:.0f} trials/hour"
            )
    print(f"ratio two/one: {rates[2] / rates[1]:.3f}")


if __name__ == "__main__":
    main()
