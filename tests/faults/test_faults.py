"""Injected faults on real tiny runs: the symptom code, where it happened, and the top cause."""
from __future__ import annotations

import math

import numpy as np
import pytest

from traindoctor.diagnosis import diagnose
from traindoctor.examples import script_path
from traindoctor.store import load_store


def test_watched_loss_is_exactly_what_the_script_computed(watched):
    w = watched("healthy")
    s = w.result.run.get("loss")
    assert s is not None and len(s) == len(w.losses)
    np.testing.assert_array_equal(s.values, np.array(w.losses))
    np.testing.assert_array_equal(s.steps, np.arange(len(w.losses)))


def test_lr_far_too_high_nan(watched):
    w = watched("lr-too-high")
    first = w.first_nonfinite_step()
    assert first is not None
    f = w.codes
    assert f["L001"].step == first  # exact: the loss is read every step
    assert "L002" in f and f["L002"].step < first  # it climbed before it broke
    assert w.top_cause == "lr-too-high"
    assert "L001 nonfinite-loss" in w.stderr  # printed live, before the end
    fix = w.result.diagnosis.causes[0].fixes[0]
    assert "→" in fix  # concrete new value from the run's own LR


def test_lr_too_high_oscillation(watched):
    w = watched("lr-oscillation")
    assert all(math.isfinite(v) for v in w.losses)
    f = w.codes
    assert "L004" in f and f["L004"].step == 0
    assert "L001" not in f
    assert w.top_cause == "lr-too-high"


def test_lr_too_low_no_progress(watched):
    w = watched("lr-too-low")
    f = w.codes
    assert "L005" in f and f["L005"].step == 0
    assert f["L005"].evidence["median_update_ratio"] < 1e-5
    assert w.top_cause == "lr-too-low"


def test_double_softmax(watched):
    w = watched("double-softmax")
    f = w.codes
    assert "M001" in f and f["M001"].evidence["module"] is not None
    assert w.top_cause == "double-softmax"
    # the line that built the softmax, from the traced first step
    src = script_path("double-softmax").read_text().splitlines()
    line = next(i + 1 for i, t in enumerate(src) if t.strip().startswith("model =") and "nn.Softmax" in t)
    assert f["M001"].evidence["where"].endswith(f"double_softmax.py:{line}")


def test_sigmoid_bce_saturates_at_100(watched):
    w = watched("bce-saturation")
    f = w.codes
    assert "L008" in f and f["L008"].evidence["clamp"] == 100.0
    assert "M002" in f
    # the script has both faults its docstring names: unscaled inputs (D002, seen in the first
    # batch) saturate the sigmoid, and the unfused sigmoid + BCELoss turns that into the clamp
    assert "D002" in f
    top2 = {c.id for c in w.result.diagnosis.causes[:2]}
    assert top2 == {"numerically-unstable-loss", "unnormalized-input"}


def test_label_out_of_range_crash(watched):
    w = watched("label-out-of-range")
    assert w.result.exit_code == 1  # the script's own failure code is kept
    f = w.codes
    assert "D004" in f and "Target 10" in f["D004"].evidence["message"]
    assert f["D004"].step == len(w.losses)  # the step that crashed
    assert w.top_cause == "label-domain-error"


def test_nan_in_a_few_samples(watched):
    w = watched("nonfinite-data")
    first = w.first_nonfinite_step()
    f = w.codes
    assert f["L001"].step == first
    assert f["D001"].step == first
    ids = f["D001"].evidence["sample_ids"]
    assert ids and set(ids) <= {137, 602, 1111}  # the rows the script corrupted, by dataset index
    assert w.top_cause == "nonfinite-data"


@pytest.mark.parametrize("name", ["healthy", "healthy-noisy-sgd", "healthy-slow", "healthy-spike", "healthy-regression"])
def test_healthy_runs_are_silent(watched, name):
    w = watched(name)
    assert w.result.diagnosis.findings == [], [f.message for f in w.result.diagnosis.findings]
    assert w.result.exit_code == 0
    assert "traindoctor:" not in w.stderr  # no live alarm either


def test_store_diagnoses_the_same_later(watched):
    w = watched("nonfinite-data")
    again = diagnose(load_store(w.result.store_path))
    assert [f.code for f in again.findings] == [f.code for f in w.result.diagnosis.findings]
    assert again.causes[0].id == w.top_cause


def test_exploding_gradients_before_the_nan():
    """Linear regression on unscaled targets with an LR past the stability limit: every step
    overshoots further, so the gradient norm grows geometrically for tens of steps before
    anything overflows. G001 must fire on the growth, before the loss breaks."""
    import io

    import torch
    from torch import nn

    import traindoctor

    torch.manual_seed(0)
    X = torch.randn(256, 8)
    y = X @ torch.randn(8, 1) * 50 + 300.0  # targets around 300, never standardised
    model = nn.Sequential(nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    doctor = traindoctor.Doctor(model, opt, cadence=5, report_file=io.StringIO())
    for _ in range(150):
        idx = torch.randint(0, 256, (32,))
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(X[idx]), y[idx])
        loss.backward()
        opt.step()
        doctor.step(loss)
    doctor.close()
    diag = doctor.diagnose()
    f = {x.code: x for x in diag.findings}
    assert "G001" in f, [x.message for x in diag.findings]
    g = doctor.run_record().get("grad_norm")
    assert f["G001"].evidence["growth"] >= 100
    assert f["G001"].evidence["layer"] in {"0.weight", "0.bias"}
    loss_first_bad = f["L001"].step if "L001" in f else 10**9
    assert f["G001"].step < loss_first_bad  # seen growing before the loss broke
    assert diag.causes[0].id in {"lr-too-high", "exploding-gradient"}
    assert g is not None
