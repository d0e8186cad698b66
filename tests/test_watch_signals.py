"""Facts the live monitor records for rules that have no curve to read, each from a real tiny run.

A checkpoint that loaded nothing (``state_dict_load``) and the frozen layers still at their random
initialisation (``frozen_init``) → M013; an evaluation with dropout/BatchNorm in training mode
(``eval_train_mode``) → V008; gradients never cleared (``stale_grad``) → G008; ReLU/sigmoid/tanh
applied as functions, measured like modules (``dead_frac/relu@train.py:23``) → A001; validation
samples that are also training samples (``data_leakage`` with ``live``) → D006; the loss's dtype at a
non-finite loss and the run's precision (``meta["precision"]``) → L001's precision-overflow.

The scripts are plain PyTorch in tests/faults/scripts/sig_*.py, watched by ``watch_script`` (the
code behind ``traindoctor run``); the Doctor-mode cases train inline. Every value asserted is the
one the run must produce, and the last test checks that none of these hooks changes a bit of the
run they watch.
"""
from __future__ import annotations

import copy
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import traindoctor
from traindoctor.diagnosis import diagnose
from traindoctor.inspect import trace
from traindoctor.watch.launcher import watch_script

SCRIPTS = Path(__file__).parent / "faults" / "scripts"
_cache: dict[tuple, tuple] = {}


def watch(name: str, *args: str):
    """(WatchResult, stderr), one run per arguments."""
    key = (name, *args)
    if key not in _cache:
        err = io.StringIO()
        res = watch_script(SCRIPTS / f"{name}.py", list(args), store="", err=err)
        assert res.exit_code == 0, err.getvalue()
        _cache[key] = (res, err.getvalue())
    return _cache[key]


def line_of(name: str, text: str) -> str:
    """``<script path>:<line>`` of the one line of the script holding ``text``."""
    path = SCRIPTS / f"{name}.py"
    hits = [i for i, ln in enumerate(path.read_text().splitlines(), 1) if text in ln]
    assert len(hits) == 1, hits
    return f"{path}:{hits[0]}"


def events(run, kind: str) -> list:
    return [e for e in run.events if e.kind == kind]


def by_code(diagnosis) -> dict:
    return {f.code: f for f in diagnosis.findings}


# ---------------------------------------------------------------------------- 1–2. checkpoints, M013


