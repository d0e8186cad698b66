"""Healing read from the evidence a run already records: the LR series (a schedule that raised the LR),
the loss against the loss before any update (a climb too gradual for the recent reference), the
GradScaler's scale and BatchNorm's statistics under poisoned batches, and the loader's sample ids only
when they are the batch's. Real tiny runs, each against its healthy twin."""
from __future__ import annotations

import io
import re
import textwrap

import torch
from _heal_runs import accuracy, digits, mlp, quiet_doctor
from torch import nn

from traindoctor.heal.treatments import sample_ids
from traindoctor.watch.launcher import watch_script


def _spike_run(heal: bool | None, mult: float, steps: int = 500, seed: int = 0):
    """Digits MLP, SGD + momentum with clipping at 1.0 (no NaN), and a hand-written schedule that
    multiplies the LR by ``mult`` for steps 250–350."""
    x, y = digits()
    n = 1400
    model = mlp(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: mult if 250 <= s < 350 else 1.0)
    doctor = quiet_doctor(model, opt, heal=heal, scheduler=sched) if heal is not None else None
    g = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, n, (64,), generator=g)
        opt.zero_grad()
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if doctor is not None:
            doctor.step(loss, inputs=x[idx])
        losses.append(float(loss))
    if doctor is not None:
        doctor.close()
    with torch.no_grad():
        held_out = float(loss_fn(model(x[n:]), y[n:]))
    return {"doctor": doctor, "acc": accuracy(model, x[n:], y[n:]), "val_loss": held_out, "losses": losses,
            "lr": opt.param_groups[0]["lr"]}


def test_a_schedule_that_raises_the_lr_is_held_at_its_level_before_the_raise():
    twin = _spike_run(None, mult=1.0)
    sick = _spike_run(None, mult=200.0)
    healed = _spike_run(True, mult=200.0)
    assert sick["val_loss"] > 1.5 * twin["val_loss"]  # the spike hurts, even after the schedule comes back
    t = healed["doctor"].treatments
    assert t and t[0]["cause"] == "lr-too-high" and t[0]["code"] in ("L002", "L003")
    assert 250 <= t[0]["step"] < 350  # while the LR is raised
    assert t[0]["changes"]["lr_cap"] == [None, 0.05]  # the LR before the raise
    assert t[0]["rolled_back_to"] is not None and t[0]["rolled_back_to"] <= 250  # the last state before it
    assert healed["lr"] == 0.05  # the schedule's own LR is untouched: the cap acts inside each step
    # margin: the twin's held-out loss × 1.25 (the healed run lost the steps it rolled back)
    assert healed["val_loss"] <= 1.25 * twin["val_loss"], (healed["val_loss"], twin["val_loss"])
    assert healed["acc"] >= twin["acc"] - 0.02


def test_a_converged_loss_jumping_on_batch_noise_is_not_a_divergence():
    """A loss that fell from 2.3 to 1e-3 and has one batch at 0.05 (fifty times every recent one): noise
    near convergence, not a blow-up (L002's own guard: it must climb back to half the first loss)."""
    falling = [2.3 * 0.9 ** i for i in range(75)]  # 2.3 → 0.001
    assert _scripted_losses(falling + [0.001] * 30 + [0.05] + [0.001] * 10) == []
    # the same jump from a loss still at half its start is one
    t = _scripted_losses([2.3] * 5 + [1.2] * 25 + [13.0])
    assert t and t[0]["code"] == "L002" and t[0]["step"] == 30


def test_a_gradual_climb_past_ten_times_the_first_loss_is_a_divergence():
    """The loss rises a little at each step (never ten times the recent worst), to ten times the loss
    before any update: L002, treated as lr-too-high."""
    torch.manual_seed(0)
    w = nn.Parameter(torch.zeros(4))
    opt = torch.optim.SGD([w], lr=0.1)
    doctor = quiet_doctor(nn.Linear(1, 1), opt, heal=True)
    for i in range(60):
        opt.zero_grad()
        loss = (w * 0).sum() + 1.0 * 1.1 ** i  # 1.0 at step 0, ×1.1 per step
        loss.backward()
        opt.step()
        doctor.step(loss)
    doctor.close()
    first = doctor.treatments[0]
    assert first["code"] == "L002" and first["cause"] == "lr-too-high"
    assert 1.1 ** first["step"] > 10 > 1.1 ** (first["step"] - 1)  # the first step past ten times the start


