"""Faults inside the doctor never reach the training: a rule that raises, a hook that raises, a run
store that cannot be written, the writer thread dying. The script prints the same losses and exits
the same way as without the doctor, and the report says once what failed."""
from __future__ import annotations

import dataclasses
import io
import os
import subprocess
import sys
import threading

import pytest

from traindoctor.watch.autohooks import AutoWatch
from traindoctor.watch.launcher import watch_script
from traindoctor.watch.monitor import Monitor

STEPS = 30
SCRIPT = f"""\
import time
import torch
from torch import nn
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
x, y = torch.randn(64, 4), torch.randn(64, 1)
for step in range({STEPS}):
    opt.zero_grad()
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    opt.step()
    print(f"step {{step}} loss {{loss.item():.8f}}")
    time.sleep(0.04)  # the run outlives a few of the writer thread's flushes
"""


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    d = tmp_path_factory.mktemp("faults")
    p = d / "train.py"
    p.write_text(SCRIPT)
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONDONTWRITEBYTECODE="1")
    bare = subprocess.run([sys.executable, str(p)], capture_output=True, text=True, env=env, timeout=120)
    assert bare.returncode == 0, bare.stderr
    return p, bare.stdout


def watched(script_path, tmp_path, capsys, store=True):
    err = io.StringIO()
    res = watch_script(script_path, [], store=(tmp_path / "run.db") if store else "", err=err)
    out = capsys.readouterr()
    return res, out.out, out.err + err.getvalue()


def check_contained(res, out, err, bare, what: str) -> str:
    assert res.exit_code == 0
    assert out == bare  # the script's own output, losses included, unchanged
    loss = res.run.get("loss")
    assert loss is not None and len(loss) == STEPS
    notes = [n for n in res.diagnosis.notes if what in n]
    assert len(notes) == 1, res.diagnosis.notes  # said once, not per step
    assert "Traceback" not in err, err
    return notes[0]


def test_a_rule_that_raises(script, tmp_path, capsys, monkeypatch):
    from traindoctor.rules import RULES, all_rules

    all_rules()

    def broken(run):
        raise RuntimeError("rule exploded")

    monkeypatch.setitem(RULES, "L001", dataclasses.replace(RULES["L001"], check=broken))
    res, out, err = watched(script[0], tmp_path, capsys)
    note = check_contained(res, out, err, script[1], "rule exploded")
    assert "L001" in note


def test_a_model_forward_hook_that_raises(script, tmp_path, capsys, monkeypatch):
    def boom(self, module, args, kwargs):
        raise RuntimeError("forward hook exploded")

    monkeypatch.setattr(Monitor, "_pre_forward", boom)
    res, out, err = watched(script[0], tmp_path, capsys)
    check_contained(res, out, err, script[1], "forward hook exploded")
    assert err.count("forward hook exploded") == 1, err


def test_a_global_forward_hook_that_raises(script, tmp_path, capsys, monkeypatch):
    def boom(self, module, args):
        raise RuntimeError("global hook exploded")

    monkeypatch.setattr(AutoWatch, "_g_pre", boom)
    res, out, err = watched(script[0], tmp_path, capsys)
    check_contained(res, out, err, script[1], "global hook exploded")


def test_an_optimizer_hook_that_raises(script, tmp_path, capsys, monkeypatch):
    def boom(self, opt):
        raise RuntimeError("step hook exploded")

    monkeypatch.setattr(Monitor, "opt_post", boom)
    res, out, err = watched(script[0], tmp_path, capsys)
    assert res.exit_code == 0 and out == script[1]
    assert sum("step hook exploded" in n for n in res.diagnosis.notes) == 1, res.diagnosis.notes


def test_a_backward_listener_that_raises(script, tmp_path, capsys, monkeypatch):
    def boom(self, loss):
        raise RuntimeError("backward listener exploded")

    monkeypatch.setattr(Monitor, "on_backward", boom)
    res, out, err = watched(script[0], tmp_path, capsys)
    assert res.exit_code == 0 and out == script[1]
    assert sum("backward listener exploded" in n for n in res.diagnosis.notes) == 1, res.diagnosis.notes


def test_a_store_write_that_fails(script, tmp_path, capsys, monkeypatch):
    from traindoctor.store import RunStore

    calls = {"n": 0}

    def full(self, points):
        calls["n"] += 1
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(RunStore, "add_points", full)
    res, out, err = watched(script[0], tmp_path, capsys)
    note = check_contained(res, out, err, script[1], "No space left on device")
    assert "store" in note
    assert calls["n"] == 1  # given up at the first failure, not retried every flush
    assert err.count("No space left on device") == 1, err
    assert res.store_path is None  # nothing claims the run was stored


def test_the_writer_thread_dying(script, tmp_path, capsys, monkeypatch):
    def dies(self):
        raise RuntimeError("writer thread killed")

    monkeypatch.setattr(Monitor, "_writer_loop", dies)
    hooked = []
    old_hook = threading.excepthook
    monkeypatch.setattr(threading, "excepthook", lambda a: hooked.append(a))
    try:
        res, out, err = watched(script[0], tmp_path, capsys)
    finally:
        threading.excepthook = old_hook
    assert not hooked  # the thread's failure is ours to report, not an "Exception in thread" dump
    note = check_contained(res, out, err, script[1], "writer thread killed")
    assert "writer" in note
    assert res.run.get("loss") is not None and len(res.run.get("loss")) == STEPS


def test_the_dataset_scan_thread_dying(script, tmp_path, capsys, monkeypatch):
    def dies(self, plan):
        raise RuntimeError("scan thread killed")

    monkeypatch.setattr(Monitor, "_scan_worker", dies)
    res, out, err = watched(script[0], tmp_path, capsys, store=False)
    assert res.exit_code == 0 and out == script[1]
    assert "Traceback" not in err
