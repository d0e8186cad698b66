"""Tuning on Optuna with the doctor as pruner, on real tiny trainings: the API and ``traindoctor tune``."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

import traindoctor
from traindoctor.errors import TrainDoctorError
from traindoctor.tuning import parse_param
from traindoctor.tuning.space import SpaceError

SCRIPT = Path(__file__).parent / "scripts" / "tiny_train.py"
ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1", "TRAINDOCTOR_STATUS": "0"}

_X, _Y = load_digits(return_X_y=True)
X = torch.tensor(_X / 16.0, dtype=torch.float32)
Y = torch.tensor(_Y)


def sgd(ps, lr):
    return torch.optim.SGD(ps, lr=lr, momentum=0.9)


def train_digits(params, doctor, epochs=4, seen=None, make_opt=sgd, model=None, n_train=1200, batch=40):
    """An MLP on the first ``n_train`` digits (or ``model``) with SGD (or ``make_opt(params, lr)``); honours the
    stage's data share and epochs; returns the validation loss on the last 597."""
    torch.set_num_threads(1)
    model = model if model is not None else nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = make_opt(model.parameters(), params["lr"])
    doctor.watch(model, opt)
    n = max(min(80, n_train), int(n_train * doctor.fraction))
    if seen is not None:
        seen.append((doctor.stage, doctor.fraction, doctor.epochs(epochs), dict(params)))
    val = float("nan")
    for _ in range(doctor.epochs(epochs)):
        model.train()
        perm = torch.randperm(n)
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(X[idx]), Y[idx])
            loss.backward()
            opt.step()
            doctor.step(loss)
        model.eval()
        with torch.no_grad():
            val = nn.functional.cross_entropy(model(X[1200:]), Y[1200:]).item()
        doctor.report(val)
    return val


def test_sick_trials_are_pruned_at_once_with_the_diagnosis(tmp_path):
    grid = optuna.samplers.GridSampler({"lr": [0.05, 80.0, 0.1]}, seed=0)
    res = traindoctor.tune(train_digits, {"lr": "log:1e-3:100"}, n_trials=3, storage=tmp_path / "s.db",
                           study_name="sick", sampler=grid, pruner=None, coarse=0, top_k=0, probe=None)
    by_lr = {round(t.params["lr"], 3): t for t in res.trials}
    sick = by_lr[80.0]
    assert sick.state == "PRUNED" and sick.pruned_by == "doctor"
    assert sick.reason.startswith("traindoctor: L00")  # non-finite loss or divergence, named
    full = by_lr[0.05].steps
    assert by_lr[0.05].state == "COMPLETE" and by_lr[0.1].state == "COMPLETE"
    assert sick.steps < full  # stopped long before its metric could say so
    diag = res.study.trials[[t.number for t in res.trials if t is sick][0]].user_attrs["diagnosis"]
    assert diag["code"] in ("L001", "L002", "G003") and diag["cause"] == "lr-too-high"
    assert res.best_params["lr"] in (0.05, 0.1)


def test_a_healthy_search_prunes_nothing_by_the_doctor(tmp_path):
    grid = optuna.samplers.GridSampler({"lr": [0.01, 0.03, 0.1]}, seed=0)
    res = traindoctor.tune(train_digits, {"lr": "log:1e-3:1"}, n_trials=3, storage=tmp_path / "s.db",
                           study_name="ok", sampler=grid, pruner=None, coarse=0, top_k=0, probe=None)
    assert [t.state for t in res.trials] == ["COMPLETE"] * 3


