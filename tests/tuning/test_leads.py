"""The lead trials (``Search.next_lead``): after the probe, the search's first full trainings are the seeds' own first
guess (a rate 1/30 of the one the probe blew up at, regularisation off), and the second follows what the doctor read
in the first: a higher rate when it trained without overfitting, the same rate regularised when it overfit (V001)."""
from __future__ import annotations

import io

import optuna
import pytest
import torch
from test_tune import train_digits
from torch import nn

import traindoctor
from traindoctor.report.tune import render_tune, tune_html
from traindoctor.tuning.space import as_space
from traindoctor.tuning.study import LEAD_DOWN, LEAD_FIRST, LEAD_UP, Search, lead_params

SPACE = {"lr": "log:1e-5:10", "weight_decay": "log:1e-6:1e-1", "dropout": "0:0.6"}


def train(params, doctor, n_train=1200, epochs=4):
    """An MLP with dropout and weight decay (Adam) on the first ``n_train`` digits (``train_digits``)."""
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(params["dropout"]), nn.Linear(128, 10))
    return train_digits(params, doctor, epochs, model=model, n_train=n_train, batch=20, make_opt=lambda ps, lr: (
        torch.optim.Adam(ps, lr=lr, weight_decay=params.get("weight_decay", 0.0))))


def _search(tmp_path, name, **kw):
    res = traindoctor.tune(lambda p, d: train(p, d, **kw), SPACE, n_trials=6, storage=tmp_path / "s.db",
                           study_name=name, seed=0, top_k=0)
    blow = res.probe["diverged_at"]
    assert blow is not None and res.trials[0].stage == "probe"
    return res, blow, res.trials[1], res.trials[2]


def test_the_first_lead_fits_first_and_the_second_raises_the_rate_when_it_did_not_overfit(tmp_path):
    res, blow, one, two = _search(tmp_path, "fits")  # 1,200 digits, 4 epochs: no time to memorise
    assert [t.stage for t in res.trials] == ["probe", "fine", "fine", "coarse", "coarse", "coarse", "fine"]
    assert one.lead.startswith("lead 1") and two.lead.startswith("lead 2") and res.trials[3].lead is None
    assert one.params == {"lr": pytest.approx(blow / LEAD_FIRST), "weight_decay": 1e-6, "dropout": 0.0}
    assert one.state == "COMPLETE" and one.steps == 240  # the whole data, every epoch: a fine trial
    assert res.study.trials[1].user_attrs["overfit"] is None
    assert two.params == {"lr": pytest.approx(blow / LEAD_UP), "weight_decay": 1e-6, "dropout": 0.0}
    assert "without overfitting" in two.lead
    assert sum(t.stage in ("coarse", "fine") for t in res.trials) == 6  # the leads take fine places
    # the tables say which trials were leads and how each was chosen
    buf = io.StringIO()
    render_tune(res, file=buf, width=250)
    line = next(x for x in buf.getvalue().splitlines() if x.lstrip().startswith("1 "))
    assert "fine (lead)" in line and "1/30 of the rate the probe blew up at" in line
    assert "<td>fine (lead)</td>" in tune_html(res) and res.to_json()["trials"][2]["lead"] == two.lead


def test_a_lead_that_overfits_is_followed_by_the_same_rate_regularised(tmp_path):
    res, blow, one, two = _search(tmp_path, "overfits", n_train=60, epochs=40)  # 60 digits, 40 epochs: memorised
    fit = res.study.trials[1].user_attrs["overfit"]
    assert isinstance(fit, dict) and fit["last_val_loss"] > fit["best_val_loss"]  # the doctor's V001
    assert two.params["lr"] == one.params["lr"] == pytest.approx(blow / LEAD_FIRST)
    assert two.params["dropout"] == pytest.approx(0.3) and two.params["weight_decay"] == pytest.approx(10 ** -3.5)
    assert "overfit (V001" in two.lead
    assert two.value < one.value  # regularised, the same rate generalises better here


