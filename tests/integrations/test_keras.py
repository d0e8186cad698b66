"""Keras 3 on the torch backend: the callback on a small MLP on scikit-learn's digits.

Keras picks its backend once, when it is first imported: here, with ``KERAS_BACKEND=torch`` set for that
import only (the variable is put back as it was, so nothing else in the session, nor any process it starts,
sees it).
"""
from __future__ import annotations

import io
import os
import sys

_had = os.environ.get("KERAS_BACKEND")
if "keras" not in sys.modules:
    os.environ["KERAS_BACKEND"] = "torch"
try:
    import keras
finally:
    if _had is None:
        os.environ.pop("KERAS_BACKEND", None)
    else:
        os.environ["KERAS_BACKEND"] = _had

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from _integration_runs import codes, contained, serious  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import traindoctor  # noqa: E402
from traindoctor.heal import HealPolicy  # noqa: E402
from traindoctor.integrations.keras import DoctorCallback  # noqa: E402
from traindoctor.watch.monitor import Monitor  # noqa: E402

assert keras.backend.backend() == "torch", "keras was imported on another backend before these tests"

STEPS_PER_EPOCH = 44  # 1400 samples in batches of 32


def digits() -> tuple[np.ndarray, ...]:
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    return x[:1400], y[:1400], x[1400:], y[1400:]


def fit(lr: float, epochs: int, callbacks: list, *, nan_from: int | None = None, dropout: float = 0.0,
        **opt) -> tuple[keras.Model, keras.callbacks.History]:
    keras.utils.set_random_seed(0)
    x, y, xv, yv = digits()
    if nan_from is not None:
        x = x.copy()
        x[nan_from:] = np.nan  # every batch from there on holds NaN inputs
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dropout(dropout), keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.Adam(lr, **opt),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    hist = model.fit(x, y, batch_size=32, epochs=epochs, validation_data=(xv, yv), verbose=0, callbacks=callbacks,
                     shuffle=nan_from is None)
    return model, hist


def weights(model: keras.Model) -> list[torch.Tensor]:
    return [v.value.detach().clone() for v in model.weights]


def test_a_healthy_fit_is_healthy_and_fully_measured(tmp_path):
    out = io.StringIO()
    cb = DoctorCallback(report_file=out, store=tmp_path / "run.db")
    _, hist = fit(3e-3, 4, [cb])
    d = cb.diagnosis
    assert serious(d) == [] and d.verdict == "healthy" and not contained(d), serious(d)
    run = cb.doctor.run_record()
    assert len(run.get("loss")) == 4 * STEPS_PER_EPOCH
    # each batch's own loss (Keras's logs hold the epoch's running mean): their mean is the epoch's loss
    assert run.get("loss").values[-STEPS_PER_EPOCH:].mean() == pytest.approx(hist.history["loss"][-1], rel=0.03)
    assert list(run.get("val_loss").values) == pytest.approx(hist.history["val_loss"], rel=1e-5)
    assert list(run.get("val_accuracy").values) == pytest.approx(hist.history["val_accuracy"], rel=1e-5)
    # gradients, updates and the LR, taken around Keras's optimizer, named by the variables' paths
    assert "grad_norm/sequential/dense/kernel" in run.series and "update_ratio/sequential/dense_1/kernel" in run.series
    assert run.get("lr").values[0] == pytest.approx(3e-3)
    meta = run.meta
    assert meta["framework"] == "keras" and meta["optimizer"]["class"] == "Adam" and meta["optimizer"]["eps"] == 1e-7
    assert meta["loss_kind"] == "cross_entropy" and meta["num_classes"] == 10
    assert "traindoctor (keras)" in out.getvalue()
    again = traindoctor.diagnose(traindoctor.load(tmp_path / "run.db"))
    assert again.verdict == "healthy"