def test_coarse_then_fine_narrows_the_range_and_final_reruns_over_seeds(tmp_path):
    seen: list = []
    res = traindoctor.tune(lambda p, d: train_digits(p, d, seen=seen), {"lr": "log:1e-4:100"}, n_trials=8,
                           storage=tmp_path / "s.db", study_name="stages", seed=1, top_k=2, seeds=2)
    stages = [s for s, *_ in seen]
    assert stages[0] == "probe" and res.trials[0].state == "PROBE"  # the LR range test first, then the stages
    # the two lead trials (full trainings at the probe's rates: test_leads.py), the coarse, the fine, the final
    assert stages[1:3] == ["fine"] * 2 and [t.lead is not None for t in res.trials[1:4]] == [True, True, False]
    assert stages[3:7] == ["coarse"] * 4 and stages[7:9] == ["fine"] * 2 and stages[9:] == ["final"] * 4
    rng = res.probe["range"]
    assert rng is not None and 1e-4 <= rng[0] < rng[1] < 100  # the rates that blow this MLP up are not searched
    assert all(rng[0] <= p["lr"] <= rng[1] for s, *_, p in seen if s == "coarse")
    assert all(f == 0.25 and e == 1 for s, f, e, _ in seen if s == "coarse")  # a subsample, a third of the epochs
    assert all(f == 1.0 and e == 4 for s, f, e, _ in seen if s != "coarse")
    (orig,), (fine,) = res.space, res.fine_space
    assert fine.width() < orig.width() and orig.low <= fine.low < fine.high <= orig.high
    assert all(fine.low <= p["lr"] <= fine.high for s, *_, p in seen[7:9])  # the fine stage's own draws
    assert len(res.final) == 2 and all(len(f.values) == 2 for f in res.final)
    assert res.best_params == res.final[min(range(2), key=lambda i: res.final[i].mean)].params
    assert math.isfinite(res.best_value)


def test_a_successive_halving_pruner_counts_its_rungs_on_each_stage_s_own_steps(tmp_path):
    """A fine trial's reports are stored a million steps after the coarse ones' (the stages keep apart); Optuna's
    SuccessiveHalvingPruner must still place its rungs at the fine stage's 2nd, 3rd, 5th report, not pass every
    rung up to a million at the first one."""
    sh = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    res = traindoctor.tune(train_digits, {"lr": "log:1e-3:1"}, n_trials=10, storage=tmp_path / "s.db",
                           study_name="sh", seed=0, top_k=0, probe=None, pruner=sh)
    fine = [t for t in res.study.trials if t.user_attrs.get("stage") == "fine"]
    assert len(fine) == 5
    for t in fine:
        rungs = [k for k in t.system_attrs if k.startswith("completed_rung_")]
        last = t.last_step - 1_000_000  # the fine stage's own report index (0-3: 4 epochs)
        assert 0 <= last <= 3 and len(rungs) == (0 if last < 1 else 1 + int(math.log2(last)))
    assert any(t.state.name == "PRUNED" for t in fine)  # and it does prune: a trial not the best at its rung
    res = traindoctor.tune(train_digits, {"lr": "log:1e-3:1"}, n_trials=2, storage=tmp_path / "s.db", coarse=0,
                           study_name="halving", top_k=0, probe=None, pruner="halving")  # by its name
    assert isinstance(res.study.pruner.inner, optuna.pruners.SuccessiveHalvingPruner)
    with pytest.raises(TrainDoctorError, match="pruner must be"):
        traindoctor.tune(train_digits, {"lr": "log:1e-3:1"}, n_trials=2, storage=tmp_path / "s.db", pruner="hyperbnd")
    with pytest.raises(TrainDoctorError, match="HyperbandPruner compares trials across"):
        traindoctor.tune(train_digits, {"lr": "log:1e-3:1"}, n_trials=2, storage=tmp_path / "s.db",
                         pruner=optuna.pruners.HyperbandPruner())


