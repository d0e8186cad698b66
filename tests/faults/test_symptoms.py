"""Every symptom of families L, G, A and V on a real tiny faulty run, watched with zero code change.

Each script in tests/faults/scripts/ is plain PyTorch written the way people write it, with one
fault. The test asserts the code, where it happened (step, module or parameter), and the top
cause. The healthy suite below asserts silence: a false alarm is a bug.
"""
from __future__ import annotations

import io
from pathlib import Path

import pytest

from traindoctor.watch.launcher import watch_script

SCRIPTS = Path(__file__).parent / "scripts"
_cache: dict[str, object] = {}


def watch(name: str):
    if name not in _cache:
        _cache[name] = watch_script(SCRIPTS / f"{name}.py", [], store="", err=io.StringIO())
    return _cache[name]


def findings(name: str) -> dict:
    return {f.code: f for f in watch(name).diagnosis.findings}


def top(name: str) -> str:
    return watch(name).diagnosis.causes[0].id


def test_g002_vanishing_through_ten_sigmoids():
    f = findings("deep_sigmoid")
    assert f["G002"].evidence["first_layer"] == "0.weight" and f["G002"].evidence["rms_ratio"] < 1e-3
    assert top("deep_sigmoid") == "vanishing-gradient"


def test_g003_nan_gradient_with_a_finite_loss():
    f = findings("sqrt_at_zero")
    assert f["G003"].step == 0 and f["L001"].step == 1  # the gradient broke a step before the loss
    assert "0.weight" in f["G003"].evidence["parameters"]
    assert top("sqrt_at_zero") == "numerically-unstable-loss"


def test_g004_a002_lr_far_too_high_on_tanh():
    from traindoctor.examples import script_path

    r = watch_script(script_path("lr-oscillation"), [], store="", err=io.StringIO())
    f = {x.code: x for x in r.diagnosis.findings}
    assert f["G004"].evidence["median_ratio"] > 3e-2
    assert f["A002"].evidence["module"] == "1"  # the Tanh
    assert r.diagnosis.causes[0].id == "lr-too-high"


def test_g005_v006_lr_too_low(watched):
    w = watched("lr-too-low")
    assert w.codes["G005"].evidence["median_ratio"] < 1e-5
    assert "V006" in w.codes
    assert w.top_cause == "lr-too-low"


def test_g006_detached_and_frozen():
    f = findings("frozen_and_detached")
    ev = f["G006"].evidence
    assert {"encoder.0.weight", "encoder.0.bias", "middle.weight"} <= set(ev["no_gradient"])
    assert ev["requires_grad_false"] == ["middle.weight"]
    assert "head.weight" not in ev["no_gradient"]
    assert top("frozen_and_detached") == "code-bug"


def test_g007_l007_zero_init_saddle():
    f = findings("zero_init_saddle")
    assert "G007" in f and "L007" in f and "G006" in f
    assert set(f["G006"].evidence["zero_initialised"]) >= {"0.weight", "2.weight"}
    assert top("zero_init_saddle") == "bad-initialization"


def test_g007_hessian_probe_tells_a_saddle():
    import torch
    from torch import nn

    import traindoctor

    torch.manual_seed(0)
    X, y = torch.randn(200, 6), torch.randint(0, 3, (200,))
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    for p in model.parameters():
        nn.init.zeros_(p)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    d = traindoctor.Doctor(model, opt, cadence=5, report_file=io.StringIO())
    for _ in range(200):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(X), y)
        loss.backward()
        opt.step()
        d.step(loss)
    before = [p.detach().clone() for p in model.parameters()]
    h = d.probe_hessian(X, y, nn.functional.cross_entropy)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    d.close()
    assert h["min_eigenvalue"] < 0 < h["max_eigenvalue"]
    f = {x.code: x for x in d.diagnose().findings}
    assert f["G007"].evidence["kind"] == "saddle"


def test_a001_dying_relu_pushed_by_the_lr():
    f = findings("dying_relu")
    assert f["A001"].evidence["module"] == "1" and f["A001"].evidence["dead_fraction"] >= 0.5
    assert f["A001"].evidence["update_ratio_before"] > 1e-2
    # the script also feeds raw 0..16 pixels (D002, seen in the first batch): a cause in its own right
    assert "D002" in f
    causes = [c.id for c in watch("dying_relu").diagnosis.causes[:3]]
    assert "dying-relu" in causes and "lr-too-high" in causes and "unnormalized-input" in causes


def test_a003_l009_init_std_10():
    f = findings("init_std10")
    assert f["L009"].step == 0 and f["A003"].evidence["absmax"] > 1e3
    assert top("init_std10") == "bad-initialization"
    # known from the first step's trace too: the layer std against Kaiming's (M003)
    assert f["M003"].evidence["layers"][0]["verdict"] == "large" and f["M003"].evidence["module"] == "0"


def test_a004_exp_overflow_names_the_module():
    f = findings("exp_overflow")
    assert f["A004"].evidence["type"] == "MySoftplus" and f["A004"].step == 0
    assert f["A004"].evidence["sample_ids"]  # dataset indices of the rows that overflowed
    assert top("exp_overflow") in {"numerically-unstable-loss", "unnormalized-input"}


