"""The tuner's probe (an LR range test inside the user's own training) and the learning rate steered by the
doctor's pruning reasons, on real tiny trainings: the API and ``traindoctor tune``."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from types import SimpleNamespace

import optuna
import pytest
import torch
from test_tune import ENV, SCRIPT, X, Y, train_digits
from torch import nn
from torch.optim.optimizer import _global_optimizer_pre_hooks

import traindoctor
from traindoctor.errors import TrainDoctorError
from traindoctor.lrsweep import RangeSweep
from traindoctor.store import load_store
from traindoctor.tuning.space import as_space
from traindoctor.tuning.study import PROBE_DECADES, lr_param, steer


def recording(log):
    """train_digits, recording each step's learning rate (as the optimizer used it) and the stage."""
    def train(params, doctor):
        torch.set_num_threads(1)
        model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        opt = torch.optim.SGD(model.parameters(), lr=params["lr"], momentum=0.9)
        doctor.watch(model, opt)
        lrs: list[float] = []
        log.append((doctor.stage, dict(params), lrs))
        n = max(80, int(1200 * doctor.fraction))
        val = float("nan")
        for _ in range(doctor.epochs(3)):
            for i in range(0, n, 40):
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(X[i:i + 40]), Y[i:i + 40])
                loss.backward()
                opt.step()
                lrs.append(opt.param_groups[0]["lr"])
                doctor.step(loss)
            with torch.no_grad():
                val = nn.functional.cross_entropy(model(X[1200:]), Y[1200:]).item()
            doctor.report(val)
        return val
    return train


def test_the_probe_sweeps_the_rate_inside_the_training_and_drops_the_rates_that_blow_it_up(tmp_path, capfd):
    log: list = []
    res = traindoctor.tune(recording(log), {"lr": "log:1e-4:1000"}, n_trials=4, storage=tmp_path / "s.db",
                           study_name="probe", coarse=0, top_k=0, pruner=None, seed=0)
    stage, params, lrs = log[0]
    assert stage == "probe" and params["lr"] == pytest.approx(1e-4)
    # each step at the sweep's rate: 1e-4 · (1e7)^(i/99), exactly as the optimizer used it
    assert lrs == pytest.approx([1e-4 * 1e7 ** (i / 99) for i in range(len(lrs))], rel=1e-9)
    probe = res.probe
    d = probe["diverged_at"]
    assert d is not None and 1e-3 < d < 1000 and len(lrs) < 100  # SGD with momentum blows this MLP up well before
    assert probe["range"] == pytest.approx([max(1e-4, d / 10 ** PROBE_DECADES), d])
    assert "blew up at lr" in res.notes[0] and "searched in" in res.notes[0]
    row = res.trials[0]
    assert row.stage == "probe" and row.state == "PROBE" and row.steps == len(lrs) == probe["steps"]
    assert res.compute == sum(t.steps for t in res.trials)  # its steps are counted as the search's compute
    assert res.study.trials[0].state.name == "FAIL"  # so that Optuna's samplers learn nothing from it
    for stage, params, lrs in log[1:]:  # the search: inside the range, at the trial's own rate (the hook is gone)
        assert stage == "fine" and probe["range"][0] <= params["lr"] <= probe["range"][1]
        assert set(lrs) == {params["lr"]}
    assert not _global_optimizer_pre_hooks
    assert len([t for t in res.trials if t.stage != "probe"]) == 4


def test_the_doctor_keeps_quiet_when_the_probe_blows_the_loss_up_to_nan(tmp_path, capfd):
    log: list = []
    train = recording(log)

    def probe_only(params, doctor):  # the search's trial trains at a sane rate: only the probe blows up
        return train(params if doctor.stage == "probe" else {**params, "lr": 0.05}, doctor)

    # the first swept step (at 1e30) overflows the weights: the next loss is not finite
    res = traindoctor.tune(probe_only, {"lr": "log:1e30:1e40"}, n_trials=1, storage=tmp_path / "s.db",
                           study_name="nan", coarse=0, top_k=0, pruner=None, seed=0, probe_steps=10)
    assert res.probe["losses"][-1] is None  # the sweep ended on a non-finite loss
    err = capfd.readouterr().err
    assert "nonfinite" not in err and "L001" not in err