def test_an_interrupted_search_resumes_where_it_stopped(tmp_path):
    calls = {"n": 0}

    def train(params, doctor):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the third trial
        return train_digits(params, doctor, epochs=2)

    kw = dict(storage=tmp_path / "s.db", study_name="resume", coarse=0, top_k=0, pruner=None, seed=0, probe=None)
    with pytest.raises(KeyboardInterrupt):
        traindoctor.tune(train, {"lr": "log:1e-3:1"}, n_trials=5, **kw)
    study = optuna.load_study(study_name="resume", storage=f"sqlite:///{tmp_path / 's.db'}")
    states = [t.state.name for t in study.trials]
    assert len(states) == 3 and states[-1] == "FAIL" and "RUNNING" not in states  # consistent: nothing left running
    res = traindoctor.tune(train, {"lr": "log:1e-3:1"}, n_trials=5, **kw)
    assert sum(t.state in ("COMPLETE", "PRUNED") for t in res.trials if t.stage == "fine") == 5
    assert len(res.trials) == 6 and res.trials[0].params == {"lr": study.trials[0].params["lr"]}


def test_bad_space_specs_are_one_line_errors():
    for spec, says in (("lr=foo:1:2", "unknown kind"), ("lr=log:1:0.1", "above the high end"),
                       ("lr=log:0:1", "positive low end"), ("lr", "NAME=SPEC"), ("lr=1e-5:1", "log:"),
                       ("n=int:1.5:3", "whole-number"), ("lr=log:1:x", "not a number"), ("lr=0.1:0.1", "single value")):
        with pytest.raises(SpaceError, match=says):
            parse_param(spec)
    assert parse_param("opt=choice:adam,sgd,3").choices == ("adam", "sgd", 3)


