"""Per-step cost of each method relative to GradDiff, and per-sample gradients through
``torch.func.vmap`` relative to a Python loop (batch 64), measured in one run.

    python benchmarks/step_cost.py [--problem digits|shapes|scenes] [--samples 3000] [--steps 30]
        [--repeats 3] [--memory-batches 8 16 32 64] [--memory-only]

Every method runs the same number of steps on the same setup; the figure is the median over
repeats of its unlearning seconds divided by GradDiff's. Targets (issue 7): task and subspace
projection at most (T + 1)/2 × GradDiff + 10%, interference_aware at most 3×; vmap at least
10× faster than the loop.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
from collections.abc import Iterator
from typing import Any

import torch
from _original_only import original_only_experiment

from tune_unlearn.methods import METHODS, ParameterLayout, StepGradients
from tune_unlearn.methods import _gradients as gradients_module
from tune_unlearn.trial.configuration_run import PhaseTimer
from tune_unlearn.trial.study_references import LoadedStudy

REQUESTS = {
    "digits": {"mode": "partial", "target_tasks": ["digit"], "where": {"digit": 0}},
    "shapes": {"mode": "partial", "target_tasks": ["shape"], "where": {"shape": 0}},
    "scenes": {"mode": "partial", "target_tasks": ["segmentation"], "where": {"has_ball": 1}},
}


FORMS = ("representation", "matrix")


def experiment_for(problem: str, samples: int, cache: str) -> LoadedStudy:
    return original_only_experiment("step_cost", problem, samples, cache, REQUESTS[problem])


def variants(experiment: LoadedStudy) -> list[str]:
    """Every method, and the projection methods again in their representation-level form; on a
    backbone of linear layers, the projection methods once more with the per-sample gradient
    matrix from ``vmap`` (``@matrix``), as on any other backbone, to show what the implicit
    form (``methods/_sample_gradients.py``) saves."""
    names = METHODS.names()
    projected = [n for n in names if "projection_space" in METHODS.get(n).hyperparameters()]
    linear = ParameterLayout(experiment.references.original_model()).shared_linear_layers is not None
    matrix = [f"{n}@matrix" for n in projected if n != "task_projection"] if linear else []
    return names + [f"{n}@representation" for n in projected] + matrix


@contextlib.contextmanager
def per_sample_matrix(wanted: bool) -> Iterator[None]:
    """With ``wanted``, every layout made inside treats its backbone as not linear layers."""
    if not wanted:
        yield
        return
    original = gradients_module.shared_linear_layers
    gradients_module.shared_linear_layers = lambda *_: None  # type: ignore[assignment]
    try:
        yield
    finally:
        gradients_module.shared_linear_layers = original


def method_seconds(experiment: LoadedStudy, variant: str, steps: int) -> float:
    """Unlearning seconds of ``steps`` steps; tiny learning rates keep every method finite."""
    name, _, form = variant.partition("@")
    space = "representation" if form == "representation" else ""
    cls = METHODS.get(name)
    # Every declared learning rate (ascent_lr, retain_lr, the loss-defined methods' lr): at a
    # default rate the loss-defined methods diverge at step 1 on the annealed shapes CNN.
    rates = {key: 1e-6 for key, param in cls.constraints().items() if param.rate}
    wanted = {"steps": steps, "batch_size": 64, "projection_space": space, **rates}
    method = cls(**{k: v for k, v in wanted.items() if k in cls.hyperparameters() and v != ""})
    model = experiment.references.original_model()
    with per_sample_matrix(form == "matrix"), PhaseTimer(experiment.inputs.device) as timer:
        method.unlearn(model, experiment.inputs.setup, seed=0)  # CUDA-event time on a GPU
    return timer.seconds


def per_sample_seconds(experiment: LoadedStudy, repeats: int) -> tuple[float, float, float]:
    """Seconds for the shared-parameter per-sample gradients of 64 retain samples: vmap, loop;
    and, as the yardstick, one ordinary backward pass of the whole batch (one gradient)."""
    model = experiment.references.original_model()
    setup = experiment.inputs.setup
    positions = torch.arange(64) % len(setup.retain)
    batch = setup.batch(setup.retain, positions.to(setup.retain.indices.device))
    layout = ParameterLayout(model)
    grads = StepGradients(layout, setup.tasks, setup.target, None, batch)
    n = layout.num_shared

    def loop() -> torch.Tensor:
        rows = []
        for i in range(64):
            one = setup.batch(setup.retain, positions[i : i + 1].to(setup.retain.indices.device))
            single = StepGradients(layout, setup.tasks, setup.target, None, one)
            rows.append(single.retain[:n])
        return torch.stack(rows)

    def timed(function: object) -> float:
        times = []
        for _ in range(repeats):
            with PhaseTimer(experiment.inputs.device) as timer:
                result = function()  # type: ignore[operator]
            times.append(timer.seconds)
        assert isinstance(result, torch.Tensor)
        return statistics.median(times)

    agreement(experiment, positions, grads.per_sample_retain(), loop())

    def batched() -> torch.Tensor:
        return StepGradients(layout, setup.tasks, setup.target, None, batch).retain[:n]

    return timed(grads.per_sample_retain), timed(loop), timed(batched)


def agreement(
    experiment: LoadedStudy, positions: torch.Tensor, vectorised: torch.Tensor, looped: torch.Tensor
) -> None:
    """That vmap and the loop compute the same per-sample gradients, judged in float64 (where
    both must agree to 1e-9: a different function, not rounding, fails); then how far each
    float32 result lies from that exact value, printed. Float32 alone cannot decide it: on the
    annealed shapes CNN the two differ by 3e-5 relative, and on scenes both lie up to 3e-3 from
    the exact value (benchmarks/RESULTS.md)."""
    model = experiment.references.original_model().double()
    setup = experiment.inputs.setup
    layout = ParameterLayout(model)
    n = layout.num_shared

    def exact_batch(rows: torch.Tensor) -> Any:
        b = setup.batch(setup.retain, rows.to(setup.retain.indices.device))
        labels = {k: v.double() if v.is_floating_point() else v for k, v in b.labels.items()}
        return type(b)(b.inputs.double(), labels, b.mask)

    exact_vmap = StepGradients(
        layout, setup.tasks, setup.target, None, exact_batch(positions)
    ).per_sample_retain()
    exact_loop = torch.stack(
        [
            StepGradients(layout, setup.tasks, setup.target, None, exact_batch(positions[i : i + 1])).retain[
                :n
            ]
            for i in range(len(positions))
        ]
    )

    def error(a: torch.Tensor, b: torch.Tensor) -> float:
        """The largest row error relative to the largest row: a sample the model already fits
        has a near-zero gradient, whose own relative error says nothing."""
        return float((a.double() - b).norm(dim=1).max() / b.norm(dim=1).max().clamp_min(1e-300))

    if error(exact_vmap, exact_loop) > 1e-9:
        raise RuntimeError(
            f"vmap and loop per-sample gradients disagree in float64 ({error(exact_vmap, exact_loop):.2g})"
        )
    print(
        f"per-sample gradients, {len(positions)} samples, largest relative error against float64: "
        f"vmap {error(vectorised, exact_loop):.2g}, loop {error(looped, exact_loop):.2g} (float32)"
    )


def per_sample_memory(experiment: LoadedStudy, batch_size: int) -> tuple[int, int]:
    """Bytes of the per-sample retain gradients by task (the tensor the projections keep),
    and the peak memory growth of computing them: CUDA's peak allocation on a GPU, else the
    growth of the process's resident peak over its size after a warm-up at batch 1 (the peak
    reset first where Linux allows; elsewhere the peak only grows, hence one size a process,
    :func:`memory_in_a_fresh_process`)."""
    import resource

    model = experiment.references.original_model()
    setup = experiment.inputs.setup
    layout = ParameterLayout(model)

    def per_sample(size: int) -> torch.Tensor:
        positions = (torch.arange(size) % len(setup.retain)).to(setup.retain.indices.device)
        batch = setup.batch(setup.retain, positions)
        return StepGradients(layout, setup.tasks, setup.target, None, batch).per_sample_retain_by_task

    if experiment.inputs.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        tensor = per_sample(batch_size)
        torch.cuda.synchronize()
        return tensor.numel() * tensor.element_size(), torch.cuda.max_memory_allocated() - start
    per_sample(1)  # first-call workspaces and the autograd graph's fixed part, not the batch's
    if _reset_resident_peak():  # Linux: the peak from here on, not loading's (rendering scenes)
        before = _status_kib("VmRSS")
        tensor = per_sample(batch_size)
        return tensor.numel() * tensor.element_size(), (_status_kib("VmHWM") - before) * 1024
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tensor = per_sample(batch_size)
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024  # KiB on Linux
    return tensor.numel() * tensor.element_size(), grown


def _reset_resident_peak() -> bool:
    """Set the process's resident peak (``VmHWM``) to its current size (Linux ≥ 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise LookupError(field)


