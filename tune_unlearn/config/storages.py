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
    (("postgresql://", "postgresql+"), "postgresql"),
    (("mysql://", "mysql+"), "mysql"),
    (("redis://", "rediss://", "unix://"), "redis"),
)
ACCEPTED_STORAGE = (
    "sqlite:///PATH, postgresql://, mysql://, redis://, rediss://, unix:// or a journal file path"
)
#: What MLflow's tracking client accepts besides a plain folder path.
_TRACKING_SCHEMES = ("file", "http", "https", "databricks", "sqlite", "postgresql", "mysql", "mssql")
ACCEPTED_TRACKING = (
    "a folder path, file://, http://, https://, databricks, sqlite:///, postgresql://, mysql://"
)
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://")
#: Spellings that name a known store but that the driver refuses.
_MISSPELLED = {"postgres": "postgresql", "sqlite3": "sqlite", "pg": "postgresql"}

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


def _scheme(url: str) -> str | None:
    """The URL's scheme (before ``://``), or ``None`` for a path."""
    match = _SCHEME.match(url)
    return None if match is None else match["scheme"].lower()


def storage_problem(url: str) -> str | None:
    """Why an Optuna storage string cannot work, or ``None``: an unknown scheme would
    otherwise be taken as a journal file path (``mongodb://h/db`` → folders ``mongodb:/h``)."""
    scheme = _scheme(url)
    if scheme is None or any(url.startswith(p) for prefixes, _ in _PREFIXES for p in prefixes):
        return None
    base = scheme.split("+", 1)[0]
    if base in _MISSPELLED:
        return f"write {_MISSPELLED[base]}:// (SQLAlchemy has no {base}:// dialect)"
    if base == "sqlite":
        return "a SQLite URL is sqlite:/// and a path (three slashes; four for an absolute path)"
    return f"unknown storage scheme {scheme}://; accepted: {ACCEPTED_STORAGE}"


def tracking_problem(uri: str) -> str | None:
    """Why an MLflow tracking URI cannot work, or ``None``."""
    scheme = _scheme(uri)
    if scheme is None:
        return None
    base = scheme.split("+", 1)[0]
    if base in _TRACKING_SCHEMES:
        return None
    if base in _MISSPELLED:
        return f"write {_MISSPELLED[base]}:// (SQLAlchemy has no {base}:// dialect)"
    return f"unknown tracking scheme {scheme}://; accepted: {ACCEPTED_TRACKING}"


def unavailable_message(url: str, error: BaseException) -> str:
    """One line for a storage server that cannot be opened: the URL (password hidden), the
    server's reason, and what to do."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    reason = re.sub(r"^\([\w.]+\)\s*", "", reason).removeprefix("connection failed: ")
    lowered = str(error).lower()
    if "does not exist" in lowered or "unknown database" in lowered:
        hint = "create the database (createdb NAME, or CREATE DATABASE NAME) or fix the URL"
    elif "password" in lowered or "authentication" in lowered or "access denied" in lowered:
        hint = "check the user name and password in the URL"
    elif isinstance(error, ImportError) or "can't load plugin" in lowered:
        hint = "install the driver (psycopg for postgresql://, pymysql for mysql+pymysql://)"
    else:
        hint = "is the server running and reachable at that host and port?"
    return f"cannot open storage {redact(url)}: {redact(reason)}; {hint}"


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
