"""Family M: model and loss configuration, read off the autograd graph at the first step.

The loss's autograd graph tells what fed the loss without tracing the script: a
``NllLossBackward0`` above ``LogSoftmaxBackward0`` above ``SoftmaxBackward0`` is a softmax
applied twice; ``BinaryCrossEntropyBackward0`` above ``SigmoidBackward0`` is the unfused sigmoid +
BCELoss. Reading it once costs nothing per step.
"""
from __future__ import annotations

import re

from ..events import Config, Crash, FrozenInit, InitScale, ModelGraph, Precision, StateDictLoad, finite
from ..findings import Finding
from ..losskinds import NAMES, REGRESSION
from ..numfmt import fmt
from ..run import Run
from . import Rule, rule


@rule("M001", "error", causes=("double-softmax",))
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
        softmax module named; or the traced first step, where a softmax (through casts and
        shape-only operations, e.g. under autocast) feeds cross-entropy.

    Example:
        ``nn.Sequential(nn.Linear(64, 10), nn.Softmax(dim=1))`` with ``nn.CrossEntropyLoss()``.

    Use instead:
        Return logits from the model; apply softmax only when you need probabilities at
        inference.

    Known false positives:
        None: the graph shows the two operations in sequence.
    """
    for c in run.facts(Config):
        if c.fault == "double_softmax":
            where = f" `{c.module}`" if c.module else ""
            msg = f"the model's softmax{where} feeds CrossEntropyLoss, which applies log-softmax again"
            return [r.finding(step=c.step, step_end=None, message=msg, evidence={**c.to_json(), **_traced_site(run, "softmax")},
                              causes=[("double-softmax", 0.95)])]
    # the traced first step sees it where the autograd graph does not (autocast puts a cast between
    # the softmax and the loss; shape-only operations too)
    for g in run.facts(ModelGraph):
        for lf in g.losses or ():
            head = lf.get("head") or {}
            if lf.get("kind") == "cross_entropy" and head.get("op") == "softmax":
                mod = head.get("module")
                where = f" `{mod}`" if mod else ""
                msg = f"the model's softmax{where} feeds {_loss_label(lf)}, which applies log-softmax again"
                ev = {"fault": "double_softmax", "module": mod, "seen_in": "first-step trace", **_head_site(head)}
                return [r.finding(step=0, step_end=None, message=msg, evidence=ev, causes=[("double-softmax", 0.95)])]
    return []


def _traced_site(run: Run, op: str) -> dict:
    """The line that built (or called) the ``op`` feeding the loss, from the traced first step."""
    for g in run.facts(ModelGraph):
        for lf in g.losses or ():
            head = lf.get("head") or {}
            if head.get("op") == op:
                return _head_site(head)
    return {}


@rule("M002", "warning", causes=("numerically-unstable-loss",), hazard=True)
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
        NllLoss ← Log ← Softmax. A hand-written loss (traced at the first step): ``torch.log``
        applied to ``torch.sigmoid`` or ``softmax`` outputs, through clamps, an epsilon or
        ``1 - p``, with the lines that call them.

    Example:
        ``torch.sigmoid(model(x))`` passed to ``nn.BCELoss()``.

    Use instead:
        ``nn.BCEWithLogitsLoss()`` on the raw logits; ``F.log_softmax`` or
        ``nn.CrossEntropyLoss`` on logits.

    Known false positives:
        Works fine while outputs stay moderate; the warning is about what happens when they do not.
    """
    for c in run.facts(Config):
        if c.fault == "sigmoid_bce":
            mod = c.module
            msg = f"sigmoid{f' `{mod}`' if mod else ''} feeds nn.BCELoss: use BCEWithLogitsLoss on the logits"
            site = _traced_site(run, "sigmoid")
        elif c.fault == "log_softmax_unfused":
            msg = "log(softmax(x)) feeds the loss: use log_softmax / CrossEntropyLoss on the logits"
            site = _traced_site(run, "log")
        else:
            continue
        return [r.finding(step=c.step, step_end=None, message=msg, evidence={**c.to_json(), **site},
                          causes=[("numerically-unstable-loss", 0.7)])]
    for g in run.facts(ModelGraph):
        for lf in g.losses or ():
            head = lf.get("head") or {}
            if lf.get("kind") == "bce" and head.get("op") == "sigmoid":
                mod = head.get("module")
                msg = f"sigmoid{f' `{mod}`' if mod else ''} feeds {_loss_label(lf)}: use BCEWithLogitsLoss on the logits"
                ev = {"fault": "sigmoid_bce", "module": mod, "seen_in": "first-step trace", **_head_site(head)}
                return [r.finding(step=0, step_end=None, message=msg, evidence=ev,
                                  causes=[("numerically-unstable-loss", 0.7)])]
        for h in g.handwritten or ():
            head = h.get("prob") or {}
            op = h.get("prob_op")
            calls = h.get("log_calls") or []
            site = _site(*calls, head.get("call"))
            guard = " (clamped or with an epsilon, which stops the NaN but not the vanishing gradient)" \
                if h.get("clamped") else ""
            fused = "F.binary_cross_entropy_with_logits / nn.BCEWithLogitsLoss" if op == "sigmoid" \
                else "F.log_softmax (or nn.CrossEntropyLoss)"
            msg = (f"a hand-written loss takes torch.log of {op} outputs ({_what(head)}){guard}: once the {op} "
                   f"saturates the log is −inf; use {fused} on the logits")
            ev = {"fault": "handwritten_log_of_probabilities", "prob_op": op, "module": head.get("module"),
                  "clamped": h.get("clamped"), "complement": h.get("complement"), **site}
            return [r.finding(step=0, step_end=None, message=msg, evidence=ev,
                              causes=[("numerically-unstable-loss", 0.7)])]
    return []


