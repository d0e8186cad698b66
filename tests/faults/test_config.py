"""Configuration faults caught live at the first step (issue: know the model, the loss and the data).

Each script in tests/faults/scripts/config_*.py is plain PyTorch with one configuration fault,
written the way people write it. The test asserts the code, its cause, the module or call it
names, the line of user code, and that it was said at step 0, before any curve existed.
"""
from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from torch import nn

import traindoctor
from traindoctor.watch.launcher import watch_script

SCRIPTS = Path(__file__).parent / "scripts"
_cache: dict[str, object] = {}


def watch(name: str):
    if name not in _cache:
        err = io.StringIO()
        res = watch_script(SCRIPTS / f"{name}.py", [], store="", err=err)
        _cache[name] = (res, err.getvalue())
    return _cache[name]


def finding(name: str, code: str):
    res, _ = watch(name)
    found = {f.code: f for f in res.diagnosis.findings}
    assert code in found, [(f.code, f.message) for f in res.diagnosis.findings]
    return found[code]


def causes(name: str) -> list[str]:
    return [c.id for c in watch(name)[0].diagnosis.causes]


def announced(name: str) -> list[str]:
    """The live lines printed while the script ran (stderr, before the final report)."""
    return [ln for ln in watch(name)[1].splitlines() if ln.startswith("traindoctor: ")]


def line_of(script: str, text: str) -> int:
    lines = (SCRIPTS / script).read_text().splitlines()
    return next(i + 1 for i, ln in enumerate(lines) if text in ln)


def test_m009_relu_output_into_cross_entropy_outranks_a_low_lr():
    f = finding("config_relu_ce", "M009")
    assert f.step == 0 and f.severity == "error"
    assert f.evidence["module"] == "3" and f.evidence["activation"] == "relu"
    assert f.evidence["where"].endswith(f"config_relu_ce.py:{line_of('config_relu_ce.py', 'nn.ReLU(),  #')}")
    assert 0.2 < f.evidence["head"]["zero_fraction"] < 0.9
    # the loss barely moves (L005 → lr-too-low is a candidate), but the configuration explains it
    order = causes("config_relu_ce")
    assert order[0] == "wrong-output-activation"
    assert "lr-too-low" in order
    fixes = watch("config_relu_ce")[0].diagnosis.causes[0].fixes
    assert "remove `3` (ReLU)" in fixes[0] and "config_relu_ce.py" in fixes[0]
    assert announced("config_relu_ce")[0].startswith("traindoctor: M009 output-activation-mismatch")


def test_m009_m002_keras_style_cross_entropy_on_sigmoid():
    f = finding("config_keras_ce", "M009")
    assert f.evidence["loss"] == "hand-written" and f.evidence["activation"] == "sigmoid"
    assert f.evidence["target"]["one_hot"] is True and f.evidence["target"]["shape"][1] == 10
    assert f.evidence["module"] == "Net"  # torch.sigmoid called in Net.forward
    assert f.evidence["where"].endswith(f"config_keras_ce.py:{line_of('config_keras_ce.py', 'torch.log(y_pred')}")
    m2 = finding("config_keras_ce", "M002")
    assert m2.evidence["clamped"] is True  # the + 1e-7 is seen, and said not to be enough
    assert causes("config_keras_ce")[0] == "wrong-output-activation"
    assert "numerically-unstable-loss" in causes("config_keras_ce")


def test_m008_mse_on_class_indices():
    f = finding("config_mse_classes", "M008")
    assert f.evidence["loss"] == "nn.MSELoss" and f.evidence["target"]["cast_from"] == "int64"
    assert f.evidence["where"].endswith(f"config_mse_classes.py:{line_of('config_mse_classes.py', 'criterion(')}")
    assert causes("config_mse_classes")[0] == "wrong-loss-function"
    assert "CrossEntropyLoss" in watch("config_mse_classes")[0].diagnosis.causes[0].fixes[0]


def test_m010_two_linear_layers_with_nothing_between():
    f = finding("config_stacked_linear", "M010")
    pair = f.evidence["pairs"][0]
    assert (pair["first"]["module"], pair["second"]["module"]) == ("fc1", "fc2")
    assert pair["dims"] == [64, 128, 10] and pair["between"] == ["dropout"]
    assert f.evidence["where"].endswith(f"config_stacked_linear.py:{line_of('config_stacked_linear.py', 'self.fc2 =')}")
    assert "missing-nonlinearity" in causes("config_stacked_linear")
    assert "between `fc1` and `fc2`" in " ".join(
        c.fixes[0] for c in watch("config_stacked_linear")[0].diagnosis.causes if c.id == "missing-nonlinearity")


def test_d002_raw_pixels():
    f = finding("config_raw_pixels", "D002")
    assert "integers in [0, 255]" in f.message
    assert f.evidence["where"].endswith(f"_common.py:{line_of('_common.py', 'loss_fn(model(x), y)')}")
    assert causes("config_raw_pixels")[0] == "unnormalized-input"
    assert any(a.startswith("traindoctor: D002") for a in announced("config_raw_pixels"))


def test_d003_house_prices_as_raw_targets():
    f = finding("config_house_prices", "D003")
    assert f.evidence["rms"] > 1e5
    assert f.evidence["where"].endswith(f"config_house_prices.py:{line_of('config_house_prices.py', 'mse_loss(')}")
    assert causes("config_house_prices")[0] == "unnormalized-target"


def test_d001_missing_values_named_by_dataset_index():
    f = finding("config_missing_values", "D001")
    import numpy as np

    nan_rows = set(np.random.default_rng(0).choice(569, 12, replace=False).tolist())
    assert f.evidence["sample_ids"] and set(f.evidence["sample_ids"]) <= nan_rows
    assert causes("config_missing_values")[0] == "nonfinite-data"