def test_sample_ids_name_rows_only_when_they_are_the_batch():
    batch = torch.zeros(4, 3)
    assert sample_ids([1, 3], [10, 11, 12, 13], batch) == [11, 13]
    assert sample_ids([1, 3], [10, 11], batch) == [1, 3]  # ids left from another loader: positions
    assert sample_ids([1], None, (batch,)) == [1]


AMP_AUTOENCODER = textwrap.dedent('''
    import sys
    import torch
    from sklearn.datasets import load_digits
    from sklearn.preprocessing import StandardScaler
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    X = torch.tensor(StandardScaler().fit_transform(load_digits().data), dtype=torch.float32)
    Xtr, Xv = X[:1400].clone(), X[1400:]
    if sys.argv[1] == "poisoned":
        Xtr[[7, 300, 901], 3] = float("nan")  # inputs and targets: an autoencoder
    loader = DataLoader(TensorDataset(Xtr, Xtr), batch_size=32, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8), nn.Linear(8, 32), nn.ReLU(),
                          nn.Linear(32, 64))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu")
    for epoch in range(12):
        for xb, yb in loader:
            with torch.autocast("cpu", dtype=torch.float16):
                loss = nn.functional.mse_loss(model(xb), yb)
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    with torch.no_grad():
        print("val_loss", float(nn.functional.mse_loss(model(Xv), Xv)), "scale", scaler.get_scale())
''')


def _val_scale(out: str) -> tuple[float, float]:
    m = re.findall(r"val_loss ([0-9.e+-]+|nan) scale ([0-9.e+-]+)", out)
    assert m, out[-2000:]
    return float(m[-1][0]), float(m[-1][1])


def test_skipped_poisoned_batches_do_not_halve_the_grad_scale_to_nothing(tmp_path, capsys):
    """The GradScaler skips each poisoned step itself and halves its scale: three poisoned samples an
    epoch take it from 65536 towards 0 and learning stops. Healing skips the batch and gives the scale
    of the last healthy step back."""
    script = tmp_path / "ae.py"
    script.write_text(AMP_AUTOENCODER)
    watch_script(script, ["clean"], store="", err=io.StringIO())
    twin_loss, twin_scale = _val_scale(capsys.readouterr().out)
    watch_script(script, ["poisoned"], store="", err=io.StringIO())
    sick_loss, sick_scale = _val_scale(capsys.readouterr().out)
    res = watch_script(script, ["poisoned"], store="", heal=True, err=io.StringIO())
    loss, scale = _val_scale(capsys.readouterr().out)
    assert sick_scale < 1e-3 * twin_scale and sick_loss > 1.2 * twin_loss  # untreated: the scale collapsed
    assert res.exit_code == 0 and res.diagnosis.heal_stopped is None
    assert {i for t in res.diagnosis.treatments for i in t.quarantined} == {7, 300, 901}
    assert scale >= 1e-3 * twin_scale
    assert loss <= 1.1 * twin_loss, (loss, twin_loss)  # margin: 10 % of the twin's validation loss


BN_FIRST_BATCH = textwrap.dedent('''
    import sys
    import torch
    from sklearn.datasets import load_digits
    from sklearn.preprocessing import StandardScaler
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    d = load_digits()
    X = torch.tensor(StandardScaler().fit_transform(d.data), dtype=torch.float32)
    y = torch.tensor(d.target)
    Xtr, ytr, Xv, yv = X[:1400].clone(), y[:1400], X[1400:], y[1400:]
    if sys.argv[1] == "poisoned":
        Xtr[[0, 700], 5] = float("nan")  # row 0: in the very first batch
    loader = DataLoader(TensorDataset(Xtr, ytr), batch_size=64)
    model = nn.Sequential(nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for epoch in range(4):
        for xb, yb in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        print("val_acc", float((model(Xv).argmax(1) == yv).float().mean()))
''')


def test_a_poisoned_first_batch_does_not_leave_nan_in_batchnorm(tmp_path, capsys):
    """Zero-code healing starts at the first optimizer step, after the first forward has written NaN
    into BatchNorm's running statistics: they start again from BatchNorm's initial ones, so the first
    snapshot is clean and the poisoned batches are skipped without a roll-back."""
    script = tmp_path / "bn.py"
    script.write_text(BN_FIRST_BATCH)
    watch_script(script, ["clean"], store="", err=io.StringIO())
    twin = float(re.findall(r"val_acc ([0-9.]+|nan)", capsys.readouterr().out)[-1])
    res = watch_script(script, ["poisoned"], store="", heal=True, err=io.StringIO())
    acc = float(re.findall(r"val_acc ([0-9.]+|nan)", capsys.readouterr().out)[-1])
    skips = [t for t in res.diagnosis.treatments if t.cause == "nonfinite-data"]
    assert skips and skips[0].step == 0
    assert all(t.rolled_back_to is None for t in skips)  # nothing to roll back: the model stayed finite
    assert acc >= twin - 0.02, (acc, twin)


