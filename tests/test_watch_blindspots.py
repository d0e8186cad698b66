"""What the live monitor measures where it used to measure the wrong thing, on real tiny runs.

Each test trains a real model (the scripts in tests/faults/scripts/blind_*.py, plain PyTorch) under
``watch_script`` — the code behind ``traindoctor run`` — or under ``traindoctor.Doctor``, and asserts
the exact facts recorded: the unscaled loss under a GradScaler, how the training loss is reduced,
validation losses summed per batch, the data profile of two models trained side by side, the
configuration faults behind shape-only operations, and the in-memory training set scanned for NaN
rows before their batch comes.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import traindoctor
from traindoctor.diagnosis import diagnose
from traindoctor.watch import datascan
from traindoctor.watch.launcher import watch_script

SCRIPTS = Path(__file__).parent / "faults" / "scripts"
_cache: dict[tuple, tuple] = {}


def watch(name: str, *args: str, dump: bool = False, tmp: Path | None = None):
    """(WatchResult, stderr, the script's own dump or None), one run per arguments."""
    key = (name, *args, dump)
    if key not in _cache:
        extra = list(args)
        out = None
        if dump:
            assert tmp is not None
            out = tmp / f"{name}-{'-'.join(a.strip('-') for a in args) or 'run'}.json"
            extra = [*args[:1], str(out), *args[1:]] if name != "blind_amp" else [str(out), *args]
        err = io.StringIO()
        res = watch_script(SCRIPTS / f"{name}.py", extra, store="", err=err)
        assert res.exit_code == 0 or "--bad" in args, err.getvalue()
        data = json.loads(out.read_text()) if out is not None and out.exists() else None
        _cache[key] = (res, err.getvalue(), data)
    return _cache[key]


def codes(run) -> set[str]:
    return {f.code for f in diagnose(run).findings}


# ---------------------------------------------------------------------------- 1. GradScaler


def test_grad_scaler_loss_is_recorded_unscaled(tmp_path):
    res, err, data = watch("blind_amp", dump=True, tmp=tmp_path)
    assert data["scale"] == 65536.0  # the tensor backpropagated was the loss × 65536
    got = res.run.get("loss")
    assert list(got.steps) == list(range(32))
    assert list(got.values) == pytest.approx(data["losses"], rel=1e-7)
    assert res.run.meta["loss_scaled_by_grad_scaler"] is True
    assert res.run.meta["loss_reduction"] == "mean" and res.run.meta["loss_per_element_factor"] == pytest.approx(1.0)
    assert "L001" not in codes(res.run) and "traindoctor: L001" not in err


def test_grad_scaler_loss_divided_after_scaling_is_unscaled_too(tmp_path):
    """``(scaler.scale(loss) / 2).backward()``: the tensor's value over the scale, loss / 2."""
    res, _, data = watch("blind_amp", "--accum", dump=True, tmp=tmp_path)
    got = res.run.get("loss")
    assert list(got.values) == pytest.approx(data["losses"], rel=1e-6)
    assert max(got.values) < 1.0  # cross-entropy of 3 classes, halved: not 65536 times that


def test_grad_scaler_in_doctor_mode_is_not_divided_twice():
    torch.manual_seed(0)
    X = torch.randn(256, 12)
    y = (X[:, 0] > 0).long()
    model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    original = torch.amp.GradScaler.scale
    doctor = traindoctor.Doctor(model, opt, live=False)
    assert torch.amp.GradScaler.scale is not original  # wrapped while a doctor watches
    mine = []
    for i in range(0, 256, 32):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = nn.functional.cross_entropy(model(X[i:i + 32]), y[i:i + 32])
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        doctor.step(loss)  # the user hands the unscaled loss
        mine.append(loss.item())
        assert doctor.monitor._scaled == []  # nothing held past the step
    run = doctor.close()
    assert torch.amp.GradScaler.scale is original  # and put back
    assert list(run.get("loss").values) == pytest.approx(mine, rel=1e-7)
    assert run.meta["loss_scaled_by_grad_scaler"] is True


# ---------------------------------------------------------------------------- 2. sum-reduced losses


@pytest.mark.parametrize("case, reduction, sum_over, factor", [
    ("ce", "sum", 32, 32.0),  # nn.CrossEntropyLoss(reduction='sum'): one class index per sample
    ("mse", "sum", 96, 96.0),  # nn.MSELoss(reduction='sum') over 32 × 3 outputs
    ("ce_ignore", "sum", None, None),  # ignore_index: the non-ignored targets of the first batch
    ("legacy", "sum", 96, 96.0),  # F.mse_loss(..., size_average=False)
    ("lm", "sum", None, 1.0),  # a token sum divided by the token count, as Hugging Face models do
])
def test_training_loss_reduction_is_recorded(tmp_path, case, reduction, sum_over, factor):
    res, _, data = watch("blind_sum_loss", case, dump=True, tmp=tmp_path)
    meta = res.run.meta
    if sum_over is None:
        sum_over = data["first_count"]
        assert sum_over < 32 * (8 if case == "lm" else 1)  # some targets were ignored
    if factor is None:
        factor = float(sum_over)
    assert meta["loss_reduction"] == reduction
    assert meta["loss_sum_over"] == sum_over
    assert meta["loss_per_element_factor"] == pytest.approx(factor, rel=1e-6)
    # the loss itself is recorded as the script computed it
    assert list(res.run.get("loss").values) == pytest.approx(data["losses"], rel=1e-7)


# ---------------------------------------------------------------------------- 3. validation summed per batch


def test_val_loss_summed_per_batch_is_a_mean_per_sample(tmp_path):
    res, _, data = watch("blind_val_sum", "sum", dump=True, tmp=tmp_path)
    vl = res.run.get("val_loss")
    assert list(vl.steps) == [9, 19, 29]
    assert list(vl.values) == pytest.approx([e["mean"] for e in data["evals"]], rel=1e-9)
    assert "val_loss" in res.run.meta["auto_captured"]
    assert not res.run.meta.get("notes")  # the printed value agrees: nothing to say


def test_causal_lm_eval_is_a_mean_per_token(tmp_path):
    """F.cross_entropy(..., reduction="sum", ignore_index=-100) per batch, divided by its tokens."""
    res, _, data = watch("blind_val_sum", "lm", dump=True, tmp=tmp_path)
    assert list(res.run.get("val_loss").values) == pytest.approx([e["mean"] for e in data["evals"]], rel=1e-9)
    # accuracy over the predicted tokens only: -100 positions are neither right nor wrong
    assert list(res.run.get("val_accuracy").values) == pytest.approx([e["accuracy"] for e in data["evals"]], rel=1e-12)


def test_printed_val_loss_that_disagrees_is_noted_once(tmp_path):
    res, _, data = watch("blind_val_sum", "misprint", dump=True, tmp=tmp_path)
    means = [e["mean"] for e in data["evals"]]
    assert list(res.run.get("val_loss").values) == pytest.approx(means, rel=1e-9)  # the loss function's value
    notes = [n for n in res.run.meta.get("notes", []) if "val_loss" in n]
    assert len(notes) == 1
    shown = data["evals"][0]["shown"]
    assert notes[0] == (f"val_loss at step 9: the evaluation's loss-function calls give {means[0]:.4g} (mean per "
                        f"element) but the script printed {shown:.4g}; used {means[0]:.4g}, from the loss function "
                        "(a loss function's value comes before a printed one)")


# ---------------------------------------------------------------------------- 4. two models side by side


@pytest.mark.parametrize("case, kind, target_dtype, target_shape", [
    ("ce_mse", "cross_entropy", "int64", []),
    ("mse_ce", "mse", "float32", [1]),
    ("ae_head", "mse", "float32", [16]),
    ("bce_mse", "bce_logits", "float32", [1]),
])
def test_two_models_with_their_own_losses_give_no_false_label_finding(case, kind, target_dtype, target_shape):
    res, err, _ = watch("blind_two_models", case)
    assert "D004" not in codes(res.run) and "D004" not in err
    assert res.run.events_of("label_domain") == []
    profile = [e.data for e in res.run.events_of("data_profile") if not e.data.get("first_batch")][-1]
    # the profile judged the first loss with that loss's own targets, once per batch
    assert profile["loss_kind"] == kind
    assert profile["targets"]["dtype"] == target_dtype and profile["targets"]["shape"] == target_shape
    assert profile["samples"] == 1024 and profile["batches"] == 32


def test_two_models_with_a_wrong_label_still_give_d004():
    res, err, _ = watch("blind_two_models", "bce_mse", "--bad")
    f = {x.code: x for x in diagnose(res.run).findings}["D004"]
    assert f.evidence["problem"] == "bce_out_of_range" and f.evidence["values"] == [2.0]
    assert set(f.evidence["sample_ids"]) == {5}
    assert "traindoctor: D004" in err
    res, _, _ = watch("blind_two_models", "ce_mse", "--bad")  # class 7 of 3: the loss raises at step 0
    assert res.exit_code == 1 and "D004" in codes(res.run)


# ---------------------------------------------------------------------------- 5. shape-only operations


@pytest.mark.parametrize("case, code", [
    ("sigmoid_squeeze_bce", "M002"),
    ("softmax_view_ce", "M001"),
    ("relu_slice_ce", "M009"),
    ("tanh_chunk_ce", "M009"),
    ("softmax_permute_ce", "M001"),
    ("sigmoid_cast_ce", "M009"),
])
def test_shape_operations_do_not_hide_the_output_activation(case, code):
    res, err, _ = watch("blind_shapes", case)
    assert code in codes(res.run)
    assert f"traindoctor: {code}" in err  # said at the first step
    if code in ("M001", "M002"):
        ev = res.run.events_of("config")[0].data
        assert ev["through"] == {"sigmoid_squeeze_bce": ["SqueezeBackward1"], "softmax_view_ce": ["ViewBackward0"],
                                 "softmax_permute_ce": ["ViewBackward0", "CloneBackward0", "PermuteBackward0"]}[case]


@pytest.mark.parametrize("case", ["good", "good_seq"])
def test_logits_through_the_same_reshapes_give_no_finding(case):
    res, err, _ = watch("blind_shapes", case)
    assert not codes(res.run) & {"M001", "M002", "M009"}
    assert res.run.events_of("config") == [] and "traindoctor: M0" not in err


# ---------------------------------------------------------------------------- 6. the training set scanned once


def _scan_event(run):
    evs = [e for e in run.events_of("data_nonfinite") if e.data.get("scan") == "dataset"]
    assert len(evs) == 1
    return evs[0]


def test_nan_rows_of_a_tensor_dataset_are_named_before_their_batch():
    res, err, _ = watch("blind_nan_rows", "tensor")
    ev = _scan_event(res.run)
    # row 700 is in batch 21 (rows 672–703): the scan is published before that step
    assert ev.step < 21
    assert ev.data == {"split": "train", "where": "inputs", "count": 2, "sample_ids": [700, 1203],
                       "ids": "dataset indices", "samples_scanned": 1500, "scan": "dataset", "complete": True,
                       "source": "TensorDataset", "array": "tensors[0]", "live": True}
    lines = [ln for ln in err.splitlines() if ln.startswith("traindoctor: ")]
    d001 = next(i for i, ln in enumerate(lines) if ln.startswith("traindoctor: D001"))
    l001 = next(i for i, ln in enumerate(lines) if ln.startswith("traindoctor: L001"))
    assert d001 < l001 and "[700, 1203]" in lines[d001]
    assert next(e for e in res.run.events_of("nonfinite_loss")).step == 21
    scan = res.run.meta["dataset_scan"]
    assert scan["rows_scanned"] == scan["rows"] == 1500 and scan["arrays"][0]["nonfinite_rows"] == 2


@pytest.mark.parametrize("case, ids, kind, source", [
    ("subset", [400, 900], "dataset indices", "Subset(TensorDataset)"),  # positions in the Subset
    ("numpy", [700, 1203], "dataset indices", "Arrays"),  # NumPy float64 rows converted per item
    ("slices", [700, 1203], "rows of the sliced tensor", "tensor sliced by hand"),
])
def test_nan_rows_of_other_in_memory_datasets(tmp_path, case, ids, kind, source):
    res, _, data = watch("blind_nan_rows", case, dump=True, tmp=tmp_path)
    ev = _scan_event(res.run)
    assert ev.data["sample_ids"] == ids and ev.data["ids"] == kind and ev.data["source"] == source
    first_nan = {"subset": 12, "numpy": 21, "slices": 21}[case]  # the step whose batch holds the first one
    assert ev.data["complete"] is True and ev.step < first_nan
    assert next(e for e in res.run.events_of("nonfinite_loss")).step == first_nan


def test_a_dataset_that_transforms_its_rows_is_not_scanned():
    res, _, _ = watch("blind_nan_rows", "transformed")
    assert not [e for e in res.run.events_of("data_nonfinite") if e.data.get("scan")]
    assert res.run.meta["dataset_scan"] == {"skipped": "Arrays: no floating-point array of it matches the loader's batch"}


def test_the_scan_stops_at_its_byte_budget(monkeypatch):
    monkeypatch.setattr(datascan, "MAX_SCAN_BYTES", 800 * 20 * 4)  # 800 rows of 20 float32
    err = io.StringIO()
    res = watch_script(SCRIPTS / "blind_nan_rows.py", ["tensor"], store="", err=err)
    ev = _scan_event(res.run)
    assert ev.data["sample_ids"] == [700] and ev.data["samples_scanned"] == 800 and ev.data["complete"] is False
    assert res.run.meta["dataset_scan"]["bytes"] == 800 * 20 * 4