def _backbone() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A backbone pretrained for real (300 Adam steps on digits), saved as is and as nn.DataParallel
    saves it (``module.`` before every key)."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        from _common import digits
    finally:
        sys.path.remove(str(SCRIPTS))
    torch.manual_seed(5)
    Xtr, ytr, _, _ = digits()
    bb, head = _backbone(), nn.Linear(32, 10)
    opt = torch.optim.Adam([*bb.parameters(), *head.parameters()], lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        idx = torch.randint(0, len(Xtr), (64,), generator=g)
        opt.zero_grad()
        F.cross_entropy(head(torch.relu(bb(Xtr[idx]))), ytr[idx]).backward()
        opt.step()
    d = tmp_path_factory.mktemp("ckpt")
    state = bb.state_dict()
    torch.save(state, d / "good.pt")
    torch.save({f"module.{k}": v for k, v in state.items()}, d / "prefixed.pt")
    return {"good": d / "good.pt", "prefixed": d / "prefixed.pt"}


def test_a_checkpoint_that_loads_nothing_and_a_frozen_random_backbone(checkpoints):
    res, _ = watch("sig_frozen_backbone", str(checkpoints["prefixed"]))
    (load,) = events(res.run, "state_dict_load")
    keys = ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    assert load.step == 0
    assert load.data == {"module": "backbone", "strict": False, "keys": 6, "loaded": 0, "missing": keys,
                         "unexpected": [f"module.{k}" for k in keys],
                         "where": line_of("sig_frozen_backbone", "model.backbone.load_state_dict("),
                         "before_training": True}
    (frozen,) = events(res.run, "frozen_init")
    assert frozen.data["params"] == ["backbone.0.weight", "backbone.2.weight", "backbone.4.weight"]
    assert frozen.data["count"] == 3 and frozen.data["numel"] == 64 * 64 + 64 * 64 + 32 * 64
    for layer in frozen.data["layers"]:
        assert layer["bound"] == 0.125  # 1/√64: every layer's fan-in is 64
        assert layer["max_abs"] <= 0.125 and abs(layer["std"] - 0.125 / 3 ** 0.5) <= 0.05 * 0.125 / 3 ** 0.5
    f = by_code(diagnose(res.run))
    assert f["M013"].evidence["loaded"] == 0 and f["M013"].evidence["frozen"] == frozen.data["params"]
    assert diagnose(res.run).causes[0].id == "code-bug"


def test_a_checkpoint_that_loads_is_recorded_and_trained_frozen_weights_are_not_default_init(checkpoints):
    res, _ = watch("sig_frozen_backbone", str(checkpoints["good"]), "--strict")
    (load,) = events(res.run, "state_dict_load")
    assert load.data["strict"] is True and load.data["loaded"] == load.data["keys"] == 6
    assert load.data["missing"] == [] and load.data["unexpected"] == []
    assert events(res.run, "frozen_init") == []  # the same backbone, frozen, but holding trained weights
    assert "M013" not in by_code(diagnose(res.run))


def test_load_state_dict_in_doctor_mode_names_the_module_and_a_strict_failure_is_unchanged(checkpoints):
    original = nn.Module.load_state_dict
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("backbone", _backbone())
    model.add_module("head", nn.Linear(32, 10))
    prefixed = torch.load(checkpoints["prefixed"])
    doctor = traindoctor.Doctor(model, live=False)
    assert nn.Module.load_state_dict is not original
    got = model.backbone.load_state_dict(prefixed, strict=False)  # the line recorded
    where = f"{__file__}:{sys._getframe().f_lineno - 1}"
    assert got.missing_keys == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    with pytest.raises(RuntimeError) as watched:
        model.backbone.load_state_dict(prefixed)
    run = doctor.close()
    assert nn.Module.load_state_dict is original  # uninstalled with the last listener
    with pytest.raises(RuntimeError) as bare:
        model.backbone.load_state_dict(prefixed)
    assert str(watched.value) == str(bare.value)  # a strict load raises as it would without the doctor
    (load,) = events(run, "state_dict_load")  # the failed strict load is not recorded
    assert load.data["module"] == "backbone" and load.data["loaded"] == 0 and load.data["where"] == where
    assert load.data["before_training"] is True


def test_a_failure_while_recording_a_load_is_contained(monkeypatch, checkpoints):
    from traindoctor.watch.monitor import Monitor

    def broken(self, *a):
        raise ValueError("boom")

    monkeypatch.setattr(Monitor, "_on_state_dict_load", broken)
    model = _backbone()
    doctor = traindoctor.Doctor(model, live=False)
    got = model.load_state_dict(torch.load(checkpoints["good"]))  # loads, and returns what it returns
    model.load_state_dict(torch.load(checkpoints["good"]))
    run = doctor.close()
    assert got.missing_keys == [] and got.unexpected_keys == []
    assert torch.equal(model[4].weight, torch.load(checkpoints["good"])["4.weight"])
    errors = events(run, "doctor_error")
    assert len(errors) == 1 and errors[0].data["part"] == "state-dict" and "boom" in errors[0].data["message"]
    assert events(run, "state_dict_load") == []


# ---------------------------------------------------------------------------- 3. evaluation in train mode, V008


def test_validation_with_dropout_and_batchnorm_training_is_recorded_once():
    res, _ = watch("sig_eval_train_mode")
    (ev,) = events(res.run, "eval_train_mode")
    assert ev.data == {"modules": ["1", "3"], "types": ["BatchNorm1d", "Dropout"],
                       "where": line_of("sig_eval_train_mode", "val = loss_fn(model(Xva), yva)"),
                       "loss": None}  # seen at the evaluation's forward, before any loss function
    val = res.run.get("val_loss")
    assert len(val) == 3 and ev.step == int(val.steps[0]) == 42  # the first evaluation, after 43 steps
    assert "V008" in by_code(diagnose(res.run))
    assert diagnose(res.run).causes[0].id == "batchnorm-misuse"


def test_validation_in_eval_mode_is_not_recorded():
    res, _ = watch("sig_eval_train_mode", "--eval")
    assert events(res.run, "eval_train_mode") == []
    assert len(res.run.get("val_loss")) == 3  # the evaluations were seen
    assert "V008" not in by_code(diagnose(res.run))


# ---------------------------------------------------------------------------- 4. stale gradients, G008


def test_gradients_never_cleared_are_recorded_on_sampled_steps():
    res, _ = watch("sig_stale_grad", "nozero")
    evs = events(res.run, "stale_grad")
    assert [e.step for e in evs] == [50, 100]  # 120 steps, cadence 50
    for e in evs:
        assert e.data == {"count": 4, "of": 4, "params": ["0.weight", "0.bias", "2.weight", "2.bias"],
                          "where": line_of("sig_stale_grad", "loss.backward()")}
    assert "G008" in by_code(diagnose(res.run))
    assert diagnose(res.run).causes[0].id == "code-bug"


@pytest.mark.parametrize("mode", ["keep", "accum"])
def test_cleared_gradients_and_deliberate_accumulation_are_not_stale(mode):
    res, _ = watch("sig_stale_grad", mode)
    assert res.run.meta["optimizer"]["class"] == "SGD" and res.run.get("loss") is not None
    assert events(res.run, "stale_grad") == []
    assert "G008" not in by_code(diagnose(res.run))


def test_accumulation_never_cleared_is_stale():
    """The accumulation loop of the test above without its zero_grad: the check runs there too."""
    res, _ = watch("sig_stale_grad", "accum-nozero")
    evs = events(res.run, "stale_grad")
    assert len(evs) == 2 and all(e.data["count"] == e.data["of"] == 4 for e in evs)
    assert "G008" in by_code(diagnose(res.run))


def _doctor_loop(clear: str, steps: int = 35, micro: int = 1) -> list:
    torch.manual_seed(0)
    X, y = torch.randn(512, 10), torch.randint(0, 3, (512,))
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    doctor = traindoctor.Doctor(model, opt, cadence=10, live=False)
    for s in range(steps):
        if clear == "before":
            opt.zero_grad()
        for k in range(micro):
            i = (s * micro + k) * 16 % 512
            loss = F.cross_entropy(model(X[i:i + 16]), y[i:i + 16]) / micro
            loss.backward()
        opt.step()
        doctor.step(loss)
    return events(doctor.close(), "stale_grad")


def test_stale_gradients_in_doctor_mode():
    evs = _doctor_loop("never")
    assert [e.step for e in evs] == [10, 20, 30]
    assert all(e.data["count"] == 4 and e.data["of"] == 4 for e in evs)
    assert evs[0].data["where"].startswith(f"{__file__}:")
    assert _doctor_loop("before") == []
    assert _doctor_loop("before", micro=4) == []  # accumulation over 4 micro-batches


# ---------------------------------------------------------------------------- 5. functional activations, A001


def test_functional_relus_dead_from_the_start_are_measured():
    res, _ = watch("sig_functional_dead")
    where1 = line_of("sig_functional_dead", "h = F.relu(self.fc1(x))")
    where2 = line_of("sig_functional_dead", "h = self.fc2(h).relu()")
    names = [f"relu@sig_functional_dead.py:{w.rsplit(':', 1)[1]}" for w in (where1, where2)]
    assert res.run.meta["functional_activations"] == [
        {"op": "relu", "where": where1, "count": 1, "name": names[0], "sampled": True},
        {"op": "relu", "where": where2, "count": 1, "name": names[1], "sampled": True},
    ]
    for name in names:
        dead = res.run.get(f"dead_frac/{name}")
        assert dead.values[0] >= 0.9 and dead.steps[0] == 0
        # every unit below zero at every sampled step (bias −5 and no gradient through a dead unit)
        assert list(dead.steps) == [0, 50, 100, 150] and list(dead.values) == [1.0, 1.0, 1.0, 1.0]
        assert list(res.run.get(f"act_absmax/{name}").values) == [0.0, 0.0, 0.0, 0.0]
    a1 = by_code(diagnose(res.run))["A001"]
    assert a1.evidence["module"] in names and a1.evidence["dead_from_start"] is True


def test_functional_relus_measure_what_relu_modules_measure():
    """The same network, weights and steps with F.relu and with nn.ReLU modules: the probe's numbers
    are the module hooks' numbers, at every sampled step."""
    fun, _ = watch("sig_functional_dead", "-1.0")
    mod, _ = watch("sig_functional_dead", "-1.0", "--modules")
    lines = [line_of("sig_functional_dead", t).rsplit(":", 1)[1] for t in ("F.relu(self.fc1", "self.fc2(h).relu()")]
    for line, module in zip(lines, ("act1", "act2")):
        for kind in ("dead_frac", "act_absmax"):
            f, m = fun.run.get(f"{kind}/relu@sig_functional_dead.py:{line}"), mod.run.get(f"{kind}/{module}")
            # (zero-code: the module hooks are armed once the model is known, after the first step; the
            # trace measured the functional ones at step 0 already)
            assert list(f.steps) == [0, 50, 100, 150] and list(m.steps) == [50, 100, 150]
            assert list(f.values[1:]) == pytest.approx(list(m.values), rel=1e-6, abs=0)
    dead = fun.run.get(f"dead_frac/relu@sig_functional_dead.py:{lines[0]}").values
    assert any(0 < v < 1 for v in dead)  # a fraction measured, not a constant


def test_functional_sigmoid_and_tanh_hidden_gate_and_output():
    """A hidden tanh is measured on sampled steps; a sigmoid gate and a sigmoid output only at the
    first step (they saturate by design). The first step's values are the outputs' own."""

    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.mid, self.gate, self.out = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(8, 16), nn.Linear(16, 1)

        def forward(self, x):
            h = torch.tanh(self.fc(x) * 3)  # hidden: read by self.mid
            g = torch.sigmoid(self.gate(x) * 5)  # a gate
            return torch.sigmoid(self.out(self.mid(h) * g))  # the output, into BCELoss

    torch.manual_seed(0)
    X, y = torch.randn(256, 8), (torch.rand(256, 1) > 0.5).float()
    model = Gated()
    first = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    doctor = traindoctor.Doctor(model, opt, cadence=5, live=False)
    for s in range(12):
        opt.zero_grad()
        xb, yb = X[s * 16 % 256:][:16], y[s * 16 % 256:][:16]
        loss = F.binary_cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        doctor.step(loss)
    run = doctor.close()
    src = Path(__file__).read_text().splitlines()
    line = {k: next(i for i, ln in enumerate(src, 1) if t in ln)
            for k, t in (("tanh", "h = torch.tanh(self.fc(x) * 3)"), ("gate", "g = torch.sigmoid(self.gate(x) * 5)"),
                         ("out", "return torch.sigmoid(self.out(self.mid(h) * g))"))}
    base = Path(__file__).name
    info = {(a["op"], a["where"]): a["sampled"] for a in run.meta["functional_activations"]}
    assert info == {("tanh", f"{__file__}:{line['tanh']}"): True, ("sigmoid", f"{__file__}:{line['gate']}"): False,
                    ("sigmoid", f"{__file__}:{line['out']}"): False}
    with torch.no_grad():
        x0 = X[:16]
        h = torch.tanh(first.fc(x0) * 3)
        g = torch.sigmoid(first.gate(x0) * 5)
        o = torch.sigmoid(first.out(first.mid(h) * g))
    tails = {"tanh": float((h.abs() > 0.99).double().mean()), "gate": float(((g < 0.01) | (g > 0.99)).double().mean()),
             "out": float(((o < 0.01) | (o > 0.99)).double().mean())}
    assert 0 < tails["tanh"] < 1 and 0 < tails["gate"] < 1
    for k, op in (("tanh", "tanh"), ("gate", "sigmoid"), ("out", "sigmoid")):
        s = run.get(f"saturated_frac/{op}@{base}:{line[k]}")
        assert s.values[0] == pytest.approx(tails[k], abs=1e-12)
        assert list(s.steps) == ([0, 5, 10] if k == "tanh" else [0])


class _Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 2)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


