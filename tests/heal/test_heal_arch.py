"""``heal="arch"`` / ``--heal=arch``: a ReLU whose units died is replaced by a LeakyReLU on the live
model, and the run recovers toward its healthy twin (the same MLP without the dead-making bias)."""
from __future__ import annotations

import io
import re
import textwrap

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn

from traindoctor import Doctor
from traindoctor.cli import main
from traindoctor.watch.launcher import watch_script


def _data():
    X, y = load_digits(return_X_y=True)
    Xtr, Xv, ytr, yv = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    sc = StandardScaler().fit(Xtr)
    f = lambda a: torch.tensor(sc.transform(a), dtype=torch.float32)  # noqa: E731
    return f(Xtr), torch.tensor(ytr), f(Xv), torch.tensor(yv)


def _train(dead: bool, heal, sgd: bool = False, verify: bool = False) -> tuple[float, Doctor | None, nn.Module]:
    torch.manual_seed(0)
    Xtr, ytr, Xv, yv = _data()
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    if dead:
        with torch.no_grad():
            model[0].bias.fill_(-8.0)  # every hidden unit below zero for every input: dead from the start
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9) if sgd else torch.optim.Adam(model.parameters(), lr=3e-3)
    doctor = Doctor(model, opt, heal=heal, live=False, verify=verify,
                    loss_fn=F.cross_entropy if verify else None) if heal else None
    g = torch.Generator().manual_seed(0)
    for _epoch in range(12):
        for idx in torch.randperm(len(Xtr), generator=g).split(32):
            opt.zero_grad()
            loss = F.cross_entropy(model(Xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            if doctor is not None:
                doctor.step(loss, inputs=Xtr[idx], targets=ytr[idx]) if verify else doctor.step(loss)
    with torch.no_grad():
        acc = float((model(Xv).argmax(1) == yv).float().mean())
    if doctor is not None:
        doctor.close()
    return acc, doctor, model


def test_dead_relus_are_replaced_and_the_run_recovers_toward_its_twin():
    twin_acc, _, _ = _train(dead=False, heal=False)
    sick_acc, _, _ = _train(dead=True, heal=False)
    healed_acc, doctor, model = _train(dead=True, heal="arch")
    assert twin_acc > 0.9 and sick_acc < 0.3  # the fault hurts
    assert isinstance(model[1], nn.LeakyReLU)
    t = [x for x in doctor.treatments if x["code"] == "A001"]
    assert len(t) == 1 and t[0]["cause"] == "dying-relu" and "LeakyReLU" in t[0]["action"]
    assert healed_acc >= twin_acc - 0.05, (healed_acc, twin_acc)


def test_a_wholly_dead_layer_is_started_again_so_plain_sgd_recovers_too():
    """Every unit dead (bias −8): under SGD a leaky slope of 0.01 alone would take thousands of steps to
    bring the units back (Adam rescales the small gradient, SGD does not); the layer feeding the dead ReLU
    is initialised again as well, and the run recovers toward its twin."""
    twin_acc, _, _ = _train(dead=False, heal=False, sgd=True)
    sick_acc, _, _ = _train(dead=True, heal=False, sgd=True)
    healed_acc, doctor, model = _train(dead=True, heal="arch", sgd=True)
    assert twin_acc > 0.9 and sick_acc < 0.3
    t = [x for x in doctor.treatments if x["code"] == "A001"]
    assert len(t) == 1 and t[0]["changes"]["reinitialised"] == [[], ["0"]]
    assert float(model[0].bias.abs().max()) < 1.0  # no longer −8
    assert healed_acc >= twin_acc - 0.05, (healed_acc, twin_acc)


def test_verify_replays_the_dead_relu_repair_before_it_is_applied():
    """With --verify the repair waits one step: the steps since the last snapshot are replayed with the
    LeakyReLU (and the fresh layer feeding it) on the model, and without; the loss that stayed flat
    falls with it: verified, then applied."""
    healed_acc, doctor, model = _train(dead=True, heal="arch", sgd=True, verify=True)
    t = [x for x in doctor.treatments if x["code"] == "A001"]
    assert len(t) == 1 and t[0]["verified"]["result"] == "verified", t
    tried = t[0]["verified"]["tried"][0]
    assert tried["symptom"] == "stuck" and "LeakyReLU" in tried["fix"]
    assert "verified on a replay" in t[0]["source"]
    assert isinstance(model[1], nn.LeakyReLU) and healed_acc > 0.85


def test_plain_heal_does_not_change_the_model():
    _, doctor, model = _train(dead=True, heal=True)
    assert type(model[1]) is nn.ReLU and not [x for x in doctor.treatments if x["code"] == "A001"]


def test_doctor_refuses_an_unknown_heal_mode():
    m = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="arch"):
        Doctor(m, torch.optim.SGD(m.parameters(), lr=0.1), heal="everything")


DEAD = textwrap.dedent('''
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from sklearn.preprocessing import StandardScaler
    from torch import nn

    torch.manual_seed(0)
    X, y = load_digits(return_X_y=True)
    X = torch.tensor(StandardScaler().fit_transform(X), dtype=torch.float32)
    y = torch.tensor(y)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    with torch.no_grad():
        model[0].bias.fill_(-8.0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(8):
        for i in range(0, len(X), 32):
            opt.zero_grad()
            F.cross_entropy(model(X[i:i + 32]), y[i:i + 32]).backward()
            opt.step()
    with torch.no_grad():
        print("train_acc", float((model(X).argmax(1) == y).float().mean()))
''')


def test_run_heal_equals_arch_repairs_the_script_model(tmp_path, capsys, monkeypatch):
    script = tmp_path / "dead.py"
    script.write_text(DEAD)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--no-store", "--heal=arch", str(script)]) == 0
    cap = capsys.readouterr()
    acc = float(re.search(r"train_acc ([0-9.]+)", cap.out).group(1))
    assert acc > 0.8, cap.out
    assert "LeakyReLU" in cap.err and "Treatments applied" in cap.err
    res = watch_script(script, [], store="", heal=True, err=io.StringIO())  # plain --heal: no repair, stays dead
    acc_plain = float(re.search(r"train_acc ([0-9.]+)", capsys.readouterr().out).group(1))
    assert acc_plain < 0.3 and not [t for t in res.diagnosis.treatments if t.code == "A001"]


def _deep(act: type[nn.Module], heal, kaiming: bool = False, steps: int = 800, verify: bool = False):
    """Digits through six hidden layers of 32 with ``act``, SGD + momentum at 0.01."""
    Xtr, ytr, Xv, yv = _data()
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    width = 64
    for _ in range(6):
        layers += [nn.Linear(width, 32), act()]
        width = 32
    model = nn.Sequential(*layers, nn.Linear(32, 10))
    if kaiming:
        for m in model.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    doctor = Doctor(model, opt, heal=heal, live=False, report_file=io.StringIO(), verify=verify,
                    loss_fn=F.cross_entropy if verify else None) if heal else None
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(Xtr), (64,), generator=g)
        opt.zero_grad()
        loss = F.cross_entropy(model(Xtr[idx]), ytr[idx])
        loss.backward()
        opt.step()
        if doctor is not None:
            doctor.step(loss, inputs=Xtr[idx], targets=ytr[idx] if verify else None)
    if doctor is not None:
        doctor.close()
    model.eval()
    with torch.no_grad():
        acc = float((model(Xv).argmax(1) == yv).float().mean())
    return acc, doctor, model