@rule("M003", "warning", causes=("bad-initialization", "exploding-gradient", "vanishing-gradient"), hazard=True)
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
    for init in run.facts(InitScale):
        layers = init.layers or ()
        bad = []
        for ly in layers:
            refs = [v for v in (ly.default_std, ly.xavier_std, ly.kaiming_std) if v]
            if not refs or ly.kaiming_std is None:
                continue
            lo, hi, std = min(refs), max(refs), ly.std if ly.std is not None else 0.0
            if std > 3 * hi:
                bad.append((ly, "large", std / ly.kaiming_std))
            elif std < lo / 10 and not ly.last:
                bad.append((ly, "small", std / ly.kaiming_std))
        stds = [ly.output_std for ly in layers if ly.output_std]
        drift = stds[-1] / stds[0] if len(stds) >= 3 and stds[0] > 0 else None
        drifting = drift is not None and (drift > 100 or drift < 1e-4)
        if not bad and not drifting:
            continue
        parts = []
        for ly, _how, ratio in bad[:3]:
            parts.append(f"`{ly.name}` ({ly.type} {ly.fan_in}→{ly.fan_out}, then {ly.activation}) has std "
                         f"{fmt(ly.std)}, {ratio:.2g}× the Kaiming std {fmt(ly.kaiming_std)}")
        if len(bad) > 3:
            parts.append(f"{len(bad) - 3} more layer(s)")
        if drifting:
            parts.append(f"the weight layers' output std goes from {fmt(stds[0])} to {fmt(stds[-1])} "
                         f"({fmt(drift)}×) over {len(stds)} layers")
        large = any(h == "large" for _, h, _ in bad) or (drift is not None and drift > 100)
        causes = [("bad-initialization", 0.75), ("exploding-gradient" if large else "vanishing-gradient", 0.25)]
        ev = {"layers": [{**ly.to_json(), "verdict": how} for ly, how, _ in bad], "output_std": stds, "drift": drift,
              "module": bad[0][0].name if bad else None}
        out.append(r.finding(step=None, step_end=None, message="; ".join(parts), evidence=ev, causes=causes))
        break
    return out


