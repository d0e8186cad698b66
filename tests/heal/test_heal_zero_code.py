"""``traindoctor run --heal``: healing through the objects an unmodified script created.

Real runs of the built-in examples: the LR-too-high script (SGD at lr 10 on the digits MLP) healed
against its healthy twin (the same script at lr 0.1), and an overfitting script stopped at its best
validation loss.
"""
from __future__ import annotations

import io
import json
import re
import textwrap

import pytest

from traindoctor.cli import main
from traindoctor.examples import script_path
from traindoctor.report import render
from traindoctor.watch.launcher import watch_script

VAL_ACC = re.compile(r"val_acc ([0-9.]+|nan)")



def _last_val_acc(out: str) -> float:
    found = VAL_ACC.findall(out)
    assert found, out[-2000:]
    return float(found[-1])


def _run(capsys, args: list[str], heal: bool):
    res = watch_script(script_path("lr-too-high"), args, store="", heal=heal, err=io.StringIO())
    return res, _last_val_acc(capsys.readouterr().out)


def test_heal_turns_a_nan_run_into_its_healthy_twin(capsys):
    sick, sick_acc = _run(capsys, [], heal=False)
    twin, twin_acc = _run(capsys, ["--lr", "0.1"], heal=False)
    healed, healed_acc = _run(capsys, [], heal=True)
    assert sick_acc < 0.2 and twin_acc > 0.9  # the fault hurts; the twin is healthy
    assert healed.exit_code == 0
    assert healed_acc >= twin_acc - 0.03, (healed_acc, twin_acc)
    t = healed.diagnosis.treatments
    assert t and t[0].cause == "lr-too-high" and t[0].rolled_back_to is not None
    lr_old, lr_new = t[0].changes["lr"]
    # ×0.1 after a blow-up (L002), or the dose the measured update/weight ratio asks for (G004: ×0.1–×0.01)
    assert lr_old * 0.01 - 1e-9 <= lr_new <= lr_old * 0.1 + 1e-9
    assert not sick.diagnosis.treatments  # observe mode treats nothing


