"""Exceptions that decide how a command ends (its exit code)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

#: The command line's exit codes: 0 success, 1 a check failed, 2 usage or configuration error
#: (nothing written), 3 a run failed, 130 interrupted (finished trials kept).
EXIT_OK, EXIT_CHECK_FAILED, EXIT_CONFIG, EXIT_RUN_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class Interrupted(KeyboardInterrupt):
    """The process was asked to stop (Ctrl-C, SIGTERM): trials in flight are failed with this
    reason and retried by the next run; nothing finished is lost."""

    def __init__(self, signal_name: str = "SIGINT") -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


class OutputNotWritable(OSError):
    """An output location cannot be created or written: found before the first trial."""


class UsageError(ValueError):
    """The study file, an argument or an input it names is wrong: exit 2, nothing was run.
    Raised only while input is read (the study file, the data, the references, the storage's
    study); an error once trials run is a failed run (exit 3), never this."""


@contextlib.contextmanager
def reading_input(what: str = "") -> Iterator[None]:
    """Errors that reading input raises (bad values, missing names, wrong types) as
    :class:`UsageError`, so the command exits 2 with the message and no traceback."""
    try:
        yield
    except UsageError:
        raise
    except (ValueError, LookupError, TypeError) as error:
        message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
        raise UsageError(f"{what}{message}") from error
