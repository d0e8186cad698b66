"""The one-line API on a real tiny run."""
from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

import traindoctor
from traindoctor.store import load_store


def _data(n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 16, generator=g)
    y = (X[:, :4].sum(1) > 0).long() + 2 * (X[:, 4] > 0).long()
    return X, y


def _train(doctor_kwargs=None, lr=1e-2, steps=300, nan_at=None, store=None, softmax=False):
    torch.manual_seed(0)
    X, y = _data()
    layers = [nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)] + ([nn.Softmax(dim=1)] if softmax else [])
    model = nn.Sequential(*layers)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    doctor = traindoctor.Doctor(model, opt, store=store, report_file=io.StringIO(), **(doctor_kwargs or {}))
    for step in range(steps):
        idx = torch.randint(0, len(X), (32,))
        x = X[idx].clone()
        if nan_at is not None and step == nan_at:
            x[5] = float("nan")
        opt.zero_grad()
        loss = loss_fn(model(x), y[idx])
        loss.backward()
        opt.step()
        doctor.step(loss)
        if step % 50 == 49:
            with torch.no_grad():
                doctor.log(val_loss=loss_fn(model(X[:128]), y[:128]), val_accuracy=0.5)
    doctor.close()
    return doctor


def test_healthy_doctor_run_records_everything_and_is_silent(tmp_path):
    d = _train(store=tmp_path / "r.db")
    run = d.run_record()
    assert len(run.get("loss")) == 300
    assert len(run.get("val_loss")) == 6 and run.get("val_loss").steps[0] == 49
    g = run.get("grad_norm")
    from traindoctor.watch.monitor import DEFAULT_CADENCE

    assert g is not None and list(g.steps[:3]) == [0, DEFAULT_CADENCE, 2 * DEFAULT_CADENCE]
    assert run.names("update_ratio") and run.names("dead_frac")
    assert d.diagnose().healthy
    stored = load_store(tmp_path / "r.db")
    assert len(stored.get("loss")) == 300
    assert stored.meta["loss_kind"] == "cross_entropy" and stored.meta["num_classes"] == 4


def test_nan_batch_named_at_once_with_its_position():
    d = _train(nan_at=40, steps=60)
    diag = d.diagnose()
    f = {x.code: x for x in diag.findings}
    assert f["L001"].step == 40 and f["D001"].step == 40
    assert f["D001"].evidence["positions"] == [5]
    assert diag.causes[0].id == "nonfinite-data"


def test_double_softmax_caught_at_the_first_step():
    d = _train(softmax=True, steps=5)
    f = {x.code: x for x in d.diagnose().findings}
    assert f["M001"].evidence["module"] == "3"


def test_context_manager_reports_a_crash_and_reraises():
    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out = io.StringIO()
    with pytest.raises(IndexError), traindoctor.Doctor(model, opt, report_file=out) as doctor:
        loss = nn.CrossEntropyLoss()(model(torch.randn(8, 4)), torch.full((8,), 3))
        loss.backward()
    assert "D004" in out.getvalue()
    assert doctor.diagnose().causes[0].id == "label-domain-error"


def test_hooks_are_removed_on_close():
    before = torch.Tensor.backward
    d = _train(steps=3)
    assert torch.Tensor.backward is before
    assert not d.monitor._handles


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="nn.Module"):
        traindoctor.Doctor("model")
    with pytest.raises(TypeError, match="Optimizer"):
        traindoctor.Doctor(nn.Linear(2, 2), "adam")
    d = traindoctor.Doctor(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="val_loss"):
        d.log(val_loss="high")
    d.close()


def test_explicit_float_losses_work_without_tensors():
    d = traindoctor.Doctor(nn.Linear(2, 2), live=False)
    for i in range(30):
        d.step(2.0 if i < 20 else math.inf)
    d.close()
    assert {f.code for f in d.diagnose().findings} >= {"L001"}
