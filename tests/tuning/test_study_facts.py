"""The doctor's cause for a pruned trial weighs what the study's other trials showed (``pruning.StudyFacts``)."""
from __future__ import annotations

import math

import optuna
import torch
from test_tune import train_digits

import traindoctor
from traindoctor.tuning.pruning import DATA_CAUSES, Sibling, StudyFacts


def train_rmsprop(params, doctor):
    """An MLP on digits with RMSprop: at a rate of 3e-6 each step still moves the weights by ≈ 3e-4 of their
    norm (the pace that alone rules out "learning rate too low"), and in 120 steps the loss does not move."""
    return train_digits(params, doctor, make_opt=lambda ps, lr: torch.optim.RMSprop(ps, lr=lr))


def _search(tmp_path, lrs):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=url)
    for lr in lrs:
        study.enqueue_trial({"lr": lr})
    res = traindoctor.tune(train_rmsprop, {"lr": "log:1e-7:1"}, n_trials=len(lrs), storage=url, study_name="s",
                           pruner=None, coarse=0, top_k=0, probe=None)
    return res, {t.number: t.user_attrs.get("diagnosis") for t in res.study.trials}


def test_a_flat_trial_beside_one_that_learned_is_pruned_for_a_learning_rate_too_low(tmp_path):
    res, diag = _search(tmp_path, [3e-3, 3e-6])
    good, slow = res.trials
    assert good.state == "COMPLETE" and good.value < 1.0  # the model learns this data at 3e-3
    assert slow.state == "PRUNED" and slow.pruned_by == "doctor"
    d = diag[slow.number]
    assert d["code"] in ("L005", "L007")
    assert d["cause"] == "lr-too-low", d  # not the data's labels: trial #0 learned them
    assert any("#0" in s and "3e-06 or below" in s for s in d["study"])
    assert "→ lr-too-low (" in slow.reason


def test_alone_the_same_trial_gets_the_run_s_own_differential(tmp_path):
    # no other trial: nothing in the study speaks for or against a cause (what the run alone says stands)
    res, diag = _search(tmp_path, [3e-6])
    (slow,) = res.trials
    assert slow.state == "PRUNED" and diag[slow.number]["study"] == []


def test_study_facts_rule_out_and_support_only_what_the_other_trials_show():
    sibs = [Sibling(1, 1e-2, 0.3), Sibling(2, 1e-1, 0.5)]
    out, support = StudyFacts(sibs, 1e-4).judge("L005")
    assert set(DATA_CAUSES) <= set(out) and "lr-too-high" in out and "#1" in out["label-noise"]
    assert "lr-too-low" in support and "#1" in support["lr-too-low"]
    # a trial at a lower rate that trained: the rate is not too low, and nothing supports it
    out, support = StudyFacts([*sibs, Sibling(3, 1e-5, 0.4)], 1e-4).judge("L007")
    assert "lr-too-low" in out and support == {}
    # above every trial that trained: "too low" ruled out, "too high" supported; divergence is not judged here
    out, support = StudyFacts(sibs, 1.0).judge("L007")
    assert "lr-too-high" not in out and "lr-too-low" in out and set(support) == {"lr-too-high"}
    assert "≤ 0.1" in support["lr-too-high"] and "#2 and 1 more" in support["lr-too-high"]
    # a trial at the same rate trained: the rate alone does not explain it, nothing is supported
    assert StudyFacts([*sibs, Sibling(4, 1.0, 0.2)], 1.0).judge("L007")[1] == {}
    assert StudyFacts(sibs, 1e-4).judge("L002") == ({}, {})
    assert StudyFacts([], 1e-4).judge("L005") == ({}, {})
    # no learning rate known (or not a number): the data causes only
    for lr in (None, math.nan, math.inf, -1.0):
        out, support = StudyFacts(sibs, lr).judge("L005")
        assert set(out) == set(DATA_CAUSES) and support == {}
