"""One registry mechanism for every plugin kind: problems, methods, metrics, probe families.

A registry maps a name to a class or factory. Unknown names raise :class:`UnknownNameError`,
which lists the valid names and suggests the closest one, so a typo in a study file is a
one-line fix for the user. Other packages add entries through Python entry points (the group
given to the registry, e.g. ``tune_unlearn.methods``); they load on first use, and a plugin
whose import fails is recorded in :attr:`Registry.broken` by name while the rest still load.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A name that no registry entry carries (a ValueError too, so validators report it)."""

    def __init__(self, kind: str, name: str, valid: list[str]) -> None:
        self.kind, self.name, self.valid = kind, name, valid
        close = difflib.get_close_matches(name, valid, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        super().__init__(f"unknown {kind} {name!r}; valid: {', '.join(valid)}{hint}")

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def subclass_of(base: type) -> Callable[[object], bool]:
    """The ``accepts`` test of a registry of classes: a plugin must subclass ``base``."""
    return lambda entry: isinstance(entry, type) and issubclass(entry, base)


class Registry(Generic[T]):
    """Names to plugins of one kind.

    >>> methods: Registry[type] = Registry("method")
    >>> @methods.register("noop")
    ... class Noop: ...
    >>> methods.get("noop") is Noop
    True
    """

    def __init__(
        self, kind: str, entry_point_group: str | None = None, accepts: Callable[[object], bool] | None = None
    ) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._accepts = accepts
        self._entries: dict[str, T] = {}
        self._plugins_loaded = entry_point_group is None
        #: Entry points that could not be loaded: name → why.
        self.broken: dict[str, str] = {}

    def add(self, entry: T) -> T:
        """Register a class under its own ``name`` attribute; usable as a decorator."""
        return self.register(str(getattr(entry, "name")))(entry)  # noqa: B009

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(entry: T) -> T:
            if name in self._entries and self._entries[name] is not entry:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = entry
            return entry

        return decorator

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for point in metadata.entry_points(group=self.entry_point_group or ""):
            if point.name in self._entries:
                self.broken[point.name] = f"{point.value}: the name is taken by a built-in {self.kind}"
                continue
            try:
                entry = point.load()
            except Exception as error:  # a broken plugin must not take the others down
                self.broken[point.name] = f"{point.value}: {type(error).__name__}: {error}"
                continue
            if self._accepts is not None and not self._accepts(entry):
                self.broken[point.name] = f"{point.value}: not a {self.kind}"
                continue
            self._entries[point.name] = entry

    def get(self, name: str) -> T:
        self._load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self.names()) from None

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._entries)

    def ordered(self) -> list[str]:
        """The names in the order they were registered: built-ins as their module lists
        them, then entry points (where the order of results matters, as a suite's checks)."""
        self._load_plugins()
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