def test_a_failing_probe_is_contained_and_reported_once(monkeypatch):
    def run(broken: bool):
        torch.manual_seed(0)
        X, y = torch.randn(256, 8), torch.randint(0, 2, (256,))
        model = _Functional()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        doctor = traindoctor.Doctor(model, opt, cadence=5, live=False)
        losses = []
        for s in range(12):
            if s == 1 and broken:  # after the first step's trace: the probe of the sampled steps fails
                monkeypatch.setattr(trace, "act_stats", lambda op, out: 1 / 0)
            opt.zero_grad()
            loss = F.cross_entropy(model(X[s * 16:][:16]), y[s * 16:][:16])
            loss.backward()
            opt.step()
            doctor.step(loss)
            losses.append(loss.item())
        return losses, doctor.close()

    good, _ = run(False)
    losses, rec = run(True)
    assert losses == good  # training unchanged
    errors = events(rec, "doctor_error")
    assert len(errors) == 1 and errors[0].data["part"] == "functional-activations"
    name = next(n for n in rec.series if n.startswith("dead_frac/relu@"))
    assert list(rec.get(name).steps) == [0]  # measured at the first step, then turned off


# ---------------------------------------------------------------------------- 6. live leakage, D006


def test_validation_rows_copied_into_training_are_found_live():
    res, _ = watch("sig_leakage", "--leak")
    (ev,) = events(res.run, "data_leakage")
    d = ev.data
    assert (d["duplicates"], d["val_samples"], d["train_samples"]) == (135, 450, 1482)
    assert d["fraction_of_val"] == 0.3 and d["train_internal_duplicates"] == 0
    assert d["val_ids"] == list(range(50)) and d["train_ids"] == list(range(1347, 1397))  # row r ↔ 1347 + r
    assert d["live"] is True and d["train_source"] == "dataset scan" and d["train_complete"] is True
    assert d["eval_samples_of_training_data"] == 0
    assert ev.step == int(res.run.get("val_loss").steps[0])  # at the first evaluation
    assert "D006" in by_code(diagnose(res.run))
    assert diagnose(res.run).causes[0].id == "data-leakage"