def test_learning_rate_far_too_high_is_named_in_keras_terms():
    cb = DoctorCallback(report=False)
    fit(1.0, 2, [cb])
    d = cb.diagnosis
    assert codes(d).get("L002") == "error" or codes(d).get("L001") == "error"
    top = d.causes[0]
    assert top.id == "lr-too-high"
    fixes = " ".join(top.fixes)
    assert "keras.optimizers.Adam(learning_rate=0.1)" in fixes and "global_clipnorm=" in fixes
    assert "clip_grad_norm_" not in fixes and "torch.optim" not in fixes


def test_a_clip_keras_already_applies_is_not_asked_for_again():
    cb = DoctorCallback(report=False)
    fit(1.0, 2, [cb], global_clipnorm=0.5)
    args = cb.doctor.run_record().meta["framework_args"]
    assert args["global_clipnorm"] == 0.5
    top = next(c for c in cb.diagnosis.causes if c.id == "lr-too-high")
    fixes = " ".join(top.fixes)
    assert "already clips the gradient norm at 0.5 (keras.optimizers.Adam(global_clipnorm=0.5))" in fixes


def test_healing_rolls_back_and_lowers_kerass_learning_rate():
    sick = DoctorCallback(report=False)
    fit(1.0, 3, [sick])
    healed = DoctorCallback(heal=True, report=False)
    model, _ = fit(1.0, 3, [healed])
    t = healed.treatments
    assert t and t[0]["cause"] == "lr-too-high" and t[0]["code"] in ("L001", "L002") and t[0]["rolled_back_to"] == 0
    lr = float(model.optimizer.learning_rate)
    assert lr == pytest.approx(t[-1]["changes"]["lr"][1], rel=1e-6) and lr < 0.2
    s, h = sick.doctor.run_record().get("loss").values, healed.doctor.run_record().get("loss").values
    assert h[-20:].mean() < 0.5 < s[-20:].mean()
    assert [x.cause for x in healed.diagnosis.treatments] == [x["cause"] for x in t]


def test_when_healing_gives_up_keras_stops_training():
    """NaN inputs from sample 320 on: the batches are rolled back past (the LR is not the fault) until the
    cap, then healing stops and so does ``fit``."""
    cb = DoctorCallback(heal=True, report=False, heal_policy=HealPolicy(max_skips=2))
    model, hist = fit(3e-3, 3, [cb], nan_from=320)
    t = cb.treatments
    assert [x["cause"] for x in t] == ["nonfinite-data", "nonfinite-data"] and all(not x["changes"] for x in t)
    assert t[0]["quarantined"]  # the poisoned rows, named
    assert cb.diagnosis.heal_stopped is not None and len(hist.history["loss"]) == 1  # stopped in the first epoch
    assert all(np.isfinite(w.numpy()).all() for w in weights(model))  # and the weights are the last good ones


def test_observing_changes_nothing_bit_for_bit():
    bare, _ = fit(3e-3, 2, [], dropout=0.2)
    w0 = weights(bare)
    cb = DoctorCallback(report=False, cadence=5)
    watched, _ = fit(3e-3, 2, [cb], dropout=0.2)
    w1 = weights(watched)
    assert len(w0) == len(w1) and all(torch.equal(a, b) for a, b in zip(w0, w1))
    assert len(cb.doctor.run_record().get("loss")) == 2 * STEPS_PER_EPOCH
    assert "apply" not in vars(watched.optimizer)  # Keras's optimizer is as it was


def test_a_failure_inside_the_doctor_never_stops_the_fit(monkeypatch, capsys):
    def broken(self, loss):
        raise RuntimeError("injected fault")

    monkeypatch.setattr(Monitor, "on_loss", broken)
    cb = DoctorCallback(report=False)
    _, hist = fit(3e-3, 2, [cb])
    assert len(hist.history["loss"]) == 2
    notes = contained(cb.diagnosis)
    assert len(notes) == 1 and "injected fault" in notes[0]
    assert capsys.readouterr().err.count("internal error contained") == 1