def test_an_unreachable_database_is_a_one_line_error_with_the_password_hidden(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(TrainDoctorError) as e:
        traindoctor.tune(train_digits, {"lr": "log:1e-3:1"}, n_trials=1,
                         storage="postgresql://u:secret@127.0.0.1:9/db", study_name="x")
    msg = str(e.value)
    assert "secret" not in msg and "u:***@127.0.0.1:9" in msg and "\n" not in msg
    assert time.monotonic() - t0 < 20


# --------------------------------------------------------------------------------- traindoctor tune SCRIPT


def cli(*args, cwd, timeout=600):
    return subprocess.run([sys.executable, "-m", "traindoctor", "tune", *args], capture_output=True, text=True,
                          cwd=cwd, env=ENV, timeout=timeout)


def test_cli_tunes_a_script_unchanged_and_the_doctor_prunes_its_sick_trials(tmp_path):
    # sampler seed 3 draws lr 0.568, 3.47, 0.028, 0.358, 29.2: a learning rate that trains, ones far too high
    p = cli("--param", "lr=log:1e-3:100", "--trials", "5", "--coarse", "0", "--top-k", "1", "--seeds", "2", "--probe", "off",
            "--seed-arg", "seed", "--pruner", "none", "--sampler-seed", "3", "--json", str(tmp_path / "t.json"), "--html",
            str(tmp_path / "t.html"), str(SCRIPT), "--epochs", "3", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    doc = json.loads((tmp_path / "t.json").read_text())
    assert doc["schema"] == "traindoctor-tune/1" and len([t for t in doc["trials"] if t["stage"] != "final"]) == 5
    search = [t for t in doc["trials"] if t["stage"] != "final"]
    for t in search:
        if t["state"] == "PRUNED":  # only the doctor prunes here, and it says why
            assert t["pruned_by"] == "doctor" and t["reason"].startswith("traindoctor: ")
        if t["params"]["lr"] <= 0.1:  # a learning rate that trains is never pruned
            assert t["state"] == "COMPLETE", t
        if t["params"]["lr"] >= 20:  # one far too high is, with its reason
            assert t["state"] == "PRUNED" and "lr-too-high" in t["reason"], t
    assert {t["params"]["lr"] <= 0.1 for t in search} == {True, False}
    finals = [t for t in doc["trials"] if t["stage"] == "final"]
    assert len(finals) == 2 and {t["seed"] for t in finals} == {1000, 1001}
    assert doc["best_params"] is not None and "Final re-runs over seeds" in p.stderr
    stores = list((tmp_path / ".traindoctor" / "tune").glob("*/trial-*.db"))
    assert len(stores) == 7  # each trial's run kept, for the dashboard and the report
    assert "Optimisation history" in (tmp_path / "t.html").read_text()


def test_cli_says_when_the_script_ignores_the_parameter(tmp_path):
    p = cli("--param", "lr=log:1e-3:1", "--trials", "6", "--coarse", "0", "--top-k", "0", "--pruner", "none",
            str(SCRIPT), "--epochs", "1", "--ignore-lr", cwd=tmp_path)
    assert p.returncode == 2
    assert "exactly the same val_loss" in p.stderr and "does the script take them as arguments" in p.stderr


def test_cli_bad_input_is_one_clear_line(tmp_path):
    cases = [
        (["--param", "lr=log:1:0.1", str(SCRIPT)], "above the high end"),
        (["--param", "lr=bogus:1:2", str(SCRIPT)], "unknown kind"),
        (["--param", "lr=log:1e-3:1", str(tmp_path / "missing.py")], "no such script"),
        (["--param", "lr=log:1e-3:1", "--storage", "postgresql://me:pw@127.0.0.1:9/x", str(SCRIPT)], "me:***@"),
        (["--param", "lr=log:1e-3:1", str(SCRIPT), "--lr", "0.1"], "given to the script and searched"),
    ]
    for args, says in cases:
        p = cli(*args, cwd=tmp_path, timeout=60)
        assert p.returncode == 2, (args, p.stderr)
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and says in lines[0], (args, p.stderr)


def test_cli_ctrl_c_leaves_the_study_consistent_and_the_same_command_continues_it(tmp_path):
    args = ["--param", "lr=log:1e-3:1", "--trials", "4", "--coarse", "0", "--top-k", "0", "--pruner", "none",
            "--sampler-seed", "0", "--probe", "off", "--study", "resume", "--storage", str(tmp_path / "s.db"), str(SCRIPT), "--epochs", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "traindoctor", "tune", *args], cwd=tmp_path, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    url = f"sqlite:///{tmp_path / 's.db'}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # Ctrl-C once a trial has completed and the next one is running
        time.sleep(0.5)
        try:
            trials = optuna.load_study(study_name="resume", storage=url).trials
        except Exception:  # noqa: BLE001 - not created yet
            continue
        if any(t.state.name == "COMPLETE" for t in trials) and trials[-1].state.name == "RUNNING":
            break
    os.killpg(proc.pid, signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    states = [t.state.name for t in optuna.load_study(study_name="resume", storage=url).trials]
    assert "RUNNING" not in states and states[-1] == "FAIL"
    p = cli("--json", str(tmp_path / "r.json"), *args, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    assert [t["state"] for t in doc["trials"]].count("COMPLETE") == 4
    assert doc["trials"][0]["params"] == {"lr": optuna.load_study(study_name="resume", storage=url).trials[0].params["lr"]}


def test_equal_values_alone_are_not_a_script_ignoring_its_parameters(tmp_path):
    """An easy task where every trial reaches the same accuracy is a search, not a bug: only identical
    training trajectories say the parameters were ignored."""
    def train(params, doctor):
        train_digits(params, doctor, epochs=1)
        return 1.0  # the same accuracy for every learning rate

    res = traindoctor.tune(train, {"lr": "log:1e-3:0.1"}, n_trials=4, storage=tmp_path / "s.db", study_name="eq",
                           direction="maximize", coarse=0, top_k=0, pruner=None, seed=0)
    assert [t.state for t in res.trials if t.stage != "probe"] == ["COMPLETE"] * 4

    def ignores(params, doctor):  # seeds itself and never reads params: every trial trains the same
        torch.manual_seed(0)
        return train_digits({"lr": 0.05}, doctor, epochs=1)

    with pytest.raises(TrainDoctorError, match="exactly the same"):
        traindoctor.tune(ignores, {"lr": "log:1e-3:0.1"}, n_trials=6, storage=tmp_path / "t.db", study_name="ig",
                         coarse=0, top_k=0, pruner=None, seed=0)