def test_clean_split_gives_no_duplicates():
    res, _ = watch("sig_leakage")
    (ev,) = events(res.run, "data_leakage")
    assert ev.data["duplicates"] == 0 and ev.data["val_samples"] == 450 and ev.data["train_samples"] == 1347
    assert "D006" not in by_code(diagnose(res.run))


def test_an_evaluation_over_the_training_tensor_is_not_validation():
    res, _ = watch("sig_leakage", "--leak", "--train-eval")
    (ev,) = events(res.run, "data_leakage")
    assert ev.data["eval_samples_of_training_data"] == 1482  # model(Xtr) under no_grad: left out
    assert ev.data["duplicates"] == 135 and ev.data["val_samples"] == 450


def test_leakage_from_the_first_batches_when_the_dataset_cannot_be_hashed(tmp_path):
    dump = tmp_path / "perm.json"
    err = io.StringIO()
    res = watch_script(SCRIPTS / "sig_leakage.py", ["--leak", "--by-hand", str(dump)], store="", err=err)
    perm = json.loads(dump.read_text())["perms"][0]
    window = perm[:1024]  # the data window: 32 batches of 32 copies cut by index
    expected = sorted((r - 1347, p) for p, r in enumerate(window) if r >= 1347)
    (ev,) = events(res.run, "data_leakage")
    d = ev.data
    assert d["train_source"] == "first batches" and d["train_samples"] == 1024 and d["train_complete"] is False
    assert d["duplicates"] == len(expected) and d["val_samples"] == 450
    assert sorted(zip(d["val_ids"], d["train_ids"])) == expected[:50]
    assert "D006" in by_code(diagnose(res.run))


