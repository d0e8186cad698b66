"""Healing on real tiny runs: each failing run is treated and ends close to its healthy twin (the same
seed and data with the fault removed), and every treatment is an event in the Run."""
from __future__ import annotations

import math

import pytest
import torch
from _heal_runs import accuracy, digits, mlp, quiet_doctor, regression_run
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from traindoctor.heal import HealPolicy


def _treatment_events(doctor):
    return [e.data for e in doctor.run_record().events if e.kind == "treatment"]


def test_lr_too_high_is_healed_to_within_a_point_of_its_healthy_twin():
    sick = regression_run(lr=10.0, heal=False)
    assert math.isnan(sick["last_loss"])  # untreated, the run ends NaN
    twin = regression_run(lr=1.0, heal=None)
    healed = regression_run(lr=10.0, heal=True)
    # margin: accuracy within 1 point, full-data loss within 1.5× the twin's
    assert healed["accuracy"] >= twin["accuracy"] - 0.01
    assert healed["loss"] <= 1.5 * twin["loss"]
    events = _treatment_events(healed["doctor"])
    assert events == healed["doctor"].treatments
    first = events[0]
    assert first["cause"] == "lr-too-high" and first["code"] in ("L001", "L002")
    old, new = first["changes"]["lr"]
    # ×0.1, or the stronger dose the first update measured (SGD + momentum 0.9 at lr=10: ×0.04)
    assert old == 10.0 and 0.01 <= new <= 1.0
    assert first["rolled_back_to"] == 0
    assert healed["opt"].param_groups[0]["lr"] == pytest.approx(new)
    assert not healed["doctor"].should_stop


def _poisoned_run(poison: list[int], heal: bool, epochs: int = 4, batchnorm: bool = False):
    x, y = digits()
    x = x.clone()
    for i, r in enumerate(poison):
        x[r, i % 64] = float("nan") if i % 2 == 0 else float("inf")
    model = mlp(seed=1, batchnorm=batchnorm)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    doctor = quiet_doctor(model, opt, heal=heal)
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(1))
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            doctor.step(loss, inputs=xb)
    doctor.close()
    clean = torch.ones(len(x), dtype=torch.bool)
    clean[poison] = False
    return doctor, accuracy(model, x[clean], y[clean]), model


POISON = [17, 404, 1234]


@pytest.mark.parametrize("batchnorm", [False, True], ids=["mlp", "mlp-batchnorm"])
def test_poisoned_samples_are_skipped_named_and_the_run_matches_its_twin(batchnorm):
    doctor, acc, _ = _poisoned_run(POISON, heal=True, batchnorm=batchnorm)
    _, twin_acc, _ = _poisoned_run([], heal=False, batchnorm=batchnorm)
    _, _, untreated = _poisoned_run(POISON, heal=False, epochs=1, batchnorm=batchnorm)
    assert not all(torch.isfinite(p).all() for p in untreated.parameters())  # untreated, the weights go NaN
    assert acc >= twin_acc - 0.02  # margin: 2 points of accuracy on the clean rows
    assert sorted(doctor.quarantined) == POISON  # named by the loader's sample ids
    skips = [t for t in doctor.treatments if t["cause"] == "nonfinite-data"]
    assert 4 <= len(skips) <= 4 * len(POISON)  # each poisoned batch of each of the 4 epochs
    assert set().union(*(t["quarantined"] for t in skips)) == set(POISON)
    # the update was dropped before it applied (and BatchNorm's statistics put back): nothing to roll back
    assert all(t["code"] == "L001" and t["rolled_back_to"] is None for t in skips)
    assert not doctor.should_stop


def test_a_stalled_loss_gets_its_lr_halved_at_most_every_k_steps():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 3, generator=g)
    # 4 classes: the sign of x0 (linear, learnt at once) and the XOR of x1, x2 (beyond a linear model)
    y = 2 * (x[:, 0] > 0).long() + ((x[:, 1] > 0) ^ (x[:, 2] > 0)).long()
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    k = 100
    doctor = quiet_doctor(model, opt, heal=True, heal_policy=HealPolicy(stall_window=100, stall_every=k))
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(700):
        idx = torch.randint(0, len(x), (64,), generator=g)
        opt.zero_grad()
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        doctor.step(loss)
    doctor.close()
    stalls = [t for t in _treatment_events(doctor) if t["code"] == "L006"]
    assert stalls, doctor.treatments
    assert all(t["cause"] == "no-lr-decay" for t in stalls)
    for t in stalls:
        before, after = t["changes"]["lr"]
        assert after == pytest.approx(0.5 * before)
    steps = [t["step"] for t in stalls]
    assert all(b - a >= k for a, b in zip(steps, steps[1:]))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05 * 0.5 ** len(stalls))


def test_overfitting_keeps_and_restores_the_best_validation_weights():
    x, y = digits()
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=g)
    tr, va = perm[:120], perm[1000:1400]
    ytr = y[tr].clone()
    ytr[:40] = torch.randint(0, 10, (40,), generator=g)  # a third of the small training set mislabelled
    model = mlp(seed=0, hidden=256)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    doctor = quiet_doctor(model, opt, heal=True, heal_policy=HealPolicy(patience=3))
    loss_fn = nn.CrossEntropyLoss()

    def val_loss():
        with torch.no_grad():
            return float(loss_fn(model(x[va]), y[va]))

    logged = []
    for step in range(600):
        opt.zero_grad()
        loss = loss_fn(model(x[tr]), ytr)
        loss.backward()
        opt.step()
        doctor.step(loss)
        if step % 10 == 9:
            logged.append(val_loss())
            doctor.log(val_loss=logged[-1])
            if doctor.should_stop:
                break
    assert doctor.should_stop and step < 599
    (t,) = [t for t in doctor.treatments if t["cause"] == "overfitting"]
    assert t["code"] == "V001" and t["best_val_loss"] == min(logged)
    assert val_loss() > min(logged)
    assert doctor.restore_best() == t["best_step"]
    assert val_loss() == min(logged)  # bit for bit the weights that scored best
    for _ in range(5):  # trained on past should_stop: close() brings the best weights back again
        opt.zero_grad()
        loss_fn(model(x[tr]), ytr).backward()
        opt.step()
    doctor.close()
    assert val_loss() == min(logged)


def test_a_run_that_cannot_be_healed_stops_being_treated_after_the_cap():
    class Broken(nn.Module):  # a NaN made inside the model at every step: no LR can fix it
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(x) + torch.log(-torch.ones(1))

    x, y = digits()
    torch.manual_seed(0)
    model = Broken()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    doctor = quiet_doctor(model, opt, heal=True)
    loss_fn = nn.CrossEntropyLoss()
    stopped_at = None
    for step in range(50):
        opt.zero_grad()
        loss = loss_fn(model(x[:32]), y[:32])
        loss.backward()
        opt.step()
        doctor.step(loss, inputs=x[:32])
        if doctor.should_stop:
            stopped_at = step
            break
    doctor.close()
    assert stopped_at == 3  # three treatments, then the fourth recurrence stops it
    assert len(doctor.treatments) == 3 and len({t["cause"] for t in doctor.treatments}) == 1
    (stopped,) = [e.data for e in doctor.run_record().events if e.kind == "heal_stopped"]
    assert "healing stopped" in stopped["message"] and stopped["step"] == 3
    assert all(torch.isfinite(p).all() for p in model.parameters())  # left at the last good state
