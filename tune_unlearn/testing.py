"""Contract checks for your own plugins, as scikit-learn's ``check_estimator`` and
``parametrize_with_checks`` and Optuna's sampler test cases are.

>>> from tune_unlearn.testing import check_method, check_problem, check_metric, check_probe_family
>>> from tune_unlearn.testing import check_gate_check
>>> check_method(MyMethod)            # raises AssertionError saying what does not fit
>>> check_problem(MyProblem())

Each ``check_*`` runs a list of named checks (``method_checks(MyMethod)`` and so on gives them);
in a pytest suite, ``parametrize_with_checks`` makes each one a test of its own:

>>> @parametrize_with_checks([MyMethod, MyProblem(), MyMetric, MyProbeFamily, MyGateCheck])
... def test_my_plugins(check):
...     check()

The built-in plugins pass every check in the package's own tests.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor
from torch.utils.data import Dataset

from tune_unlearn.problems import DatasetInputs, MultiTaskData, Problem
from tune_unlearn.trial import configuration_run
from tune_unlearn.trial.study_references import LoadedStudy


class HoldoutRead(AssertionError):
    """A code path of a study read a holdout sample."""


class GuardedInputs(Tensor):
    """A problem's input tensor that raises :class:`HoldoutRead` when indexed at a holdout row."""

    holdout: Tensor = torch.empty(0, dtype=torch.long)

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        with torch._C.DisableTorchFunctionSubclass():  # results are plain tensors again
            index = args[1] if func is Tensor.__getitem__ else None
            if isinstance(index, Tensor) and not index.is_floating_point():
                rows = index.nonzero().flatten() if index.dtype == torch.bool else index.flatten()
                if bool(torch.isin(rows.cpu(), cls.holdout).any()):
                    raise HoldoutRead("a holdout sample was read")
            return func(*args, **(kwargs or {}))


class _GuardedDataset(Dataset[Any]):
    """A user's ``Dataset`` that raises :class:`HoldoutRead` when a holdout row is read."""

    def __init__(self, dataset: Dataset[Any], holdout: set[int]) -> None:
        self.dataset, self.holdout = dataset, holdout

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        if index in self.holdout:
            raise HoldoutRead(f"holdout sample {index} was read")
        return self.dataset[index]


def guard_holdout(problem: Problem, seed: int) -> Problem:
    """A copy of ``problem`` whose inputs refuse to be read at the holdout rows of ``seed``."""
    guarded_problem = copy.copy(problem)

    def guarded() -> MultiTaskData:
        data = problem.load_data()
        holdout = problem.split(len(data), seed)["holdout"]
        GuardedInputs.holdout = holdout
        inputs = data.inputs
        if isinstance(inputs, DatasetInputs):
            dataset = _GuardedDataset(inputs.dataset, set(holdout.tolist()))
            guarded_inputs: Tensor | DatasetInputs = DatasetInputs(
                dataset, batch_size=inputs.batch_size, num_workers=inputs.num_workers, device=inputs.device
            )
        else:
            guarded_inputs = inputs.as_subclass(GuardedInputs)
        return MultiTaskData(guarded_inputs, data.labels, data.attributes)

    guarded_problem.load_data = guarded  # type: ignore[method-assign]
    return guarded_problem


