"""Real tiny training runs, watched by `traindoctor run`'s machinery in process.

Each built-in example script runs once per test session under ``watch_script`` (the code behind
``traindoctor run``) with ``--dump-losses``, so a test can compare what the doctor saw with what
the script itself computed, step by step.
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest

from traindoctor.examples import script_path
from traindoctor.watch.launcher import WatchResult, watch_script


@dataclass
class Watched:
    result: WatchResult
    losses: list[float]  # what the script itself recorded, one per optimizer step
    stderr: str

    @property
    def codes(self) -> dict:
        return {f.code: f for f in self.result.diagnosis.findings}

    @property
    def top_cause(self) -> str | None:
        c = self.result.diagnosis.causes
        return c[0].id if c else None

    def first_nonfinite_step(self) -> int | None:
        return next((i for i, v in enumerate(self.losses) if not math.isfinite(v)), None)


_cache: dict[tuple, Watched] = {}


@pytest.fixture(scope="session")
def watched(tmp_path_factory):
    def get(name: str, *args: str) -> Watched:
        key = (name, *args)
        if key not in _cache:
            d = tmp_path_factory.mktemp(name.replace("-", "_"))
            dump = d / "losses.json"
            err = io.StringIO()
            res = watch_script(script_path(name), [*args, "--dump-losses", str(dump)], store=d / "run.db", err=err)
            losses = json.loads(dump.read_text())["losses"] if dump.exists() else []
            _cache[key] = Watched(res, [float(x) for x in losses], err.getvalue())
        return _cache[key]

    return get


@pytest.fixture
def store_of():
    def f(w: Watched) -> Path:
        return Path(w.result.store_path)

    return f
