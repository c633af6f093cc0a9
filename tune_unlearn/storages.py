"""Storage and tracking URLs: what kind of store a string names, and how to show it safely.

One parser for every module that needs to know: opening an Optuna storage, choosing the lock
that workers share, and writing a URL where people read it. A URL may carry a password
(``postgresql://user:pw@host/db``); :func:`redact` replaces it with ``***`` before the URL
reaches a log line, an MLflow param or tag, an artifact or a study attribute.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

StorageKind = Literal["sqlite", "postgresql", "mysql", "redis", "journal"]

_PREFIXES: tuple[tuple[tuple[str, ...], StorageKind], ...] = (
    (("sqlite:///",), "sqlite"),
    (("postgresql://", "postgresql+", "postgres://"), "postgresql"),
    (("mysql://", "mysql+"), "mysql"),
    (("redis://", "rediss://", "unix://"), "redis"),
)

#: ``scheme://user:password@`` — the password is the part to hide.
_CREDENTIALS = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*):(?P<secret>[^@/\s]+)@")


@dataclass(frozen=True)
class StorageUrl:
    """A parsed storage string: RDB URLs, Redis journals, or a journal file path."""

    url: str
    kind: StorageKind

    @classmethod
    def parse(cls, url: str) -> StorageUrl:
        for prefixes, kind in _PREFIXES:
            if url.startswith(prefixes):
                return cls(url, kind)
        return cls(url, "journal")

    @property
    def is_rdb(self) -> bool:
        return self.kind in ("sqlite", "postgresql", "mysql")

    @property
    def local_path(self) -> Path | None:
        """The file a SQLite database or a journal lives in; ``None`` for a server."""
        if self.kind == "sqlite":
            return Path(self.url.removeprefix("sqlite:///"))
        if self.kind == "journal":
            return Path(self.url)
        return None

    def __str__(self) -> str:
        return redact(self.url)


def redact(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` in it as ``***``."""
    return _CREDENTIALS.sub(lambda m: f"{m['head']}:***@", text)


def redact_tree(tree: Any) -> Any:
    """Every string in a JSON-like tree redacted (a resolved study file, say)."""
    if isinstance(tree, str):
        return redact(tree)
    if isinstance(tree, dict):
        return {key: redact_tree(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [redact_tree(value) for value in tree]
    return tree