@rule("M007", "warning", causes=("precision-overflow", "unnormalized-input"), hazard=True)
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
    for p in run.facts(Precision):
        dts = p.param_dtypes or {}
        low = p.declared or next((k for k in ("float16", "bfloat16") if dts.get(k)), None)
        if low not in ("float16", "bfloat16"):
            continue
        limit = 65504.0 if low == "float16" else 3.3895313892515355e38
        top = p.absmax[0] if p.absmax else None
        nonfinite = p.nonfinite_modules or ()
        loss_v = p.loss_value
        reasons = []
        if nonfinite:
            reasons.append(f"module `{nonfinite[0]}` already outputs Inf/NaN in {low}")
        elif top and top.absmax is not None and top.absmax > limit / 4:
            reasons.append(f"module `{top.name}` ({top.type}) outputs values up to {fmt(top.absmax)}, "
                           f"{fmt(top.absmax / limit * 100)} % of the {low} maximum {limit:.6g}")
        if loss_v is not None and loss_v == loss_v and abs(loss_v) > limit / 4:
            reasons.append(f"the loss ({p.loss_reduction} reduction) is {fmt(loss_v)}, beyond a quarter of the "
                           f"{low} range")
        if reasons:
            ev = p.to_json()
            ev["dtype"] = low
            ev["module"] = nonfinite[0] if nonfinite else (top.name if top else None)
            return [r.finding(step=None, step_end=None, message="; ".join(reasons), evidence=ev,
                              causes=[("precision-overflow", 0.8), ("unnormalized-input", 0.2)])]
    return []


# ---------------------------------------------------------------------------------------------
# The first step's traced graph (``model_graph`` facts, watch/trace.py): what feeds the loss,
# hand-written log-probability terms, weight layers stacked with nothing between them.

_REGRESSION = REGRESSION
_LOSS_NAMES = NAMES


def _loss_label(lf: dict) -> str:
    mod = lf.get("loss_module")
    return f"nn.{mod}" if mod else f"F.{lf.get('function')}"


def _what(head: dict) -> str:
    """``ReLU `net.4``` or ``torch.sigmoid`` (a call outside any module)."""
    op = head.get("function") or head.get("op")
    mod, typ = head.get("module"), head.get("module_type")
    if mod and typ and typ.lower().replace("_", "") == str(op).replace("_", ""):
        return f"{typ} `{mod}`"
    if mod and head.get("in_model"):
        # a functional call inside a module's forward: torch.sigmoid in Net.forward
        return f"{op} in {typ}.forward" + (f" (`{mod}`)" if mod != typ else "")
    return f"{op}"


def _site(*parts: dict | None) -> dict:
    """The first of these facts that names a line of user code: ``{"where": ..., "code": ...}``."""
    for p in parts:
        if p and p.get("where"):
            return {"where": p["where"], "code": p.get("code")}
    return {}


def _head_site(head: dict) -> dict:
    return _site(head.get("defined"), head.get("call"))


