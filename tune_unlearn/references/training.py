"""Reference models (`original`, `retrain`): trained with the problem's recipe, cached on disk.

The cache key is a content hash of everything that decides the weights — problem class and
parameters, recipe, seed, package version and, for `retrain`, the forget request — so a second
run of a study, and every trial of it, reuses them. Writes are atomic (temporary file, then
``os.replace``) and guarded by a file lock, so concurrent workers train each reference once:
a worker that finds one being trained waits for it.

The retrain reference is an *ensemble*: K models trained with seeds ``seed, seed + 1, …``. One
retrain is one draw from the distribution of honest deletions; the ensemble's spread is what
lets metrics and checks tell a real difference from seed noise. Members missing from the cache
are trained in parallel processes (joblib) where the device is a CPU and cores allow
(``reference_models.ReferencePlan.jobs`` decides).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from filelock import FileLock
from torch import Tensor
from tqdm.auto import tqdm

from tune_unlearn._version import __version__
from tune_unlearn.problems import Batch, MultiTaskData, MultiTaskModel, Problem, masked_task_losses
from tune_unlearn.problems.forget import ForgetRequest, LabeledSet

ReferenceKind = Literal["original", "retrain"]
StateDict = dict[str, Tensor]


def default_cache_dir() -> Path:
    env = os.environ.get("TUNE_UNLEARN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "tune_unlearn"


def seeded_model(problem: Problem, seed: int, device: torch.device) -> MultiTaskModel:
    """A fresh model whose initial weights depend on ``seed`` only."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return problem.build_model().to(device)


def model_from_state(
    problem: Problem, state_dict: Mapping[str, Tensor], device: torch.device
) -> MultiTaskModel:
    """The problem's model with ``state_dict`` loaded, in eval mode: the model's shape comes
    from the problem alone."""
    model = seeded_model(problem, 0, device)
    model.load_state_dict(state_dict)
    model.eval()
    return model


def train_model(
    problem: Problem,
    data: MultiTaskData,
    labeled: LabeledSet,
    *,
    seed: int,
    description: str = "training",
    progress: bool = True,
    max_steps: int | None = None,
) -> MultiTaskModel:
    """Train a fresh model on ``labeled`` with the problem's recipe (masked multi-task loss);
    ``max_steps`` stops early (to time a few steps for a cost estimate)."""
    device = data.device
    recipe = problem.recipe()
    model = seeded_model(problem, seed, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    schedule = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe.steps(len(labeled)))
        if recipe.schedule == "cosine"
        else None
    )
    generator = torch.Generator().manual_seed(seed)
    labeled = labeled.to(device)
    tasks = problem.tasks
    model.train()
    steps = 0
    for _ in tqdm(range(recipe.epochs), desc=description, unit="epoch", leave=False, disable=not progress):
        order = torch.randperm(len(labeled), generator=generator).to(device)
        # The epoch's rows are known ahead, so a dataset's DataLoader can load them ahead.
        epoch = data.input_batches(labeled.indices[order], recipe.batch_size)
        for positions, (rows, inputs) in zip(order.split(recipe.batch_size), epoch, strict=True):
            batch = Batch(
                inputs,
                {name: column[rows] for name, column in data.labels.items()},
                labeled.mask[positions],
            )
            loss = masked_task_losses(model(batch.inputs), batch, tasks).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
            steps += 1
            if max_steps is not None and steps >= max_steps:
                model.eval()
                return model
    model.eval()
    return model


def estimate_training_seconds(problem: Problem, data: MultiTaskData, labeled: LabeledSet) -> float:
    """Seconds one full training with the recipe should take here: a few timed steps (after
    one warm-up step) scaled to the recipe's epochs."""
    recipe = problem.recipe()
    train_model(problem, data, labeled, seed=0, progress=False, max_steps=1)
    probe = 4
    start = time.perf_counter()
    train_model(problem, data, labeled, seed=0, progress=False, max_steps=probe + 1)
    per_step = (time.perf_counter() - start) / (probe + 1)
    return per_step * recipe.steps(len(labeled))


@dataclass(frozen=True)
class Reference:
    kind: ReferenceKind
    state_dict: StateDict
    train_seconds: float


