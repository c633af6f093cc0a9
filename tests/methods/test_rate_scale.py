"""Search ranges relative to the original's gradient scale: measured once per study, stored,
reused by every process, and meaning a first-step share of the weights on any model."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch

from tune_unlearn.cli import main
from tune_unlearn.config.study_config import ConfigError, StudyConfig, parse_study
from tune_unlearn.methods import Finetune, GradientAscent, _rate_scale
from tune_unlearn.problems import masked_task_losses
from tune_unlearn.scoring.evaluation import evaluate
from tune_unlearn.study.objective import storage_url
from tune_unlearn.study.runner import StudyRun, run_study
from tune_unlearn.trial.study_references import LoadedStudy, load_study_values

from ..helpers import tiny_study, write_study

RELATIVE = {
    "ascent_lr": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True, "scale": "forget_gradient"},
    "retain_lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True, "scale": "retain_gradient"},
}


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("relative", [1e-4, 1e-3])
def test_a_relative_rate_moves_the_weights_by_that_share_on_the_first_step(
    tiny_values: LoadedStudy, relative: float
) -> None:
    model = tiny_values.references.original_model()
    scales = _rate_scales(tiny_values)
    for method in (
        GradientAscent(steps=1, batch_size=64, ascent_lr=relative * scales["forget_gradient"]),
        Finetune(steps=1, batch_size=64, retain_lr=relative * scales["retain_gradient"]),
    ):
        model = tiny_values.references.original_model()
        before = _flat(model)
        method.unlearn(model, tiny_values.inputs.setup, seed=0)
        moved = float((_flat(model) - before).norm() / before.norm())
        # another batch than the measured ones: its gradient norm differs by its sampling noise
        assert relative / 2 < moved < relative * 2, type(method).__name__


def _rate_scales(experiment: LoadedStudy) -> dict[str, float]:
    first = _rate_scale.measure_rate_scales(
        experiment.references.original_model(), experiment.inputs.setup, seed=0
    )
    again = _rate_scale.measure_rate_scales(
        experiment.references.original_model(), experiment.inputs.setup, seed=0
    )
    assert first == again and all(v > 0 for v in first.values())
    return dict(first)


def test_a_study_measures_the_scales_once_stores_them_and_searches_in_absolute_rates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny_study(
        tmp_path, method={"name": "graddiff", "fixed": {"steps": 4, "batch_size": 16}, "search": RELATIVE}
    )
    calls = []
    measure = _rate_scale.measure_scales

    def counted(*args: object, **kwargs: object) -> dict[str, float]:
        calls.append(1)
        return measure(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("tune_unlearn.study.runner.measure_scales", counted)
    run = run_study(config, progress=False)
    scales = run.study.user_attrs["rate_scales"]
    assert len(calls) == 1 and set(scales) == {"forget_gradient", "retain_gradient"}
    for trial in run.study.trials:
        for name, dimension in RELATIVE.items():
            factor = scales[str(dimension["scale"])]
            assert dimension["low"] * factor <= trial.params[name] <= dimension["high"] * factor  # type: ignore[operator]
    document = json.loads((run.output / "pareto.json").read_text())
    assert document["rate_scales"] == scales
    assert document["search"]["ascent_lr"]["high"] == pytest.approx(1e-3 * scales["forget_gradient"])
    # a second process (a resumed run, a worker) searches the stored space, measuring nothing
    again = run_study(config, add_trials=1, progress=False)
    assert len(calls) == 1 and again.study.user_attrs["rate_scales"] == scales


def test_scales_given_in_the_study_file_are_used_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("measured although the study file gives the scales")

    monkeypatch.setattr("tune_unlearn.study.runner.measure_scales", refuse)
    method = {
        "name": "graddiff",
        "fixed": {"steps": 2, "batch_size": 16},
        "search": RELATIVE,
        "rate_scales": {"forget_gradient": 100.0, "retain_gradient": 50.0},
    }
    run = run_study(tiny_study(tmp_path, method=method, n_trials=2), progress=False)
    assert all(1e-3 <= t.params["ascent_lr"] <= 0.1 for t in run.study.trials)


def test_a_scale_on_an_integer_or_stepped_range_is_refused_at_its_path(tmp_path: Path) -> None:
    raw = tiny_study(tmp_path).model_dump(mode="json")
    raw["method"]["search"] = {"steps": {"type": "int", "low": 1, "high": 5, "scale": "forget_gradient"}}
    with pytest.raises(ConfigError, match=r"method\.search\.steps"):
        parse_study(raw)
    raw["method"]["search"] = {"ascent_lr": {"type": "float", "low": 1e-3, "high": 1e-2, "scale": "gradient"}}
    with pytest.raises(ConfigError, match=r"method\.search\.ascent_lr\.scale"):
        parse_study(raw)


def _task_drops(experiment: LoadedStudy, rate: float, positions: torch.Tensor) -> list[float]:
    """Per task, how far ``PROBE_STEPS`` fine-tuning steps at ``rate`` lower the mean score on the
    retain rows at ``positions``: scored through the study's evaluation, not the probe's code."""
    setup = experiment.inputs.setup
    rows = setup.retain.indices[positions]
    mask = setup.retain.mask[positions].float()

    def scores(model: torch.nn.Module) -> torch.Tensor:
        results = evaluate(model, setup.data, rows, setup.tasks, 64)  # type: ignore[arg-type]
        return (results.correct.float() * mask).sum(dim=0) / mask.sum(dim=0).clamp(min=1.0)

    original = experiment.references.original_model()
    probed = experiment.references.original_model()
    Finetune(retain_lr=rate, steps=_rate_scale.PROBE_STEPS, batch_size=_rate_scale.BATCH_SIZE).unlearn(
        probed, setup, seed=0
    )
    return (scores(original) - scores(probed)).tolist()


def test_the_retain_probe_is_the_last_rate_every_task_survives_before_the_first_that_fails(
    tiny_values: LoadedStudy,
) -> None:
    setup = tiny_values.inputs.setup
    retain_scale = _rate_scales(tiny_values)["retain_gradient"]
    probe = _rate_scale.probe_retain_rate(
        tiny_values.references.original_model(), setup, retain_scale, seed=0
    )
    # brute force over the grid, with the probe's seeded sample of retain rows
    generator = torch.Generator().manual_seed(0)
    size = min(_rate_scale.PROBE_SAMPLES, len(setup.retain))
    positions = torch.randperm(len(setup.retain), generator=generator)[:size]
    expected = None
    for ratio in _rate_scale.PROBE_RATIOS:
        drops = _task_drops(tiny_values, ratio * retain_scale, positions)
        if max(drops) > _rate_scale.PROBE_TOLERANCE:
            break
        expected = ratio * retain_scale
    assert expected is not None and probe == pytest.approx(expected)


def test_a_model_no_probed_rate_keeps_is_refused_with_the_task_that_drops(
    tiny_values: LoadedStudy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_rate_scale, "PROBE_TOLERANCE", -1.0)  # every rate "drops" a task
    with pytest.raises(ValueError, match=r"within -1\.0 of the original: at the smallest .* '\w+' drops by"):
        _rate_scale.probe_retain_rate(
            tiny_values.references.original_model(), tiny_values.inputs.setup, 1.0, seed=0
        )


def _retain_range_study(tmp_path: Path, scale: str) -> tuple[StudyConfig, StudyRun]:
    """Two GradDiff trials on the tiny study with the retain rate in ``[0.01, 1] × scale``."""
    search = {
        "ascent_lr": RELATIVE["ascent_lr"],
        "retain_lr": {"type": "float", "low": 0.01, "high": 1.0, "log": True, "scale": scale},
    }
    config = tiny_study(
        tmp_path, method={"name": "graddiff", "fixed": {"steps": 2, "batch_size": 16}, "search": search}
    )
    return config, run_study(config, n_trials=2, progress=False)


def test_a_study_naming_the_retain_probe_measures_it_once_and_searches_below_it(tmp_path: Path) -> None:
    _, run = _retain_range_study(tmp_path, "retain_probe")
    scales = run.study.user_attrs["rate_scales"]
    assert set(scales) == {"forget_gradient", "retain_gradient", "retain_probe"}
    ratios = [scales["retain_probe"] / scales["retain_gradient"] / r for r in _rate_scale.PROBE_RATIOS]
    assert any(r == pytest.approx(1.0) for r in ratios)  # a rate of the probe's grid
    assert all(
        0.01 * scales["retain_probe"] <= t.params["retain_lr"] <= scales["retain_probe"]
        for t in run.study.trials
    )
    assert json.loads((run.output / "pareto.json").read_text())["rate_scales"] == scales


def test_scales_the_study_file_gives_keep_their_values_when_the_probe_is_measured_beside_them(
    tmp_path: Path,
) -> None:
    given = {"forget_gradient": 100.0, "retain_gradient": 50.0}
    method = {
        "name": "graddiff",
        "fixed": {"steps": 2, "batch_size": 16},
        "search": {
            "ascent_lr": RELATIVE["ascent_lr"],
            "retain_lr": {"type": "float", "low": 0.01, "high": 1.0, "log": True, "scale": "retain_probe"},
        },
        "rate_scales": given,
    }
    run = run_study(tiny_study(tmp_path, method=method, n_trials=1), progress=False)
    scales = run.study.user_attrs["rate_scales"]
    assert {k: scales[k] for k in given} == given and scales["retain_probe"] > 0


def _exact_top_curvature(experiment: LoadedStudy, batch_size: int) -> float:
    """λ_max of the summed retain loss's Hessian on the scale's seeded batch, from the whole
    Hessian (the tiny model has 1,584 parameters) and its eigenvalues."""
    model = experiment.references.original_model().eval()
    setup = experiment.inputs.setup
    generator = torch.Generator().manual_seed(0)
    positions = torch.randint(len(setup.retain), (batch_size,), generator=generator)
    batch = setup.batch(setup.retain, positions)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    shapes = [p.shape for n, p in model.named_parameters() if p.requires_grad]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad])

    def loss(theta: torch.Tensor) -> torch.Tensor:
        params, start = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            params[name] = theta[start : start + shape.numel()].reshape(shape)
            start += shape.numel()
        outputs = torch.func.functional_call(model, params, (batch.inputs,))
        return masked_task_losses(outputs, batch, setup.tasks).sum()

    hessian = torch.autograd.functional.hessian(loss, flat)
    return float(torch.linalg.eigvalsh(hessian.double()).max())


def test_the_retain_curvature_is_two_over_the_retain_losss_top_hessian_eigenvalue(
    tiny_values: LoadedStudy,
) -> None:
    exact = _exact_top_curvature(tiny_values, batch_size=16)
    spent = _rate_scale.ScaleMeasurement()
    limit = _rate_scale.retain_stability_limit(
        tiny_values.references.original_model(),
        tiny_values.inputs.setup,
        16,
        seed=0,
        spent=spent,
        iterations=200,
    )
    assert exact > 0 and limit == pytest.approx(2.0 / exact, rel=1e-3)
    assert spent.sample_gradients == 16 * (1 + 2 * 200)
    # the default iterations are within 2% of it (docs/reference.md says so)
    default = _rate_scale.retain_stability_limit(
        tiny_values.references.original_model(), tiny_values.inputs.setup, 16, seed=0
    )
    assert default == pytest.approx(2.0 / exact, rel=0.02)


def test_a_retain_loss_without_positive_curvature_is_refused_not_given_an_infinite_limit(
    tiny_values: LoadedStudy,
) -> None:
    # no Hessian-vector product: no curvature measured, so no limit (never 2/0)
    with pytest.raises(ValueError, match=r"no positive curvature at the original \(λ_max 0\)"):
        _rate_scale.retain_stability_limit(
            tiny_values.references.original_model(), tiny_values.inputs.setup, 16, seed=0, iterations=0
        )


def test_a_study_naming_the_retain_curvature_searches_relative_to_it_on_its_batch(tmp_path: Path) -> None:
    config, run = _retain_range_study(tmp_path, "retain_curvature")
    scales = run.study.user_attrs["rate_scales"]
    assert set(scales) == {"forget_gradient", "retain_gradient", "retain_curvature"}
    values = load_study_values(config)
    expected = _rate_scale.retain_stability_limit(
        values.references.original_model(), values.inputs.setup, 16, seed=values.inputs.config.problem.seed
    )
    assert scales["retain_curvature"] == pytest.approx(expected)
    assert all(0.01 * expected <= t.params["retain_lr"] <= expected * (1 + 1e-9) for t in run.study.trials)
    assert run.study.user_attrs["rate_scales_cost"] > 0


def test_a_study_resumed_on_a_default_space_that_moved_is_refused_naming_the_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A study drawn from a method's default space, resumed after the package resolves that
    space differently (here: the stored space's retain range reaches four times lower, as if an
    earlier package had drawn from a wider default), would mix two spaces under one name: exit 2,
    the dimension named with both ranges, no trial added. Writing the old space out resumes."""
    method = {"name": "graddiff", "fixed": {"steps": 2, "batch_size": 16}}
    config = tiny_study(tmp_path, method=method, n_trials=1)
    run_study(config, progress=False)
    first = run_study(config, add_trials=1, progress=False)  # the same default space: resumes
    assert len(first.study.trials) == 2
    stored = first.study.user_attrs["study_file"]
    old = dict(
        stored["method"]["search"]["retain_lr"], low=stored["method"]["search"]["retain_lr"]["low"] / 4
    )
    stored["method"]["search"]["retain_lr"] = old
    first.study.set_user_attr("study_file", stored)
    path = write_study(tmp_path, config)
    assert main([str(path), "--add-trials", "1"]) == 2
    message = capsys.readouterr().err
    assert "default space" in message and "retain_lr: was [" in message and "method.search" in message
    study = optuna.load_study(study_name="tiny", storage=storage_url(config))
    assert len(study.trials) == 2
    written_out = {**method, "search": {**stored["method"]["search"], "retain_lr": old}}
    resumed = run_study(tiny_study(tmp_path, method=written_out), add_trials=1, progress=False)
    assert len(resumed.study.trials) == 3