def memory_in_a_fresh_process(args: argparse.Namespace, cache: str, batch_size: int) -> tuple[int, int]:
    """:func:`per_sample_memory` at ``batch_size`` in a process of its own (the original from
    ``cache``), so that no earlier allocation has raised the resident peak already."""
    import subprocess
    import sys

    command = [sys.executable, __file__, "--problem", args.problem, "--samples", str(args.samples)]
    command += ["--threads", str(args.threads), "--cache", cache, "--memory-child", str(batch_size)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    kept, grown = out.strip().splitlines()[-1].split()
    return int(kept), int(grown)


def profile(experiment: LoadedStudy, variant: str, steps: int, rows: int = 18) -> None:
    """The functions ``variant``'s steps spend the most time in (their own time, and their
    calls'), after one warm-up run; a share of GradDiff's whole run for scale."""
    import cProfile
    import pstats

    method_seconds(experiment, variant, steps)  # warm-up: first-call costs are not the step's
    base = method_seconds(experiment, "graddiff", steps)
    profiler = cProfile.Profile()
    profiler.enable()
    total = method_seconds(experiment, variant, steps)
    profiler.disable()
    print(f"{variant}: {total / steps * 1000:.1f} ms/step, {total / base:.2f}× graddiff (profiled)")
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--problem", choices=sorted(REQUESTS), default="shapes")
    parser.add_argument("--memory-batches", nargs="*", type=int, default=[8, 16, 32, 64])
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--profile",
        metavar="METHOD",
        help="instead: where METHOD's steps spend their time (cProfile, a warm-up run first)",
    )
    parser.add_argument(
        "--memory-only",
        action="store_true",
        help="only the per-sample gradients' memory at each --memory-batches size",
    )
    parser.add_argument("--cache", help=argparse.SUPPRESS)  # a memory child's: the parent's original
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        child = experiment_for(args.problem, args.samples, args.cache)
        kept, grown = per_sample_memory(child, args.memory_child)
        print(kept, grown)
        return
    with tempfile.TemporaryDirectory() as cache:
        experiment = experiment_for(args.problem, args.samples, cache)
        if args.profile:
            profile(experiment, args.profile, args.steps)
            return
        if args.memory_only:
            print_memory(args, experiment, cache)
            return
        tasks = len(experiment.inputs.task_names)
        # Repeats interleave the methods, so that a slow spell of a shared machine hits all.
        runs: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            for variant in variants(experiment):
                runs.setdefault(variant, []).append(method_seconds(experiment, variant, args.steps))
        seconds = {variant: statistics.median(values) for variant, values in runs.items()}
        base = seconds["graddiff"]
        print(
            f"{args.problem} ({tasks} tasks, batch 64, {args.steps} steps, median of {args.repeats}, "
            f"{torch.get_num_threads()} threads, device {experiment.inputs.device}); "
            f"graddiff {base / args.steps * 1000:.1f} ms/step"
        )
        targets = {
            "task_projection": (tasks + 1) / 2 * 1.1,
            "subspace_projection": (tasks + 1) / 2 * 1.1,
            "interference_aware": 3.0,
        }
        targets.update({f"{name}@{form}": value for name, value in targets.items() for form in FORMS})
        for name, value in sorted(seconds.items(), key=lambda kv: kv[1]):
            target = targets.get(name)
            verdict = (
                ""
                if target is None
                else f" (target ≤ {target:.2f}: {'met' if value / base <= target else 'MISSED'})"
            )
            print(f"  {name}: {value / base:.2f}× graddiff{verdict}")
        vmap, loop, batched = per_sample_seconds(experiment, args.repeats)
        verdict = "met" if loop / vmap >= 10 else "MISSED"
        print(
            f"per-sample gradients, batch 64: vmap {vmap * 1000:.1f} ms, loop {loop * 1000:.1f} ms, "
            f"speed-up {loop / vmap:.1f}× (target ≥ 10: {verdict})"
        )
        # What bounds the speed-up: even at the cost of one ordinary batched backward pass
        # (64 per-sample gradients cannot cost less), vmap would beat the loop only this much.
        print(
            f"yardstick: one batch-64 backward {batched * 1000:.1f} ms; "
            f"loop / batched {loop / batched:.1f}×, "
            f"vmap / batched {vmap / batched:.2f}×"
        )
        print_memory(args, experiment, cache)


def print_memory(args: argparse.Namespace, experiment: LoadedStudy, cache: str) -> None:
    """Per batch size: the per-sample retain gradients kept, and the peak growth of computing
    them (a fresh process per size on a CPU, where only the resident peak is measurable)."""
    for size in sorted(args.memory_batches):
        if experiment.inputs.device.type == "cuda":
            kept, peak = per_sample_memory(experiment, size)
        else:
            kept, peak = memory_in_a_fresh_process(args, cache, size)
        print(
            f"per-sample retain gradients by task, batch {size}: {kept / 2**20:.1f} MiB kept, "
            f"peak growth {peak / 2**20:.1f} MiB"
        )


if __name__ == "__main__":
    main()
