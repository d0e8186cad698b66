"""A fixed slice of the clinic's development half, run for real under ``traindoctor run``.

Six healthy runs chosen among the hard negatives that fool tools (noisy small-batch SGD with a
GradScaler and one-cycle warm-up, warm restarts on a BatchNorm CNN, a long run on its plateau, a
GRU with warm-up, a warm-restarts MLP, mixed precision on a small MLP) must get no finding at all;
twelve faulty runs (each a healthy twin with one fault operator applied) must get the fault's
symptom code and its cause ranked first. The specs are frozen in ``data/clinic_slice.json`` so
the slice does not move when the population is redrawn; the scripts are rendered by the clinic.
The whole clinic (hundreds of runs, a held-out half) is ``python -m benchmarks.clinic`` and is
not a unit test: this slice guards the diagnosis against regressions on cases it once got right.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.clinic.runner import run_all
from benchmarks.clinic.spec import Spec

SLICE = json.loads((Path(__file__).parent / "data" / "clinic_slice.json").read_text())


@pytest.fixture(scope="module")
def slice_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    cache = tmp_path_factory.mktemp("clinic")
    specs = [Spec.from_json(e["spec"]) for e in SLICE]
    assert [s.id for s in specs] == [e["id"] for e in SLICE], "a slice spec no longer hashes to its id"
    return run_all(specs, cache=cache, workers=2, progress=False)


def _ids(kind: str) -> list[str]:
    return [e["id"] for e in SLICE if ("verdict" in e["expect"]) == (kind == "healthy")]


def _entry(run_id: str) -> dict:
    return next(e for e in SLICE if e["id"] == run_id)


@pytest.mark.parametrize("run_id", _ids("healthy"))
def test_hard_negative_gets_no_finding(slice_results: dict[str, dict], run_id: str) -> None:
    rec = slice_results[run_id]
    assert not rec.get("runner_error"), rec.get("runner_error")
    live = rec["live"]
    assert live["findings"] == [], [(f["code"], f["message"]) for f in live["findings"]]
    assert live["verdict"] == "healthy"


@pytest.mark.parametrize("run_id", _ids("faulty"))
def test_fault_is_found_and_its_cause_ranked_first(slice_results: dict[str, dict], run_id: str) -> None:
    rec = slice_results[run_id]
    assert not rec.get("runner_error"), rec.get("runner_error")
    expect = _entry(run_id)["expect"]
    live = rec["live"]
    codes = [f["code"] for f in live["findings"]]
    assert set(codes) & set(expect["any_code"]), (_entry(run_id)["spec"]["fault"], codes)
    assert live["causes"], codes
    assert live["causes"][0]["id"] == expect["top_cause"], [c["id"] for c in live["causes"][:3]]
    assert live["verdict"] in ("warning", "error")