#: A grid on which the tiny model's plain ascent collapses at the top (at step 10, and, at 3e-3,
#: only after the last step) and survives below, under a strict floor and a loose step bound.
_ASCENT_GRID = (1e-2, 3e-3, 1e-3, 3e-4)


def _ascent_budget(experiment: LoadedStudy) -> _rate_scale.AscentProbeBudget:
    from dataclasses import replace

    from tune_unlearn.trial.guard import ascent_probe_budget

    budget = ascent_probe_budget(experiment.inputs, experiment.references)
    return replace(budget, steps=20, every=5, floor=0.9, max_step=0.05)


def test_the_ascent_probe_is_the_largest_grid_rate_whose_plain_ascent_passes_every_guard_check(
    tiny_values: LoadedStudy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_rate_scale, "ASCENT_PROBE_RATIOS", _ASCENT_GRID)
    setup = tiny_values.inputs.setup
    budget = _ascent_budget(tiny_values)
    forget_scale = _rate_scales(tiny_values)["forget_gradient"]
    measured = _rate_scale.ScaleMeasurement()
    probe = _rate_scale.probe_ascent_rate(
        tiny_values.references.original_model(), setup, forget_scale, budget, seed=0, spent=measured
    )
    # brute force: a run of k steps is the first k steps of a longer one (same seed, same
    # batches), so each check is a fresh run to that step, scored by the guard's test
    expected, spent = None, 0
    for ratio in _ASCENT_GRID:
        rate = ratio * forget_scale
        failed_at = None
        for steps in range(budget.every, budget.steps + 1, budget.every):
            model = tiny_values.references.original_model()
            GradientAscent(ascent_lr=rate, steps=steps, batch_size=budget.batch_size, max_step=0.05).unlearn(
                model, setup, seed=0
            )
            if budget.utility(model) < budget.floor:
                failed_at = steps
                break
        spent += (failed_at or budget.steps) * budget.batch_size
        if failed_at is None:
            expected = rate
            break
    assert expected is not None and expected < _ASCENT_GRID[0] * forget_scale  # the grid's top collapsed
    assert probe == pytest.approx(expected)
    assert measured.sample_gradients == spent