def test_the_sweep_keeps_the_ratios_of_param_groups(tmp_path):
    seen: list = []

    def train(params, doctor):
        model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        opt = torch.optim.Adam([{"params": model[0].parameters()},
                                {"params": model[2].parameters(), "lr": 10 * params["lr"]}], lr=params["lr"])
        for i in range(0, 1200, 40):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(X[i:i + 40]), Y[i:i + 40])
            loss.backward()
            opt.step()
            if doctor.stage == "probe":
                seen.append((opt.param_groups[0]["lr"], opt.param_groups[1]["lr"]))
            doctor.step(loss)
        doctor.report(loss.item())
        return loss.item()

    traindoctor.tune(train, {"lr": "log:1e-5:10"}, n_trials=1, storage=tmp_path / "s.db", study_name="groups",
                     coarse=0, top_k=0, pruner=None, seed=0, probe_steps=20)
    assert len(seen) >= 2 and seen[1][0] > seen[0][0]
    assert all(b == pytest.approx(10 * a) for a, b in seen)


def test_a_sweep_that_never_blows_up_leaves_the_range_whole(tmp_path):
    log: list = []
    res = traindoctor.tune(recording(log), {"lr": "log:1e-6:1e-4"}, n_trials=2, storage=tmp_path / "s.db",
                           study_name="calm", coarse=0, top_k=0, pruner=None, seed=0, probe_steps=30)
    assert res.probe["diverged_at"] is None and res.probe["range"] is None and res.probe["steps"] == 30
    assert "did not blow up" in res.notes[0] and "whole range" in res.notes[0]


def test_a_training_that_raises_once_the_rate_blew_it_up_ends_the_probe_and_the_search_goes_on(tmp_path):
    def train(params, doctor):
        model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        opt = torch.optim.SGD(model.parameters(), lr=params["lr"], momentum=0.9)
        for _ in range(3):
            for i in range(0, 1200, 40):
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(X[i:i + 40]), Y[i:i + 40])
                if not torch.isfinite(loss):
                    raise ValueError("loss is not finite")  # what many training loops do
                loss.backward()
                opt.step()
                doctor.step(loss)
        return loss.item()

    res = traindoctor.tune(train, {"lr": "log:1e-3:1e6"}, n_trials=2, storage=tmp_path / "s.db", study_name="raises",
                           coarse=0, top_k=0, pruner=None, seed=0)
    assert res.probe["diverged_at"] is not None and res.probe["range"] is not None
    assert len([t for t in res.trials if t.stage == "fine"]) == 2


def test_the_probe_runs_once_per_study_and_a_resumed_search_reuses_it(tmp_path):
    log: list = []
    kw = dict(storage=tmp_path / "s.db", study_name="once", coarse=0, top_k=0, pruner=None, probe_steps=30)
    first = traindoctor.tune(recording(log), {"lr": "log:1e-4:1000"}, n_trials=1, seed=0, **kw)
    res = traindoctor.tune(recording(log), {"lr": "log:1e-4:1000"}, n_trials=3, seed=1, **kw)
    assert [s for s, *_ in log].count("probe") == 1
    assert res.probe == first.probe and len([t for t in res.trials if t.stage == "fine"]) == 3