def _circles_run(heal: bool | None, lr: float, steps: int = 600, seed: int = 0):
    """Two circles (generated), a ReLU MLP, SGD + momentum with the gradient clipped at 1.0: no loss ever
    goes NaN, and at lr=5 the first updates are as large as the weights and the network sits at chance."""
    from sklearn.datasets import make_circles

    X, y = make_circles(n_samples=1200, noise=0.1, factor=0.5, random_state=0)
    X, y = torch.tensor(X, dtype=torch.float32), torch.tensor(y)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    doctor = quiet_doctor(model, opt, heal=heal) if heal is not None else None
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, 1000, (64,), generator=g)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(X[idx]), y[idx])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if doctor is not None:
            doctor.step(loss, inputs=X[idx])
        losses.append(float(loss))
    if doctor is not None:
        doctor.close()
    with torch.no_grad():
        acc = float((model(X[1000:]).argmax(1) == y[1000:]).float().mean())
    return {"doctor": doctor, "acc": acc, "losses": losses, "lr": opt.param_groups[0]["lr"]}


def test_updates_the_size_of_the_weights_get_the_lr_lowered_by_the_measured_dose():
    twin = _circles_run(None, lr=0.1)
    sick = _circles_run(None, lr=5.0)
    healed = _circles_run(True, lr=5.0)
    assert twin["acc"] > 0.95 and sick["acc"] < 0.6  # the fault hurts: the run sits at chance
    assert max(sick["losses"]) < 10 * sick["losses"][0]  # ... without a blow-up for L002 to see
    t = healed["doctor"].treatments
    assert t and t[0]["code"] == "G004" and t[0]["cause"] == "lr-too-high" and t[0]["step"] < 5
    assert t[0]["rolled_back_to"] == 0  # the state before the first big update
    old, new = t[0]["changes"]["lr"]
    assert 0.01 * old <= new <= 0.1 * old  # the dose: ratio_target / measured ratio, within [×0.01, ×0.1]
    assert healed["acc"] >= twin["acc"] - 0.02, (healed["acc"], twin["acc"])


def test_an_adaptive_optimizers_large_first_step_alone_is_not_treated():
    """RMSprop's first step moves small weights by several times their norm (its square average starts
    at 0.01 g²) in runs that train well: that step alone is not G004's evidence."""
    x, y = digits()
    model = mlp(0)
    opt = torch.optim.RMSprop(model.parameters(), lr=0.01)
    doctor = quiet_doctor(model, opt, heal=True)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        idx = torch.randint(0, 1400, (64,), generator=g)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        doctor.step(loss, inputs=x[idx])
    doctor.close()
    assert not [t for t in doctor.treatments if t["code"] == "G004"], doctor.treatments
    assert accuracy(model, x[1400:], y[1400:]) > 0.9


def _scripted_losses(values: list[float]):
    """A Doctor fed these loss values, one a step (a parameter that the loss does not move)."""
    w = nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([w], lr=0.1)
    doctor = quiet_doctor(nn.Linear(1, 1), opt, heal=True)
    for v in values:
        opt.zero_grad()
        loss = (w * 0).sum() + v
        loss.backward()
        opt.step()
        doctor.step(loss)
    doctor.close()
    return doctor.treatments


def test_a_loss_at_the_float32_clamp_is_pinned_only_three_steps_in_a_row():
    # a summed BCE loss passing through 103.28 (−ln of float32's smallest subnormal) by chance
    assert _scripted_losses([112.3, 110.9, 108.8, 103.281, 103.0, 101.5, 100.8]) == []
    # a summed loss of ~50 whose batch saturates: pinned at −ln FLT_MIN (not ten times anything before)
    t = _scripted_losses([50.0, 49.0, 48.0, 87.3365, 87.3365, 87.3365, 87.3365])
    assert t and t[0]["code"] == "L008" and t[0]["step"] == 5


def _adam_run(heal: bool | None, lr: float, steps: int = 400, seed: int = 0):
    """Digits through three ReLU layers of 64, Adam."""
    x, y = digits()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    doctor = quiet_doctor(model, opt, heal=heal) if heal is not None else None
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, 1400, (64,), generator=g)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        if doctor is not None:
            doctor.step(loss, inputs=x[idx])
    if doctor is not None:
        doctor.close()
    return {"doctor": doctor, "acc": accuracy(model, x[1400:], y[1400:]), "lr": opt.param_groups[0]["lr"]}