def _floor_note(op: str, c: int | None) -> str:
    if not isinstance(c, int) or c < 2:
        return ""
    lo, hi = {"sigmoid": (0.0, 1.0), "hardsigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "hardtanh": (-1.0, 1.0)}.get(op, (None, None))
    if lo is None:
        return ""
    import math

    floor = math.log(1 + (c - 1) * math.exp(lo - hi))
    return f"; the logits are squashed into [{lo:g}, {hi:g}], so the loss cannot fall below {fmt(floor)} for {c} classes"


@rule("M009", "error", causes=("wrong-output-activation",))
def output_activation_mismatch(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Finds a last activation that does not fit the loss it feeds, read off the first training
        step: ReLU, sigmoid or tanh on the logits given to cross-entropy; probabilities or raw
        outputs given to ``NLLLoss`` (which expects log-probabilities); a sigmoid before
        ``BCEWithLogitsLoss`` (which applies one itself); softmax over multi-label targets;
        ReLU or sigmoid on a regression output whose targets leave its range; a categorical
        cross-entropy written by hand on sigmoid outputs.

    Why is this bad?
        Cross-entropy needs unbounded logits: a ReLU zeroes the negative ones (those get no
        gradient, often most of them at the start) and a sigmoid or tanh caps them, so the loss
        has a floor well above zero. A sigmoid before ``BCEWithLogitsLoss`` keeps every prediction
        in (0.5, 0.73). ``NLLLoss`` on raw outputs is −x[y], unbounded below. With sigmoid
        outputs, −Σ y·log σ(z) only pulls the true class up: every output can reach 1 and the loss
        0 while the model tells nothing apart. The loss stalls, or falls without the model learning.

    Evidence:
        The traced first step: the last value-changing operation on the prediction before the loss
        (shape-only operations and dropout skipped), its module and the line that built or called it,
        the fraction of outputs it zeroed, the targets' range; for a hand-written loss, the
        ``torch.log`` over a sigmoid and the one-hot targets multiplied with it.

    Example:
        ``nn.Sequential(..., nn.Linear(64, 10), nn.ReLU())`` with ``nn.CrossEntropyLoss()``: 52 %
        of the logits are exactly 0 at step 0.

    Use instead:
        Return raw logits from the last Linear and let the loss apply its own normalisation
        (``CrossEntropyLoss``, ``BCEWithLogitsLoss``); use ``log_softmax`` before ``NLLLoss``;
        sigmoid per label with BCE for multi-label targets; no activation (identity) on a regression
        output unless its range matches the targets'.

    Known false positives:
        A bounded last activation chosen on purpose with a loss that tolerates it (a temperature-
        scaled tanh into cross-entropy) is still reported: the floor it puts on the loss is real.
    """
    out: list[Finding] = []
    for g in run.facts(ModelGraph):
        for lf in g.losses or ():
            kind, head, tgt = lf.get("kind"), lf.get("head") or {}, lf.get("target") or {}
            op = head.get("op")
            ps = lf.get("pred_shape") or []
            c = ps[1] if len(ps) >= 2 and isinstance(ps[1], int) else None
            loss = _loss_label(lf)
            what = _what(head)
            reason = None
            if kind == "cross_entropy" and op in ("relu", "relu6", "softplus"):
                zf = head.get("zero_fraction")
                zeros = f"{zf * 100:.0f} % of the logits are exactly 0 at the first step and get no gradient; " \
                    if isinstance(zf, (int, float)) and op != "softplus" else ""
                reason = (f"{what} on the model's output feeds {loss}, which expects unbounded logits: {zeros}"
                          "no logit can go below 0")
            elif kind == "cross_entropy" and op in ("sigmoid", "tanh", "hardtanh", "hardsigmoid"):
                reason = f"{what} on the model's output feeds {loss}, which expects unbounded logits{_floor_note(op, c)}"
            elif kind == "nll" and op not in ("log_softmax", "log", "logsigmoid", "none"):
                if op == "softmax":
                    reason = (f"softmax probabilities from {what} feed {loss}, which expects log-probabilities: the loss "
                              "is −p[y], stuck in [−1, 0] with gradients that vanish as p saturates")
                else:
                    reason = (f"raw outputs ({what}) feed {loss}, which expects log-probabilities (log_softmax): the "
                              "loss is −x[y], unbounded below, and it falls forever by growing one output")
            elif kind == "bce_logits" and op in ("sigmoid", "softmax", "hardsigmoid"):
                reason = (f"probabilities from {what} feed {loss}, which applies a sigmoid itself: every prediction stays in "
                          "(0.5, 0.73), the loss cannot approach 0 and the gradients are 4× too small at best")
            elif kind == "bce" and op == "softmax" and tgt.get("multi_hot"):
                reason = (f"softmax ({what}) over multi-label targets (rows with several 1s) feeds {loss}: the outputs "
                          "compete for one unit of probability, so the model cannot predict two labels at once")
            elif kind in _REGRESSION and isinstance(tgt.get("min"), (int, float)):
                lo, hi = tgt["min"], tgt.get("max", tgt["min"])
                if op in ("relu", "relu6", "softplus") and lo < 0:
                    reason = (f"{what} on the regression output feeds {loss}, but the targets go down to {fmt(lo)}: "
                              "negative targets can never be predicted, and units pushed below 0 stop learning")
                elif op in ("sigmoid", "hardsigmoid") and (lo < 0 or hi > 1):
                    reason = (f"{what} bounds the regression output to [0, 1] but the targets span [{fmt(lo)}, {fmt(hi)}]: "
                              "most targets can never be reached")
                elif op in ("tanh", "hardtanh") and (lo < -1 or hi > 1):
                    reason = (f"{what} bounds the regression output to [−1, 1] but the targets span [{fmt(lo)}, {fmt(hi)}]: "
                              "most targets can never be reached")
            if reason:
                ev = {"loss": loss, "loss_kind": kind, "activation": op, "module": head.get("module"),
                      "module_type": head.get("module_type"), "head": head, "target": tgt, **_head_site(head),
                      "loss_call": _site(lf)}
                out.append(r.finding(step=0, step_end=None, message=reason, evidence=ev,
                                     causes=[("wrong-output-activation", 0.9)]))
        for h in g.handwritten or ():
            tgt = h.get("target") or {}
            shape = tgt.get("shape") or []
            classes = shape[1] if len(shape) == 2 else None
            if h.get("prob_op") == "sigmoid" and not h.get("complement") and tgt.get("one_hot") and (classes or 0) > 2:
                head = h.get("prob") or {}
                msg = (f"a cross-entropy written by hand takes the log of sigmoid outputs ({_what(head)}) against one-hot "
                       f"targets over {classes} classes: only −log σ(z) of the true class is in the loss, nothing pushes "
                       "the other classes down, so every output can go to 1 and the loss to 0 without telling classes "
                       "apart")
                ev = {"loss": "hand-written", "activation": "sigmoid", "module": head.get("module"),
                      "module_type": head.get("module_type"), "head": head, "target": tgt,
                      **_site(*(h.get("log_calls") or []), head.get("call"))}
                out.append(r.finding(step=0, step_end=None, message=msg, evidence=ev,
                                     causes=[("wrong-output-activation", 0.9)]))
    return out[:1]


def _class_like(tgt: dict, pred_shape: list) -> str | None:
    """Why these regression targets look like class indices (None when they do not)."""
    if not tgt.get("integer_valued") or not isinstance(tgt.get("min"), (int, float)):
        return None
    lo, hi, k = tgt["min"], tgt.get("max", 0), tgt.get("distinct") or 0
    if lo < 0 or hi > 1000 or k < 3:
        return None
    cols = pred_shape[1] if len(pred_shape) >= 2 else 1
    tshape = tgt.get("shape") or []
    per_sample = len(tshape) <= 1 or (len(tshape) == 2 and tshape[1] == 1)
    if cols > 1 and per_sample:
        return f"the model has {cols} outputs per sample and the targets one integer each"
    # a first batch of 16 can miss class 0: labels from 0 or 1 up, most values present
    dense = lo <= 1 and hi <= 100 and k >= 0.5 * (hi + 1)
    if tgt.get("cast_from") and dense:
        return f"the targets are {tgt['cast_from']} labels {int(lo)}…{int(hi)} (first batch) cast to float"
    return None


@rule("M008", "error", causes=("wrong-loss-function",))
def loss_task_mismatch(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Finds a loss that does not fit the task its targets describe, read off the first training
        step: a regression loss (MSE, L1, Huber) on class indices, binary cross-entropy on labels
        with more than two classes, cross-entropy over a single output, cross-entropy on
        continuous targets.

    Why is this bad?
        MSE on class indices treats class 7 as "closer" to 8 than to 1 and asks the model to
        output the index itself (or, broadcast against a [batch, classes] output, every class to
        output it): it trains, to a useless model. BCE on labels 0…9 is outside its domain.
        Cross-entropy over one output is log-softmax of a single number: 0, whatever the model
        does, so nothing learns.

    Evidence:
        The loss called in the first step, the prediction's shape, and the targets as the loss
        received them: dtype, range, number of distinct values, and whether they were integers
        cast to float on the way (``y.float()``).

    Example:
        ``nn.MSELoss()(model(x), y.float().unsqueeze(1))`` with a 10-output model and digit labels
        0…9 (int64 cast to float).

    Use instead:
        Single-label classes: ``nn.CrossEntropyLoss`` on logits with int64 class indices;
        binary or multi-label: ``nn.BCEWithLogitsLoss`` with float 0/1 targets shaped like the
        output; regression: MSE/Huber on standardised float targets, one output per target.

    Known false positives:
        Counts or ordinal scores starting at 0 (0, 1, 2, … stars) regressed on purpose with one
        output are reported when they arrive as integers cast to float.
    """
    for g in run.facts(ModelGraph):
        for lf in g.losses or ():
            kind, tgt = lf.get("kind"), lf.get("target") or {}
            ps = lf.get("pred_shape") or []
            loss = _loss_label(lf)
            reason = None
            vals = [v for v in tgt.get("values") or [] if finite(v)]
            shown = ", ".join(f"{v:g}" for v in vals[:6]) + (", …" if finite(tgt.get("distinct")) and tgt["distinct"] > 6
                                                            else "")
            if kind in _REGRESSION:
                why = _class_like(tgt, ps)
                if why:
                    reason = (f"{loss} on class indices ({shown}): {why}; a regression loss makes the model output the "
                              "class number itself, as if class 3 were closer to 4 than to 9")
            elif kind in ("bce", "bce_logits") and tgt.get("integer_valued") and (tgt.get("max") or 0) > 1 \
                    and (tgt.get("distinct") or 0) >= 3:
                reason = (f"{loss} on multi-class labels ({shown}): binary cross-entropy takes targets in [0, 1], one "
                          "probability per output")
            elif kind == "cross_entropy" and len(ps) >= 2 and ps[1] == 1:
                reason = (f"{loss} over a single output per sample: log-softmax of one number is 0, so the loss is 0 "
                          "whatever the model does and nothing is learned")
            elif kind == "cross_entropy" and str(tgt.get("dtype", "")).startswith(("float", "bfloat", "half")) \
                    and tgt.get("shape") == ps and tgt.get("rows_sum_to_one") is False \
                    and not (tgt.get("integer_valued") and (tgt.get("max") or 0) <= 1):
                reason = (f"{loss} on continuous targets (rows do not sum to 1, values {shown}): cross-entropy compares "
                          "class distributions; a continuous target needs a regression loss")
            if reason:
                ev = {"loss": loss, "loss_kind": kind, "pred_shape": ps, "target": tgt, **_site(lf),
                      "module": lf.get("loss_module")}
                return [r.finding(step=0, step_end=None, message=reason, evidence=ev,
                                  causes=[("wrong-loss-function", 0.85)])]
    return []


@rule("M010", "warning", causes=("missing-nonlinearity",))
def missing_nonlinearity(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Finds a weight layer (Linear, convolution) whose input comes straight from another weight
        layer, with only reshapes, dropout or BatchNorm between them, in the first training step.

    Why is this bad?
        Two affine maps in a row are one affine map: the extra layer adds parameters and
        optimisation difficulty but no expressive power, and a "deep" model built this way is a
        linear model (a logistic regression, for a classifier) however many layers it has.

    Evidence:
        The traced first step: the two layers (modules, sizes, the line that built them), the
        operations seen between them.

    Example:
        ``nn.Sequential(nn.Linear(64, 128), nn.Linear(128, 10))``: 64→128→10 collapses to 64→10.

    Use instead:
        Put a nonlinearity between the layers (``nn.ReLU()``, ``nn.GELU()``), or drop the extra
        layer if a linear model is what you want.

    Known false positives:
        Deliberate factorisations are skipped: a bottleneck narrower than both ends (low-rank
        layers, MobileNetV2's linear bottleneck), a depthwise/grouped convolution followed by a
        pointwise one (separable convolutions), and a layer whose output is also read elsewhere
        (an input projection feeding the query, key and value of attention, a residual branch).
        A purely linear model built this way on purpose is reported.
    """
    pairs = []
    for g in run.facts(ModelGraph):
        for p in g.stacked_linear or ():
            d = p.get("dims") or []
            if len(d) != 3 or d[1] < min(d[0], d[2]) or (p.get("first_groups") or 1) > 1:
                continue
            pairs.append(p)
    if not pairs:
        return []

    def name(x: dict) -> str:
        return f"`{x.get('module')}` ({x.get('module_type')})" if x.get("module") else x.get("op", "?")

    parts = []
    for p in pairs[:3]:
        d = p["dims"]
        between = f" (only {', '.join(p['between'])} between)" if p.get("between") else ""
        parts.append(f"{name(p['first'])} feeds {name(p['second'])} with no nonlinearity{between}: "
                     f"{d[0]}→{d[1]}→{d[2]} is one linear map {d[0]}→{d[2]}")
    if len(pairs) > 3:
        parts.append(f"{len(pairs) - 3} more such pair(s)")
    first = pairs[0]
    ev = {"pairs": pairs[:10], "module": first["second"].get("module"), "after": first["first"].get("module"),
          **_site(first["second"].get("defined"), first["first"].get("defined"), first["second"], first["first"])}
    return [r.finding(step=0, step_end=None, message="; ".join(parts), evidence=ev,
                      causes=[("missing-nonlinearity", 0.85)])]


def _label_crashes() -> tuple[re.Pattern[str], ...]:
    from .data import LABEL_CRASHES

    return tuple(p for p, _ in LABEL_CRASHES)


_CRASH_PATTERNS: tuple[tuple[re.Pattern[str], str, list[tuple[str, float]]], ...] = (
    (re.compile(r"Expected more than 1 value per channel when training"),
     "a batch of one sample reached a BatchNorm layer in training mode (it needs ≥ 2 to estimate a variance)",
     [("batch-too-small", 0.8), ("batchnorm-misuse", 0.3)]),
    (re.compile(r"mat1 and mat2 shapes cannot be multiplied|size mismatch|shapes cannot be multiplied"),
     "a layer received an input of the wrong shape", [("code-bug", 0.7)]),
    (re.compile(r"out of memory", re.IGNORECASE), "the device ran out of memory",
     [("batch-too-large", 0.5)]),
)


@rule("M014", "error", causes=("batch-too-small", "batchnorm-misuse", "code-bug", "batch-too-large"))
def training_crash(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Reads the exception a training script died of and names the cause when its message is one
        PyTorch gives for a known fault (labels outside the loss's domain are D004's).

    Why is this bad?
        The run is over; the traceback says where but rarely why.

    Evidence:
        The exception type and message and the step it was raised at, matched against PyTorch's
        messages: a single-sample batch into BatchNorm in training mode, matrix shapes that do
        not fit, running out of memory. Other crashes are reported without a cause.

    Example:
        ``ValueError: Expected more than 1 value per channel when training, got input size
        torch.Size([1, 64])`` at step 0 with batch_size=1.

    Use instead:
        For BatchNorm: batches of ≥ 2 (``drop_last=True`` when the last batch can hold one
        sample), or GroupNorm/LayerNorm; for shapes: print the tensor shapes before the layer.

    Known false positives:
        None: it reports only a crash that happened; an unmatched crash gets no cause.
    """
    for c in run.facts(Crash):
        if any(p.search(c.text) for p in _label_crashes()):
            continue  # D004's
        for pat, what, causes in _CRASH_PATTERNS:
            if pat.search(c.text):
                ev = {"exception": c.type, "message": str(c.message)[:500], "where": c.where, "detail": what}
                msg = f"the script crashed at step {c.step}: {what} ({c.type}: {str(c.message)[:120]})"
                return [r.finding(step=c.step, step_end=c.step, message=msg, evidence=ev, causes=causes)]
        ev = {"exception": c.type, "message": str(c.message)[:500], "where": c.where}
        return [r.finding(step=c.step, step_end=c.step, severity="error", evidence=ev, causes=[],
                          message=f"the script crashed at step {c.step}: {c.type}: {str(c.message)[:160]}")]
    return []


@rule("M013", "error", causes=("code-bug",))
def frozen_at_init(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Catches a pretrained checkpoint that did not load: ``load_state_dict(..., strict=False)``
        that matched (almost) none of the module's keys, and parameters that are frozen while
        their values are still a fresh default initialisation.

    Why is this bad?
        The run fine-tunes a head on top of random features: it trains, and it is far worse than
        it should be, and nothing crashes. With ``strict=False`` PyTorch reports the mismatch only
        in a return value nobody reads.

    Evidence:
        Live: every ``load_state_dict`` call on the model or a submodule before training, with the
        number of tensors it loaded and the missing and unexpected keys (a checkpoint saved from
        ``nn.DataParallel`` has a ``module.`` prefix on every key). And the frozen weight tensors
        (``requires_grad=False``) whose values fit PyTorch's default uniform initialisation
        (every value within ±1/√fan_in, standard deviation within 5 % of its uniform value).

    Example:
        ``backbone.load_state_dict(state, strict=False)`` loaded 0 of 6 tensors (6 unexpected keys
        such as ``module.0.weight``); the backbone is frozen.

    Use instead:
        Load with ``strict=True`` (the default), which raises on a mismatch; strip the prefix
        (``{k.removeprefix('module.'): v for k, v in state.items()}``).

    Known false positives:
        A layer deliberately frozen at its random initialisation (random features, a fixed
        random projection) looks the same; the message says which tensors.
    """
    loads = [d for d in run.facts(StateDictLoad) if d.early]
    frozen = next(iter(run.facts(FrozenInit)), None)
    for d in loads:
        keys, loaded = d.keys, d.loaded
        if keys is None or loaded is None or keys <= 0 or loaded > 0.1 * keys:
            continue
        unexpected, missing = list(d.unexpected or ()), list(d.missing or ())
        mod = d.module or "the model"
        msg = (f"load_state_dict(strict={d.strict}) on `{mod}` loaded {loaded} of its {keys} tensors: "
               f"{len(missing)} keys missing, {len(unexpected)} unexpected")
        if unexpected:
            msg += f" (e.g. `{unexpected[0]}` for `{missing[0]}`)" if missing else f" (e.g. `{unexpected[0]}`)"
        ev = {"module": mod, "loaded": loaded, "keys": keys, "missing": missing[:20], "unexpected": unexpected[:20],
              "strict": d.strict, "where": d.where}
        if frozen:
            params = list(frozen.params or ())
            ev["frozen"] = params[:20]
            msg += f"; {len(params)} of its tensors are frozen at their random initialisation"
        return [r.finding(step=None, step_end=None, message=msg, evidence=ev, causes=[("code-bug", 0.9)])]
    if frozen and frozen.params:
        names = list(frozen.params)
        msg = (f"{len(names)} frozen tensors ({', '.join(f'`{n}`' for n in names[:4])}"
               f"{' …' if len(names) > 4 else ''}) still hold PyTorch's default random initialisation: "
               "pretrained weights that were never loaded?")
        return [r.finding(step=None, step_end=None, message=msg, evidence=frozen.to_json(), causes=[("code-bug", 0.75)])]
    return []
