"""Healing never harms the run it watches: observe mode trains bit for bit as without the Doctor, the
healer's own failures are contained and reported once, and bad options are refused up front."""
from __future__ import annotations

import io

import pytest
import torch
from _heal_runs import digits, mlp, quiet_doctor, regression_run
from torch import nn

import traindoctor
from traindoctor.heal.healer import Healer


def test_observe_mode_trains_bitwise_as_without_the_doctor():
    bare = regression_run(lr=1.0, heal=None, steps=120)
    watched = regression_run(lr=1.0, heal=False, steps=120)
    assert watched["doctor"].treatments == [] and not watched["doctor"].should_stop
    assert all(torch.equal(a, b) for a, b in zip(bare["model"].state_dict().values(),
                                                 watched["model"].state_dict().values()))


def test_a_healthy_run_is_left_alone_by_healing():
    plain = regression_run(lr=1.0, heal=None, steps=120)
    healed = regression_run(lr=1.0, heal=True, steps=120)
    assert healed["doctor"].treatments == []
    assert all(torch.equal(a, b) for a, b in zip(plain["model"].state_dict().values(),
                                                 healed["model"].state_dict().values()))


@pytest.mark.parametrize("where", ["on_step", "_pre_step"])
def test_the_healer_failing_does_not_stop_training_and_is_reported_once(monkeypatch, capsys, where):
    def broken(self, *args):
        raise RuntimeError("injected healer fault")

    monkeypatch.setattr(Healer, where, broken)
    run = regression_run(lr=1.0, heal=True, steps=60)
    assert run["accuracy"] > 0.8  # it trained to the end
    errors = [e.data for e in run["doctor"].run_record().events if e.kind == "doctor_error"]
    assert len(errors) == 1 and errors[0]["part"] == "heal" and "injected healer fault" in errors[0]["message"]
    assert capsys.readouterr().err.count("injected healer fault") == 1
    assert not run["opt"]._optimizer_step_pre_hooks and not run["opt"]._optimizer_step_post_hooks  # closed


def test_bad_heal_options_are_refused_clearly():
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="True, False or 'arch'"):
        traindoctor.Doctor(model, opt, heal="yes", report_file=io.StringIO())
    with pytest.raises(ValueError, match="needs the optimizer"):
        traindoctor.Doctor(model, heal=True, report_file=io.StringIO())
    with pytest.raises(ValueError, match="heal_every"):
        traindoctor.Doctor(model, opt, heal=True, heal_every=0, report_file=io.StringIO())
    with pytest.raises(RuntimeError, match="heal=True"):
        traindoctor.Doctor(model, opt, report_file=io.StringIO()).restore_best()


def _one_spike(make_opt):
    """80 steps of the digits MLP healed, with the gradients of step 60 alone blown up 10 000×."""
    x, y = digits()
    model = mlp(seed=0)
    opt = make_opt(model.parameters())
    doctor = quiet_doctor(model, opt, heal=True)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(0)
    for step in range(80):
        idx = torch.randint(0, len(x), (64,), generator=g)
        opt.zero_grad()
        loss = loss_fn(model(x[idx]), y[idx])
        (loss * (1e4 if step == 60 else 1.0)).backward()
        opt.step()
        doctor.step(loss, inputs=x[idx])
    doctor.close()
    return doctor, model


def test_exploding_gradients_are_clipped_at_the_healthy_percentile():
    doctor, model = _one_spike(lambda ps: torch.optim.SGD(ps, lr=0.05))
    (t,) = doctor.treatments
    # the spike at step 60 is judged by what it did: the loss at step 61 (after its update) shows the harm
    assert t["code"] == "G001" and t["cause"] == "exploding-gradient" and t["step"] == 61
    assert t["rolled_back_to"] == 50
    before, clip = t["changes"]["clip_grad_norm"]
    assert before is None and 0 < clip < 10
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_gradient_spike_that_does_not_hurt_is_not_treated():
    """Adam's update is scale-free: one step's gradients 10 000× larger leave the loss where it was, so
    the spike is a hazard that did not hurt this run, and healing leaves it alone."""
    doctor, _ = _one_spike(lambda ps: torch.optim.Adam(ps, lr=1e-3))
    assert doctor.treatments == []