class ReferenceCache:
    """Trained reference weights on disk, by content hash."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def key(
        self,
        kind: ReferenceKind,
        problem: Problem,
        seed: int,
        forget: ForgetRequest | None = None,
    ) -> str:
        payload: dict[str, Any] = {
            "kind": kind,
            "problem": f"{type(problem).__module__}.{type(problem).__qualname__}",
            "params": problem.params(),
            "recipe": dataclasses.asdict(problem.recipe()),
            "seed": seed,
            "version": __version__,
        }
        if kind == "retrain":
            if forget is None:
                raise ValueError("the retrain reference depends on the forget request")
            payload["forget"] = forget.fingerprint()
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def _paths(self, kind: ReferenceKind, key: str) -> tuple[Path, Path, Path]:
        stem = self.root / f"{kind}-{key}"
        return stem.with_suffix(".pt"), stem.with_suffix(".json"), stem.with_suffix(".lock")

    def cached(self, kind: ReferenceKind, key: str) -> bool:
        weights, meta, _ = self._paths(kind, key)
        return weights.exists() and meta.exists()

    def _write(self, kind: ReferenceKind, key: str, state: StateDict, seconds: float) -> None:
        weights, meta, _ = self._paths(kind, key)
        _atomic_write(weights, lambda f: torch.save(state, f))
        info = {"kind": kind, "train_seconds": seconds, "version": __version__, "sha256": _sha256(weights)}
        _atomic_write(meta, lambda f: f.write(json.dumps(info).encode()))

    def _read(self, kind: ReferenceKind, key: str) -> Reference:
        """A cached reference, verified: the weights' hash must match the one written beside
        them, and both files must parse. Raises :class:`CorruptCacheEntry` otherwise."""
        weights, meta, _ = self._paths(kind, key)
        try:
            info = json.loads(meta.read_text())
            seconds = float(info["train_seconds"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CorruptCacheEntry(meta, f"unreadable metadata ({type(error).__name__}: {error})") from None
        expected = info.get("sha256")
        if expected is not None and _sha256(weights) != expected:
            raise CorruptCacheEntry(
                weights, "its SHA-256 does not match the one recorded when it was written"
            )
        try:
            state = torch.load(weights, weights_only=True, map_location="cpu")
        except Exception as error:
            raise CorruptCacheEntry(
                weights, f"torch cannot load it ({type(error).__name__}: {error})"
            ) from None
        if not isinstance(state, dict):
            raise CorruptCacheEntry(weights, f"it holds a {type(state).__name__}, not a state dict")
        return Reference(kind, state, seconds)

    def _usable(self, kind: ReferenceKind, key: str) -> bool:
        """Cached and intact; a corrupt entry is removed, with a warning naming the file, so
        that it is trained again."""
        if not self.cached(kind, key):
            return False
        try:
            self._read(kind, key)
        except CorruptCacheEntry as corrupt:
            warnings.warn(f"{corrupt}; training it again", stacklevel=3)
            for path in self._paths(kind, key)[:2]:
                path.unlink(missing_ok=True)
            return False
        return True

    def get_or_train(
        self, kind: ReferenceKind, key: str, train: Callable[[], MultiTaskModel]
    ) -> tuple[Reference, bool]:
        """The cached reference, training it first if absent; also says whether it trained."""
        ((reference, trained),) = self.get_or_train_many(kind, [key], lambda keys: [_timed(train)])
        return reference, trained

    def get_or_train_many(
        self,
        kind: ReferenceKind,
        keys: list[str],
        train_missing: Callable[[list[str]], list[tuple[StateDict, float]]],
    ) -> list[tuple[Reference, bool]]:
        """Cached references for ``keys``; the missing ones are trained together by
        ``train_missing(missing_keys)`` (state dict and seconds each) while their locks are held."""
        self.root.mkdir(parents=True, exist_ok=True)
        locks = [FileLock(str(self._paths(kind, key)[2])) for key in sorted(set(keys))]
        for lock in locks:  # sorted order: two processes never wait on each other
            lock.acquire()
        try:
            missing = [key for key in dict.fromkeys(keys) if not self._usable(kind, key)]
            if missing:
                for key, (state, seconds) in zip(missing, train_missing(missing), strict=True):
                    self._write(kind, key, state, seconds)
            return [(self._read(kind, key), key in missing) for key in keys]
        finally:
            for lock in reversed(locks):
                lock.release()


class CorruptCacheEntry(Exception):
    """A cached reference file that is truncated, garbled or not what was written."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cached reference {path} is corrupt: {reason}")
        self.path = path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _timed(train: Callable[[], MultiTaskModel]) -> tuple[StateDict, float]:
    start = time.perf_counter()
    model = train()
    seconds = time.perf_counter() - start
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}, seconds


