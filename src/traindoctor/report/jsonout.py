"""The JSON report: ``{"schema": "traindoctor/1", ...}``, a stable interface for scripts and CI."""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..diagnosis import Diagnosis


def to_json_text(diag: Diagnosis) -> str:
    # allow_nan=False: evidence is cleaned to strings ("nan", "inf"), so the file is strict JSON
    return json.dumps(diag.to_json(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_json(diag: Diagnosis, path: str | os.PathLike[str]) -> None:
    """Write atomically: a reader never sees half a report."""
    p = Path(path)
    if str(p) == "-":
        import sys

        sys.stdout.write(to_json_text(diag))
        return
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(to_json_text(diag), encoding="utf-8")
    os.replace(tmp, p)
