"""The JSON report: ``{"schema": "traindoctor/1", ...}``, a stable interface for scripts and CI."""
from __future__ import annotations

import json
import os

from ..diagnosis import Diagnosis
from .output import write_document


def to_json_text(diag: Diagnosis) -> str:
    # allow_nan=False: evidence is cleaned to strings ("nan", "inf"), so the file is strict JSON
    return json.dumps(diag.to_json(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_json(diag: Diagnosis, path: str | os.PathLike[str]) -> None:
    """Write to ``path`` (``-``: stdout): a regular file atomically, a reader never sees half a report;
    a device, FIFO or descriptor (``/dev/stdout``) is written into, never replaced. See :mod:`.output`."""
    write_document(diag.to_json(), path)