def test_vanishing_gradients_through_sigmoids_get_relus_and_a_fresh_start():
    """Six sigmoid layers: the first layer's gradient is a millionth of the last one's and the run
    stays at chance. With --heal=arch the sigmoids before the last weight layer become ReLUs and the
    layers before it start again (Kaiming); the run then trains like its twin (the same network built
    with ReLU and Kaiming init). Plain --heal changes nothing of the model."""
    twin, _, _ = _deep(nn.ReLU, None, kaiming=True)
    sick, _, _ = _deep(nn.Sigmoid, None)
    plain, plain_doc, _ = _deep(nn.Sigmoid, True)
    healed, doc, model = _deep(nn.Sigmoid, "arch")
    assert twin > 0.85 and sick < 0.2 and plain < 0.2  # the fault hurts; --heal alone cannot change a model
    assert not [t for t in plain_doc.treatments if t["code"] == "G002"]
    t = [t for t in doc.treatments if t["code"] == "G002"]
    assert len(t) == 1 and t[0]["cause"] == "vanishing-gradient"
    assert sum(1 for k in t[0]["changes"] if k.startswith("module ")) == 6
    assert len(t[0]["changes"]["reinitialised"][1]) == 6  # the six layers before the head
    assert not any(isinstance(m, nn.Sigmoid) for m in model.modules())
    assert healed >= twin - 0.03, (healed, twin)


def test_verify_replays_the_sigmoid_to_relu_repair_before_it_is_applied():
    healed, doc, model = _deep(nn.Sigmoid, "arch", verify=True)
    t = [t for t in doc.treatments if t["code"] == "G002"]
    assert len(t) == 1 and t[0]["verified"]["result"] == "verified", t
    assert t[0]["verified"]["tried"][0]["symptom"] == "stuck" and "ReLU" in t[0]["verified"]["tried"][0]["fix"]
    assert not any(isinstance(m, nn.Sigmoid) for m in model.modules())
    assert healed > 0.85


# ------------------------------------------------------------------ an output sigmoid pinned under BCELoss
def _cancer():
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    Xtr, Xv, ytr, yv = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    sc = StandardScaler().fit(Xtr)
    f = lambda a: torch.tensor(sc.transform(a), dtype=torch.float32)  # noqa: E731
    return f(Xtr), torch.tensor(ytr, dtype=torch.float32), f(Xv), torch.tensor(yv, dtype=torch.float32)