def test_cli_heal_reports_the_treatment_in_terminal_and_json(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "d.json"
    code = main(["run", "--no-store", "--heal", "--json", str(out), str(script_path("lr-too-high")),
                 "--epochs", "2"])
    err = capsys.readouterr().err
    assert code == 0
    assert "Treatments applied" in err and "lr-too-high" in err
    doc = json.loads(out.read_text())
    assert doc["treatments"] and doc["treatments"][0]["cause"] == "lr-too-high"
    assert isinstance(doc["treatments"][0]["step"], int)
    assert doc["heal_stopped"] is None


OVERFIT = textwrap.dedent('''
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(0)
    X = torch.randn(64, 20)
    y = (X[:, 0] > 0).long()
    y[:24] = 1 - y[:24]  # a third of the labels flipped: memorising them hurts validation
    Xv = torch.randn(512, 20)
    yv = (Xv[:, 0] > 0).long()
    model = nn.Sequential(nn.Linear(20, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 2))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(200):
        model.train()
        for i in range(0, 64, 16):
            opt.zero_grad()
            F.cross_entropy(model(X[i:i + 16]), y[i:i + 16]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            v = F.cross_entropy(model(Xv), yv).item()
        print(f"epoch {epoch} val_loss {v:.4f}")
    print("finished all epochs")
''')


def test_heal_keeps_an_overfitting_script_on_its_best_weights_to_the_end(tmp_path, capsys):
    """A script cannot be stopped without losing what follows its loop: the best weights come back at
    the overfitting call, later updates are dropped, and the script's own evaluations see the best model."""
    script = tmp_path / "overfit.py"
    script.write_text(OVERFIT)
    err = io.StringIO()
    res = watch_script(script, [], store="", heal=True, err=err)
    out = capsys.readouterr().out
    assert res.exit_code == 0, err.getvalue()
    assert "finished all epochs" in out  # the script ran to its end
    vals = [float(v) for v in re.findall(r"val_loss ([0-9.]+)", out)]
    t = [t for t in res.diagnosis.treatments if t.code == "V001"]
    assert len(t) == 1 and t[0].changes == {"updates": ["applied", "dropped"]}, t
    assert t[0].best_val_loss == pytest.approx(min(vals), rel=1e-3)
    frozen_at = vals.index(min(vals))
    after = vals[-50:]  # well past the call: every later evaluation is of the best weights
    assert all(v == pytest.approx(min(vals), rel=1e-3) for v in after), after[:5]
    assert frozen_at < len(vals) - 50


INCURABLE = textwrap.dedent('''
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(0)
    X, y = torch.randn(256, 8), torch.randint(0, 3, (256,))
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(300):
        i = (step * 16) % 256
        out = model(X[i:i + 16])
        if step >= 60:
            out = out * torch.log(torch.tensor(-1.0))  # a bug no learning rate can cure: NaN from here on
        opt.zero_grad()
        F.cross_entropy(out, y[i:i + 16]).backward()
        opt.step()
    print("finished all steps")
''')


def test_heal_gives_up_on_an_incurable_run_and_stops_it(tmp_path, capsys):
    script = tmp_path / "incurable.py"
    script.write_text(INCURABLE)
    err = io.StringIO()
    res = watch_script(script, [], store="", heal=True, err=err)
    out = capsys.readouterr().out
    assert res.exit_code == 1 and "finished all steps" not in out
    d = res.diagnosis
    assert d.heal_stopped is not None and "healing stopped" in (d.heal_stopped.message or "")
    # the cap, never a loop: three treatments for the leading cause, then three for the next one the
    # run's facts allow (a differential that tests its hypotheses in turn), then a clear stop
    ts = [t for t in d.treatments if t.code in ("L001", "L002")]
    assert 1 <= len(ts) <= 6 and len({t.cause for t in ts}) <= 2
    assert all(sum(t.cause == c for t in ts) <= 3 for c in {t.cause for t in ts})
    assert "stopped the script" in err.getvalue()
    buf = io.StringIO()
    render(d, file=buf)
    assert "healing stopped" in buf.getvalue() and "Treatments applied" in buf.getvalue()


FP16 = textwrap.dedent('''
    import sys
    import torch
    import torch.nn.functional as F
    from torch import nn

    AUTOCAST = sys.argv[1] == "fp16"
    torch.manual_seed(0)
    X = torch.randn(1024, 16) * 30
    y = (X[:, 0] + X[:, 1] > 0).long()
    model = nn.Sequential(nn.Linear(16, 256), nn.LayerNorm(256), nn.ReLU(), nn.Linear(256, 2))
    with torch.no_grad():
        model[0].weight.mul_(1000)  # pre-activations near 1e5: past float16's 65504, fine in float32
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(3):
        for i in range(0, 1024, 32):
            with torch.autocast("cpu", dtype=torch.float16, enabled=AUTOCAST):
                out = model(X[i:i + 32])
            loss = F.cross_entropy(out.float(), y[i:i + 32])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16, enabled=AUTOCAST):
        print("train_acc", float((model(X).argmax(1) == y).float().mean()))
''')


def test_heal_runs_a_float16_overflow_in_float32(tmp_path, capsys):
    script = tmp_path / "fp16.py"
    script.write_text(FP16)
    acc = {}
    for mode, heal in (("fp32", False), ("fp16", False), ("fp16", True)):
        res = watch_script(script, [mode], store="", heal=heal, err=io.StringIO())
        acc[mode, heal] = float(re.search(r"train_acc ([0-9.]+)", capsys.readouterr().out).group(1))
    assert acc["fp32", False] > 0.9 and acc["fp16", False] < 0.6  # the overflow hurts; float32 is the twin
    t = res.diagnosis.treatments
    assert t and t[0].cause == "precision-overflow" and t[0].changes == {"forward_dtype": ["autocast", "float32"]}
    assert acc["fp16", True] >= acc["fp32", False] - 0.03, acc


POISONED_AMP = textwrap.dedent('''
    import sys
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from sklearn.preprocessing import StandardScaler
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    X, y = load_digits(return_X_y=True)
    X = torch.tensor(StandardScaler().fit_transform(X), dtype=torch.float32)
    y = torch.tensor(y)
    Xtr, ytr, Xv, yv = X[:1400], y[:1400], X[1400:], y[1400:]
    if sys.argv[1] == "poisoned":
        Xtr = Xtr.clone()
        Xtr[[7, 300, 901], 3] = float("nan")  # missing readings in three training samples
    loader = DataLoader(TensorDataset(Xtr, ytr), batch_size=32, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu")
    for epoch in range(6):
        for xb, yb in loader:
            with torch.autocast("cpu", dtype=torch.float16):
                loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    with torch.no_grad():
        print("val_acc", float((model(Xv).argmax(1) == yv).float().mean()))
''')


def test_heal_skips_poisoned_batches_under_a_grad_scaler(tmp_path, capsys):
    """Under a GradScaler a poisoned batch's update is skipped by the scaler, so the step the healer
    judges is a later batch's: the poisoned rows are remembered at the backward that saw them."""
    script = tmp_path / "amp.py"
    script.write_text(POISONED_AMP)
    twin = watch_script(script, ["clean"], store="", err=io.StringIO())
    twin_acc = float(re.search(r"val_acc ([0-9.]+)", capsys.readouterr().out).group(1))
    res = watch_script(script, ["poisoned"], store="", heal=True, err=io.StringIO())
    acc = float(re.search(r"val_acc ([0-9.]+)", capsys.readouterr().out).group(1))
    assert twin.exit_code == 0 and res.exit_code == 0 and res.diagnosis.heal_stopped is None
    skips = [t for t in res.diagnosis.treatments if t.cause == "nonfinite-data"]
    assert skips and {i for t in skips for i in t.quarantined} <= {7, 300, 901}
    assert not [t for t in res.diagnosis.treatments if t.cause in ("lr-too-high", "precision-overflow")]
    assert acc >= twin_acc - 0.03, (acc, twin_acc)


def test_verify_replays_a_float16_step_in_its_own_precision_and_proves_float32(tmp_path, capsys):
    """The loss computed on the model's output inside autocast (replayable): the replay runs in float16
    as the step did, reproduces the NaN, and the float32 forward is verified."""
    script = tmp_path / "fp16.py"
    direct = FP16.replace("out = model(X[i:i + 32])", "loss = F.cross_entropy(model(X[i:i + 32]), y[i:i + 32])")
    direct = direct.replace("        loss = F.cross_entropy(out.float(), y[i:i + 32])\n", "")
    assert direct != FP16
    script.write_text(direct)
    res = watch_script(script, ["fp16"], store="", verify=True, err=io.StringIO())
    acc = float(re.search(r"train_acc ([0-9.]+)", capsys.readouterr().out).group(1))
    t = res.diagnosis.treatments[0]
    assert t.verified is not None and t.verified["result"] == "verified", t.verified
    assert "float32" in t.verified["summary"] and t.cause == "precision-overflow"
    assert acc > 0.9