def test_l003_recurring_bad_batch():
    f = findings("dirty_batches")
    assert f["L003"].evidence["spike_steps"][:3] == [89, 179, 269]
    assert f["L003"].evidence["period"] == 90
    assert top("dirty_batches") == "label-noise"


def test_l006_stalled_l010_pending():
    f = findings("stalled_linear")
    assert f["L006"].evidence["plateau_fraction"] >= 0.4 and "M010" in f
    assert top("stalled_linear") == "missing-nonlinearity"
    # Adam at lr 0.05 on raw pixels blows the loss up in its first steps: that is not a stall, and the
    # fall from the peak must not read as one (it did before the early blow-up check)
    d = findings("dying_relu")
    assert "L006" not in d and d["L002"].evidence["jump"] >= 10 and "A001" in d
    g = findings("biased_head")
    assert g["L010"].evidence["accuracy"] < 0.15 and g["L010"].severity == "info"


def test_l011_unbalanced_terms():
    f = findings("unbalanced_terms")
    assert f["L011"].evidence["largest"].endswith("mse_loss") and f["L011"].evidence["ratio"] > 1e3
    assert top("unbalanced_terms") == "unbalanced-loss-terms"


def test_v001_overfitting_names_the_best_step():
    f = findings("tiny_train_big_model")
    assert set(f) == {"V001"}
    assert 10 <= f["V001"].evidence["best_step"] <= 80
    assert top("tiny_train_big_model") == "overfitting"


def test_v002_heavy_weight_decay():
    f = findings("heavy_weight_decay")
    assert f["V002"].evidence["weight_decay"] == 2.0
    assert top("heavy_weight_decay") == "over-regularization"


def test_v003_shuffled_training_labels():
    assert "V003" in findings("shuffled_labels")
    assert top("shuffled_labels") == "label-noise"


def test_v004_both_rising():
    f = findings("rising_lr")
    assert "V004" in f and "L002" in f
    assert top("rising_lr") == "lr-too-high"


def test_v005_mirrored_validation():
    f = findings("shifted_validation")
    assert "V005" in f and "V001" not in f
    assert top("shifted_validation") == "distribution-mismatch"


def test_v005_validation_left_unscaled_is_measured_on_the_inputs():
    # the scaler was applied to training only: the validation features keep their mean (diabetes is
    # centred) and lose their spread — the live input comparison sees it, feature by feature
    shift = watch("unscaled_validation").run.events_of("input_shift")[0].data
    assert shift["median_std_ratio"] < 0.1 and shift["median_shift_sd"] < 0.1
    f = findings("unscaled_validation")
    assert f["V005"].evidence["input_shift"]["median_abs_log_std_ratio"] > 2
    assert "rescaled" in f["V005"].message
    assert top("unscaled_validation") == "distribution-mismatch"


def test_v005_second_site_shift_is_named_with_its_size():
    f = findings("shifted_site")
    assert 0.7 < f["V005"].evidence["input_shift"]["median_shift_sd"] < 1.2  # +0.9 sd, ×1.3 spread
    assert "shifted" in f["V005"].message
    assert top("shifted_site") == "distribution-mismatch"


def test_matched_splits_measure_no_shift():
    # same preprocessing on both sides: the comparison is made, and it is within sampling noise
    for name in ("healthy_regression", "healthy_fullbatch", "healthy_cnn"):
        shift = watch(name).run.events_of("input_shift")[0].data
        assert shift["median_shift_sd"] < 3 * shift["noise_sd"]
        assert shift["median_abs_log_std_ratio"] < 3 * shift["noise_log_std"]
        assert "V005" not in findings(name)


def test_v007_batchnorm_frozen_statistics():
    f = findings("batchnorm_frozen")
    assert f["V007"].evidence["ratio"] >= 2
    assert top("batchnorm_frozen") == "batchnorm-misuse"


def test_validation_seen_without_help():
    run = watch("healthy_cnn").run
    assert run.get("val_loss") is not None and len(run.get("val_loss")) == 6
    assert run.meta["auto_captured"] == ["val_loss", "val_accuracy"]


HEALTHY = ["healthy_cnn", "healthy_rnn", "healthy_warmup", "healthy_fullbatch", "healthy_early_stop",
           "healthy_bn_dropout"]


@pytest.mark.parametrize("name", HEALTHY)
def test_healthy_suite_is_silent(name):
    r = watch(name)
    assert r.exit_code == 0
    assert r.diagnosis.findings == [], [f.message for f in r.diagnosis.findings]


def test_v009_dropout_keeps_the_model_from_fitting_its_own_batches():
    f = findings("heavy_dropout")
    v = f["V009"].evidence
    assert v["train_mode_loss"] >= 1.5 * v["eval_mode_loss"] and v["train_mode_loss"] >= 0.5 * v["scale"]
    assert top("heavy_dropout") == "over-regularization"
    # a model with moderate dropout that converges has a wide ratio too, but both losses are small
    assert "V009" not in {x.code for x in watch("healthy_bn_dropout").diagnosis.findings}