# ---------------------------------------------------------------------------- 7. precision, L001


def test_a_float16_loss_that_overflows_names_its_dtype():
    res, _ = watch("sig_half_overflow")
    (ev,) = events(res.run, "nonfinite_loss")
    assert ev.step == 0 and ev.data["dtype"] == "float16" and ev.data["value"] == float("inf")
    assert ev.data["in_loss"] is True  # the model's outputs were finite: the float16 sum overflowed
    assert res.run.meta["precision"] == {"param_dtypes": ["float16"], "autocast": None}
    l1 = by_code(diagnose(res.run))["L001"]
    assert max(l1.causes, key=lambda c: c[1])[0] == "precision-overflow"
    conf = {c.id: c.confidence for c in diagnose(res.run).causes}
    assert conf["precision-overflow"] == max(conf.values())


def test_autocast_is_recorded_at_the_first_training_forward():
    res, _ = watch("sig_half_overflow", "--autocast")
    assert res.run.meta["precision"] == {"param_dtypes": ["float32"], "autocast": "bfloat16"}
    assert events(res.run, "nonfinite_loss") == []


# ---------------------------------------------------------------------------- observing changes nothing

OBSERVED = textwrap.dedent(
    """
    import sys, torch, torch.nn as nn, torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset
    torch.manual_seed(0)
    X = torch.randn(600, 20); y = (X[:, 0] > 0).long() + (X[:, 1] > 0).long()
    Xtr, ytr, Xva, yva = X[:400], y[:400], X[400:], y[400:]
    Xtr, ytr = torch.cat([Xtr, Xva[:50]]), torch.cat([ytr, yva[:50]])  # leaked rows: the hashes are taken


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Linear(20, 32)
            self.fc = nn.Linear(32, 32)
            self.mid = nn.Linear(32, 32)
            self.gate = nn.Linear(20, 32)
            self.bn = nn.BatchNorm1d(32)
            self.drop = nn.Dropout(0.3)
            self.head = nn.Linear(32, 3)

        def forward(self, x):
            h = F.relu(self.stem(x))                      # functional: the probe measures it every step
            h = torch.tanh(self.fc(self.drop(h)))         # hidden tanh: measured too
            h = self.mid(h) * self.gate(x).sigmoid()      # a gate
            return self.head(self.bn(h))


    model = Net()
    state = {f"module.{k}": v.clone() for k, v in Net().stem.state_dict().items()}
    model.stem.load_state_dict(state, strict=False)       # loads nothing: recorded
    model.gate.weight.requires_grad_(False)               # frozen at its initialisation
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    loader = DataLoader(TensorDataset(Xtr, ytr), batch_size=30, shuffle=True)  # global-RNG shuffle
    for epoch in range(4):
        for xb, yb in loader:
            if "--nozero" not in sys.argv:
                opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
        with torch.no_grad():                             # no model.eval(): dropout and BN in train mode
            val = F.cross_entropy(model(Xva), yva)
        print(f"epoch {epoch} loss {loss.item():.6f} val {val.item():.6f}")
    torch.save({"state": model.state_dict(), "rng": torch.get_rng_state()}, sys.argv[1])
    """
)


