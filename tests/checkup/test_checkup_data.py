"""Data checks (D001–D008) on real tiny pipelines: each fault found with its evidence, and the
healthy pipeline silent. The checks run before any training step; the loss never crashes."""
from __future__ import annotations

import math

import torch
from _pipes import DATA_ONLY, diabetes, digits, digits_pipeline, loader, mlp, run
from torch import nn


def test_healthy_digits_full_checkup_is_silent():
    r = run(*digits_pipeline())
    assert r.findings == [], [f.message for f in r.findings]
    assert r.restored
    ev = r.run.events_of("lr_range_test")[0].data
    assert 1e-4 < ev["suggested_lr"] < 1.0 and "steepest descent" in ev["rule"]
    # the curve is kept in the Run for a later HTML report
    lrs, losses = r.run.get("lr_range/lr"), r.run.get("lr_range/loss")
    assert lrs is not None and len(lrs) == len(losses) >= 50 and lrs.values[0] == 1e-7
    probes = {p.probe: p for p in r.lines}
    assert probes["overfit 10 samples"].ok and probes["fit one repeated sample"].ok
    assert probes["input-independent baseline"].ok


def test_d001_nonfinite_inputs_and_targets_named_by_sample_id():
    Xtr, ytr, Xv, yv = digits()
    Xtr[[5, 700]] = float("nan")
    Xtr[901, 3] = float("inf")
    r = run(mlp(), loader(Xtr, ytr), nn.CrossEntropyLoss(), probes=DATA_ONLY)
    f = r.finding("D001")
    assert f is not None and sorted(f.evidence["sample_ids"]) == [5, 700, 901]
    assert r.causes[0].id == "nonfinite-data"
    assert "901" in r.causes[0].fixes[0]
    # regression targets with NaN: named too
    Xr, yr, _, _ = diabetes()
    yr[[10, 20]] = float("nan")
    r = run(mlp(10, 32, 1), loader(Xr, yr), nn.MSELoss(), probes=DATA_ONLY)
    scans = r.finding("D001").evidence["scans"]
    assert scans[0]["where"] == "targets" and sorted(scans[0]["sample_ids"]) == [10, 20]


def test_d002_raw_pixels_0_255():
    Xtr, ytr, _, _ = digits(standardize=False)
    pixels = torch.round(Xtr * 255 / 16)  # 8-bit images: integers in [0, 255]
    r = run(mlp(), loader(pixels, ytr), nn.CrossEntropyLoss(), probes=DATA_ONLY)
    f = r.finding("D002")
    assert f is not None and "raw pixel" in f.message and f.evidence["max"] == 255
    assert r.causes[0].id == "unnormalized-input"
    assert "L009" in r.codes  # and the first loss is far above ln(10)


def test_d002_one_feature_on_another_scale():
    Xtr, ytr, _, _ = digits()
    Xtr[:, 7] = Xtr[:, 7] * 5000 + 20000  # e.g. a price column left in dollars
    r = run(mlp(), loader(Xtr, ytr), nn.CrossEntropyLoss(), probes=DATA_ONLY)
    f = r.finding("D002")
    assert f is not None
    assert f.evidence.get("max_abs_mean_column") == 7 or "RMS" in f.message


def test_d003_unnormalized_regression_targets_and_healthy_regression():
    Xr, yr, Xv, yv = diabetes(standardize_y=False)
    r = run(mlp(10, 32, 1), loader(Xr, yr * 1000), nn.MSELoss(), probes=DATA_ONLY)  # dollars, not thousands
    f = r.finding("D003")
    assert f is not None and f.evidence["rms"] > 1e4
    assert r.causes[0].id == "unnormalized-target"
    Xr, yr, Xv, yv = diabetes()
    model = mlp(10, 32, 1)
    r = run(model, loader(Xr, yr), nn.MSELoss(), loader(Xv, yv, 128, False), torch.optim.Adam(model.parameters(), 1e-3))
    assert r.findings == [], [f.message for f in r.findings]


def test_d004_labels_out_of_domain_found_before_the_crash():
    Xtr, ytr, _, _ = digits()
    r = run(mlp(), loader(Xtr, ytr + 1), nn.CrossEntropyLoss())  # labels 1..10 for 10 outputs
    f = r.finding("D004")
    assert f is not None and f.evidence["problem"] == "index_out_of_range" and 10 in f.evidence["values"]
    assert f.evidence["count"] == int((ytr == 9).sum())
    assert set(f.evidence["sample_ids"]) <= set((ytr == 9).nonzero().flatten().tolist())
    assert not r.run.events_of("crash")  # found, not crashed on
    assert r.causes[0].id == "label-domain-error" and "11 outputs" in " ".join(r.causes[0].fixes)
    # negative labels (ignore_index -100 stays valid)
    y = ytr.clone()
    y[3] = -1
    y[4] = -100
    f = run(mlp(), loader(y=y, X=Xtr), nn.CrossEntropyLoss(), probes=DATA_ONLY).finding("D004")
    assert f.evidence["problem"] == "negative_index" and f.evidence["sample_ids"] == [3]