def test_an_early_blow_up_gets_the_dose_its_first_update_measured():
    """Adam at lr=3 on a three-layer ReLU MLP: the first update moves each weight by about lr, tens of
    times the weights' own size. ×0.1 would leave it at lr=0.3, still far too high; the first update's
    ratio says by how much: the LR comes down until that first step would move the weights by at
    most a tenth of their norm."""
    twin = _adam_run(None, lr=1e-3)
    sick = _adam_run(None, lr=3.0)
    healed = _adam_run(True, lr=3.0)
    assert sick["acc"] < twin["acc"] - 0.3  # the fault hurts
    t = healed["doctor"].treatments
    assert t and t[0]["cause"] == "lr-too-high" and t[0]["code"] in ("L001", "L002") and t[0]["step"] <= 5
    old, new = t[0]["changes"]["lr"]
    assert new < 0.1 * old  # more than the default ×0.1
    assert healed["acc"] >= twin["acc"] - 0.03, (healed["acc"], twin["acc"], t)


SKIPPED_AMP = textwrap.dedent('''
    import sys
    import torch
    from sklearn.datasets import load_digits
    from sklearn.preprocessing import StandardScaler
    from torch import nn

    torch.manual_seed(0)
    d = load_digits()
    X = torch.tensor(StandardScaler().fit_transform(d.data), dtype=torch.float32)
    y = torch.tensor(d.target)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adagrad(model.parameters(), lr=float(sys.argv[1]))
    scaler = torch.amp.GradScaler("cpu")
    g = torch.Generator().manual_seed(0)
    for step in range(400):
        idx = torch.randint(0, 1400, (64,), generator=g)
        with torch.autocast("cpu", dtype=torch.float16):
            loss = nn.functional.cross_entropy(model(X[idx]), y[idx])
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    with torch.no_grad():
        print("val_acc", float((model(X[1400:]).argmax(1) == y[1400:]).float().mean()))
''')


def test_steps_a_grad_scaler_skips_are_judged_too(tmp_path, capsys):
    """Adagrad at lr=172 under float16 autocast: after the first update every loss is NaN and the
    GradScaler skips every step, so the optimizer never steps again: without judging the skipped steps
    healing would never run. Each skipped step is a step (its loss its own), judged as one whose update
    was dropped."""
    script = tmp_path / "amp.py"
    script.write_text(SKIPPED_AMP)
    watch_script(script, ["0.05"], store="", err=io.StringIO())
    twin = float(re.findall(r"val_acc ([0-9.]+|nan)", capsys.readouterr().out)[-1])
    sick_res = watch_script(script, ["172"], store="", err=io.StringIO())
    sick = float(re.findall(r"val_acc ([0-9.]+|nan)", capsys.readouterr().out)[-1])
    res = watch_script(script, ["172"], store="", heal=True, err=io.StringIO())
    acc = float(re.findall(r"val_acc ([0-9.]+|nan)", capsys.readouterr().out)[-1])
    assert twin > 0.9 and sick < 0.3
    loss = sick_res.run.get("loss")
    assert loss is not None and len(loss) >= 350  # every skipped step recorded as its own step
    assert res.exit_code == 0 and res.diagnosis.treatments and res.diagnosis.heal_stopped is None
    assert res.diagnosis.treatments[0].step <= 2
    assert acc >= twin - 0.03, (acc, twin, [(t.step, t.code, t.action) for t in res.diagnosis.treatments])


FINETUNE = textwrap.dedent('''
    import sys
    import torch
    from sklearn.datasets import load_digits
    from sklearn.preprocessing import StandardScaler
    from torch import nn

    d = load_digits()
    X = torch.tensor(StandardScaler().fit_transform(d.data), dtype=torch.float32)
    y = torch.tensor(d.target)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    model.load_state_dict(torch.load(sys.argv[2]))  # pretrained on the first 700 samples
    opt = torch.optim.AdamW(model.parameters(), lr=float(sys.argv[1]), weight_decay=0.01)
    g = torch.Generator().manual_seed(0)
    for step in range(150):
        idx = torch.randint(700, 1400, (32,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
        opt.step()
    with torch.no_grad():
        print("val_acc", float((model(X[1400:]).argmax(1) == y[1400:]).float().mean()))
''')