def test_no_leads_without_a_probe_that_blew_up_without_fine_places_or_when_turned_off(tmp_path):
    for name, kw in (("off", dict(leads=False)), ("noprobe", dict(probe=None)), ("nofine", dict(n_trials=2, coarse=0.9))):
        args = dict(n_trials=4, storage=tmp_path / "s.db", study_name=name, seed=0, top_k=0) | kw
        res = traindoctor.tune(lambda p, d: train(p, d, n_train=200, epochs=1), SPACE, **args)
        assert all(t.lead is None for t in res.trials), name
    # a probe whose loss never blew up says nothing about the rate: no leads either
    res = traindoctor.tune(lambda p, d: train(p, d, n_train=200, epochs=1), {"lr": "log:1e-6:1e-4", "dropout": "0:0.5"},
                           n_trials=4, storage=tmp_path / "s.db", study_name="calm", seed=0, top_k=0)
    assert res.probe["diverged_at"] is None and all(t.lead is None for t in res.trials)


def _study_with_lead(state, user_attrs):
    study = optuna.create_study()
    study.set_user_attr("probe", {"param": "lr", "diverged_at": 1.0, "range": [1e-4, 1.0]})
    dist = {k: p.distribution() for k, p in ((p.name, p) for p in as_space(SPACE))}
    study.add_trial(optuna.trial.create_trial(
        params={"lr": 1 / 30, "weight_decay": 1e-6, "dropout": 0.0}, distributions=dist, state=state,
        value=0.5 if state == optuna.trial.TrialState.COMPLETE else None,
        user_attrs={"stage": "fine", "lead": 0, "why": "lead 1", **user_attrs}))
    space = as_space(SPACE)
    return Search(study, space, 10, coarse=0.5, top_k=0, seeds=0, fraction=0.25, epoch_fraction=0.34,
                  lead=space[0])


def test_the_second_lead_lowers_the_rate_after_a_lead_pruned_for_lr_too_high():
    search = _study_with_lead(optuna.trial.TrialState.PRUNED,
                              {"pruned_by": "doctor", "diagnosis": {"code": "L002", "cause": "lr-too-high"}})
    n, params, why = search.next_lead()
    assert n == 1 and params["lr"] == pytest.approx(1 / LEAD_DOWN) and "lr-too-high" in why
    search = _study_with_lead(optuna.trial.TrialState.COMPLETE, {"overfit": None})
    assert search.next_lead()[1]["lr"] == pytest.approx(1 / LEAD_UP)
    search.study.enqueue_trial({"lr": 0.1}, user_attrs={"stage": "fine", "lead": 1})
    assert search.next_lead() is None  # one is queued: the next waits for it (and two is all)


def test_which_parameters_a_lead_turns_off_by_their_names():
    space = as_space({"lr": "log:1e-5:1", "dropout": "0.1:0.7", "weight_decay": "log:1e-6:1e-1", "l2_reg": "log:1e-5:1e-1",
                      "label_smoothing": "0:0.2", "attn_drop": "0:0.5", "wd": "log:1e-6:1e-2", "hidden": "int:16:256",
                      "forward_dim": "int:8:32", "regions": "int:2:8", "opt": "choice:adam,sgd"})
    params, reg = lead_params(space, space[0], 0.01, regularise=False)
    assert reg == ["dropout", "weight_decay", "l2_reg", "label_smoothing", "attn_drop", "wd"]
    assert params == {"lr": 0.01, "dropout": 0.1, "weight_decay": 1e-6, "l2_reg": 1e-5, "label_smoothing": 0.0,
                      "attn_drop": 0.0, "wd": 1e-6, "hidden": 136, "forward_dim": 20, "regions": 5, "opt": "adam"}
    regularised, _ = lead_params(space, space[0], 0.01, regularise=True)
    assert regularised["dropout"] == pytest.approx(0.4) and regularised["wd"] == pytest.approx(1e-4)
