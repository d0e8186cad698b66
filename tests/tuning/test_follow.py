"""The fine stage's ranges follow its own best full trials (``Search.fine_space``, ``Param.following``): a
range the coarse stage chose wrongly (its short trainings favour other values than a full one) is left,
instead of being searched to the end."""
from __future__ import annotations

import math

import optuna
import pytest
from test_tune import train_digits

import traindoctor
from traindoctor.tuning.space import as_space
from traindoctor.tuning.study import FOLLOW_AFTER, Search


def test_a_range_follows_the_median_of_the_best_values_within_its_base():
    base = as_space({"lr": "log:1e-4:1", "dropout": "0.25:0.6", "act": "choice:relu,tanh"})
    lr, dropout, act = as_space({"lr": "log:0.1:0.2", "dropout": "0.3:0.5", "act": "choice:relu"})
    # the best trials at the low edge: a window of the range's own width (0.3 decade) centred on them
    moved = lr.following([0.1, 0.11, 0.1], base[0])
    assert math.log10(moved.low) == pytest.approx(-1 - math.log10(2) / 2) and moved.high == pytest.approx(0.2)
    d = dropout.following([0.3, 0.31, 0.35], base[1])
    assert d.low == pytest.approx(0.25) and d.high == pytest.approx(0.5)  # 0.21, held inside the base range
    assert dropout.following([0.4, 0.41, 0.39], base[1]) == dropout  # best in the middle: nothing to follow
    assert act.following(["relu"], base[2]) == act and lr.following([float("nan")], base[0]) == lr


def _study(decided: str, fine: list[tuple[float, float]]):
    """A study whose coarse stage decided ``decided`` and whose fine trials ``(lr, value)`` completed."""
    study = optuna.create_study()
    study.set_user_attr("fine_space", [decided])
    (p,) = as_space([decided])
    for lr, value in fine:
        study.add_trial(optuna.trial.create_trial(params={"lr": lr}, distributions={"lr": p.distribution()},
                                                  value=value, user_attrs={"stage": "fine"}))
    return study, Search(study, as_space({"lr": "log:1e-5:1"}), 30, coarse=0.5, top_k=0, seeds=0, fraction=0.25,
                         epoch_fraction=0.34)


def test_the_fine_ranges_follow_the_best_fine_trials_once_enough_completed():
    # the best full trials sit at the low edge of the range the coarse stage decided: it moves down
    trials = [(0.11, 0.30), (0.10, 0.28), (0.12, 0.31), (0.19, 0.60)]
    study, search = _study("lr=log:0.1:0.4", trials[:FOLLOW_AFTER - 1])
    assert search.fine_space()[0].low == pytest.approx(0.1)  # not before FOLLOW_AFTER fine trials completed
    study, search = _study("lr=log:0.1:0.4", trials)
    (lr,) = search.fine_space()
    assert lr.low == pytest.approx(10 ** (math.log10(0.11) - math.log10(4) / 2)) and lr.high == pytest.approx(0.4)
    # the report gives what was searched: the decided range and every fine trial, wherever it lay
    study.add_trial(optuna.trial.create_trial(params={"lr": 0.06}, distributions={"lr": lr.distribution()},
                                              value=0.2, user_attrs={"stage": "fine"}))
    (searched,) = search.searched_fine_space()
    assert searched.low == pytest.approx(0.06) and searched.high == pytest.approx(0.4)
    # and it keeps moving with them (0.06 is among the best three now), never below the base range
    assert search.fine_space()[0].low < lr.low
    _, search = _study("lr=log:1e-5:1e-4", [(1e-5, 0.1), (1.1e-5, 0.1), (1.2e-5, 0.1), (9e-5, 0.5)])
    assert search.fine_space()[0].low == pytest.approx(1e-5)


def test_a_search_reports_every_fine_trial_inside_the_range_it_says_it_searched(tmp_path):
    res = traindoctor.tune(lambda p, d: train_digits(p, d, epochs=3), {"lr": "log:1e-3:3"}, n_trials=14,
                           storage=tmp_path / "s.db", study_name="follow", seed=0, top_k=0, probe=None, pruner=None,
                           doctor_prunes=False)  # every fine trial completes
    (searched,) = res.fine_space
    fine = [t.params["lr"] for t in res.trials if t.stage == "fine"]
    assert len(fine) == 7 and all(searched.low <= lr <= searched.high for lr in fine)
    followed = [t.user_attrs.get("followed", 0) for t in res.study.trials if t.user_attrs.get("stage") == "fine"]
    assert followed[:FOLLOW_AFTER] == [0] * FOLLOW_AFTER and followed[FOLLOW_AFTER:] == [4, 5, 6]  # one worker