def test_a_classifier_that_collapses_to_chance_instead_of_exploding_ends_the_sweep(tmp_path):
    """At a rate too high this MLP's units die and its loss settles near ln 10 instead of exploding past 5×
    its best: the sweep is over when the smoothed loss, having fallen, is back above where it started."""
    res = traindoctor.tune(recording([]), {"lr": "log:1e-4:100"}, n_trials=1, storage=tmp_path / "s.db",
                           study_name="collapse", coarse=0, top_k=0, pruner=None, seed=0)
    probe = res.probe
    assert probe["diverged_at"] is not None and probe["range"][1] == pytest.approx(probe["diverged_at"])
    plain = RangeSweep(1e-4, 100, 100)  # the checkup's rule alone: 5× the smoothed best
    for i, v in enumerate(probe["losses"]):
        plain.add(v if v is not None else float("nan"), i)
    assert plain.diverged is None or plain.diverged > probe["diverged_at"]


def test_a_sweep_read_every_few_steps_places_each_loss_at_its_step():
    sweep = RangeSweep(1e-4, 1.0, 41)
    for step in range(0, 40, 5):
        assert not sweep.add(2.3, step)
    assert sweep.lrs == pytest.approx([1e-4 * 1e4 ** (s / 40) for s in range(0, 40, 5)])
    assert sweep.reached == 36 and sweep.add(2.3, 40) and sweep.done  # its last step read: over
    blown = RangeSweep(1e-4, 1.0, 41)
    blown.add(2.0, 0)
    assert blown.add(float("nan"), 12) and blown.diverged == pytest.approx(1e-4 * 1e4 ** (12 / 40))


def test_which_parameter_is_probed():
    space = as_space({"head_lr": "log:1e-4:1", "dropout": "0:0.5"})
    assert lr_param(space, "auto").name == "head_lr"
    assert lr_param(as_space({"learning_rate": "log:1e-4:1"}), True).name == "learning_rate"
    assert lr_param(as_space({"clr": "log:1e-4:1", "lr": "1e-3:0.5"}), "auto") is None  # not a name, not a log scale
    assert lr_param(space, None) is None
    with pytest.raises(TrainDoctorError, match="log scale"):
        lr_param(space, "dropout")
    with pytest.raises(TrainDoctorError, match="no such parameter"):
        lr_param(space, "eta")


def _trial(stage, lr, cause, state="PRUNED"):
    attrs = {"stage": stage, "pruned_by": "doctor", "diagnosis": {"code": "L002", "cause": cause}}
    return SimpleNamespace(state=SimpleNamespace(name=state), params={"lr": lr}, user_attrs=attrs)


def test_the_doctors_learning_rate_causes_move_the_range():
    base = as_space({"lr": "log:1e-4:1", "dropout": "0:0.5"})
    fine = as_space({"lr": "log:0.1:0.5", "dropout": "0.2:0.4"})
    # a fine trial pruned for lr-too-high at 0.3 caps the range below it
    space, said = steer(fine, base, [_trial("fine", 0.3, "lr-too-high")], "lr", "fine")
    assert space[0].low == pytest.approx(0.1) and space[0].high == pytest.approx(0.3) and "lr-too-high" in said
    assert space[1] == fine[1]
    # one at the range's floor: the range keeps its width (0.7 decade) and moves down, inside base
    space, _ = steer(fine, base, [_trial("coarse", 0.11, "lr-too-high")], "lr", "fine")
    assert space[0].high == pytest.approx(0.11) and math.log10(space[0].high / space[0].low) == pytest.approx(
        math.log10(5))
    # lr-too-low counts only in its own stage (a short coarse training wants a larger rate than a long one)
    assert steer(fine, base, [_trial("coarse", 0.2, "lr-too-low")], "lr", "fine")[1] is None
    space, said = steer(fine, base, [_trial("fine", 0.2, "lr-too-low")], "lr", "fine")
    assert space[0].low == pytest.approx(0.2) and "lr-too-low" in said
    # Optuna's prunes, other causes and completed trials say nothing about the rate
    other = _trial("fine", 0.2, "lr-too-high")
    other.user_attrs["pruned_by"] = "optuna"
    assert steer(fine, base, [other, _trial("fine", 0.2, "dying-relu"), _trial("fine", 0.2, "lr-too-high", "COMPLETE")],
                 "lr", "fine")[1] is None


