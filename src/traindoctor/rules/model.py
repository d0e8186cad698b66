"""Family M: model and loss configuration, read off the autograd graph at the first step.

The loss's autograd graph tells what fed the loss without tracing the script: a
``NllLossBackward0`` above ``LogSoftmaxBackward0`` above ``SoftmaxBackward0`` is a softmax
applied twice; ``BinaryCrossEntropyBackward0`` above ``SigmoidBackward0`` is the unfused sigmoid +
BCELoss. Reading it once costs nothing per step.
"""
from __future__ import annotations

from ..findings import Finding
from ..run import Run
from . import Rule, rule


@rule("M001", "error")
def double_softmax(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Finds a softmax in the model whose output goes into a loss that applies log-softmax
        again (``nn.Softmax`` into ``nn.CrossEntropyLoss``).

    Why is this bad?
        Cross-entropy then sees probabilities in [0, 1] as logits: the loss cannot go below
        ln(1 + (C−1)/e) (1.46 for 10 classes), its gradients shrink, and training crawls or
        stalls far from a good model.

    Evidence:
        The loss's autograd graph at the first step: NllLoss ← LogSoftmax ← Softmax, and the
        softmax module named.

    Example:
        ``nn.Sequential(nn.Linear(64, 10), nn.Softmax(dim=1))`` with ``nn.CrossEntropyLoss()``.

    Use instead:
        Return logits from the model; apply softmax only when you need probabilities at
        inference.

    Known false positives:
        None: the graph shows the two operations in sequence.
    """
    for e in run.events_of("config"):
        if e.data.get("fault") == "double_softmax":
            mod = e.data.get("module")
            where = f" `{mod}`" if mod else ""
            msg = f"the model's softmax{where} feeds CrossEntropyLoss, which applies log-softmax again"
            return [r.finding(step=e.step, step_end=None, message=msg, evidence=dict(e.data),
                              causes=[("double-softmax", 0.95)])]
    return []


@rule("M002", "warning")
def unstable_loss_formula(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Finds probabilities fed to a log without the fused, stable form: ``sigmoid`` into
        ``nn.BCELoss``, or ``log(softmax(x))``.

    Why is this bad?
        Once a sigmoid or softmax saturates, the probability rounds to exactly 0 or 1 and its log
        is −inf: BCELoss clamps it at −100 (per-sample loss 100) and an unfused log gives NaN,
        and the gradient through the saturated unit vanishes.

    Evidence:
        The loss's autograd graph at the first step: BinaryCrossEntropy ← Sigmoid, or
        NllLoss ← Log ← Softmax.

    Example:
        ``torch.sigmoid(model(x))`` passed to ``nn.BCELoss()``.

    Use instead:
        ``nn.BCEWithLogitsLoss()`` on the raw logits; ``F.log_softmax`` or
        ``nn.CrossEntropyLoss`` on logits.

    Known false positives:
        Works fine while outputs stay moderate; the warning is about what happens when they do not.
    """
    for e in run.events_of("config"):
        fault = e.data.get("fault")
        if fault == "sigmoid_bce":
            mod = e.data.get("module")
            msg = f"sigmoid{f' `{mod}`' if mod else ''} feeds nn.BCELoss: use BCEWithLogitsLoss on the logits"
        elif fault == "log_softmax_unfused":
            msg = "log(softmax(x)) feeds the loss: use log_softmax / CrossEntropyLoss on the logits"
        else:
            continue
        return [r.finding(step=e.step, step_end=None, message=msg, evidence=dict(e.data),
                          causes=[("numerically-unstable-loss", 0.7)])]
    return []


@rule("M003", "warning")
def bad_init_scale(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Compares each weight layer's initial standard deviation with the variance-preserving
        scales (PyTorch's default, Xavier, Kaiming for the nonlinearity that follows), and the
        measured output scale of the weight layers through depth.

    Why is this bad?
        Each layer multiplies the activation scale by about std·√fan_in·gain: too large and the
        activations and gradients blow up layer after layer (softmax saturates, the loss starts
        huge); too small or zero and they vanish (or every unit learns the same thing), so the deep
        layers get no useful gradient.

    Evidence:
        ``init_scale`` facts (a checkup, or a live run's first step): per layer its std, fan-in,
        fan-out, the activation after it and the reference stds; fires when a layer's std is above
        3× the largest reference or (a hidden layer) below a tenth of the smallest, or when the
        input-dependent output scale of the weight layers (the spread across the batch, so biases do
        not count) grows more than 100× or shrinks more than 10 000× from the first to the last
        (PyTorch's default init shrinks a ReLU stack ~2.4× per layer by design).

    Example:
        ``nn.init.normal_(w, std=1.0)`` on Linear(64, 64) + ReLU: std 1.0 against Kaiming's 0.177;
        the output scale grows 40× from the first to the last layer.

    Use instead:
        Kaiming (He) init for ReLU-family layers (``nn.init.kaiming_normal_(w, nonlinearity="relu")``),
        Xavier (Glorot) for tanh/sigmoid, zero biases — or simply PyTorch's default init; add
        normalisation layers in deep stacks.

    Known false positives:
        Layers deliberately initialised small or zero as the last layer of a residual branch or of
        the model (only hidden layers are judged for "too small"); a stack of more than about ten
        default-initialised ReLU layers without normalisation shrinks past 10 000× and is reported.
    """
    out = []
    for e in run.events_of("init_scale"):
        layers = e.data.get("layers") or []
        bad = []
        for ly in layers:
            refs = [ly.get(k) for k in ("default_std", "xavier_std", "kaiming_std") if ly.get(k)]
            if not refs:
                continue
            lo, hi, std = min(refs), max(refs), ly.get("std", 0.0)
            if std > 3 * hi:
                bad.append((ly, "large", std / ly["kaiming_std"]))
            elif std < lo / 10 and not ly.get("last"):
                bad.append((ly, "small", std / ly["kaiming_std"]))
        stds = [ly.get("output_std") for ly in layers if ly.get("output_std")]
        drift = stds[-1] / stds[0] if len(stds) >= 3 and stds[0] > 0 else None
        drifting = drift is not None and (drift > 100 or drift < 1e-4)
        if not bad and not drifting:
            continue
        parts = []
        for ly, _how, ratio in bad[:3]:
            parts.append(f"`{ly['name']}` ({ly['type']} {ly['fan_in']}→{ly['fan_out']}, then {ly['activation']}) has std "
                         f"{ly['std']:.3g}, {ratio:.2g}× the Kaiming std {ly['kaiming_std']:.3g}")
        if len(bad) > 3:
            parts.append(f"{len(bad) - 3} more layer(s)")
        if drifting:
            parts.append(f"the weight layers' output std goes from {stds[0]:.3g} to {stds[-1]:.3g} "
                         f"({drift:.3g}×) over {len(stds)} layers")
        large = any(h == "large" for _, h, _ in bad) or (drift is not None and drift > 100)
        causes = [("bad-initialization", 0.75), ("exploding-gradient" if large else "vanishing-gradient", 0.25)]
        ev = {"layers": [dict(ly, verdict=how) for ly, how, _ in bad], "output_std": stds, "drift": drift,
              "module": bad[0][0]["name"] if bad else None}
        out.append(r.finding(step=None, step_end=None, message="; ".join(parts), evidence=ev, causes=causes))
        break
    return out


@rule("M007", "warning")
def reduced_precision_overflow(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Finds activations, logits or a summed loss that overflow — or come within 4× of
        overflowing — the range of the reduced precision the training uses (float16 max 65 504).

    Why is this bad?
        In float16 anything above 65 504 becomes Inf; the next softmax or normalisation turns it
        into NaN and the step is lost (GradScaler skips it) — or, outside autocast, the run dies.
        A loss summed over a large batch overflows the same way.

    Evidence:
        ``precision`` facts: the largest magnitude each module outputs on a real batch and its
        dtype, the parameters' dtypes, the precision declared for training
        (``checkup(amp_dtype=...)``), the loss value and its reduction. Judged only when the model
        runs in, or is declared to train in, float16 or bfloat16.

    Example:
        A half-precision model on raw [0, 255] inputs: `fc1` outputs 1.9e5 → Inf.

    Use instead:
        Keep losses and reductions in float32 (autocast does this for the built-in losses); use
        ``torch.amp.GradScaler`` for float16; normalise inputs; prefer bfloat16 (float32's range)
        where the hardware supports it; use ``reduction="mean"``.

    Known false positives:
        Values that autocast keeps in float32 for that operation (autocast's float32 list) do not
        overflow; the finding then only says how close the float16 ops come.
    """
    for e in run.events_of("precision"):
        d = e.data
        dts = d.get("param_dtypes") or {}
        low = d.get("declared") or next((k for k in ("float16", "bfloat16") if dts.get(k)), None)
        if low not in ("float16", "bfloat16"):
            continue
        limit = 65504.0 if low == "float16" else 3.3895313892515355e38
        peaks = d.get("absmax") or []
        top = peaks[0] if peaks else None
        nonfinite = d.get("nonfinite_modules") or []
        loss_v = d.get("loss_value")
        reasons = []
        if nonfinite:
            reasons.append(f"module `{nonfinite[0]}` already outputs Inf/NaN in {low}")
        elif top and top.get("absmax", 0) > limit / 4:
            reasons.append(f"module `{top['name']}` ({top['type']}) outputs values up to {top['absmax']:.3g}, "
                           f"{top['absmax'] / limit * 100:.3g} % of the {low} maximum {limit:.6g}")
        if isinstance(loss_v, (int, float)) and loss_v == loss_v and abs(loss_v) > limit / 4:
            reasons.append(f"the loss ({d.get('loss_reduction')} reduction) is {loss_v:.3g}, beyond a quarter of the "
                           f"{low} range")
        if reasons:
            ev = dict(d)
            ev["dtype"] = low
            ev["module"] = nonfinite[0] if nonfinite else (top or {}).get("name")
            return [r.finding(step=None, step_end=None, message="; ".join(reasons), evidence=ev,
                              causes=[("precision-overflow", 0.8), ("unnormalized-input", 0.2)])]
    return []
