"""Snapshots and rollbacks are bitwise and in place: the user's tensors, optimizer and scheduler keep
their identity, and after a rollback every parameter, buffer and optimizer state tensor equals the
snapshot (``torch.equal``)."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from _heal_runs import digits, mlp, quiet_doctor
from torch import nn

from traindoctor.heal import HealPolicy
from traindoctor.heal.snapshot import SnapshotStore, TrainingState, model_tensors
from traindoctor.inspect.state import optimizer_params


def _train(model, opt, x, y, steps, sched=None, doctor=None):
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (32,))
        opt.zero_grad()
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        if doctor is not None:
            doctor.step(loss, inputs=x[idx])


def _copies(model, opt):
    return ([t.detach().clone() for t in model_tensors(model)],
            [{k: v.clone() for k, v in opt.state[p].items()} for p in optimizer_params(opt)])


def _assert_equal(model, opt, copies):
    values, states = copies
    assert all(torch.equal(t, v) for t, v in zip(model_tensors(model), values))
    for p, saved in zip(optimizer_params(opt), states):
        assert opt.state[p].keys() == saved.keys()
        assert all(torch.equal(opt.state[p][k], v) for k, v in saved.items())


def _setup():
    x, y = digits()
    model = mlp(batchnorm=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.5)
    return x, y, model, opt, sched


def test_restore_is_bitwise_in_place_and_brings_back_the_rngs():
    x, y, model, opt, sched = _setup()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(torch.ones(()))  # its scale tensor exists from the first scaled loss on
    scale = scaler._scale
    _train(model, opt, x, y, 10, sched)
    snap = TrainingState.take(10, model, opt, [sched], scaler)
    copies, ids = _copies(model, opt), [id(t) for t in model_tensors(model)]
    state_ids = [id(v) for p in optimizer_params(opt) for v in opt.state[p].values()]
    sched_state, lr = sched.state_dict(), opt.param_groups[0]["lr"]
    draws = (torch.rand(3), np.random.rand(), random.random())
    _train(model, opt, x, y, 15, sched)
    scaler.update(new_scale=8.0)
    assert not torch.equal(model_tensors(model)[0], copies[0][0])
    snap.restore()
    assert scaler.get_scale() == 1024.0 and scaler._scale is scale
    _assert_equal(model, opt, copies)
    assert snap.identical()
    assert [id(t) for t in model_tensors(model)] == ids  # the same tensor objects
    assert [id(v) for p in optimizer_params(opt) for v in opt.state[p].values()] == state_ids
    assert sched.state_dict() == sched_state and opt.param_groups[0]["lr"] == lr
    again = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(draws[0], again[0]) and draws[1:] == again[1:]


def test_a_snapshot_past_the_memory_limit_goes_to_disk_and_restores_bitwise():
    x, y, model, opt, sched = _setup()
    _train(model, opt, x, y, 5, sched)
    store = SnapshotStore(model, opt, [sched], None, memory_limit=0)
    snap = store.take(5, 1.0)
    assert snap.values is None and snap.path is not None and snap.path.exists()
    copies = _copies(model, opt)
    _train(model, opt, x, y, 5, sched)
    snap.restore()
    _assert_equal(model, opt, copies)
    folder = snap.path.parent
    store.take(6, 1.0)
    store.take(7, 1.0)
    assert len(store.kept) == 2 and not snap.path.exists()  # never more than two kept
    store.close()
    assert not folder.exists()


@pytest.mark.parametrize("memory_limit", [HealPolicy.memory_limit, 0], ids=["in-memory", "on-disk"])
def test_a_rollback_during_training_restores_the_snapshot_bitwise(memory_limit):
    x, y, model, opt, sched = _setup()
    doctor = quiet_doctor(model, opt, heal=True, scheduler=sched, heal_policy=HealPolicy(every=5, memory_limit=memory_limit))
    _train(model, opt, x, y, 10, sched, doctor)  # healthy steps 0..9: the newest snapshot is the start of step 10
    copies = _copies(model, opt)
    snap = doctor._healer.store.newest()
    assert snap.step == 10
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(2):  # two more steps, then one whose loss is NaN
        _train(model, opt, x, y, 1, sched, doctor)
    opt.zero_grad()
    loss = loss_fn(model(x[:32]), y[:32]) * float("nan")
    loss.backward()
    opt.step()
    doctor.step(loss, inputs=x[:32])
    (t,) = doctor.treatments
    assert t["code"] == "L001" and t["rolled_back_to"] == 10
    _assert_equal(model, opt, copies)
    assert sched.last_epoch == 10
    folder = snap.path.parent if snap.path is not None else None
    doctor.close()
    assert folder is None or not folder.exists()  # the private temp dir goes with the Doctor
