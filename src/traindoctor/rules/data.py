"""Family D: data, as seen live (D001 from the non-finite replay, D004 from a crash) and as
measured on batches by ``checks/data.py`` (a checkup's scan of the loaders: D001–D008)."""
from __future__ import annotations

import math
import re

from ..events import (
    Crash,
    DataLeakage,
    DataNonfinite,
    DataProfile,
    F,
    LabelDomain,
    LabelOutliers,
    ModelGraph,
    NonfiniteLoss,
)
from ..findings import Finding
from ..losskinds import REGRESSION
from ..numfmt import fmt
from ..run import Run
from . import Rule, rule


@rule("D001", "error", causes=("nonfinite-data",))
def nonfinite_inputs(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Names the samples whose inputs hold NaN/Inf, found when the loss first went non-finite.

    Why is this bad?
        One NaN feature makes the whole batch's loss NaN; the gradients then write NaN into every
        weight and the run never recovers, however good the model and learning rate are.

    Evidence:
        The model's input batch at the first non-finite loss: the batch positions with
        non-finite values and, when the data loader tells them, their dataset indices. A
        checkup (``data_nonfinite`` facts) scans every batch of the loader before training and
        names every sample with NaN/Inf in its inputs or targets.

    Example:
        Loss NaN at step 4; input rows 7 and 19 of that batch (dataset indices 200 and 1400) are NaN.

    Use instead:
        Drop or repair the listed samples; validate at load time
        (``assert torch.isfinite(x).all()``); impute missing values before training.

    Known false positives:
        None known: the values are read, not inferred.
    """
    scanned = _d001_from_scan(run, r)  # a data scan (checkup: every batch; live: the first ones)
    if scanned and not any(d.live for d in run.facts(DataNonfinite)):
        return scanned
    for nf in run.facts(NonfiniteLoss):
        inp = nf.input_nonfinite
        if not inp:
            continue
        ids = list(inp.sample_ids or ())
        who = f"dataset indices {ids[:10]}" if ids else f"batch positions {list(inp.positions or ())[:10]}"
        count = inp.count if inp.count is not None else len(ids)
        size = inp.batch_size if inp.batch_size is not None else "?"
        msg = f"{count} of {size} samples in the batch at step {nf.step} hold NaN/Inf ({who})"
        ev = inp.to_json()
        if scanned:  # the first batches' scan named more of them
            more = [i for i in scanned[0].evidence.get("sample_ids", []) if i not in ids]
            if more:
                ev["sample_ids"] = ids + more
                msg += f"; the first batches held more: {scanned[0].message}"
        return [r.finding(step=nf.step, step_end=nf.step, message=msg, evidence=ev,
                          causes=[("nonfinite-data", 0.95)])]
    return scanned


LABEL_CRASHES = (
    (re.compile(r"Target (-?\d+) is out of bounds"), "class index {0} is outside the model's output classes"),
    (re.compile(r"t >= 0 && t < n_classes"), "a class index is negative or ≥ the number of outputs (device assert)"),
    (re.compile(r"all elements of target should be between 0 and 1"), "BCE targets outside [0, 1]"),
    (re.compile(r"(0D or 1D target tensor expected|multi-target not supported)"), "targets of the wrong shape for the loss"),
    (re.compile(r"Using a target size \((.*?)\) that is different to the input size \((.*?)\)"),
     "target shape {0} does not match the output shape {1}"),
    (re.compile(r"expected scalar type Long but found (\w+)"), "class-index targets of dtype {0}; expected int64 (Long)"),
    (re.compile(r"Expected floating point type for target with class probabilities, got (\w+)"),
     "targets of dtype {0} read as class probabilities"),
)


@rule("D004", "error", causes=("label-domain-error",))
def labels_out_of_domain(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Recognises a crash caused by labels that do not fit the loss: a class index ≥ the number
        of outputs or negative, BCE targets outside [0, 1], targets of the wrong dtype or shape.

    Why is this bad?
        The run dies (or, on a GPU, dies with an unhelpful device-side assert) at the first batch
        holding such a label; if it is silenced, the model learns from garbage labels.

    Evidence:
        The exception the script raised, matched against PyTorch's messages for these cases, and
        the step at which it was raised. A checkup (``label_domain`` facts) finds them before any
        crash: every target is compared with the model's output shape and the loss's domain
        (class indices in 0…C−1 except ``ignore_index``, float targets in [0, 1] for BCE, dtype and
        shape), naming the samples.

    Example:
        ``IndexError: Target 10 is out of bounds.`` at step 3 with a 10-output model: labels run
        1…10 instead of 0…9.

    Use instead:
        Remap labels to 0…C−1 (``y - y.min()`` or a label encoder); size the output layer to the
        number of classes; give BCE float targets in [0, 1] shaped like the output.

    Known false positives:
        None: it fires only on a crash with one of these messages.
    """
    for c in run.facts(Crash):
        for pat, what in LABEL_CRASHES:
            m = pat.search(c.text)
            if m:
                detail = what.format(*m.groups())
                ev = {"exception": c.type, "message": c.message, "where": c.where, "detail": detail}
                msg = f"the script crashed at step {c.step}: {detail} ({c.type}: {str(c.message)[:120]})"
                return [r.finding(step=c.step, step_end=c.step, message=msg, evidence=ev,
                                  causes=[("label-domain-error", 0.9)])]
    return _d004_from_scan(run, r)


# ---------------------------------------------------------------------------------------------
# Data facts measured on batches (``checks/data.py``: a checkup's full scan, or a live run's
# first batches). Every rule below reads only the events it names, so a Run without them (a
# plain live run, a log) gets no finding from it.


def _label(v: object) -> object:
    return int(v) if isinstance(v, float) and v.is_integer() else v


# operations that scale or normalise the input inside the model, before its first weight layer
_SCALING_OPS = ("batch_norm", "layer_norm", "instance_norm", "group_norm", "normalize", "div", "rdiv", "mul", "sub",
                "rsub")


def _graph(run: Run) -> ModelGraph:
    """The first training step's traced facts (inspect/trace.py), when a live run or a checkup traced one."""
    return next(iter(run.facts(ModelGraph)), ModelGraph())


def _site_of(run: Run, what: str) -> dict:
    """``{"where", "code"}`` of the model call (``what="forward"``) or the loss call (``"loss"``)."""
    g = _graph(run)
    if what == "forward":
        s = g.forward_site or {}
    else:
        s = (g.losses[0] if g.losses else None) or g.loss_site or {}
    return {"where": s["where"], "code": s.get("code")} if s.get("where") else {}


def _latest(facts: list[F], *keys: str) -> list[F]:
    """The facts, keeping only the last one per value of the fields ``keys``.

    A live run records its data facts twice: from the first batch (at step 0, so they are said at
    once) and, cumulatively, at the end of its data window; the later facts replace the earlier.
    """
    last: dict[tuple, F] = {}
    for f in facts:
        last[tuple(str(getattr(f, k)) for k in keys)] = f
    return list(last.values())


def _profiles(run: Run, split: str | None = "train") -> list[DataProfile]:
    return [p for p in _latest(run.facts(DataProfile), "split") if split is None or p.split == split]


def _ids_text(ids: list, kind: str | None) -> str:
    shown = ", ".join(str(i) for i in ids[:10]) + (", …" if len(ids) > 10 else "")
    return f"{kind or 'ids'} [{shown}]"


def _d001_from_scan(run: Run, r: Rule) -> list[Finding]:
    evs = _latest(run.facts(DataNonfinite), "split", "where", "scan")
    if not evs:
        return []
    ids: list = []
    parts = []
    for d in evs:
        ids += [i for i in d.sample_ids or () if i not in ids]
        parts.append(f"{d.count} of {d.samples_scanned} {d.split or ''} samples hold NaN/Inf in their "
                     f"{d.where} ({_ids_text(list(d.sample_ids or ()), d.ids)})")
    ev = {"sample_ids": ids[:50], "scans": [d.to_json() for d in evs], **_site_of(run, "forward")}
    return [r.finding(step=None, step_end=None, message="; ".join(parts), evidence=ev, causes=[("nonfinite-data", 0.95)])]


_DOMAIN_TEXT = {
    "index_out_of_range": "class index {hi} is outside the model's {c} output classes (valid 0…{cm1})",
    "negative_index": "class index {lo} is negative (valid 0…{cm1})",
    "float_class_indices": "class-index targets of dtype {dtype}; {loss} expects int64 (Long) class indices",
    "probabilities_out_of_range": "class-probability targets outside [0, 1] (values {vals})",
    "bce_out_of_range": "targets outside [0, 1] for binary cross-entropy (values {vals})",
    "integer_targets": "targets of dtype {dtype}; {loss} needs floating-point targets",
    "shape_mismatch": "targets of per-sample shape {tshape} where the output is {oshape}",
}

_CRASH_HINT = {
    "index_out_of_range": "CrossEntropyLoss/NLLLoss would crash ('Target {hi} is out of bounds'; on a GPU a device-side assert)",
    "negative_index": "the loss would crash on it",
    "float_class_indices": "the loss would raise 'expected scalar type Long'",
    "probabilities_out_of_range": "the loss would be meaningless",
    "bce_out_of_range": "BCELoss would raise; BCEWithLogitsLoss would silently learn from them",
    "integer_targets": "the loss would raise a dtype error",
    "shape_mismatch": "the loss would raise, or broadcast the two into a wrong [batch, batch] loss",
}


def _d004_from_scan(run: Run, r: Rule) -> list[Finding]:
    latest = _latest(run.facts(LabelDomain), "split", "problem")
    evs = [d for d in latest if d.split in (None, "train")] or latest
    if not evs:
        return []
    d = evs[0]
    problem = d.problem or ""
    vals = list(d.values or ())
    c = d.classes
    nums = [v for v in vals if isinstance(v, (int, float))]
    oshape = list(d.output_shape) if d.output_shape is not None else None
    fields = {"hi": max(nums) if nums else "?", "lo": min(nums) if nums else "?", "c": c,
              "cm1": (c - 1) if isinstance(c, int) else "C−1", "dtype": d.target_dtype,
              "loss": d.loss_kind, "vals": vals[:5], "tshape": d.target_shape,
              "oshape": d.expected_shape or oshape}
    detail = _DOMAIN_TEXT.get(problem, problem).format(**fields)
    ids = list(d.sample_ids or ())
    count = d.count if d.count is not None else 0
    msg = detail
    if ids:
        msg += f" in {count} {d.split or ''} samples ({_ids_text(ids, d.ids)})"
    msg += f": {_CRASH_HINT.get(problem, 'the loss cannot use them').format(**fields)} — found before training"
    others = [e.problem for e in evs[1:]]
    ev = {"detail": detail, "problem": problem, "count": count, "sample_ids": ids[:50], "values": vals,
          "loss_kind": d.loss_kind, "output_shape": oshape,
          "target_dtype": d.target_dtype, "where": None, "other_problems": others, **_site_of(run, "loss")}
    return [r.finding(step=None, step_end=None, message=msg, evidence=ev, causes=[("label-domain-error", 0.9)])]


@rule("D002", "warning", causes=("unnormalized-input",), hazard=True)
def unnormalized_inputs(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Finds model inputs far from zero mean and unit scale: raw pixels in [0, 255], features
        with means or spreads of tens or thousands, features on wildly different scales.

    Why is this bad?
        The first layer's pre-activations scale with the inputs: with pixels in [0, 255] the
        initial logits are ~100× too large, softmax saturates, gradients are huge for some
        weights and tiny for others, and a learning rate that suits one feature diverges on
        another. Training oscillates, stalls, or turns NaN.

    Evidence:
        The data profile of the training inputs (a checkup reads the whole loader; a live run its
        first batches): overall mean, std and RMS, per-feature (per-channel for images) means and
        stds, whether all values are integers. Fires on integer values in [0, 255] reaching above
        20, an RMS above 5, a feature with |mean| or std above 10, or stds that differ by more
        than 1000× between non-constant features. Integer inputs (token ids) are not judged.

    Example:
        MNIST read as uint8 and cast to float: integers in [0, 255], mean 33.3, std 78.6.

    Use instead:
        Standardise per feature with statistics of the training split
        (``StandardScaler``; ``transforms.Normalize(mean, std)``), or scale pixels to [0, 1] then
        normalise; apply the same transform to validation data.

    Known false positives:
        Inputs meant to be raw for a first layer that normalises them itself (a ``BatchNorm`` or
        ``LayerNorm`` first, or an explicit scaling inside ``forward``): when the first training
        step was traced (a live run, a checkup) and such an operation comes before the first weight
        layer, nothing is reported.
    """
    for d in _profiles(run):
        x = d.inputs or {}
        dtype = str(x.get("dtype") or "")
        if not x.get("count") or dtype.startswith(("int", "uint", "bool")):
            continue
        ev = {k: x.get(k) for k in ("min", "max", "mean", "std", "rms", "integer_valued", "feature_axis",
                                    "max_abs_mean", "max_abs_mean_column", "max_std", "max_std_column", "min_std",
                                    "columns", "constant_columns") if x.get(k) is not None}
        ev["samples"] = d.samples
        axis = "channel" if x.get("feature_axis") == "channel" else "feature"
        reasons = []
        lo, hi, rms = x.get("min", 0.0), x.get("max", 0.0), x.get("rms", 0.0)
        if x.get("integer_valued") and lo >= 0 and 20 < hi <= 255:
            reasons.append(f"raw pixel-like values: integers in [{lo:g}, {hi:g}] (mean {fmt(x['mean'])}, std {fmt(x['std'])})")
        elif rms > 5:
            reasons.append(f"inputs far from unit scale: RMS {fmt(rms)} (mean {fmt(x['mean'])}, std {fmt(x['std'])}, "
                           f"range [{fmt(lo)}, {fmt(hi)}])")
        if not reasons:
            if (x.get("max_abs_mean") or 0) > 10:
                reasons.append(f"{axis} {x.get('max_abs_mean_column')} has mean {fmt(x['max_abs_mean'])}")
            if (x.get("max_std") or 0) > 10:
                reasons.append(f"{axis} {x.get('max_std_column')} has std {fmt(x['max_std'])}")
            ms = x.get("min_std")
            if ms and ms > 0 and (x.get("max_std") or 0) >= 0.5 and x["max_std"] / ms > 1000:
                reasons.append(f"{axis} stds differ {fmt(x['max_std'] / ms)}× (from {fmt(ms)} to {fmt(x['max_std'])})")
        if reasons:
            scaled = [op for op in _graph(run).input_ops or () if op in _SCALING_OPS]
            if scaled:
                continue  # the model scales its own input (a BatchNorm first, x / 255 inside forward)
            msg = "; ".join(reasons) + f" over {d.input_samples or d.samples} training samples"
            ev.update(_site_of(run, "forward"))
            return [r.finding(step=None, step_end=None, message=msg, evidence=ev, causes=[("unnormalized-input", 0.8)])]
    return []


@rule("D003", "warning", causes=("unnormalized-target",), hazard=True)
def unnormalized_targets(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Finds regression targets on a large scale (house prices ~10⁵, years ~2000).

    Why is this bad?
        A freshly initialised network outputs values near 0: the first MSE is ~mean(y²), e.g.
        10¹⁰, its gradients are as large, and the optimizer either diverges or spends the whole
        run learning the scale instead of the function.

    Evidence:
        The data profile of the continuous training targets (loss MSE, L1, Huber, SmoothL1, or
        unknown): RMS, mean and std; fires when the RMS exceeds 10.

    Example:
        California housing prices in dollars: targets mean 2.07e5, std 1.15e5, first MSE 5.6e10.

    Use instead:
        Standardise the targets (subtract the training mean, divide by the std) and invert the
        transform at prediction time; or predict log(y) for positive, skewed targets.

    Known false positives:
        Targets on a large scale with a model whose last layer is built to output that scale
        (a fixed rescaling inside ``forward``).
    """
    for d in _profiles(run):
        t = d.targets or {}
        if t.get("kind") != "continuous" or not t.get("count"):
            continue
        if d.loss_kind is not None and d.loss_kind not in REGRESSION:
            continue
        rms = t.get("rms", 0.0)
        if rms > 10:
            ev = {k: t.get(k) for k in ("min", "max", "mean", "std", "rms")}
            ev.update({"samples": d.samples, "loss_kind": d.loss_kind, "first_mse_estimate": rms * rms,
                       **_site_of(run, "loss")})
            msg = (f"regression targets on a large scale: RMS {fmt(rms)} (mean {fmt(t['mean'])}, std {fmt(t['std'])}, range "
                   f"[{fmt(t['min'])}, {fmt(t['max'])}]); a fresh model's first MSE is ≈ {fmt(rms * rms)}")
            return [r.finding(step=None, step_end=None, message=msg, evidence=ev, causes=[("unnormalized-target", 0.8)])]
    return []


@rule("D005", "warning", causes=("class-imbalance",), hazard=True)
def class_imbalance(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Finds classes whose frequencies differ strongly in the training data, and reports the
        ratio between the most and the least frequent class.

    Why is this bad?
        The loss is dominated by the frequent classes: the model can reach a low loss and a high
        accuracy by predicting the majority, and the rare classes are barely learned (the loss
        sits at the label-prior entropy, L007).

    Evidence:
        Label counts over the scanned training samples (single-label classification and binary
        targets); fires when the most frequent class has ≥ 10× the samples of the least
        frequent one, with at least 50 samples scanned.

    Example:
        Fraud detection: 9 850 negatives, 150 positives — ratio 65.7.

    Use instead:
        Reweight the loss (``nn.CrossEntropyLoss(weight=...)``, ``BCEWithLogitsLoss(pos_weight=...)``),
        oversample rare classes (``WeightedRandomSampler``), use class-balanced batches or a focal
        loss; judge with per-class recall or F1, not accuracy.

    Known false positives:
        Imbalance that is intended and handled elsewhere (a weighted sampler already in the loader
        shows as balanced counts, so it is not reported).
    """
    for d in _profiles(run):
        if d.first_batch:
            continue  # one batch says little about class balance: judged at the end of the window
        cl = d.classes or {}
        counts = {k: v for k, v in (cl.get("counts") or {}).items() if v > 0}
        total = sum(counts.values())
        if len(counts) < 2 or total < 50:
            continue
        most = max(counts, key=lambda k: counts[k])
        least = min(counts, key=lambda k: counts[k])
        ratio = counts[most] / counts[least]
        if ratio >= 10:
            ev = {"counts": counts, "ratio": ratio, "most": most, "least": least, "samples": total,
                  "least_fraction": counts[least] / total}
            msg = (f"class {most} has {counts[most]} samples, class {least} only {counts[least]}: ratio {ratio:.1f} "
                   f"over {total} training samples ({counts[least] / total * 100:.2g} % in the rarest class)")
            return [r.finding(step=None, step_end=None, message=msg, evidence=ev, causes=[("class-imbalance", 0.7)],
                              severity="warning")]
    return []


@rule("D006", "error", causes=("data-leakage",))
def train_val_leakage(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Finds samples that appear, byte for byte, in both the training and the validation data.

    Why is this bad?
        The validation score then partly measures memorisation: it overstates how the model
        generalises, and early stopping and model selection are judged on training data.

    Evidence:
        A BLAKE2b hash of every scanned sample's input tensor (as the model receives it) in both
        splits: the number of validation samples whose input also occurs in training, their ids and
        the ids of their twins. Not reported when the training set itself is full of duplicates
        (≥ 1 %) and the overlap is no larger than that rate explains.

    Example:
        Two ``random_split`` calls with different seeds: 72 of 360 validation samples (20 %) are
        training samples.

    Use instead:
        Split once, by sample (or by group: patient, user, source image) and deduplicate before
        splitting; build both loaders from that one split.

    Known false positives:
        Datasets where distinct samples legitimately share identical inputs (blank images,
        categorical rows); near-duplicates (augmented, re-encoded) are not detected at all.
    """
    for d in run.facts(DataLeakage):
        dup, nv, nt = d.duplicates or 0, d.val_samples or 0, d.train_samples or 0
        if not dup or not nv:
            continue
        internal = (d.train_internal_duplicates or 0) / nt if nt else 0.0
        frac = dup / nv
        if internal >= 0.01 and frac <= 3 * internal:
            continue
        ev = {"duplicates": dup, "val_samples": nv, "train_samples": nt, "fraction_of_val": frac,
              "val_ids": list(d.val_ids or ())[:20], "train_ids": list(d.train_ids or ())[:20],
              "train_internal_duplicate_rate": internal}
        pairs = ", ".join(f"{v}↔{t}" for v, t in list(zip(d.val_ids or (), d.train_ids or ()))[:5])
        msg = (f"{dup} of {nv} validation samples ({fmt(frac * 100)} %) also occur in the training data "
               f"(val↔train ids: {pairs}{', …' if dup > 5 else ''})")
        return [r.finding(step=None, step_end=None, message=msg, evidence=ev, causes=[("data-leakage", 0.9)],
                          severity="error" if frac >= 0.01 else "warning")]
    return []


@rule("D007", "warning", causes=("unshuffled-data",))
def unshuffled_data(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Finds batches that arrive ordered by label: far fewer classes per batch than shuffled
        data would give, long runs of one class.

    Why is this bad?
        Each stretch of batches pulls the model towards one class; the loss swings from class
        block to class block, the last classes seen dominate, and BatchNorm statistics are
        computed on one class at a time.

    Evidence:
        The labels of the batches in the loader's own order: mean number of distinct classes per
        batch against what a random order of the same class frequencies gives
        (Σ 1 − (1 − p_c)^B), batches holding a single class, the longest run of one label, and the
        loader's sampler. Fires when, over at least 3 full batches, the classes beyond the first
        that a batch holds are at most half as many as expected (two classes sorted: 1.05 per batch
        where 2.0 are expected).

    Example:
        Digits sorted by label, ``shuffle=False``, batch 32: 1.2 classes per batch where shuffled
        batches hold 9.7; runs of 178 samples of one class.

    Use instead:
        ``DataLoader(..., shuffle=True)`` (a seeded ``generator=`` keeps it reproducible), or
        shuffle the arrays once before building the dataset.

    Known false positives:
        Curriculum or deliberately grouped sampling (a custom sampler built for it).
    """
    for d in _profiles(run):
        if d.first_batch:
            continue
        o = d.order
        if not o:
            continue
        exp, mean = o.get("expected_classes_per_batch", 0), o.get("mean_classes_per_batch", 0)
        # every batch holds at least one class: judge the classes beyond the first (two classes,
        # sorted: 1.05 per batch where shuffled batches hold 2.0)
        if o.get("batches", 0) < 3 or exp < 1.5 or (mean - 1) > 0.5 * (exp - 1):
            continue
        ev = dict(o)
        sampler = f" (sampler: {o['sampler']})" if o.get("sampler") else ""
        msg = (f"batches hold {mean:.2g} classes on average where shuffled batches of {o.get('batch_size')} would hold "
               f"{exp:.2g}; {o.get('single_class_batches')} of {o.get('batches')} batches are a single class, longest "
               f"run of one label {o.get('longest_run')} samples{sampler}")
        return [r.finding(step=None, step_end=None, message=msg, evidence=ev, causes=[("unshuffled-data", 0.85)])]
    return []


@rule("D008", "warning", causes=("label-noise",))
def suspect_labels(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Names training samples that a briefly trained model confidently assigns to another class:
        candidates for wrong labels.

    Why is this bad?
        Wrong labels teach the network contradictions: it memorises them late in training,
        which costs capacity and generalisation, and a few percent of them cap the accuracy.

    Evidence:
        A short training on the kept training samples (Adam 1e-3, a few hundred steps: early,
        before a network memorises noise) then each sample's loss: a candidate has a loss above
        max(2·ln C, ln 100) — the model gives its label a probability below min(1/C², 1 %) — and a
        predicted class different from its label. Fires on at least 3 candidates, when they are at most
        20 % of the samples (more means the model did not learn, not noisy labels).

    Example:
        2 % of digits relabelled at random: 27 samples with loss 4.7–9.3, e.g. id 512 labelled 3,
        predicted 8 (none of the clean digits passes 4.6 after the same training).

    Use instead:
        Inspect the listed samples; fix or drop the wrong labels; check that inputs and labels
        stay aligned through the data pipeline (a shuffle applied to one and not the other).

    Known false positives:
        Genuinely ambiguous or atypical samples; the verdict is "look at these", not "these are
        wrong". Regression and multi-label targets are not judged.
    """
    for d in run.facts(LabelOutliers):
        if not d.learned or d.threshold is None:
            continue
        n, count = d.samples or 0, d.above_threshold or 0
        if count < 3 or not n or count > 0.2 * n:
            continue
        cands = list(d.candidates or ())
        shown = "; ".join(
            f"id {c['id']} labelled {_label(c.get('label'))}" + (f", predicted {c['predicted']}" if "predicted" in c else "")
            + f" (loss {fmt(c['loss'])})" for c in cands[:5])
        pred = any("predicted" in c for c in cands)
        verdict = "are predicted as another class" if pred else \
            f"get a probability below {math.exp(-d.threshold):.2g} for their label"
        ev = {"candidates": cands[:20], "count": count, "samples": n, "threshold": d.threshold,
              "median_loss": d.median_loss, "trained_steps": d.trained_steps,
              "sample_ids": [c["id"] for c in cands[:50]]}
        msg = (f"{count} of {n} training samples stay far above the rest after a short training (loss > "
               f"{fmt(d.threshold)}, median {fmt(d.median_loss if d.median_loss is not None else math.nan)}) and {verdict}: {shown}")
        return [r.finding(step=None, step_end=None, message=msg, evidence=ev, causes=[("label-noise", 0.7)])]
    return []
