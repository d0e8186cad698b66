"""``heal/verify.py``: a fix proven on a replay of the window before it is prescribed.

A real run that blows up (the digits MLP under SGD at lr 10): the window from the snapshot to the NaN
is replayed with each candidate; lowering the LR is verified, a useless change is reported as not
helping, and the user's model, optimizer, gradients and RNGs are bitwise as they were afterwards.
"""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.preprocessing import StandardScaler
from torch import nn

from traindoctor.heal.snapshot import TrainingState
from traindoctor.heal.verify import Fix, StepRecord, WindowRecorder, candidates, inputs_nonfinite, verify


def _digits():
    X, y = load_digits(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    return torch.tensor(X, dtype=torch.float32), torch.tensor(y)


def _blow_up(lr: float = 10.0, steps: int = 60):
    """Train until the loss is non-finite; the snapshot at step 0, the steps recorded, the healthy norms."""
    torch.manual_seed(0)
    X, y = _digits()
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    snap = TrainingState.take(0, model, opt)
    rec = WindowRecorder()
    norms: list[float] = []
    for step in range(steps):
        i = (step * 32) % (len(X) - 32)
        xb, yb = X[i:i + 32], y[i:i + 32]
        rec.add(StepRecord(step, (xb,), {}, F.cross_entropy, yb, {}, inputs_nonfinite((xb,))))
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), math.inf)))
        opt.step()
        if not math.isfinite(loss.item()):
            return model, opt, snap, rec.since(0, step), norms[:2]
    raise AssertionError("the run did not blow up")


def _state(model, opt):
    return ([t.clone() for t in [*model.parameters(), *model.buffers()]],
            [None if p.grad is None else p.grad.clone() for p in model.parameters()],
            {k: (v.clone() if isinstance(v, torch.Tensor) else v) for s in opt.state.values() for k, v in s.items()},
            [g["lr"] for g in opt.param_groups],
            torch.get_rng_state().clone(), np.random.get_state()[1].copy(), random.getstate())


def _bits(t):
    return t.detach().contiguous().view(torch.uint8)  # bitwise: NaN equals the same NaN


def _eq(u, v):
    return (u is None and v is None) or (u is not None and v is not None and torch.equal(_bits(u), _bits(v)))


def _same(a, b):
    pa, ga, sa, la, ra, na, pya = a
    pb, gb, sb, lb, rb, nb, pyb = b
    return (all(_eq(u, v) for u, v in zip(pa, pb)) and all(_eq(u, v) for u, v in zip(ga, gb))
            and sa.keys() == sb.keys() and all(_eq(sa[k], sb[k]) if isinstance(sa[k], torch.Tensor) else sa[k] == sb[k]
                                               for k in sa)
            and la == lb and torch.equal(ra, rb) and np.array_equal(na, nb) and pya == pyb)


def test_lowering_the_lr_is_verified_and_a_useless_fix_is_not():
    model, opt, snap, window, norms = _blow_up()
    before = _state(model, opt)
    fixes = candidates("lr-too-high", norms) + [Fix("lr-too-high", "raise the learning rate ×3", lr_factor=3.0)]
    v = verify(snap, window, fixes, budget_s=60.0)
    by = {x.fix.name: x for x in v.verdicts}
    assert by["lower the learning rate ×0.1"].result == "verified", by["lower the learning rate ×0.1"].summary(
        v.first, v.last)
    assert by["raise the learning rate ×3"].result == "did not help"
    assert v.best is not None and v.best.helped and v.best.treated.finite
    assert not v.best.control.finite or v.best.control.blew_up
    text = v.best.summary(v.first, v.last)
    assert "verified" in text and f"steps {v.first}–{v.last}" in text
    # the replay leaves no trace: parameters, gradients, optimizer settings and every RNG as they were
    assert _same(before, _state(model, opt))


def test_a_window_that_does_not_blow_up_is_not_reproduced():
    torch.manual_seed(0)
    X, y = _digits()
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    snap = TrainingState.take(0, model, opt)
    recs = []
    for step in range(10):
        xb, yb = X[step * 32:(step + 1) * 32], y[step * 32:(step + 1) * 32]
        recs.append(StepRecord(step, (xb,), {}, F.cross_entropy, yb, {}))
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
    v = verify(snap, recs, candidates("lr-too-high", [1.0]), budget_s=30.0)
    assert {x.result for x in v.verdicts} == {"not reproduced"}


def test_skipping_poisoned_batches_is_verified_for_nonfinite_data():
    torch.manual_seed(0)
    X, y = _digits()
    X = X.clone()
    X[40] = float("nan")  # one poisoned sample, in the second batch
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    snap = TrainingState.take(0, model, opt)
    recs = []
    for step in range(4):
        xb, yb = X[step * 32:(step + 1) * 32], y[step * 32:(step + 1) * 32]
        recs.append(StepRecord(step, (xb,), {}, F.cross_entropy, yb, {}, inputs_nonfinite((xb,))))
    assert [r.nonfinite_inputs for r in recs] == [False, True, False, False]
    v = verify(snap, recs, candidates("nonfinite-data", []), budget_s=30.0)
    assert v.best is not None and v.best.result == "verified"
    assert "skip" in v.best.fix.name


