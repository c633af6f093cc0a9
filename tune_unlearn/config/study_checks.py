"""The study file's cross-field checks: what pydantic's per-field rules cannot see.

:func:`semantic_issues` reads the raw mapping defensively, so that it still runs when another
part of the file is malformed, and yields every problem as a :class:`ConfigIssue` with its
dotted path (a search key the method does not take, a task the problem does not have, a file
that is not there, a reference mode that cannot judge the request).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tune_unlearn.config.problem_config import ProblemConfig
from tune_unlearn.config.schema import ConfigIssue
from tune_unlearn.config.storages import redact, storage_problem, tracking_problem
from tune_unlearn.hyperparameters import Param, search_range_problems
from tune_unlearn.methods import ADAM_RATES, METHODS
from tune_unlearn.problems import Problem, as_problem, problem_factory
from tune_unlearn.problems.forget import read_index_file
from tune_unlearn.registry import UnknownNameError


def _stream_issues(raw: Mapping[str, Any]) -> Iterator[ConfigIssue]:
    """A request stream: a non-empty list instead of ``forget``, one mode and one set of
    target tasks throughout (what "deleted so far" means must not change), and a gate suite."""
    requests = raw.get("requests")
    if requests is None:  # not a stream (a resolved study file says `requests: null`)
        return
    if not isinstance(requests, list) or not requests:
        yield ConfigIssue("requests", "list at least one deletion request")
        return
    if "forget" in raw and raw["forget"] != requests[0]:  # (a resolved stream repeats the first)
        yield ConfigIssue("forget", "a stream's requests are its `requests`: leave `forget` out")
    first = requests[0] if isinstance(requests[0], Mapping) else {}
    for number, request in enumerate(requests[1:], start=1):
        if not isinstance(request, Mapping):
            continue
        for key, default in (("mode", "full"), ("target_tasks", None)):
            if request.get(key, default) != first.get(key, default):
                yield ConfigIssue(
                    f"requests.{number}.{key}",
                    f"every request of a stream has the first's {key} ({first.get(key, default)!r})",
                )
    if not _mapping(raw, "validation").get("suite"):
        yield ConfigIssue(
            "validation.suite", "a request stream judges each request with the gate: name a suite file"
        )


def _location_issues(raw: Mapping[str, Any]) -> Iterator[ConfigIssue]:
    """Storage and tracking URLs with a scheme nothing here can open: refused now, not taken
    for a journal path (``mongodb://…`` made folders) or found after the storage was written."""
    for path, value, problem in (
        ("storage", raw.get("storage"), storage_problem),
        ("warm_start.storage", _mapping(raw, "warm_start").get("storage"), storage_problem),
        ("tracking.uri", _mapping(raw, "tracking").get("uri"), tracking_problem),
    ):
        if isinstance(value, str) and (message := problem(value)) is not None:
            yield ConfigIssue(path, message, redact(value))


def _input_file_issues(raw: Mapping[str, Any]) -> Iterator[ConfigIssue]:
    """Files the study reads: the deletion requests' index files (read now, so a file that
    cannot be read or parsed is named before anything starts) and the given reference models."""
    requests = raw.get("requests")
    forgets = [("forget", _mapping(raw, "forget"))]
    if isinstance(requests, list):
        forgets += [(f"requests.{i}", r) for i, r in enumerate(requests) if isinstance(r, Mapping)]
    for where, forget in forgets:
        index_file = forget.get("index_file")
        if not isinstance(index_file, str):
            continue
        if not Path(index_file).is_file():
            yield ConfigIssue(f"{where}.index_file", "no such file", index_file)
            continue
        try:
            read_index_file(Path(index_file))
        except OSError as error:
            yield ConfigIssue(f"{where}.index_file", f"cannot read: {error.strerror or error}", index_file)
        except (ValueError, TypeError, UnicodeDecodeError) as error:
            yield ConfigIssue(
                f"{where}.index_file",
                f"not a JSON list or one integer per line: {error}",
                index_file,
            )
    references = _mapping(raw, "references")
    for key in ("original", "retrain"):
        value = references.get(key)
        if not isinstance(value, str) or value.startswith(("models:/", "runs:/")):
            continue  # MLflow references resolve against the tracking store when the run starts
        if not Path(value).is_file():
            yield ConfigIssue(
                f"references.{key}", "no such model file (a state-dict file, models:/ or runs:/)", value
            )
        elif not os.access(value, os.R_OK):
            yield ConfigIssue(f"references.{key}", "cannot read the model file", value)


def whole_group_removed(forget: Mapping[str, Any]) -> bool:
    """Whether a request removes every train instance of a group (``where`` with the whole
    group, ``fraction`` 1): then no retained data is like the forget set."""
    fraction = forget.get("fraction", 1.0)
    return bool(forget.get("where")) and isinstance(fraction, (int, float)) and fraction >= 1.0


def _reference_free_issues(raw: Mapping[str, Any]) -> Iterator[ConfigIssue]:
    """Reference-free forms stand in for an honest retrain with data *of the same kind* that
    the retain set still holds; a request that removes a whole group has none, so an honest
    retrain's behaviour on it is unknown without a model that never saw it. Refused, never
    guessed (docs/guide.md, "Reference modes")."""
    if _mapping(raw, "references").get("retrain", True) is not False:
        return
    requests = raw.get("requests")
    forgets = requests if isinstance(requests, list) else [raw.get("forget")]
    for number, forget in enumerate(forgets):
        if not isinstance(forget, Mapping) or not whole_group_removed(forget):
            continue
        where = ", ".join(f"{k} == {v}" for k, v in _mapping(forget, "where").items())
        at = f"requests.{number}" if isinstance(requests, list) else "forget"
        yield ConfigIssue(
            "references.retrain",
            f"reference-free cannot judge this request: {at} removes every train instance with "
            f"{where}, so the retain set holds no data like the forget set and an honest "
            "retrain's behaviour on that group is unknown without a model that never saw it. "
            "Use the retrain ensemble (references.retrain: {seeds: K}, K retrains of cost 1 each; "
            "K = 1 is the cheapest, without a seed band), or forget a random share of the group "
            f"({at}.fraction < 1)",
        )


def _bank_issues(raw: Mapping[str, Any]) -> Iterator[ConfigIssue]:
    """A shared bank needs the requests that share it: ``scope: stream`` only in a stream,
    and a hand-given bank (``left_out``) must be a readable index file."""
    retrain = _mapping(raw, "references").get("retrain")
    if not isinstance(retrain, Mapping):
        return
    if retrain.get("scope") == "stream" and not isinstance(raw.get("requests"), list):
        yield ConfigIssue(
            "references.retrain.scope",
            "a stream bank is shared by a stream's requests: give `requests:`, or use scope "
            "`request` (K retrains for this request), or a bank you trained for a batch of "
            "requests (`left_out:` its index file, `shared_by:` how many requests share it)",
        )
    left_out = retrain.get("left_out")
    if retrain.get("scope") == "stream" and left_out is not None:
        yield ConfigIssue(
            "references.retrain.left_out",
            "a stream bank leaves out the stream's requests: give one or the other",
        )
    if isinstance(left_out, str):
        if not Path(left_out).is_file():
            yield ConfigIssue("references.retrain.left_out", "no such index file", left_out)
        else:
            try:
                read_index_file(Path(left_out))
            except (OSError, ValueError, TypeError, UnicodeDecodeError) as error:
                yield ConfigIssue(
                    "references.retrain.left_out",
                    f"not a JSON list or one integer per line: {error}",
                    left_out,
                )


def _mapping(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key)
    return value if isinstance(value, Mapping) else {}


def semantic_issues(raw: Mapping[str, Any]) -> Iterator[ConfigIssue]:
    """Cross-field checks that pydantic's per-field rules cannot see."""
    yield from _stream_issues(raw)
    yield from _reference_free_issues(raw)
    yield from _bank_issues(raw)
    yield from _location_issues(raw)
    yield from _input_file_issues(raw)
    method_raw = _mapping(raw, "method")
    method_name = method_raw.get("name")
    if isinstance(method_name, str) and method_name in METHODS:
        accepted = METHODS.get(method_name).hyperparameters()
        for section in ("fixed", "search"):
            for key in _mapping(method_raw, section):
                if key not in accepted:
                    yield ConfigIssue(
                        f"method.{section}.{key}",
                        f"{method_name} has no hyperparameter {key!r}; valid: {', '.join(accepted)}",
                    )
        declared = METHODS.get(method_name).constraints()
        yield from _type_issues(method_raw, declared)
        yield from _value_issues(METHODS.get(method_name), method_raw, declared)
        yield from _adam_scale_issues(method_raw, declared)
        both = set(_mapping(method_raw, "fixed")) & set(_mapping(method_raw, "search"))
        for key in sorted(both):
            yield ConfigIssue(f"method.search.{key}", "is also fixed; give it in one place only")

    problem_raw = _mapping(raw, "problem")
    try:
        problem_config = ProblemConfig.model_validate(problem_raw)
    except ValidationError:
        return  # reported by the structural pass
    try:
        make = problem_factory(problem_config.name, problem_config.factory)
    except UnknownNameError as error:
        yield ConfigIssue("problem.name", str(error))
        return
    except (ImportError, ValueError) as error:
        yield ConfigIssue("problem.factory", f"cannot load: {error}", problem_raw.get("factory"))
        return
    try:  # the constructor checks its parameters (an unknown name, a value out of range)
        built = make(**problem_config.params)
    except (TypeError, ValueError) as error:
        yield ConfigIssue("problem.params", str(error))
        return
    try:
        problem = as_problem(built, problem_config.factory or problem_config.name)
    except TypeError as error:
        yield ConfigIssue("problem.factory", str(error))
        return
    yield from _forget_issues(_mapping(raw, "forget"), problem)


def _type_issues(method_raw: Mapping[str, Any], declared: Mapping[str, Param]) -> Iterator[ConfigIssue]:
    """Fixed values and search dimensions against each hyperparameter's declaration: its type,
    its range or choices; integer ranges with integer bounds; no step on a log scale."""
    for key, value in _mapping(method_raw, "fixed").items():
        if key in declared and (message := declared[key].problem(value)) is not None:
            yield ConfigIssue(f"method.fixed.{key}", message, value)
    for key, dimension in _mapping(method_raw, "search").items():
        if key in declared and isinstance(dimension, Mapping):
            for sub, message in search_range_problems(declared[key], dimension):
                yield ConfigIssue(f"method.search.{key}.{sub}", message)


def _adam_scale_issues(method_raw: Mapping[str, Any], declared: Mapping[str, Param]) -> Iterator[ConfigIssue]:
    """A rate relative to a gradient scale under ``optimizer: adam``: the scales size a plain
    gradient step, while Adam's rate is a per-weight step size, so the product means nothing."""
    if _mapping(method_raw, "fixed").get("optimizer") != "adam":
        return
    for key, dimension in _mapping(method_raw, "search").items():
        if (
            key in declared
            and declared[key].rate
            and isinstance(dimension, Mapping)
            and dimension.get("scale")
        ):
            yield ConfigIssue(
                f"method.search.{key}.scale",
                "under optimizer adam a rate is a per-weight step size: give absolute bounds "
                f"(leave the dimension out for the default, [{ADAM_RATES['low']:g}, {ADAM_RATES['high']:g}])",
                dimension.get("scale"),
            )


def _value_issues(
    method: type, method_raw: Mapping[str, Any], declared: Mapping[str, Param]
) -> Iterator[ConfigIssue]:
    """Values a method refuses beyond its declarations (a plugin's own ``__post_init__``):
    each fixed value that fits its declaration, tried on the defaults."""
    for key, value in _mapping(method_raw, "fixed").items():
        if key not in declared or declared[key].problem(value) is not None:
            continue
        try:
            method(**{key: value})
        except ValueError as error:
            yield ConfigIssue(f"method.fixed.{key}", str(error), value)
        except TypeError:
            continue


def _forget_issues(forget: Mapping[str, Any], problem: Problem) -> Iterator[ConfigIssue]:
    tasks = problem.task_names
    targets = forget.get("target_tasks")
    if forget.get("mode", "full") == "full" and targets:
        yield ConfigIssue(
            "forget.target_tasks", "full mode forgets from every task; target_tasks is for partial mode"
        )
    if isinstance(targets, list):
        for i, name in enumerate(targets):
            if name not in tasks:
                yield ConfigIssue(
                    f"forget.target_tasks.{i}", f"unknown task; valid: {', '.join(tasks)}", name
                )
        if forget.get("mode") == "partial" and set(targets) >= set(tasks):
            yield ConfigIssue("forget.target_tasks", "partial mode must leave at least one task to keep")
    known = tasks + list(problem.attributes)
    for key, value in _mapping(forget, "where").items():
        if key not in known:
            yield ConfigIssue(
                f"forget.where.{key}", f"no task or attribute of that name; valid: {', '.join(known)}"
            )
        elif key in problem.attribute_levels and not (
            isinstance(value, int) and 0 <= value < problem.attribute_levels[key]
        ):
            yield ConfigIssue(
                f"forget.where.{key}",
                f"expected a value of {key} in 0..{problem.attribute_levels[key] - 1}",
                value,
            )
        elif key in tasks and problem.task(key).dense:
            yield ConfigIssue(
                f"forget.where.{key}",
                "a dense task's labels are per pixel and select no sample; select by an attribute "
                f"({', '.join(problem.attributes) or 'this problem has none'})",
                value,
            )
        elif key in tasks:
            task = problem.task(key)
            valid = task.kind != "classification" or (
                isinstance(value, int) and 0 <= value < task.num_classes
            )
            if not valid:
                yield ConfigIssue(
                    f"forget.where.{key}", f"expected a class of {key} in 0..{task.num_classes - 1}", value
                )