def test_a_fine_tune_that_wipes_out_its_pretrained_weights_is_stopped_at_its_first_steps(tmp_path, capsys):
    """Weights loaded before training: a first update as large as them is not an adaptive optimizer's
    harmless first step but the loss of what was loaded. AdamW at lr=2 moves every weight by ~2 at
    the first step; the healer rolls back to the loaded weights and lowers the LR for a fine-tune."""
    x, y = digits()
    torch.manual_seed(0)
    pre = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(pre.parameters(), lr=1e-3)
    for i in range(300):
        idx = torch.arange(700)[(torch.arange(64) + 64 * i) % 700]
        opt.zero_grad()
        nn.functional.cross_entropy(pre(x[idx]), y[idx]).backward()
        opt.step()
    ckpt = tmp_path / "pre.pt"
    torch.save(pre.state_dict(), ckpt)
    script = tmp_path / "ft.py"
    script.write_text(FINETUNE)

    def acc(out: str) -> float:
        return float(re.findall(r"val_acc ([0-9.]+|nan)", out)[-1])

    watch_script(script, ["1e-3", str(ckpt)], store="", err=io.StringIO())
    twin = acc(capsys.readouterr().out)
    watch_script(script, ["2", str(ckpt)], store="", err=io.StringIO())
    sick = acc(capsys.readouterr().out)
    res = watch_script(script, ["2", str(ckpt)], store="", heal=True, err=io.StringIO())
    healed = acc(capsys.readouterr().out)
    assert twin > 0.85 and sick < twin - 0.1, (twin, sick)
    t = res.diagnosis.treatments
    assert t and t[0].cause == "lr-too-high" and t[0].step <= 2 and t[0].rolled_back_to == 0
    assert healed >= twin - 0.03, (healed, twin, [(x.step, x.code, x.action) for x in t])


def _moons_run(heal: bool, lr: float, seed: int = 4, policy=None):
    from sklearn.datasets import make_moons

    torch.manual_seed(seed)
    X, y = make_moons(n_samples=1600, noise=0.25, random_state=seed)
    X = torch.tensor((X - X.mean(0)) / X.std(0), dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.float32)
    model = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True)
    doctor = quiet_doctor(model, opt, heal=heal, heal_policy=policy) if heal else None
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        idx = torch.randint(0, 1200, (16,), generator=g)
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(model(X[idx]).squeeze(1), y[idx])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if doctor is not None:
            doctor.step(loss, inputs=X[idx])
    if doctor is not None:
        doctor.close()
    with torch.no_grad():
        acc = float(((model(X[1200:]).squeeze(1) > 0).float() == y[1200:]).float().mean())
    return {"doctor": doctor, "acc": acc}


def test_a_loss_back_at_chance_after_learning_is_a_collapse():
    """Two moons, SGD + Nesterov at lr=1.48 with the gradient clipped: the loss falls, then the model
    forgets everything and the loss sits at ln 2. With the update-size and blow-up triggers switched off
    (so only this one can act), the collapse is seen (L007), the run goes back to a state from before it
    and its LR comes down once."""
    from traindoctor.heal import HealPolicy

    only_collapse = HealPolicy(ratio_big=1e9, ratio_high=1e9, diverge_ratio=1e9)
    twin = _moons_run(False, lr=0.05)
    sick = _moons_run(False, lr=1.48)
    healed = _moons_run(True, lr=1.48, policy=only_collapse)
    assert twin["acc"] > 0.9 and sick["acc"] < 0.6
    t = healed["doctor"].treatments
    assert [x["code"] for x in t] == ["L007"] and t[0]["cause"] == "lr-too-high"
    assert t[0]["rolled_back_to"] is not None and t[0]["rolled_back_to"] < t[0]["step"]
    assert healed["acc"] >= twin["acc"] - 0.03, (healed["acc"], twin["acc"])


def test_a_warm_restart_back_to_the_runs_own_lr_is_not_a_spike():
    """CosineAnnealingWarmRestarts takes the LR from ~0 back to its base: ten thousand times up, but to
    a level the run already trained at, and a converged loss doubling after it is normal. No cap."""
    x, y = digits()
    model = mlp(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=50)
    doctor = quiet_doctor(model, opt, heal=True, scheduler=sched)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        idx = torch.randint(0, 1400, (64,), generator=g)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        sched.step()
        doctor.step(loss, inputs=x[idx])
    doctor.close()
    assert not [t for t in doctor.treatments if "lr_cap" in t["changes"]], doctor.treatments