def test_trials_after_a_prune_for_a_rate_too_high_stay_below_it(tmp_path):
    res = traindoctor.tune(lambda p, d: train_digits(p, d, epochs=2), {"lr": "log:1e-3:300"}, n_trials=8,
                           storage=tmp_path / "s.db", study_name="steer", coarse=0, top_k=0, pruner=None, seed=3,
                           sampler="random", probe=None)
    cap = math.inf
    capped = 0
    for t, raw in zip(res.trials, res.study.trials, strict=True):
        assert t.params["lr"] < cap
        capped += cap < math.inf
        if t.state == "PRUNED" and (raw.user_attrs.get("diagnosis") or {}).get("cause") == "lr-too-high":
            cap = min(cap, t.params["lr"])
    assert capped >= 1  # at least one trial was drawn under a cap the doctor set
    assert any(t.steered and "lr-too-high" in t.steered for t in res.trials)  # and it says so


def test_cli_probes_the_scripts_learning_rate(tmp_path):
    p = subprocess.run([sys.executable, "-m", "traindoctor", "tune", "--param", "lr=log:1e-4:1000", "--trials", "2",
                        "--coarse", "0", "--top-k", "0", "--pruner", "none", "--sampler-seed", "0", "--json",
                        str(tmp_path / "t.json"), "--html", str(tmp_path / "t.html"), str(SCRIPT), "--epochs", "3"],
                       capture_output=True, text=True,
                       cwd=tmp_path, env=ENV, timeout=600)
    assert p.returncode == 0, p.stderr
    doc = json.loads((tmp_path / "t.json").read_text())
    probe = doc["probe"]
    d = probe["diverged_at"]
    assert d is not None and 1e-3 < d < 1000
    assert probe["range"] == pytest.approx([max(1e-4, d / 10 ** PROBE_DECADES), d])
    assert "LR range test" in p.stderr and "blew up" in p.stderr
    # each loss the script's store recorded at step i was trained at the sweep's rate for step i
    assert probe["lrs"] == pytest.approx([1e-4 * 1e7 ** (i / 99) for i in range(len(probe["lrs"]))], rel=1e-9)
    first = doc["trials"][0]
    assert first["stage"] == "probe" and first["state"] == "PROBE" and 0 < first["steps"] < 100 + 40
    fine = [t for t in doc["trials"] if t["stage"] == "fine"]
    assert len(fine) == 2 and all(probe["range"][0] <= t["params"]["lr"] <= probe["range"][1] for t in fine)
    # both are the lead trials (test_leads.py), chosen from the probe: the script was run at the rates they name
    assert fine[0]["lead"].startswith("lead 1") and fine[0]["params"]["lr"] == pytest.approx(d / 30)
    assert fine[1]["lead"].startswith("lead 2") and fine[1]["params"]["lr"] in (pytest.approx(d / 10), fine[0]["params"]["lr"])
    # the probe's own run: the store says its rate was swept, and its losses are the sweep's
    page = (tmp_path / "t.html").read_text()
    assert '"id": "probe"' in page or '"id":"probe"' in page  # the sweep drawn, the kept range shaded
    run = load_store(next((tmp_path / ".traindoctor" / "tune").glob("*/trial-0.db")))
    assert run.meta.get("lr_sweep", "").startswith("0.0001:1000.0:100:")
    assert run.num_steps == first["steps"]


def test_optuna_is_not_told_of_the_probe(tmp_path):
    res = traindoctor.tune(recording([]), {"lr": "log:1e-4:1000"}, n_trials=1, storage=tmp_path / "s.db",
                           study_name="silent", coarse=0, top_k=0, pruner=None, seed=0, probe_steps=20)
    raw = res.study.trials[0]
    assert raw.user_attrs["stage"] == "probe" and not raw.intermediate_values
    assert optuna.trial.TrialState.FAIL == raw.state
