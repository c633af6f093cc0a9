"""Every benchmark runs at a tiny size, so that none rots unseen (the recorded figures come
from their full-size runs, in benchmarks/RESULTS.md)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

TINY = {
    "divergence.py": (
        [
            "--problem",
            "digits",
            "--steps",
            "3",
            "--methods",
            "graddiff",
            "npo",
            "--rates",
            "0.5",
            "--threads",
            "1",
        ],
        ["graddiff", "npo", "blow-up step"],
    ),
    "step_cost.py": (
        ["--problem", "digits", "--steps", "2", "--repeats", "1", "--memory-batches", "4", "--threads", "1"],
        ["× graddiff", "interference_aware@matrix", "per-sample retain gradients by task, batch 4"],
    ),
    "gate_power.py": (
        [
            *("--problem", "digits", "--seeds", "1", "--requests", "random"),
            *("--kinds", "heldout_retrain", "--references", "ensemble", "bank", "--threads", "1"),
        ],
        [
            "reference mode bank: 0.5 retrain(s) per request",
            "| random | heldout_retrain | false alarms | 1 |",
        ],
    ),
    "robustness_fronts.py": (
        ["--problem", "digits", "--trials", "2", "--seeds", "0", "--threads", "1"],
        ["| without |", "| objective |", "| constraint |"],
    ),
    "sampler_efficiency.py": (
        [
            *(
                "--samplers",
                "random",
                "tpe-retain",
                "gp-retain-sh",
                "gp-retain-infeasible",
                "--seeds",
                "0",
                "--trials",
                "2",
            ),
            *("--threads", "1", "--gate", str(BENCHMARKS.parent / "validators" / "release.yaml")),
        ],
        [
            "compute to the first trial that passes",
            "| tpe-retain |",
            "| gp-retain-sh |",
            "| gp-retain-infeasible |",
        ],
    ),
    "forget_score_rules.py": (["--examples", "20"], ["20 examples a case, seed 0"]),
    "collapse_guard.py": (
        ["--trials", "1", "--threads", "1"],
        ["guard on: wall", "guard off: wall", "wall ratio on/off"],
    ),
    "projection_space.py": (
        ["--trials", "1", "--methods", "interference_aware", "--threads", "1"],
        ["| interference_aware | parameters |", "| interference_aware | representation |"],
    ),
    "quickstart_vs_graddiff.py": (
        ["--trials", "1", "--threads", "1"],
        ["trials per study: 1; wall: interference_aware"],
    ),
    "tracking_overhead.py": (["--trials", "1", "--threads", "1"], ["1 trials: tracking off", "ratio on/off"]),
    "feature_erasure.py": (
        ["--threads", "1"],
        [
            "feature erasure: quickstart.yaml, the forget set's indicator erased at input",
            "erased direction's share of the variance",
            "attack/relearn_forget: ",
            "verdict: ",
            "relearning curve (forget-set score after each attack step, 0 = before):",
            "  retrain 0: ",
        ],
    ),
    "head_reset.py": (
        ["--steps", "3", "--threads", "1"],
        [
            "head reset: quickstart.yaml, target heads retrained 3 steps",
            "attack/relearn_forget: ",
            "verdict: ",
        ],
    ),
    "one_verdict.py": (
        ["--seeds", "0", "--trials", "2", "--threads", "1", "--stop-at-releasable", "--reuse-study-verdicts"],
        [
            "quickstart.yaml: the recommendation passes release whenever a front trial does in",
            "all-in cost with the validation re-runs, median over seeds",
        ],
    ),
    "request_stream.py": (
        ["--trials", "1", "--digits", "3", "5", "--threads", "1"],
        ["2 requests in", "In retrain units: unlearning"],
    ),
    "reference_spread.py": (
        ["--recipes", "constant:1", "--seeds", "1", "--threads", "1"],
        ["| constant:1 ("],
    ),
    "scenes_forget_share.py": (
        [
            *("--samples", "120", "--image-size", "16", "--channels", "8", "--epochs", "2"),
            *("--steps", "2", "--ratios", "1e-4", "--threads", "1"),
        ],
        [
            "retain rate 0.0003 × its scale",
            "retain_probe: ",
            "forget scenes' pixels: floor",
            "| retrain |",
            "| interference_aware 0.0001 |",
        ],
    ),
    "shapes_interference.py": (
        ["--samples", "400", "--correlations", "0.0", "--ascent-lrs", "0.01", "--threads", "1"],
        ["correlation 0.0: references ready in", "forget efficacy"],
    ),
    "unlearn_vs_retrain.py": (
        ["--samples", "400", "--trials", "1", "--steps", "4", "--threads", "1"],
        ["shapes 400 samples; retrain reference:", "the retrain's own retained utility"],
    ),
    "ascent_window.py": (
        ["--problems", "digits", "--ratios", "1e-4", "--threads", "1"],
        ["digits (60 steps, batch 32): s_forget", "ascent 1e-04 × s_forget:", "first rate that forgets:"],
    ),
    "retain_sharpness.py": (
        ["--problems", "digits", "--multiples", "1", "--iterations", "3", "--threads", "1"],
        ["digits (60 steps, batch 32): s_retain", "λ_max(eval)", "| 1 | "],
    ),
    "rerun_vs_retrain.py": (
        ["--problem", "digits", "--params", '{"ascent_lr": 0.01, "retain_lr": 0.05}', "--repeats", "1"],
        ["rate scales: forget_gradient", "metrics: forget_efficacy", "unlearning / retrain"],
    ),
    "paper_claims.py": (
        [
            *("--problem", "digits", "--modes", "partial", "--methods", "graddiff"),
            *(
                "--seeds",
                "1",
                "--trials",
                "1",
                "--threads",
                "1",
                "--on-collapse",
                "infeasible",
                "--sampler",
                "gp",
            ),
            *("--descent-range", "0.01", "1", "retain_curvature"),
        ],
        [
            "Per seed, the trial of highest forget efficacy",
            "- graddiff:",
            "Every descent rate drawn from [0.01, 1] × retain_curvature",
        ],
    ),
    "framework_overhead.py": (
        ["--samples", "400", "--trials", "1", "--steps", "2", "--threads", "1"],
        ["unlearning:", "framework overhead:"],
    ),
    "workers_throughput.py": (["--trials", "2"], ["2 worker(s): 2 trials in", "ratio two/one:"]),
    "warm_start.py": (
        ["--trials", "2", "--earlier-trials", "2", "--top", "1", "--seeds", "0", "--threads", "1"],
        ["| cold |", "| warm |"],
    ),
    "default_spaces.py": (
        [
            *("--problems", "digits", "--methods", "graddiff", "--variants", "relative", "bounded"),
            *("--trials", "2", "--steps", "2", "--threads", "1"),
        ],
        ["digits   graddiff             relative", "digits   graddiff             bounded"],
    ),
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """One reference cache for every run, most of which share the quickstart's references, on
    every xdist worker (the runs spread over them): the cache's file locks train each
    reference once. Under xdist the workers' temporary folders share this run's parent."""
    if worker_id == "master":
        return tmp_path_factory.mktemp("benchmark-cache")
    shared = tmp_path_factory.getbasetemp().parent / "benchmark-cache"
    shared.mkdir(exist_ok=True)
    return shared


def _runs_and_prints(script: str, arguments: list[str], expected: list[str], cwd: Path, cache: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *arguments],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"TUNE_UNLEARN_CACHE": str(cache), "PATH": "/usr/bin:/bin"},
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for line in expected:
        assert line in done.stdout, done.stdout


@pytest.mark.parametrize("script", sorted(TINY))
def test_the_benchmark_runs_at_a_tiny_size(script: str, tmp_path: Path, cache: Path) -> None:
    arguments, expected = TINY[script]
    _runs_and_prints(script, arguments, expected, tmp_path, cache)


def test_every_benchmark_has_a_tiny_run() -> None:
    """A new script in benchmarks/ needs its tiny run here (its private helpers excepted)."""
    scripts = {p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(TINY)


def _benchmark_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_erasure_matches_a_hand_worked_case() -> None:
    """x's first coordinate is the concept, its second uncorrelated noise: Σ = diag(1/4, 1),
    σ = (1/4, 0), so M = e₁e₁ᵀ and the samples outside the concept (mean 0) anchor it; the
    erasure zeroes the first coordinate and leaves the second."""
    erasure = _benchmark_module("feature_erasure").erasure
    x = torch.tensor([[0.0, -1.0], [0.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
    z = torch.tensor([False, False, True, True])
    m, anchor = erasure(x, z)
    assert torch.allclose(m, torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(anchor, torch.zeros(2, dtype=torch.float64))
    erased = x.double() - (x.double() - anchor) @ m.T
    assert torch.allclose(erased, torch.tensor([[0.0, -1.0], [0.0, 1.0], [0.0, -1.0], [0.0, 1.0]]).double())


def test_the_erased_activations_do_not_covary_with_the_concept() -> None:
    """On correlated activations the erased ones have zero covariance with the concept, the
    samples outside it keep their mean, and only one direction moves (M has rank 1)."""
    erasure = _benchmark_module("feature_erasure").erasure
    generator = torch.Generator().manual_seed(0)
    z = torch.rand(400, generator=generator) < 0.3
    mixing = torch.randn(5, 5, generator=generator)
    x = torch.randn(400, 5, generator=generator) @ mixing + 2.0 * z.double().unsqueeze(1).float() @ mixing[:1]
    m, anchor = erasure(x, z)
    erased = x.double() - (x.double() - anchor) @ m.T
    concept = z.double() - z.double().mean()
    assert torch.linalg.vector_norm((erased - erased.mean(0)).T @ concept) < 1e-9
    assert torch.allclose(erased[~z].mean(0), x[~z].double().mean(0), atol=1e-9)
    assert torch.linalg.matrix_rank(m) == 1


def test_the_trained_erasure_runs_at_a_tiny_size(tmp_path: Path, cache: Path) -> None:
    """The ``--train`` path of feature_erasure.py (the tiny run above folds the erasure in)."""
    _runs_and_prints(
        "feature_erasure.py",
        [
            *("--sites", "input", "features", "--train", "2", "--penalty", "10", "--conditional"),
            *("--shrink-perturb", "0.5", "0.1", "--threads", "1"),
        ],
        [
            "trained in over 2 steps, penalty 10, after shrink 0.5 and perturb 0.1, conditional on the kept",
            "step 1: ",
            "verdict: ",
        ],
        tmp_path,
        cache,
    )


def test_sampler_efficiency_measures_a_study_file(tmp_path: Path, cache: Path) -> None:
    """``--study-file``: the file's problem, method and constraints, the benchmark's sampler
    (here a lever that sets the sampler's start-up)."""
    _runs_and_prints(
        "sampler_efficiency.py",
        [
            *("--study-file", str(BENCHMARKS.parent / "studies" / "quickstart.yaml")),
            *("--samplers", "gp-retain-startup5", "--seeds", "0", "--trials", "1", "--threads", "1"),
        ],
        ["gp-retain-startup5 seed 0: hypervolume", "| gp-retain-startup5 |"],
        tmp_path,
        cache,
    )


def test_the_claims_adam_lever_draws_absolute_rates_and_keeps_the_other_dimensions() -> None:
    scaled_space = _benchmark_module("paper_claims").scaled_space
    adam = scaled_space("task_projection", {"steps": 60, "optimizer": "adam"})
    sgd = scaled_space("task_projection", {"steps": 60})
    assert sgd["retain_lr"]["scale"] == "retain_gradient" and sgd["ascent_lr"]["scale"] == "ascent_probe"
    for name in ("ascent_lr", "retain_lr"):
        assert adam[name] == {"type": "float", "low": 1e-5, "high": 1e-2, "log": True}
    assert adam["projection_strength"] == sgd["projection_strength"]
    assert "steps" not in adam and "optimizer" not in adam


def _claims_run(matched: dict[str, list[float | None]], seeds: str = "2") -> dict[str, Any]:
    """A paper_claims --json report of one full-mode run, as the benchmark writes it."""
    args = {"problem": "shapes", "seeds": seeds, "trials": "8", "samples": "2000"}
    args |= {"utility_floor": "0.95", "utility_floor_of_retrain": "0.95"}
    setting = {"retrain_utility": 0.85, "matched_uis": matched, "most_forgetting": {}}
    return {"args": args, "settings": {"full": setting}}


def test_runs_over_different_methods_combine_into_one_claim() -> None:
    """interference_aware ran in one process, GradDiff in another: their seeds pair only once
    combined (seed 0: 1 − 0.02/0.04 = 0.5; seed 1: GradDiff matched nothing, so no pair)."""
    claims = _benchmark_module("paper_claims")
    combined = claims.combine(
        [_claims_run({"interference_aware": [0.02, 0.03]}), _claims_run({"graddiff": [0.04, None]})]
    )
    full = combined["settings"]["full"]
    assert full["matched_uis"] == {"interference_aware": [0.02, 0.03], "graddiff": [0.04, None]}
    reduction = claims.claim_reductions(full["matched_uis"])["interference_aware vs graddiff"]
    assert reduction["per_seed"] == pytest.approx([0.5]) and reduction["seeds"] == 1


def test_runs_that_do_not_pair_are_not_combined() -> None:
    claims = _benchmark_module("paper_claims")
    with pytest.raises(ValueError, match="--seeds"):
        claims.combine([_claims_run({"npo": [0.1, 0.2]}), _claims_run({"graddiff": [0.1]}, seeds="1")])
    with pytest.raises(ValueError, match="npo in more than one run"):
        claims.combine([_claims_run({"npo": [0.1, 0.2]}), _claims_run({"npo": [0.1, 0.2]})])


def test_runs_at_different_step_budgets_are_not_combined_and_older_reports_ran_the_shared_one() -> None:
    claims = _benchmark_module("paper_claims")
    own = _claims_run({"shrink_perturb": [0.1]}, seeds="1")
    own["args"]["own_budget"] = "True"
    older = _claims_run({"graddiff": [0.1]}, seeds="1")  # written before --own-budget existed
    with pytest.raises(ValueError, match="--own-budget"):
        claims.combine([older, own])
    shared = _claims_run({"shrink_perturb": [0.1]}, seeds="1")
    shared["args"]["own_budget"] = "False"
    assert claims.combine([older, shared])["args"]["combined"] == 2


def test_the_own_budget_leaves_each_method_its_default_steps_and_batch(tmp_path: Path) -> None:
    claims = _benchmark_module("paper_claims")
    shared = claims.setting("scenes", "full", 600, tmp_path, tmp_path, 8, "default")
    own = claims.setting("scenes", "full", 600, tmp_path, tmp_path, 8, "default", own_budget=True)
    assert shared["method"]["fixed"] == {"steps": 40, "batch_size": 16, "refresh_every": 20}
    assert own["method"]["fixed"] == {"refresh_every": 20}