def test_the_budget_bounds_the_candidates_tried():
    model, opt, snap, window, norms = _blow_up()
    fixes = candidates("lr-too-high", norms)
    v = verify(snap, window, fixes, budget_s=0.0)
    assert len(v.verdicts) == 1 and len(v.skipped) == len(fixes) - 1  # the first is always tried


def _nan_run(verdicts):
    from traindoctor.run import Event, Run, Series

    loss = [2.3 - 0.01 * i for i in range(40)] + [10.0, 100.0, 1e4, 1e6, math.nan] + [math.nan] * 20
    run = Run(meta={"loss_kind": "cross_entropy", "num_classes": 10})
    run.series["loss"] = Series(np.arange(len(loss)), np.asarray(loss))
    if verdicts is not None:
        run.events.append(Event(44, "treatment", {"code": "L001", "cause": "lr-too-high", "action": "x",
                                                  "verified": {"tried": verdicts}}))
    return run


def test_a_cause_whose_fixes_did_not_help_loses_confidence_and_a_verified_one_says_so():
    from traindoctor.diagnosis import NOT_HELPED, diagnose

    plain = {c.id: c.confidence for c in diagnose(_nan_run(None)).causes}
    assert "lr-too-high" in plain
    failed = [{"cause": "lr-too-high", "fix": "lower the learning rate ×0.1", "result": "did not help",
               "summary": "lower the learning rate ×0.1: tried, did not help — …"}]
    d = diagnose(_nan_run(failed))
    c = next(c for c in d.causes if c.id == "lr-too-high")
    assert c.confidence == pytest.approx(plain["lr-too-high"] * NOT_HELPED)
    assert c.verification == [failed[0]["summary"]]
    assert [x.confidence for x in d.causes] == sorted((x.confidence for x in d.causes), reverse=True)
    ok = [{**failed[0], "result": "verified", "summary": "lower the learning rate ×0.1: verified — …"}]
    d2 = diagnose(_nan_run(ok))
    c2 = next(c for c in d2.causes if c.id == "lr-too-high")
    assert c2.confidence == pytest.approx(plain["lr-too-high"]) and "verified" in c2.verification[0]
    assert d2.to_json()["causes"][0].get("verification") or any(x.get("verification") for x in d2.to_json()["causes"])
    # "not reproduced" says nothing either way
    nr = [{**failed[0], "result": "not reproduced"}]
    c3 = next(c for c in diagnose(_nan_run(nr)).causes if c.id == "lr-too-high")
    assert c3.confidence == pytest.approx(plain["lr-too-high"]) and not c3.verification


def test_the_window_recorder_is_bounded_and_follows_rollbacks():
    x = torch.zeros(10, 100)  # 4000 bytes, one record each
    rec = WindowRecorder(capacity=5, max_bytes=3 * 4000 + 8 * 10 * 3)
    for s in range(6):
        rec.add(StepRecord(s, (x,), {}, F.cross_entropy, torch.zeros(10, dtype=torch.long), {}))
    assert [r.step for r, _ in rec.steps] == [3, 4, 5]  # the byte limit, before the count limit
    assert rec.since(3, 5) and not rec.since(2, 5)  # a window with a hole is no window
    rec.add(StepRecord(4, (x,), {}, F.cross_entropy, torch.zeros(10, dtype=torch.long), {}))  # rolled back to 4
    assert [r.step for r, _ in rec.steps] == [3, 4]
    rec.discard(4)
    assert [r.step for r, _ in rec.steps] == [3] and rec.bytes == 4000 + 80


def test_a_replay_follows_the_lr_each_step_used():
    """A schedule that spikes the LR mid-window: the replay uses each step's recorded LR, so the
    control blows up as the run did, although the snapshot's LR is a safe one."""
    torch.manual_seed(0)
    X, y = _digits()
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    snap = TrainingState.take(0, model, opt)
    recs = []
    for step in range(12):
        lr = 0.05 if step < 4 else 20.0  # the schedule's spike
        for g in opt.param_groups:
            g["lr"] = lr
        xb, yb = X[step * 32:(step + 1) * 32], y[step * 32:(step + 1) * 32]
        recs.append(StepRecord(step, (xb,), {}, F.cross_entropy, yb, {}, lrs=(lr,)))
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
    v = verify(snap, recs, candidates("lr-too-high", []), budget_s=30.0)
    by = {x.fix.name: x for x in v.verdicts}
    assert by["lower the learning rate ×0.1"].control.blew_up  # reproduced, with the spike
    without = verify(snap, [StepRecord(r.step, r.args, {}, F.cross_entropy, r.target, {}) for r in recs],
                     candidates("lr-too-high", []), budget_s=30.0)
    assert {x.result for x in without.verdicts} == {"not reproduced"}  # at the snapshot's LR: no spike
