"""Each treatment changes what it says and nothing a scheduler can undo: a lower LR carries into the
schedule, a warm-up ramps the LR inside the optimizer step only, a clip bounds the gradient norm."""
from __future__ import annotations

import pytest
import torch
from _heal_runs import quiet_doctor
from torch import nn

from traindoctor.heal.treatments import ClipGradients, LowerLR, WarmUp


def _linear():
    torch.manual_seed(0)
    model = nn.Linear(4, 1, bias=False)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def _sgd_step(model, opt, doctor):
    """One plain-SGD step; returns the LR it effectively used (‖Δw‖ / ‖g‖)."""
    opt.zero_grad()
    loss = model(torch.ones(8, 4)).pow(2).mean()
    loss.backward()
    grad = model.weight.grad.clone()
    before = model.weight.detach().clone()
    opt.step()
    doctor.step(loss)
    return float((before - model.weight.detach()).norm() / grad.norm())


@pytest.mark.parametrize("make", [
    lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100),
    lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0 / (1 + e)),
    lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=100),
], ids=["cosine", "lambda", "one-cycle"])
def test_a_lower_lr_is_not_undone_by_the_scheduler(make):
    model, opt = _linear()
    twin_model, twin_opt = _linear()
    sched, twin = make(opt), make(twin_opt)
    doctor = quiet_doctor(model, opt, heal=True, scheduler=sched)
    for _ in range(3):
        sched.step()
        twin.step()
    changes = LowerLR("lr-too-high", 0.1).apply(doctor._healer.ctl)
    assert changes["lr"] == [pytest.approx(twin_opt.param_groups[0]["lr"]), pytest.approx(0.1 * twin_opt.param_groups[0]["lr"])]
    for _ in range(5):
        sched.step()
        twin.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * twin_opt.param_groups[0]["lr"])
    doctor.close()


def test_a_warm_up_ramps_the_lr_inside_the_step_only():
    model, opt = _linear()
    doctor = quiet_doctor(model, opt, heal=True)
    assert WarmUp(steps=4).apply(doctor._healer.ctl) == {"warmup_steps": [0, 4]}
    used = [_sgd_step(model, opt, doctor) for _ in range(6)]
    assert used == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1], rel=1e-4)
    assert opt.param_groups[0]["lr"] == 0.1  # what a scheduler reads and writes
    doctor.close()


def test_a_clip_bounds_the_gradient_norm_at_the_percentile_of_healthy_norms():
    model, opt = _linear()
    doctor = quiet_doctor(model, opt, heal=True)
    ctl = doctor._healer.ctl
    ctl.healthy_norms.extend(float(i) for i in range(1, 11))
    assert ClipGradients(90.0).apply(ctl) == {"clip_grad_norm": [None, pytest.approx(9.1)]}
    opt.zero_grad()
    (1000 * model(torch.ones(8, 4)).sum()).backward()
    opt.step()
    assert float(model.weight.grad.norm()) == pytest.approx(9.1, rel=1e-5)
    doctor.close()
    assert not opt._optimizer_step_pre_hooks  # the clip goes with the Doctor
