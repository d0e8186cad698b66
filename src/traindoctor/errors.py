"""User-facing errors.

A :class:`TrainDoctorError` is something the user can fix (a wrong path, a log we cannot read);
its ``str()`` is always one line that names the file, the line or record when known, and what
was expected, so the CLI can print it as is without a traceback.
"""

from __future__ import annotations

import os


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class TrainDoctorError(Exception):
    """Base of every error meant for the user: ``str()`` is one line.

    ``TrainDoctorError("x.csv: is empty")`` or, with the location given apart,
    ``TrainDoctorError("is empty", path="x.csv")`` → ``x.csv: is empty`` and
    ``TrainDoctorError("column 'loss' holds 'abc'", path="x.csv", line=17)`` → ``x.csv:17: ...``.
    """

    def __init__(
        self, message: str, *, path: str | os.PathLike[str] | None = None, line: int | None = None
    ) -> None:
        self.message = _one_line(message)
        self.path = None if path is None else os.fspath(path)
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.path is None:
            return self.message
        where = _one_line(self.path) if self.line is None else f"{_one_line(self.path)}:{self.line}"
        return f"{where}: {self.message}"


class LogError(TrainDoctorError):
    """An input log or run store that cannot be read, or does not hold what a run needs."""