def problem_checks(problem: Problem, *, seed: int = 0) -> list[Check]:
    """The problem contract, check by check."""

    def tasks_and_labels() -> None:
        names = problem.task_names
        _expect(
            bool(names) and len(set(names)) == len(names), f"tasks must be non-empty and unique, got {names}"
        )
        data = problem.load_data()
        _expect(
            set(data.labels) == set(names), f"labels {sorted(data.labels)} must match tasks {sorted(names)}"
        )
        for name, column in data.labels.items():
            _expect(
                column.shape[0] == len(data),
                f"labels of {name!r} have {column.shape[0]} rows, inputs {len(data)}",
            )

    def deterministic_load() -> None:
        data, again = problem.load_data(), problem.load_data()
        for name, column in data.labels.items():
            _expect(torch.equal(column, again.labels[name]), f"labels of {name!r} differ between two loads")
        rows = torch.arange(min(len(data), 8))  # a dataset's inputs are compared on a few rows only
        _expect(torch.equal(data.inputs[rows], again.inputs[rows]), "load_data is not deterministic")

    def disjoint_splits() -> None:
        n = len(problem.load_data())
        splits = problem.split(n, seed)
        joined = torch.cat(list(splits.values()))
        _expect(
            len(joined.unique()) == n == len(joined),
            "train/val/holdout must be disjoint and cover every sample",
        )
        _expect(
            all(len(part) > 0 for part in splits.values()), "train, val and holdout must each hold samples"
        )

    def seeded_model_and_heads() -> None:
        from tune_unlearn.references.training import seeded_model

        first, second = (seeded_model(problem, seed, torch.device("cpu")) for _ in range(2))
        for (key, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
            _expect(torch.equal(a, b), f"build_model under one seed gives different {key!r}")
        with torch.no_grad():
            outputs = first(problem.load_data().inputs[:3])
        labels = problem.load_data().labels
        for task in problem.tasks:
            out = outputs.get(task.name)
            shape = (3, *task.output_shape(tuple(labels[task.name].shape[1:])))
            _expect(
                out is not None and tuple(out.shape) == shape,
                f"head {task.name!r} must output {list(shape)} for 3 samples, "
                f"got {None if out is None else list(out.shape)}",
            )

    return [
        ("tasks_and_labels", tasks_and_labels),
        ("deterministic_load", deterministic_load),
        ("disjoint_splits", disjoint_splits),
        ("seeded_model_and_heads", seeded_model_and_heads),
        ("a_study_reads_no_holdout", lambda: _tiny_study_reads_no_holdout(problem, seed)),
    ]


def check_problem(problem: Problem, *, seed: int = 0) -> None:
    """Every problem check: outputs per task, determinism under a seed, disjoint splits, and a
    tiny study that never reads the holdout split."""
    _run_all(problem_checks(problem, seed=seed))


def _tiny_study_reads_no_holdout(problem: Problem, seed: int) -> None:
    from tune_unlearn.config.study_config import parse_study
    from tune_unlearn.study.runner import run_study

    where = _selector(problem)
    if where is None:
        return  # no class label and no attribute to select by; the rest still ran
    with tempfile.TemporaryDirectory() as folder:
        registered = "tune_unlearn_testing_problem"
        _FACTORIES[registered] = lambda: guard_holdout(problem, seed)
        raw = {
            "name": "contract",
            "problem": {
                "factory": f"{__name__}:{_factory.__name__}",
                "params": {"key": registered},
                "seed": seed,
            },
            "forget": {"mode": "full", "where": where, "fraction": 0.2},
            "method": {"name": "graddiff", "fixed": {"steps": 2, "batch_size": 4}},
            "n_trials": 1,
            "output": str(Path(folder) / "out"),
            "references": {"cache_dir": str(Path(folder) / "cache")},
            "tracking": {"enabled": False},
            "device": "cpu",
        }
        run_study(parse_study(raw), progress=False)


def _selector(problem: Problem) -> dict[str, int] | None:
    """A ``forget.where`` that selects sample 0's group: its class on the first per-sample
    classification task, else its value of the first attribute; ``None`` when there is neither."""
    data = problem.load_data()
    for task in problem.tasks:
        if task.kind == "classification":
            return {task.name: int(data.labels[task.name][0])}
    for name in problem.attributes:
        return {name: int(data.attributes[name][0])}
    return None


_FACTORIES: dict[str, Callable[[], Problem]] = {}


def _factory(key: str) -> Problem:
    return _FACTORIES[key]()


#: A named check: ``(name, run)``; ``run()`` raises :class:`AssertionError` saying what is wrong.
Check = tuple[str, Callable[[], None]]


def method_checks(method: type, *, problem: Problem | None = None) -> list[Check]:
    """The method contract, check by check."""
    from tune_unlearn.methods import UnlearningMethod

    def subclass() -> None:
        _expect(
            isinstance(method, type) and issubclass(method, UnlearningMethod),
            f"{method!r} must subclass tune_unlearn.UnlearningMethod",
        )
        _expect(dataclasses.is_dataclass(method), f"{method.__name__} must be a @dataclass(kw_only=True)")

    def hyper() -> dict[str, Any]:
        subclass()
        return cast("type[UnlearningMethod]", method).hyperparameters()

    def defaults_round_trip() -> None:
        values = hyper()
        missing = [k for k, v in values.items() if v is dataclasses.MISSING]
        _expect(not missing, f"hyperparameters without defaults: {missing}")
        try:
            built = method(**values)
        except TypeError as error:
            raise AssertionError(
                f"{method.__name__} must take every hyperparameter as a keyword-only argument "
                f"(declare them as fields of a @dataclass(kw_only=True)): {error}"
            ) from None
        _expect(built.get_params() == values, "get_params() must return the constructor arguments")

    def keyword_only() -> None:
        values = hyper()
        try:
            method(*values.values())
        except TypeError:
            return
        raise AssertionError(f"{method.__name__} accepts positional hyperparameters; make them keyword-only")

    def declared_ranges_refused() -> None:
        hyper()
        for name, param in cast("type[UnlearningMethod]", method).constraints().items():
            _expect(param.problem(param.default) is None, f"the default of {name} is outside its own range")
            low = param.ge if param.ge is not None else param.gt
            if low is None:
                continue
            try:
                method(**{name: low - 1})
            except ValueError:
                continue
            raise AssertionError(f"{method.__name__}({name}={low - 1}) was accepted below its declared range")

    def default_search_fits_the_declarations() -> None:
        from tune_unlearn.hyperparameters import search_range_problems

        hyper()
        cls = cast("type[UnlearningMethod]", method)
        declared = cls.constraints()
        for name, dimension in cls.default_search.items():
            _expect(name in declared, f"default_search names {name!r}, which is no hyperparameter")
            found = search_range_problems(declared[name], dimension)
            _expect(not found, f"the default search of {name} does not fit its declaration: {found}")

    def unlearning_moves_the_model_deterministically() -> None:
        values = hyper()
        inputs, references = _tiny_study(problem) if problem is not None else _default_study()
        models = []
        for _ in range(2):
            model = references.original_model()
            method(**{**values, "steps": 3, "batch_size": 4}).unlearn(model, inputs.setup, seed=1)
            models.append(model)
        before = references.original.state_dict
        after = models[0].state_dict()
        _expect(
            any(not torch.equal(before[k], after[k]) for k in before), "unlearning left the model unchanged"
        )
        for (key, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values(), strict=True):
            _expect(torch.equal(a, b), f"two runs under one seed differ in {key!r}")

    return [
        ("subclass", subclass),
        ("defaults_round_trip", defaults_round_trip),
        ("keyword_only", keyword_only),
        ("declared_ranges_refused", declared_ranges_refused),
        ("default_search_fits_the_declarations", default_search_fits_the_declarations),
        ("unlearning_moves_the_model_deterministically", unlearning_moves_the_model_deterministically),
    ]


def check_method(method: type, *, problem: Problem | None = None) -> None:
    """Every method check: keyword-only hyperparameters with defaults that round-trip and
    declared ranges that are enforced; unlearning moves the model, deterministically."""
    _run_all(method_checks(method, problem=problem))


def metric_checks(metric: type) -> list[Check]:
    """The metric contract: a name, a direction, a box, and a float from a real context."""
    from tune_unlearn.scoring.metrics import Metric

    def declared() -> None:
        _expect(isinstance(metric, type) and issubclass(metric, Metric), f"{metric!r} must subclass Metric")
        declared_metric = cast("type[Metric]", metric)
        _expect(bool(getattr(metric, "name", "")), "a metric needs a non-empty name")
        direction = declared_metric.direction
        _expect(direction in ("maximize", "minimize", "target"), f"unknown direction {direction!r}")
        worst = declared_metric.worst
        _expect(worst is None or worst != declared_metric.ideal, "ideal and worst must differ (the box)")

    def computes_a_float() -> None:
        declared()
        inputs, references = _default_study()
        result = configuration_run.run(
            inputs, references, {"ascent_lr": 1e-3, "retain_lr": 1e-2, "steps": 2, "batch_size": 4}, seed=0
        )
        from tune_unlearn.scoring.metrics import MetricContext

        ctx = MetricContext(
            scores=result.metrics,
            tasks=tuple(inputs.task_names),
            target_tasks=inputs.request.target_tasks,
            mode=inputs.request.mode,
            has_retrain=True,
            retrain_members=len(references.retrain_members),
            forget_size=len(inputs.sets.forget),
            val_size=len(inputs.sets.val),
        )
        value = metric().compute(ctx)
        _expect(isinstance(value, float), f"compute() must return a float, got {type(value).__name__}")
        objective = metric().objective(value)
        _expect(isinstance(objective, float), "objective() must return a float")

    return [("declared", declared), ("computes_a_float", computes_a_float)]


def check_metric(metric: type) -> None:
    """Every metric check."""
    _run_all(metric_checks(metric))


def probe_family_checks(family: type) -> list[Check]:
    """The probe-family contract: declared parameters, refused typos, and a probe on the
    holdout split (``static_retain``-like families excepted) with a mask per task."""
    from tune_unlearn.hyperparameters import Param
    from tune_unlearn.validation import ProbeFamily

    def declared() -> None:
        _expect(
            isinstance(family, type) and issubclass(family, ProbeFamily),
            f"{family!r} must subclass tune_unlearn.ProbeFamily",
        )
        _expect(bool(getattr(family, "name", "")), "a probe family needs a non-empty name")
        for key, param in cast("type[ProbeFamily]", family).parameters.items():
            _expect(isinstance(param, Param), f"parameter {key!r} must be declared as a Param")

    def unknown_parameters_refused() -> None:
        declared()
        try:
            family(not_a_parameter=1)
        except ValueError:
            return
        raise AssertionError(f"{family.__name__} accepted an unknown parameter")

    def builds_a_probe() -> None:
        declared()
        from tune_unlearn.validation import ValidationContext

        ctx = ValidationContext(*_default_study())
        built = family()
        if built.not_applicable(ctx) is not None:
            return
        probe = built.build(ctx)
        samples = probe.samples
        _expect(
            samples.mask.shape == (len(samples), len(ctx.task_names)), "the mask must be [samples, tasks]"
        )
        if cast("type[ProbeFamily]", family).name != "static_retain":
            outside = ~torch.isin(samples.indices.cpu(), ctx.holdout)
            _expect(not bool(outside.any()), "a probe must draw from the holdout split only")

    return [
        ("declared", declared),
        ("unknown_parameters_refused", unknown_parameters_refused),
        ("builds_a_probe", builds_a_probe),
    ]


def check_probe_family(family: type) -> None:
    """Every probe-family check."""
    _run_all(probe_family_checks(family))


def gate_check_checks(check: type) -> list[Check]:
    """The gate-check contract: declared parameters and needs; a plugin check is off unless
    the suite names it, takes its declared defaults when named, and on a candidate gives
    exactly the results it declares, each with a known status."""
    from tune_unlearn.hyperparameters import Param
    from tune_unlearn.validation import GateCheck, SuiteConfig

    def declared() -> None:
        _expect(
            isinstance(check, type) and issubclass(check, GateCheck),
            f"{check!r} must subclass tune_unlearn.validation.GateCheck",
        )
        cls = cast("type[GateCheck]", check)
        _expect(bool(getattr(cls, "name", "")), "a gate check needs a non-empty name")
        for key, param in cls.parameters.items():
            _expect(isinstance(param, Param), f"parameter {key!r} must be declared as a Param")
        unknown = set(cls.needs) - {"configuration", "retrain"}
        _expect(not unknown, f"unknown needs {sorted(unknown)}: configuration, retrain")

    def settings_from_the_suite() -> None:
        declared()
        cls = cast("type[GateCheck]", check)
        if cls.suite_key is not None:  # a built-in: its settings have a key of their own
            return
        off = cls().settings(SuiteConfig(name="contract"))
        _expect(off is None, "a check the suite does not name must be off")
        given = cls().settings(SuiteConfig(name="contract", checks={cls.name: {}}))
        defaults = {key: param.default for key, param in cls.parameters.items()}
        _expect(given == defaults, f"named with no settings it takes its defaults {defaults}, got {given}")

    def gives_the_results_it_declares() -> None:
        settings_from_the_suite()
        cls = cast("type[GateCheck]", check)
        if cls.suite_key is not None:  # built-ins are run by the gate's own tests
            return
        from tune_unlearn.validation import Candidate, CheckInput, ValidationContext, run_check

        inputs, references = _default_study()
        suite = SuiteConfig(name="contract", checks={cls.name: {}})
        original = references.original_model()
        metrics = configuration_run.measure(inputs, references, original)
        given = CheckInput(
            ValidationContext(inputs, references), Candidate(original, "original"), suite, metrics
        )
        results = run_check(cls, given)
        names = cls().result_names(cls().settings(suite))
        found = [r.name for r in results]
        _expect(found == names, f"results {found} are not the declared {names}")
        for result in results:
            known = result.status in ("pass", "fail", "error", "skipped")
            _expect(known, f"unknown status {result.status!r}")

    return [
        ("declared", declared),
        ("settings_from_the_suite", settings_from_the_suite),
        ("gives_the_results_it_declares", gives_the_results_it_declares),
    ]


def check_gate_check(check: type) -> None:
    """Every gate-check check."""
    _run_all(gate_check_checks(check))


def checks_for(plugin: Any) -> list[Check]:
    """The named checks of any plugin: a problem instance, or a method, metric or probe class."""
    from tune_unlearn.scoring.metrics import Metric
    from tune_unlearn.validation import GateCheck, ProbeFamily

    if isinstance(plugin, Problem):
        return problem_checks(plugin)
    if isinstance(plugin, type) and issubclass(plugin, GateCheck):
        return gate_check_checks(plugin)
    if isinstance(plugin, type) and issubclass(plugin, Metric):
        return metric_checks(plugin)
    if isinstance(plugin, type) and issubclass(plugin, ProbeFamily):
        return probe_family_checks(plugin)
    return method_checks(plugin)


def parametrize_with_checks(plugins: list[Any]) -> Any:
    """A ``pytest.mark.parametrize`` over every named check of every plugin, with ids like
    ``MyMethod-keyword_only``; the test receives ``check`` and calls it."""
    import pytest

    cases = [
        pytest.param(run, id=f"{getattr(plugin, '__name__', type(plugin).__name__)}-{name}")
        for plugin in plugins
        for name, run in checks_for(plugin)
    ]
    return pytest.mark.parametrize("check", cases)


def _run_all(checks: list[Check]) -> None:
    for _, run in checks:
        run()


@functools.cache
def _default_study() -> LoadedStudy:
    return _tiny_study(None)


def _tiny_study(problem: Problem | None) -> LoadedStudy:
    """A tiny digits study's inputs and references (or ``problem``'s, every instance of its
    first group forgotten in full mode), its references cached in a temporary folder."""
    from tune_unlearn.config.study_config import parse_study
    from tune_unlearn.trial.study_references import load_study_values

    folder = tempfile.mkdtemp(prefix="tune_unlearn_check_")
    raw = {
        "name": "contract",
        "problem": {"name": "digits", "params": {"hidden": 8, "epochs": 2}},
        "forget": {"mode": "partial", "target_tasks": ["digit"], "where": {"digit": 3}},
        "method": {"name": "graddiff"},
        "references": {"cache_dir": str(Path(folder) / "cache")},
        "tracking": {"enabled": False},
        "device": "cpu",
    }
    if problem is not None:
        _FACTORIES["tune_unlearn_testing_method"] = lambda: problem
        raw["problem"] = {
            "factory": f"{__name__}:{_factory.__name__}",
            "params": {"key": "tune_unlearn_testing_method"},
        }
        raw["forget"] = {"mode": "full", "where": _selector(problem) or {}}
    return load_study_values(parse_study(raw))


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)
