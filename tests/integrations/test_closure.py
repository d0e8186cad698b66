"""``optimizer.step(closure)``, the way Lightning steps: the Doctor calls the closure just before its hooks,
so they read this step's gradients, and the run is the same bit for bit."""
from __future__ import annotations

import io

import torch
from torch import nn

from traindoctor import Doctor
from traindoctor.watch.closures import calls_closure_once


def _train(opt_cls, with_doctor: bool, steps: int = 12, **opt_kw):
    torch.manual_seed(0)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 3))
    opt = opt_cls(model.parameters(), **opt_kw)
    doctor = Doctor(model, opt, cadence=1, live=False, report_file=io.StringIO()) if with_doctor else None
    first_norm = []

    for _ in range(steps):
        def closure():
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            if not first_norm:
                first_norm.append(float(torch.stack([p.grad.norm() for p in model.parameters()]).norm()))
            return loss

        loss = opt.step(closure)
        if doctor is not None:
            doctor.step(loss)
    run = doctor.close() if doctor is not None else None
    return model, run, first_norm[0]


def test_the_hooks_see_this_steps_gradients_and_nothing_changes():
    bare, _, _ = _train(torch.optim.AdamW, False, lr=1e-2)
    watched, run, g0 = _train(torch.optim.AdamW, True, lr=1e-2)
    assert all(torch.equal(a, b) for a, b in zip(bare.state_dict().values(), watched.state_dict().values()))
    g = run.get("grad_norm")
    assert g.steps[0] == 0 and abs(g.values[0] - g0) < 1e-5 * g0  # step 0's own gradient, not none
    assert len(run.get("loss")) == 12


def test_an_optimizer_that_calls_its_closure_many_times_is_left_alone():
    lbfgs = torch.optim.LBFGS(nn.Linear(2, 2).parameters())
    assert not calls_closure_once(lbfgs) and calls_closure_once(torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1))
    bare, _, _ = _train(torch.optim.LBFGS, False, steps=3, lr=0.5, max_iter=4)
    watched, run, _ = _train(torch.optim.LBFGS, True, steps=3, lr=0.5, max_iter=4)
    assert all(torch.equal(a, b) for a, b in zip(bare.state_dict().values(), watched.state_dict().values()))
    assert len(run.get("loss")) == 3