def test_bitwise_identical_with_every_new_hook_active(tmp_path):
    """The load_state_dict wrapper, the frozen-layer check, the evaluation capture (eval mode, validation
    hashing), the stale-gradient check and the functional-activation probe, at cadence 1 (all of them
    every step): final parameters, buffers and RNG bitwise the same as without the doctor."""
    import runpy

    script = tmp_path / "observed.py"
    script.write_text(OBSERVED)
    lines = OBSERVED.splitlines()
    relu_line = next(i for i, ln in enumerate(lines, 1) if "F.relu(self.stem(x))" in ln)
    tanh_line = next(i for i, ln in enumerate(lines, 1) if "torch.tanh(self.fc(" in ln)

    def state(path: Path):
        d = torch.load(path)
        return {k: v.numpy().tobytes() for k, v in d["state"].items()}, d["rng"].numpy().tobytes()

    def bare(out: Path, extra: list[str]) -> None:
        argv = sys.argv
        sys.argv = [str(script), str(out), *extra]
        try:
            runpy.run_path(str(script), run_name="__main__")
        finally:
            sys.argv = argv

    for extra in ([], ["--nozero"]):
        bare(tmp_path / "bare.pt", extra)
        err = io.StringIO()
        res = watch_script(script, [str(tmp_path / "watched.pt"), *extra], store="", cadence=1, err=err)
        assert res.exit_code == 0, err.getvalue()
        assert state(tmp_path / "bare.pt") == state(tmp_path / "watched.pt")
        run = res.run
        assert not events(run, "doctor_error"), events(run, "doctor_error")
        kinds = {e.kind for e in run.events}
        assert {"state_dict_load", "frozen_init", "eval_train_mode", "data_leakage"} <= kinds
        assert ("stale_grad" in kinds) == bool(extra)
        assert len(run.get(f"dead_frac/relu@observed.py:{relu_line}")) == len(run.get("loss"))  # every step
        assert len(run.get(f"saturated_frac/tanh@observed.py:{tanh_line}")) == len(run.get("loss"))
        assert events(run, "data_leakage")[0].data["duplicates"] == 50
    # and the script's output is untouched through the launcher too
    bare = subprocess.run([sys.executable, str(script), str(tmp_path / "b.pt")], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    watched = subprocess.run([sys.executable, "-m", "traindoctor", "run", "--no-store", "--cadence", "1", str(script),
                              str(tmp_path / "w.pt")], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert watched.returncode == 0, watched.stderr
    assert bare.stdout == watched.stdout
    assert state(tmp_path / "b.pt") == state(tmp_path / "w.pt")
    assert "M013" in watched.stderr and "V008" in watched.stderr and "D006" in watched.stderr


def test_a_validation_computed_by_hand_is_checked_for_train_mode_and_leakage():
    """No loss function at evaluation: the no-grad forward of the model is the evaluation."""
    res = watch_script(SCRIPTS / "sig_manual_eval.py", [], store="", err=io.StringIO())
    mode = res.run.events_of("eval_train_mode")
    assert len(mode) == 1 and mode[0].data["types"] == ["Dropout"] and mode[0].data["loss"] is None
    leak = res.run.events_of("data_leakage")
    assert len(leak) == 1 and leak[0].data["duplicates"] == 150 and leak[0].data["val_samples"] == 450
    codes = {f.code for f in res.diagnosis.findings}
    assert {"V008", "D006"} <= codes
