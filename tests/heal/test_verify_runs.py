"""``--verify`` end to end on real runs: the fix is replayed before it is applied, the one that helped
is the one applied, a useless one is reported as such, and the differential is updated by the result."""
from __future__ import annotations

import io
import json

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.preprocessing import StandardScaler
from torch import nn

from traindoctor import Doctor
from traindoctor.cli import main
from traindoctor.examples import script_path
from traindoctor.watch.launcher import watch_script


def test_run_verify_proves_the_lr_fix_and_applies_it(capsys):
    err = io.StringIO()
    res = watch_script(script_path("lr-too-high"), ["--epochs", "2"], store="", verify=True, err=err)
    assert res.exit_code == 0
    t = res.diagnosis.treatments[0]
    assert t.verified is not None and t.verified["result"] == "verified", t.verified
    assert "verified" in t.verified["summary"] and "replaying steps" in t.verified["summary"]
    assert "verified on a replay" in (t.source or "")
    assert t.verified["tried"] and all(v["result"] in ("verified", "did not help") for v in t.verified["tried"])
    assert t.verified["seconds"] >= 0
    c = next(c for c in res.diagnosis.causes if c.id == t.cause)
    assert c.verification and any("verified" in line for line in c.verification)
    assert "verified" in err.getvalue()  # said live, as it happened
    out = capsys.readouterr().out
    assert "val_acc" in out and "nan" not in out.split("epoch   2")[-1]


def test_cli_verify_shows_the_replay_in_the_report_and_json(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "d.json"
    code = main(["run", "--no-store", "--verify", "--verify-budget", "0.5", "--json", str(out),
                 str(script_path("lr-too-high")), "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 0 and "replayed:" in err and "Treatments applied" in err and "verification:" in err
    doc = json.loads(out.read_text())
    assert doc["treatments"][0]["verified"]["result"] == "verified"
    assert any(c.get("verification") for c in doc["causes"])


def test_cli_refuses_a_verify_budget_without_verify_or_out_of_range(tmp_path, capsys):
    assert main(["run", "--verify-budget", "0.2", str(script_path("healthy"))]) == 2
    assert "--verify" in capsys.readouterr().err
    assert main(["run", "--verify", "--verify-budget", "-1", str(script_path("healthy"))]) == 2
    assert "--verify-budget" in capsys.readouterr().err


def _digits():
    X, y = load_digits(return_X_y=True)
    return torch.tensor(StandardScaler().fit_transform(X), dtype=torch.float32), torch.tensor(y)


class LogInputs(nn.Module):
    """log(x + 3): NaN for any feature below −3, whatever the weights (a bug no LR or clip can fix)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.log(x + 3.0))


def test_a_fix_that_cannot_help_is_reported_as_tried_and_not_helping():
    torch.manual_seed(0)
    X, y = _digits()
    X = X.clamp(min=-2.5)  # finite inputs, all safe ...
    X[40 * 16:40 * 16 + 16, 5] = -4.0  # ... until batch 40: finite, but below −3
    model = LogInputs()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    doctor = Doctor(model, opt, verify=True, loss_fn=F.cross_entropy, heal_every=10, live=False)
    for step in range(60):
        xb, yb = X[step * 16:(step + 1) * 16], y[step * 16:(step + 1) * 16]
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        doctor.step(loss, inputs=xb, targets=yb)
        if doctor.should_stop:
            break
    d = doctor.diagnose()
    doctor.close()
    first = d.treatments[0]
    assert first.step == 40 and first.verified is not None
    assert first.verified["result"] == "did not help"
    assert all(v["result"] == "did not help" for v in first.verified["tried"])
    assert "tried, did not help" in first.verified["summary"]
    # the run's params stayed finite: the NaN step was dropped or rolled back
    assert all(torch.isfinite(p).all() for p in model.parameters())
    c = next((c for c in d.causes if c.id == first.cause), None)
    assert c is None or any("did not help" in line for line in c.verification)


def test_doctor_verify_needs_the_loss_function():
    model = nn.Linear(2, 1)
    with pytest.raises(ValueError, match="loss_fn"):
        Doctor(model, torch.optim.SGD(model.parameters(), lr=0.1), verify=True)


def test_doctor_verify_leaves_a_healthy_run_bitwise_alone():
    def train(verify: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        X, y = _digits()
        model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        doctor = Doctor(model, opt, verify=verify, loss_fn=F.cross_entropy, live=False) if verify else None
        for step in range(40):
            xb, yb = X[step * 16:(step + 1) * 16], y[step * 16:(step + 1) * 16]
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            if doctor is not None:
                doctor.step(loss, inputs=xb, targets=yb)
        if doctor is not None:
            assert not doctor.treatments
            doctor.close()
        return [p.detach().clone() for p in model.parameters()]

    assert all(torch.equal(a, b) for a, b in zip(train(False), train(True)))