def test_d004_bce_targets_dtype_and_shape():
    Xtr, ytr, _, _ = digits()
    yb = (ytr >= 5).float().unsqueeze(1)
    r = run(mlp(out=1), loader(Xtr, yb * 2), nn.BCEWithLogitsLoss(), probes=DATA_ONLY)  # {0, 2}
    assert r.finding("D004").evidence["problem"] == "bce_out_of_range"
    r = run(mlp(out=1), loader(Xtr, yb.squeeze(1)), nn.BCEWithLogitsLoss(), probes=DATA_ONLY)  # [B] vs [B, 1]
    assert r.finding("D004").evidence["problem"] == "shape_mismatch"
    r = run(mlp(), loader(Xtr, ytr.float()), nn.CrossEntropyLoss(), probes=DATA_ONLY)  # float class indices
    assert r.finding("D004").evidence["problem"] == "float_class_indices"
    Xr, yr, _, _ = diabetes()
    r = run(mlp(10, 32, 1), loader(Xr, yr.squeeze(1)), nn.MSELoss(), probes=DATA_ONLY)  # broadcasts to [B, B]
    assert "broadcast" in r.finding("D004").message


def test_d005_class_imbalance_with_ratio():
    Xtr, ytr, _, _ = digits()
    keep = torch.cat([(ytr == 0).nonzero().flatten()] + [(ytr == c).nonzero().flatten()[:8] for c in range(1, 10)])
    r = run(mlp(), loader(Xtr[keep], ytr[keep]), nn.CrossEntropyLoss(), probes=DATA_ONLY)
    f = r.finding("D005")
    assert f is not None and f.evidence["most"] == "0" and f.evidence["ratio"] == (ytr == 0).sum().item() / 8
    assert r.causes[0].id == "class-imbalance"


def test_d006_train_val_leakage_names_the_twins():
    Xtr, ytr, Xv, yv = digits()
    Xv2 = torch.cat([Xv[:300], Xtr[100:160]])  # 60 validation samples copied from training
    yv2 = torch.cat([yv[:300], ytr[100:160]])
    r = run(mlp(), loader(Xtr, ytr), nn.CrossEntropyLoss(), loader(Xv2, yv2, 64, False), probes=DATA_ONLY)
    f = r.finding("D006")
    assert f is not None and f.evidence["duplicates"] == 60 and f.severity == "error"
    assert f.evidence["val_ids"][:3] == [300, 301, 302] and f.evidence["train_ids"][:3] == [100, 101, 102]
    assert r.causes[0].id == "data-leakage"


def test_d007_unshuffled_batches_sorted_by_label():
    Xtr, ytr, _, _ = digits()
    order = torch.argsort(ytr, stable=True)
    r = run(mlp(), loader(Xtr[order], ytr[order], shuffle=False), nn.CrossEntropyLoss(), probes=DATA_ONLY)
    f = r.finding("D007")
    assert f is not None and f.evidence["sampler"] == "SequentialSampler"
    assert f.evidence["mean_classes_per_batch"] < 2.5 < 8 < f.evidence["expected_classes_per_batch"]
    assert r.causes[0].id == "unshuffled-data"
    # shuffle=False over data that is already in random order is fine
    r = run(mlp(), loader(Xtr, ytr, shuffle=False), nn.CrossEntropyLoss(), probes=DATA_ONLY)
    assert "D007" not in r.codes


def test_d008_suspect_labels_after_a_short_training():
    Xtr, ytr, _, _ = digits()
    g = torch.Generator().manual_seed(1)
    flipped = torch.randperm(len(ytr), generator=g)[:30]
    y = ytr.clone()
    y[flipped] = (y[flipped] + torch.randint(1, 10, (30,), generator=g)) % 10
    model = mlp()
    r = run(model, loader(Xtr, y), nn.CrossEntropyLoss(), opt=torch.optim.Adam(model.parameters()),
            probes=["short_training"])
    f = r.finding("D008")
    assert f is not None
    named = set(f.evidence["sample_ids"])
    assert len(named) >= 10 and named <= set(flipped.tolist())  # every name a relabelled sample
    c = f.evidence["candidates"][0]
    assert c["label"] == y[c["id"]].item() and c["predicted"] == ytr[c["id"]].item()
    assert any(cs.id == "label-noise" for cs in r.causes)


def test_checks_record_numbers_not_verdicts():
    """The data facts are plain numbers a live monitor can record from its first batches."""
    r = run(*digits_pipeline(), probes=DATA_ONLY)
    prof = r.run.events_of("data_profile")[0].data
    assert prof["samples"] == 1437 and prof["classes"]["num_outputs"] == 10
    assert abs(prof["inputs"]["mean"]) < 0.05 and math.isclose(prof["inputs"]["std"], 0.94, abs_tol=0.1)
    assert prof["order"]["mean_classes_per_batch"] > 8