def _train_in_worker(
    problem: Problem, data: MultiTaskData, labeled: LabeledSet, seed: int
) -> tuple[StateDict, float]:
    """One ensemble member in a joblib worker process: one torch thread, so K members on K
    cores do not oversubscribe them."""
    torch.set_num_threads(1)
    return _timed(lambda: train_model(problem, data, labeled, seed=seed, progress=False))


@contextlib.contextmanager
def _torch_threads(count: int | None) -> Iterator[None]:
    """``count`` torch threads inside the block (``None``: as they are), restored after."""
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_members(
    problem: Problem,
    data: MultiTaskData,
    labeled: LabeledSet,
    seeds: list[int],
    *,
    n_jobs: int,
    description: str = "training",
    progress: bool = True,
    one_thread: bool = False,
) -> list[tuple[StateDict, float]]:
    """Train one model per seed: in ``n_jobs`` processes on a CPU (each member's seconds are
    then its own process's wall time), one after another otherwise, on one torch thread each
    with ``one_thread`` (as a worker process trains them)."""
    if n_jobs > 1 and len(seeds) > 1 and data.device.type == "cpu" and isinstance(data.inputs, Tensor):
        from joblib import Parallel, delayed

        if progress:
            print(f"{description}: {len(seeds)} models in {n_jobs} processes", flush=True)
        try:
            results: list[tuple[StateDict, float]] = Parallel(n_jobs=n_jobs)(
                delayed(_train_in_worker)(problem, data, labeled, seed) for seed in seeds
            )
            return results
        except Exception as error:  # a problem class a worker process cannot import, for one
            warnings.warn(
                f"training the ensemble in processes failed ({type(error).__name__}: {error}); "
                "training its members one after another",
                stacklevel=2,
            )
    with _torch_threads(1 if one_thread else None):
        return [
            _timed(
                functools.partial(
                    train_model,
                    problem,
                    data,
                    labeled,
                    seed=seed,
                    description=f"{description} (seed {seed})",
                    progress=progress,
                )
            )
            for seed in seeds
        ]


def _atomic_write(path: Path, write: Callable[[Any], object]) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_state_dict(state: StateDict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda f: torch.save(state, f))


#: The weights file every model tune_unlearn logs to MLflow carries beside its pickled module
#: (``extra_files/``): what ``load_state`` reads, with ``weights_only=True``.
MLFLOW_STATE_FILE = "state_dict.pt"


def load_state(spec: str, *, tracking_uri: str | None = None, trust_pickle: bool = False) -> StateDict:
    """A state dict from a file or an MLflow model URI (``models:/…``, ``runs:/…``), always
    loaded with ``weights_only=True``: a file can hold code that unpickling would run. An MLflow
    model is read from the state dict tune_unlearn logs inside it; one without it is unpickled
    only with ``trust_pickle`` (whoever could log it could run code here). ``tracking_uri``:
    the store that ``models:/`` and ``runs:/`` resolve against."""
    if spec.startswith(("models:/", "runs:/")):
        return _load_mlflow_state(spec, tracking_uri, trust_pickle)
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"no such model file: {path}")
    return _load_weights(path, str(path))


def _load_mlflow_state(spec: str, tracking_uri: str | None, trust_pickle: bool) -> StateDict:
    from mlflow.artifacts import download_artifacts

    from tune_unlearn.config.storages import redact

    where = f" in {redact(tracking_uri)}" if tracking_uri else ""
    with tempfile.TemporaryDirectory() as folder:
        try:
            local = Path(
                download_artifacts(
                    artifact_uri=spec, dst_path=folder, tracking_uri=tracking_uri, registry_uri=tracking_uri
                )
            )
        except Exception as error:  # MLflow raises many kinds; all mean "not there"
            raise ValueError(f"cannot load {spec}{where}: {redact(str(error))}") from None
        weights = sorted(local.rglob(MLFLOW_STATE_FILE)) if local.is_dir() else []
        if weights:
            return _load_weights(weights[0], spec)
        if not trust_pickle:
            raise ValueError(
                f"{spec} carries no {MLFLOW_STATE_FILE} (tune_unlearn logs one with every model), so "
                "loading it means unpickling its module, which runs whatever code whoever logged it "
                "put there; pass --trust-pickle if you trust everyone with write access to that store"
            )
        import mlflow.pytorch

        try:
            module = mlflow.pytorch.load_model(str(local))
        except Exception as error:
            raise ValueError(f"cannot load {spec}{where}: {error}") from None
        return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def _load_weights(path: Path, label: str) -> StateDict:
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:
        raise ValueError(f"{label} is not a state dict torch can load safely: {error}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{label} holds a {type(state).__name__}, not a state dict")
    return state