def _bce(logits: bool, heal, verify: bool = False, bias: float = 40.0, epochs: int = 20):
    """A breast-cancer MLP whose output bias starts at ``bias`` (every output pinned at exactly 1.0 in
    float32): with nn.Sigmoid + nn.BCELoss no gradient passes the pinned outputs, and the run sits at
    100 × the share of negatives; its twin is the same model under BCEWithLogitsLoss."""
    torch.manual_seed(0)
    Xtr, ytr, Xv, yv = _cancer()
    layers = [nn.Linear(30, 32), nn.ReLU(), nn.Linear(32, 1)]
    model = nn.Sequential(*layers) if logits else nn.Sequential(*layers, nn.Sigmoid())
    with torch.no_grad():
        model[2].bias.fill_(bias)
    loss_fn = F.binary_cross_entropy_with_logits if logits else nn.BCELoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    doctor = Doctor(model, opt, heal=heal, live=False, verify=verify,
                    loss_fn=(lambda o, t: loss_fn(o.squeeze(1), t)) if verify else None) if heal else None
    g = torch.Generator().manual_seed(0)
    for _epoch in range(epochs):
        for idx in torch.randperm(len(Xtr), generator=g).split(32):
            opt.zero_grad()
            loss = loss_fn(model(Xtr[idx]).squeeze(1), ytr[idx])
            loss.backward()
            opt.step()
            if doctor is not None:
                doctor.step(loss, inputs=Xtr[idx], targets=ytr[idx]) if verify else doctor.step(loss)
    with torch.no_grad():
        out = model(Xv).squeeze(1)
        acc = float(((out > 0) if logits else (out > 0.5)).float().eq(yv).float().mean())
    if doctor is not None:
        doctor.close()
    return acc, doctor, model


def test_a_pinned_output_sigmoid_under_bceloss_gets_bcewithlogits_gradient_and_recovers():
    twin_acc, _, _ = _bce(logits=True, heal=False)
    sick_acc, _, _ = _bce(logits=False, heal=False)
    healed_acc, doctor, model = _bce(logits=False, heal="arch")
    assert twin_acc > 0.9 and sick_acc < 0.7  # the fault hurts: the model never leaves "all positive"
    t = [x for x in doctor.treatments if x["code"] == "M002"]
    assert len(t) == 1 and t[0]["cause"] == "numerically-unstable-loss"
    assert t[0]["changes"] == {"module 3": ["Sigmoid", "SaturationSafeSigmoid"]}
    assert type(model[3]).__name__ == "SaturationSafeSigmoid"
    assert healed_acc >= 0.95 * twin_acc, (healed_acc, twin_acc)


def test_verify_replays_the_pinned_sigmoid_repair_before_it_is_applied():
    twin_acc, _, _ = _bce(logits=True, heal=False)
    acc, doctor, _ = _bce(logits=False, heal="arch", verify=True)
    t = [x for x in doctor.treatments if x["code"] == "M002"]
    assert len(t) == 1 and t[0]["verified"]["result"] == "verified", t
    tried = t[0]["verified"]["tried"][0]
    assert tried["symptom"] == "stuck" and tried["treated"][1] < tried["control"][1]
    assert acc >= 0.95 * twin_acc


def test_the_safe_sigmoid_gives_bcewithlogits_gradient_and_the_same_outputs():
    from traindoctor.heal.treatments import SaturationSafeSigmoid

    z = torch.tensor([50.0, -50.0, -30.0, 20.0, 3.0, -3.0], requires_grad=True)
    y = torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0, 1.0])
    p = SaturationSafeSigmoid()(z)
    assert torch.equal(p, torch.sigmoid(z.detach()))
    (g,) = torch.autograd.grad(F.binary_cross_entropy(p, y, reduction="sum"), z)
    assert torch.allclose(g, torch.sigmoid(z.detach()) - y, atol=1e-6)
    (g0,) = torch.autograd.grad(F.binary_cross_entropy(torch.sigmoid(z), y, reduction="sum"), z)
    assert g0[:2].abs().max() < 1e-6 and abs(g0[2]) < 0.1  # nn.Sigmoid: (almost) none through the pinned outputs


def test_a_confident_sigmoid_that_is_right_is_left_alone():
    """Outputs pinned at 0/1 because the model is sure and right (loss far under ln 2): no treatment.
    (Long enough that most outputs are pinned: without the loss's guard the repair is made at step 2500.)"""
    acc, doctor, model = _bce(logits=False, heal="arch", bias=0.0, epochs=200)
    Xtr = _cancer()[0]
    with torch.no_grad():
        p = model(Xtr).squeeze(1)
    assert acc > 0.9 and float(((p * (1 - p)) < 1e-12).float().mean()) >= 0.5  # pinned, and right
    assert not [x for x in doctor.treatments if x["code"] == "M002"]
    assert type(model[3]) is nn.Sigmoid
