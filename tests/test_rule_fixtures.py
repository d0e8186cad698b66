"""Runs the per-code fixture table (tests/rule_fixtures.py): positives fire their code with the key
evidence, near misses do not, every rule of the judged families has both, and every fixture survives
NaN/Inf in its series. Fast and torch-free: a threshold can be changed and checked here at once."""
from __future__ import annotations

import copy
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from traindoctor.diagnosis import diagnose
from traindoctor.rules import all_rules
from traindoctor.run import Run, Series

sys.path.insert(0, str(Path(__file__).parent))
from rule_fixtures import FAMILIES, FIXTURES, Fixture, close  # noqa: E402

RULES = all_rules()
ALL = [f for fs in FIXTURES.values() for f in fs]


def _param(f: Fixture) -> object:
    marks = [pytest.mark.xfail(strict=True, reason=f.xfail)] if f.xfail else []
    return pytest.param(f, id=f.id, marks=marks)


def _findings(f: Fixture, run: Run | None = None) -> list:
    return [x for x in RULES[f.code].check(f.build() if run is None else run) if x.code == f.code]


def test_table_keys_match_fixture_codes():
    for code, fs in FIXTURES.items():
        assert all(f.code == code for f in fs)
        assert code in RULES, f"fixtures for {code}, which no rule registers"
    ids = [f.id for f in ALL]
    assert len(ids) == len(set(ids)), "fixture ids must be unique"


def test_every_judged_rule_has_a_positive_and_a_negative_fixture():
    missing = []
    for code in RULES:
        if not code.startswith(FAMILIES):
            continue
        fs = FIXTURES.get(code, [])
        if not any(f.fires for f in fs):
            missing.append(f"{code}: no positive fixture")
        if not any(not f.fires for f in fs):
            missing.append(f"{code}: no near-miss negative fixture")
    assert not missing, "; ".join(missing)


def test_every_positive_fixture_pins_evidence():
    assert not [f.id for f in ALL if f.fires and not f.evidence]


@pytest.mark.parametrize("f", [_param(f) for f in ALL if f.fires])
def test_positive_fixture_fires(f: Fixture):
    found = _findings(f)
    assert found, f"{f.code} did not fire on: {f.example}"
    got = found[0]
    if f.step is not None:
        assert got.step == f.step, f"{f.code} step {got.step}, expected {f.step}"
    for key, want in f.evidence.items():
        assert key in got.evidence, f"{f.code} evidence lacks {key!r}: {sorted(got.evidence)}"
        have = got.evidence[key]
        if callable(want):
            assert want(have), f"{f.code} evidence {key}={have!r} fails its check"
        else:
            assert close(have, want), f"{f.code} evidence {key}={have!r}, expected {want!r}"


@pytest.mark.parametrize("f", [_param(f) for f in ALL if not f.fires])
def test_near_miss_fixture_is_silent(f: Fixture):
    found = _findings(f)
    assert not found, f"{f.code} fired on a near miss ({f.example}): {found[0].message}"


@pytest.mark.parametrize("f", [_param(f) for f in ALL if f.fires])
def test_positive_fixture_fires_through_diagnose(f: Fixture):
    assert f.code in {x.code for x in diagnose(f.build()).findings}


def test_builders_are_deterministic():
    for f in ALL:
        a, b = f.build(), f.build()
        assert a.series.keys() == b.series.keys(), f.id
        for k in a.series:
            np.testing.assert_array_equal(a.series[k].values, b.series[k].values, err_msg=f.id)
        assert a.events == b.events and a.meta == b.meta, f.id


def _poisoned(run: Run, seed: int) -> list[Run]:
    """Copies of ``run`` with NaN, +Inf and -Inf written into every series (a few points each, then all)."""
    rng = np.random.default_rng(seed)
    out = []
    for bad in (np.nan, np.inf, -np.inf):
        for everywhere in (False, True):
            r = copy.deepcopy(run)
            for name, s in r.series.items():
                v = s.values.copy()
                if len(v):
                    idx = np.arange(len(v)) if everywhere else rng.choice(len(v), max(1, len(v) // 5), replace=False)
                    v[idx] = bad
                r.series[name] = Series(s.steps, v)
            out.append(r)
    # and a series of one point, and an empty one, beside the others
    r = copy.deepcopy(run)
    for name, s in list(r.series.items()):
        r.series[name] = Series(s.steps[:1], np.full(min(1, len(s)), np.nan))
    out.append(r)
    return out


@pytest.mark.parametrize("f", [pytest.param(f, id=f.id) for f in ALL])
def test_fixture_survives_nonfinite_series(f: Fixture):
    for run in _poisoned(f.build(), seed=zlib.crc32(f.id.encode())):
        RULES[f.code].check(copy.deepcopy(run))
        diagnose(run)