def test_a_model_every_probed_ascent_rate_collapses_is_refused(
    tiny_values: LoadedStudy, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    monkeypatch.setattr(_rate_scale, "ASCENT_PROBE_RATIOS", _ASCENT_GRID)
    budget = replace(_ascent_budget(tiny_values), floor=2.0)  # no model keeps twice its utility
    with pytest.raises(
        ValueError, match=r"collapses the model .* at every probed ascent rate, the smallest 0\.0003"
    ):
        _rate_scale.probe_ascent_rate(
            tiny_values.references.original_model(), tiny_values.inputs.setup, 1.0, budget, seed=0
        )


def test_a_study_naming_the_ascent_probe_searches_relative_to_it_and_counts_what_it_cost(
    tmp_path: Path,
) -> None:
    search = {
        "ascent_lr": {"type": "float", "low": 0.1, "high": 3.0, "log": True, "scale": "ascent_probe"},
        "retain_lr": RELATIVE["retain_lr"],
    }
    config = tiny_study(
        tmp_path,
        method={"name": "graddiff", "fixed": {"steps": 6, "batch_size": 16}, "search": search},
        n_trials=2,
    )
    run = run_study(config, progress=False)
    scales = run.study.user_attrs["rate_scales"]
    assert set(scales) == {"forget_gradient", "retain_gradient", "ascent_probe"}
    ratios = [scales["ascent_probe"] / scales["forget_gradient"] / r for r in _rate_scale.ASCENT_PROBE_RATIOS]
    assert any(r == pytest.approx(1.0) for r in ratios)  # a rate of the probe's grid
    for trial in run.study.trials:
        assert 0.1 * scales["ascent_probe"] <= trial.params["ascent_lr"] <= 3.0 * scales["ascent_probe"]
    # what measuring cost: the gradient norms' batches, then 6 ascent steps of 16 per rate tried
    # (the tiny study's guard checks only after the last step, so every rate runs its budget)
    tried = ratios.index(next(r for r in ratios if r == pytest.approx(1.0))) + 1
    inputs, references = load_study_values(config)
    norms = _rate_scale.ScaleMeasurement()
    _rate_scale.measure_rate_scales(references.original_model(), inputs.setup, 0, norms)
    cost = run.study.user_attrs["rate_scales_cost"]
    assert cost == pytest.approx((norms.sample_gradients + tried * 6 * 16) / inputs.retrain_sample_gradients)
    document = json.loads((run.output / "pareto.json").read_text())
    assert document["rate_scales_cost"] == pytest.approx(cost)
    report = (run.output / "report.md").read_text()
    assert f"| measuring the rate scales (gradient norms, probes) | {cost:.3f} |" in report


def test_a_study_drawn_before_the_ascent_range_moved_to_the_probe_is_refused_before_probing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A default-space study whose trials were drawn when the ascent range was relative to the
    forget gradient's scale (stored: the two gradient scales, an absolute ascent range) is
    refused on resume with exit 2, naming the dimension and its new scale, and the probe's
    steps are not spent on it."""
    method = {"name": "graddiff", "fixed": {"steps": 2, "batch_size": 16, "optimizer": "sgd"}}
    config = tiny_study(tmp_path, method=method, n_trials=1)
    first = run_study(config, progress=False)
    scales = dict(first.study.user_attrs["rate_scales"])
    assert "ascent_probe" in scales
    del scales["ascent_probe"]  # as a study drawn from the former default stored them
    first.study.set_user_attr("rate_scales", scales)
    stored = first.study.user_attrs["study_file"]
    former = {"low": 1e-6 * scales["forget_gradient"], "high": 1e-3 * scales["forget_gradient"], "log": True}
    stored["method"]["search"]["ascent_lr"] = {**stored["method"]["search"]["ascent_lr"], **former}
    first.study.set_user_attr("study_file", stored)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("measured the scales of a study that is refused")

    monkeypatch.setattr("tune_unlearn.study.runner.measure_scales", refuse)
    assert main([str(write_study(tmp_path, config)), "--add-trials", "1"]) == 2
    message = capsys.readouterr().err
    assert (
        "ascent_lr: was [" in message
        and "× the ascent_probe scale, which this study never measured" in message
    )
    assert len(optuna.load_study(study_name="tiny", storage=storage_url(config)).trials) == 1


def test_a_study_drawn_from_the_plain_step_default_space_is_refused_under_the_adam_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A default-space study whose trials were drawn with plain steps (as every default-space
    study before the Adam default was: its file names no optimizer) resumed now would draw
    Adam's absolute rates under the same name: exit 2, each rate named with both ranges, no
    trial added, and neither ``report`` nor ``apply`` reads it so; naming ``optimizer: sgd``
    resumes it on the space it was drawn from."""
    plain = {"name": "graddiff", "fixed": {"steps": 2, "batch_size": 16, "optimizer": "sgd"}}
    first = run_study(tiny_study(tmp_path, method=plain, n_trials=1), progress=False)
    stored = first.study.user_attrs["study_file"]
    del stored["method"]["fixed"]["optimizer"]  # as the package before the Adam default stored it
    first.study.set_user_attr("study_file", stored)
    unnamed = tiny_study(tmp_path, method={"name": "graddiff", "fixed": {"steps": 2, "batch_size": 16}})
    assert unnamed.method.fixed["optimizer"] == "adam"
    path, model = write_study(tmp_path, unnamed), tmp_path / "m.pt"
    # resumed, reported or re-run: none under Adam's reading of the rates its trials drew
    for command in (
        [str(path), "--add-trials", "1"],
        ["report", str(path)],
        ["apply", str(path), "--trial", "0", "--save", str(model)],
    ):
        assert main(command) == 2
        message = capsys.readouterr().err
        assert "ascent_lr: was [" in message and "retain_lr: was [" in message
        assert "now [1e-05, 0.01] log" in message
    assert not model.exists()
    assert len(optuna.load_study(study_name="tiny", storage=storage_url(unnamed)).trials) == 1
    resumed = run_study(tiny_study(tmp_path, method=plain), add_trials=1, progress=False)
    assert len(resumed.study.trials) == 2
