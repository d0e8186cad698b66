"""Every rule survives any numbers: NaN, Inf, empty, single points, huge and negative values.

The moment a loss turns NaN is the moment the user needs the doctor most; a rule that raises
there is the worst possible failure.
"""
from __future__ import annotations

import json
import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from traindoctor.diagnosis import diagnose, evaluate
from traindoctor.report import to_json_text
from traindoctor.run import Event, Run, Series

SPECIAL = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e308, -1e308, 5e-324, 87.3365, 100.0, math.log(10)])
VALUES = st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), SPECIAL), min_size=0, max_size=400)

def _run(loss, grad=None, acc=None, meta=None, events=()):
    r = Run(meta=meta or {}, events=list(events))
    r.series["loss"] = Series(np.arange(len(loss)), np.array(loss, dtype=float))
    if grad is not None:
        r.series["grad_norm"] = Series(np.arange(len(grad)) * 25, np.array(grad, dtype=float))
        r.series["grad_norm/fc.weight"] = Series(np.arange(len(grad)) * 25, np.array(grad, dtype=float))
    if acc is not None:
        r.series["accuracy"] = Series(np.arange(len(acc)), np.array(acc, dtype=float))
    return r


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(loss=VALUES, grad=st.one_of(st.none(), VALUES), acc=st.one_of(st.none(), VALUES),
       kind=st.sampled_from([None, "cross_entropy", "bce", "mse"]), c=st.sampled_from([None, 2, 10]),
       bs=st.sampled_from([None, 1, 32]))
def test_rules_never_raise_and_report_is_strict_json(loss, grad, acc, kind, c, bs):
    meta = {"loss_kind": kind, "num_classes": c, "batch_size": bs, "lr": 0.1}
    run = _run(loss, grad, acc, meta, [Event(0, "nonfinite_loss", {"value": math.nan})])
    findings, internal = evaluate(run)
    assert internal == [], internal
    text = to_json_text(diagnose(run))
    doc = json.loads(text)  # strict: NaN/Inf must have been cleaned to strings
    assert doc["schema"] == "traindoctor/1"


def test_empty_run_is_not_judged_and_says_what_it_could_not_judge():
    d = diagnose(Run())
    assert not d.findings and not d.healthy and d.verdict == "not judged"  # "not judged" is never "healthy"
    assert any("no training loss" in s for s in d.not_judged)
