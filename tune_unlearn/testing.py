"""Contract checks for your own problems and methods, like scikit-learn's ``check_estimator``.

>>> from tune_unlearn.testing import check_method, check_problem
>>> check_method(MyMethod)            # raises AssertionError saying what does not fit
>>> check_problem(MyProblem())

The built-in problems and methods pass them in the package's own tests.
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


def check_problem(problem: Problem, *, seed: int = 0) -> None:
    """Outputs per task, determinism under a seed, disjoint splits, and a tiny study that never
    reads the holdout split."""
    names = problem.task_names
    _expect(bool(names) and len(set(names)) == len(names), f"tasks must be non-empty and unique, got {names}")
    data, again = problem.load_data(), problem.load_data()
    n = len(data)
    _expect(set(data.labels) == set(names), f"labels {sorted(data.labels)} must match tasks {sorted(names)}")
    for name, column in data.labels.items():
        _expect(column.shape[0] == n, f"labels of {name!r} have {column.shape[0]} rows, inputs {n}")
        _expect(torch.equal(column, again.labels[name]), f"labels of {name!r} differ between two loads")
    probe_rows = torch.arange(min(n, 8))  # a dataset's inputs are compared on a few rows only
    _expect(torch.equal(data.inputs[probe_rows], again.inputs[probe_rows]), "load_data is not deterministic")
    splits = problem.split(n, seed)
    joined = torch.cat(list(splits.values()))
    disjoint = len(joined.unique()) == n == len(joined)
    _expect(disjoint, "train/val/holdout must be disjoint and cover every sample")
    _expect(all(len(part) > 0 for part in splits.values()), "train, val and holdout must each hold samples")
    from tune_unlearn.references import seeded_model

    first, second = (seeded_model(problem, seed, torch.device("cpu")) for _ in range(2))
    for (key, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        _expect(torch.equal(a, b), f"build_model under one seed gives different {key!r}")
    with torch.no_grad():
        outputs = first(data.inputs[:3])
    for task in problem.tasks:
        out = outputs.get(task.name)
        _expect(
            out is not None and tuple(out.shape) == (3, task.output_size),
            f"head {task.name!r} must output [batch, {task.output_size}], "
            f"got {None if out is None else tuple(out.shape)}",
        )
    _tiny_study_reads_no_holdout(problem, seed)


def _tiny_study_reads_no_holdout(problem: Problem, seed: int) -> None:
    from tune_unlearn.config import parse_study
    from tune_unlearn.runner import run_study

    task = problem.tasks[0]
    value = int(problem.load_data().labels[task.name][0]) if task.kind == "classification" else None
    if value is None:
        return  # a regression-only first task gives no label to select by; the rest still ran
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
            "forget": {"mode": "full", "where": {task.name: value}, "fraction": 0.2},
            "method": {"name": "graddiff", "fixed": {"steps": 2, "batch_size": 4}},
            "n_trials": 1,
            "output": str(Path(folder) / "out"),
            "references": {"cache_dir": str(Path(folder) / "cache")},
            "tracking": {"enabled": False},
            "device": "cpu",
        }
        run_study(parse_study(raw), progress=False)


_FACTORIES: dict[str, Callable[[], Problem]] = {}


def _factory(key: str) -> Problem:
    return _FACTORIES[key]()


def check_method(method: type, *, problem: Problem | None = None) -> None:
    """Keyword-only hyperparameters with defaults that round-trip; unlearning moves the model,
    deterministically under a seed, and keeps it finite at the defaults for a few steps."""
    from tune_unlearn.methods import UnlearningMethod

    _expect(
        isinstance(method, type) and issubclass(method, UnlearningMethod),
        f"{method!r} must subclass tune_unlearn.methods.UnlearningMethod",
    )
    _expect(dataclasses.is_dataclass(method), f"{method.__name__} must be a @dataclass(kw_only=True)")
    hyper = cast("type[UnlearningMethod]", method).hyperparameters()
    missing = [k for k, v in hyper.items() if v is dataclasses.MISSING]
    _expect(not missing, f"hyperparameters without defaults: {missing}")
    try:
        built = method(**hyper)
    except TypeError as error:
        raise AssertionError(
            f"{method.__name__} must take every hyperparameter as a keyword-only argument "
            f"(declare them as fields of a @dataclass(kw_only=True)): {error}"
        ) from None
    _expect(built.get_params() == hyper, "get_params() must return the constructor arguments")
    try:
        method(*hyper.values())
    except TypeError:
        pass
    else:
        raise AssertionError(f"{method.__name__} accepts positional hyperparameters; make them keyword-only")
    experiment = _tiny_experiment(problem) if problem is not None else _default_experiment()
    models = []
    for _ in range(2):
        model = experiment.model_from(experiment.references["original"].state_dict)
        method(**{**hyper, "steps": 3, "batch_size": 4}).unlearn(model, experiment.setup, seed=1)
        models.append(model)
    before = experiment.references["original"].state_dict
    after = models[0].state_dict()
    _expect(any(not torch.equal(before[k], after[k]) for k in before), "unlearning left the model unchanged")
    for (key, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values(), strict=True):
        _expect(torch.equal(a, b), f"two runs under one seed differ in {key!r}")


@functools.cache
def _default_experiment() -> Any:
    return _tiny_experiment(None)


def _tiny_experiment(problem: Problem | None) -> Any:
    from tune_unlearn.config import parse_study
    from tune_unlearn.experiment import Experiment

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
        task = problem.tasks[0]
        value = int(problem.load_data().labels[task.name][0])
        raw["problem"] = {
            "factory": f"{__name__}:{_factory.__name__}",
            "params": {"key": "tune_unlearn_testing_method"},
        }
        raw["forget"] = {"mode": "full", "where": {task.name: value}}
    return Experiment(parse_study(raw), progress=False)


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)