def test_d004_binary_mask_stored_as_255():
    f = finding("config_mask_255", "D004")
    assert f.evidence["problem"] == "bce_out_of_range" and 255.0 in f.evidence["values"]
    assert causes("config_mask_255")[0] == "label-domain-error"


def test_d005_rare_class_over_the_first_batches():
    f = finding("config_imbalanced", "D005")
    assert f.evidence["samples"] >= 1024 and 15 < f.evidence["ratio"] < 60
    assert "class-imbalance" in causes("config_imbalanced")
    # judged over the whole window, not over the first batch
    assert not any(a.startswith("traindoctor: D005") and "over 64 " in a for a in announced("config_imbalanced"))


def test_d007_sorted_labels_without_shuffle():
    f = finding("config_sorted", "D007")
    assert f.evidence["single_class_batches"] >= 3
    assert "unshuffled-data" in causes("config_sorted")


NEW_HEALTHY = ["healthy_transformer", "healthy_residual", "healthy_nll", "healthy_regression"]


@pytest.mark.parametrize("name", NEW_HEALTHY)
def test_correct_configurations_stay_silent(name):
    res, err = watch(name)
    assert res.exit_code == 0
    assert res.diagnosis.findings == [], [f.message for f in res.diagnosis.findings]
    assert announced(name) == []
    g = res.run.events_of("model_graph")[0].data
    assert g["operations"] > 0 and not g.get("trace_error") and g["losses"]


def test_doctor_api_knows_at_the_first_step():
    """One training step with Doctor: the configuration is already judged, with this file's line."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 3), nn.Sigmoid())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out = io.StringIO()
    doctor = traindoctor.Doctor(model, opt, report_file=out)
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    doctor.step(loss)
    codes = {f.code: f for f in doctor.diagnose().findings}
    doctor.close()
    assert {"M009", "M010"} <= set(codes)
    assert codes["M009"].evidence["module"] == "2"
    assert "Sigmoid `2`" in codes["M009"].message and "cannot fall below" in codes["M009"].message
    assert codes["M010"].evidence["pairs"][0]["first"]["module"] == "0"
    assert "traindoctor: M009" in out.getvalue() and "traindoctor: M010" in out.getvalue()


def test_the_trace_leaves_the_step_unchanged():
    """Parameters after a few steps are bitwise the same with and without the first-step trace."""
    def train(watch: bool):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        doctor = traindoctor.Doctor(model, opt, live=False) if watch else None
        g = torch.Generator().manual_seed(1)
        for _ in range(5):
            x, y = torch.randn(16, 8, generator=g), torch.randint(0, 3, (16,), generator=g)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(torch.log_softmax(model(x), 1), y)
            loss.backward()
            opt.step()
            if doctor:
                doctor.step(loss)
        if doctor:
            assert doctor.run_record().events_of("model_graph")
            doctor.close()
        return [p.detach().clone() for p in model.parameters()], torch.get_rng_state()

    a, ra = train(False)
    b, rb = train(True)
    assert all(torch.equal(p, q) for p, q in zip(a, b)) and torch.equal(ra, rb)
    from torch.overrides import _get_current_function_mode_stack

    assert _get_current_function_mode_stack() == []  # the mode is gone after the first step


def test_a_step_that_never_reaches_backward_lets_the_trace_go(monkeypatch):
    """Forward passes and no backward (a feature extractor in train mode): the trace stops by itself."""
    from torch.overrides import _get_current_function_mode_stack

    from traindoctor.inspect import trace

    monkeypatch.setattr(trace, "MAX_NODES", 300)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    doctor = traindoctor.Doctor(model, None, live=False)
    x = torch.randn(4, 8)
    for _ in range(200):
        model(x)
        if not _get_current_function_mode_stack():
            break
    assert _get_current_function_mode_stack() == []  # left at the next module call after the cap
    run = doctor.close()
    assert run.events_of("model_graph")[0].data["truncated"] is True


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_a_torchscript_model_is_watched_from_the_outside():
    model = torch.jit.script(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with traindoctor.Doctor(model, opt, report_file=io.StringIO()) as doctor:
        for _ in range(3):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(torch.randn(16, 8)), torch.randint(0, 3, (16,)))
            loss.backward()
            opt.step()
            doctor.step(loss)
    run = doctor.run_record()
    assert len(run.get("loss")) == 3
    assert any("ScriptModule" in n or "not supported" in n for n in run.meta.get("notes", []))


def test_a_gan_is_no_fault():
    """Two models, two optimizers, constant 0/1 targets for BCE-with-logits: nothing to say about the
    configuration (targets of one value are not class imbalance, a Tanh generator is not an output
    activation fed to a loss)."""
    from traindoctor.watch.monitor import CONFIG_CODES

    res, err = watch("gan_two_optimizers")
    assert res.exit_code == 0
    assert [f.code for f in res.diagnosis.findings if f.code in CONFIG_CODES] == []
    # nor about the curve: a game's losses do not fall (L005/V006 used to call this "no progress")
    assert res.diagnosis.findings == [], [(f.code, f.message) for f in res.diagnosis.findings]
    assert any("2 optimizers step in turn" in s for s in res.diagnosis.not_judged)
    assert announced("gan_two_optimizers") == []
    losses = res.run.events_of("model_graph")[0].data["losses"]
    assert losses and all(lf["kind"] == "bce_logits" and lf["head"]["op"] == "logits" for lf in losses)
