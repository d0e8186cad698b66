"""The diagnosis of every built-in example, compared field by field with a recorded one.

A restructuring of the measuring half must not change what the doctor says: the findings (code,
severity, where), their evidence, the ranked causes, what was ruled out and what was not judged.
Each example runs under ``traindoctor run``'s machinery in process; the JSON report is reduced to
what must not move (numbers compared to 2 % or 1e-6, the digits of messages masked: another CPU may
round a float's last digit differently) and compared with tests/data/same_diagnosis.json.

After a change that is meant to alter a diagnosis, regenerate the record and review its diff:

    OMP_WAIT_POLICY=PASSIVE python tests/test_same_diagnosis.py --write
"""
from __future__ import annotations

import io
import json
import math
import re
import sys
from pathlib import Path

import pytest

from traindoctor.examples import EXAMPLES, script_path
from traindoctor.watch.launcher import watch_script

RECORD = Path(__file__).parent / "data" / "same_diagnosis.json"
_DIGITS = re.compile(r"\d+(\.\d+)?(e[-+]?\d+)?")
_HERE = str(Path(script_path("healthy")).parent)  # where the checkout is differs between machines


_PATH = re.compile(r"(?:/[^\s:'\"/]+)+/([^\s:'\"/]+\.py)")  # an absolute path to a source file


def _text(s: str) -> str:
    return _DIGITS.sub("#", _PATH.sub(r"\1", s.replace(_HERE, "<examples>")))


def _numbers(value: object) -> object:
    """Evidence reduced to its structure and numbers (strings with digits masked)."""
    if isinstance(value, dict):
        return {str(k): _numbers(v) for k, v in sorted(value.items()) if k not in ("elapsed_s", "wall_s")}
    if isinstance(value, (list, tuple)):
        return [_numbers(v) for v in value]
    if isinstance(value, str):
        return _text(value)
    return value


def reduce(report: dict) -> dict:
    return {
        "verdict": report["verdict"],
        "findings": [{"code": f["code"], "severity": f["severity"], "step": f["step"], "step_end": f["step_end"],
                      "message": _text(f["message"]), "evidence": _numbers(f["evidence"]),
                      "causes": [c["id"] for c in f["causes"]]} for f in report["findings"]],
        "causes": [{"id": c["id"], "confidence": c["confidence"], "evidence": c["evidence"]} for c in report["causes"]],
        "ruled_out": sorted(r["id"] for r in report["ruled_out"]),
        "not_judged": [_text(n) for n in report["not_judged"]],
    }


def diagnose_example(name: str, tmp: Path) -> dict:
    # one intra-op thread, whatever the machine or an earlier test set: a float summed in another
    # order can move a borderline finding (lr-oscillation loses two findings between 1 and 2 threads)
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = watch_script(script_path(name), ["--seed", "0"], store="", err=io.StringIO())
    finally:
        torch.set_num_threads(before)
    return reduce(res.diagnosis.to_json())


def _close(a: object, b: object, where: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{where}: keys {sorted(set(a) ^ set(b))} differ"]
        return [d for k in a for d in _close(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} items, recorded {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _close(x, y, f"{where}[{i}]")]
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
            if math.isclose(a, b, rel_tol=0.02, abs_tol=1e-6) or (math.isnan(a) and math.isnan(b)):
                return []
        return [f"{where}: {a!r}, recorded {b!r}"]
    return [] if a == b else [f"{where}: {a!r}, recorded {b!r}"]


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_the_diagnosis_is_the_recorded_one(name: str, tmp_path: Path) -> None:
    recorded = json.loads(RECORD.read_text())
    assert name in recorded, f"{name} has no record: regenerate with python tests/test_same_diagnosis.py --write"
    got = diagnose_example(name, tmp_path)
    diffs = _close(got, recorded[name], name)
    assert not diffs, "\n".join(diffs[:20])


if __name__ == "__main__" and "--write" in sys.argv:
    import tempfile

    out = {n: diagnose_example(n, Path(tempfile.mkdtemp())) for n in sorted(EXAMPLES)}
    RECORD.write_text(json.dumps(out, indent=1, sort_keys=True, allow_nan=True) + "\n")
    print(f"wrote {RECORD}: {len(out)} examples")
