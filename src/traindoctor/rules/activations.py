"""Family A: activations (A001–A004), from forward hooks armed on sampled steps."""
from __future__ import annotations

import numpy as np

from ..events import NonfiniteLoss
from ..findings import Finding
from ..numfmt import fmt
from ..run import Run, Series
from . import Rule, rule
from ._signals import before_nonfinite, inputs_look_normalised
from ._stats import late, sustained


def _update_ratio_until(run: Run, step: int) -> float | None:
    vals = []
    for k in run.names("update_ratio"):
        s = run.series[k]
        v = s.values[(s.steps <= step) & np.isfinite(s.values)]
        if v.size:
            vals.append(float(v.max()))
    return float(np.median(vals)) if vals else None


def _worst_module(run: Run, prefix: str, bar: float = 0.5) -> tuple[str, float, Series] | None:
    """The module whose fraction (dead, saturated) stays at or above ``bar`` highest, before any NaN."""
    best: tuple[str, float, Series] | None = None
    for name in run.names(prefix):
        s = before_nonfinite(run, name)
        if s is not None and len(s) >= 2 and sustained(s.values, lambda x: x >= bar):
            v = float(np.median(late(s.values)))
            if best is None or v > best[1]:
                best = (name.split("/", 1)[1], v, s)
    return best


@rule("A001", "warning", causes=("dying-relu", "lr-too-high", "bad-initialization"))
def dead_relu(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Measures, per ReLU-family module, the fraction of units that output zero for every
        sample of a batch (sampled steps).

    Why is this bad?
        A ReLU whose input is negative for every sample gets no gradient and never comes back:
        a large step (often a learning rate too high) pushes units there, and capacity is lost
        for good.

    Evidence:
        The dead fraction at or above 50 % for the median of the last half of the samples and
        each of the last two, in at least one module; the update/weight ratio up to the onset
        tells whether the learning rate pushed them there (≥ 0.5: steps of half the weights'
        size), and units dead at step 0, before any update, point at the initialisation.

    Example:
        `relu1`: 71 % of units dead from step 150 on, after update ratios of 0.2.

    Use instead:
        Lower the learning rate; LeakyReLU/GELU; Kaiming init; normalisation before the ReLU.

    Known false positives:
        Very small batches can leave a unit silent for one batch by chance; the fraction must
        hold over half the run.
    """
    found = _worst_module(run, "dead_frac")
    if found is None:
        return []
    worst, worst_v, worst_s = found
    ev: dict = {"module": worst, "dead_fraction": worst_v, "first_fraction": float(worst_s.values[0])}
    msg = f"{worst_v * 100:.0f} % of the units of `{worst}` output 0 for every sample (dead ReLUs)"
    causes: dict[str, float] = {"dying-relu": 0.65}
    onset_i = int(np.argmax(worst_s.values >= 0.5))
    onset = int(worst_s.steps[onset_i])
    if onset_i == 0 and worst_s.steps[0] == 0:
        # dead at the first forward pass, before any update moved a weight: the initialisation
        # (negative biases, a weight scale) put the units below zero, not the learning rate
        ev["dead_from_start"] = True
        msg += " from the very first step, before any update"
        causes = {"dying-relu": 0.8, "bad-initialization": 0.3}
        return [r.finding(step=onset, step_end=int(worst_s.steps[-1]), message=msg, evidence=ev,
                          causes=list(causes.items()))]
    # the updates that pushed the units there: those up to the onset, not the quiet ones after
    ur = _update_ratio_until(run, onset)
    if ur is not None:
        ev["update_ratio_before"] = ur
        if ur >= 0.5:
            # steps that moved the weights by half their size or more: the learning rate killed them
            causes = {"lr-too-high": 0.85, "dying-relu": 0.45}
            msg += f", after updates of {fmt(ur)} of the weights per step: the learning rate pushed them there"
        elif ur > 1e-2:
            causes["lr-too-high"] = 0.6
            msg += f", after updates of {fmt(ur)} of the weights per step: the learning rate pushed them there"
    return [r.finding(step=onset, step_end=int(worst_s.steps[-1]), message=msg, evidence=ev, causes=list(causes.items()))]


@rule("A002", "warning", causes=("saturating-activation", "unnormalized-input", "bad-initialization"))
def saturated_activations(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Measures, per sigmoid/tanh-family module, the fraction of outputs in the flat tails
        (sigmoid < 0.01 or > 0.99, |tanh| > 0.99) on sampled steps.

    Why is this bad?
        In the tails the derivative is ≈ 0: the gradient through the unit vanishes, so layers
        below it stop learning (and, stacked, the gradient vanishes through depth).

    Evidence:
        The saturated fraction at or above 50 % for the median of the last half of the samples
        and each of the last two.

    Example:
        `act3` (Tanh): 83 % of outputs beyond ±0.99 on raw 0–255 inputs.

    Use instead:
        ReLU-family activations in hidden layers; standardise the inputs; smaller init (Xavier);
        normalisation before the activation.

    Known false positives:
        Gating units (LSTM gates, attention gates) saturate by design; only nn.Sigmoid/nn.Tanh
        modules are measured.
    """
    found = _worst_module(run, "saturated_frac")
    if found is None:
        return []
    worst, worst_v, worst_s = found
    ev = {"module": worst, "saturated_fraction": worst_v}
    msg = f"{worst_v * 100:.0f} % of the outputs of `{worst}` sit in the flat tails of the activation"
    causes = [("saturating-activation", 0.65), ("unnormalized-input", 0.3), ("bad-initialization", 0.25)]
    return [r.finding(step=int(worst_s.steps[0]), step_end=int(worst_s.steps[-1]), message=msg, evidence=ev,
                      causes=causes)]


@rule("A003", "warning", causes=("unnormalized-input", "bad-initialization", "lr-too-high", "exploding-gradient"))
def exploding_activations(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Tracks the largest absolute logit (the model's output) and ReLU activation on sampled
        steps.

    Why is this bad?
        Huge logits saturate softmax/sigmoid (probabilities of exactly 0 and 1, losses pinned at
        clamps, zero gradients) and are one step away from overflow in exp.

    Evidence:
        The maximum |logit| (or activation) above 1e3 for the median of the last half of the
        samples and each of the last two, or grown ≥ 100× from the first sample to above 100.

    Example:
        Logits reach 4e+03 by step 200 with inputs in [0, 255] and init std 1.

    Use instead:
        Standardise inputs; Xavier/Kaiming init (not std 1 or 10); lower the LR; weight decay or
        a normalisation layer before the output.

    Known false positives:
        Models that output unnormalised scores by design (e.g. large-vocabulary LM logits ~ 30)
        stay far below the bar.
    """
    cands = ["logits_absmax"] + run.names("act_absmax")
    for name in cands:
        s = before_nonfinite(run, name)
        if s is None or len(s) < 2:
            continue
        v = s.values
        fin = v[np.isfinite(v)]
        if fin.size < 2:
            continue
        big = sustained(v, lambda x: x > 1e3)
        grew = fin[0] > 0 and fin[-1] >= 100 * fin[0] and fin[-1] > 100 and sustained(v, lambda x: x > 100)
        if not (big or grew):
            continue
        what = "logits" if name == "logits_absmax" else f"activations of `{name.split('/', 1)[1]}`"
        lv = float(np.median(late(v)))
        ev = {"series": name, "absmax": lv, "first": float(fin[0]), "peak": float(fin.max())}
        msg = f"{what} reach |x| = {fmt(lv)} (from {fmt(float(fin[0]))} at step {int(s.steps[0])})"
        causes = [("unnormalized-input", 0.4), ("bad-initialization", 0.4), ("lr-too-high", 0.35)]
        normal = inputs_look_normalised(run)
        if fin[0] <= 100 and grew:
            # normal at the start, huge later: the updates blew them up, not the initial weights
            causes = [("lr-too-high", 0.6), ("exploding-gradient", 0.3)]
            msg += "; they were normal at the start, so the updates grew them"
        elif normal is True:
            causes = [("bad-initialization", 0.65), ("lr-too-high", 0.35)]
            msg += "; the inputs are well scaled, so the weights blew them up"
        elif normal is False:
            causes = [("unnormalized-input", 0.65), ("bad-initialization", 0.3)]
            msg += "; the inputs are not standardised"
        onset = int(s.steps[int(np.argmax(v > min(1e3, 100 * max(fin[0], 1e-12))))])
        return [r.finding(step=onset, step_end=int(s.steps[-1]), message=msg, evidence=ev, causes=causes)]
    return []


@rule("A004", "error", causes=("lr-too-high", "numerically-unstable-loss", "unnormalized-input", "bad-initialization"))
def nonfinite_activation(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Names the first module, in forward order, whose output held NaN/Inf at the first step
        the loss went non-finite, and the samples (dataset indices) whose rows were non-finite.

    Why is this bad?
        The first module to produce a non-finite value is where the numbers broke: an exp or
        softmax overflow, a log of 0, a division by a zero norm, or activations that grew until
        they overflowed. Everything after it only propagates the NaN.

    Evidence:
        A one-off replay, with RNG and buffers restored, of the forward pass that produced the
        first non-finite loss, with the weights that produced it, checking every module's output.
        When the inputs themselves were non-finite it is D001, when the weights were it is G003.

    Example:
        `head` (Linear) outputs Inf for samples 17 and 40 at step 212.

    Use instead:
        Lower the learning rate; normalise the input of the named module; clamp or use a stable
        formulation in it (log_softmax, logsumexp, an epsilon in norms).

    Known false positives:
        Nondeterministic models may replay to finite values; then nothing is named.
    """
    for e in run.facts(NonfiniteLoss):
        fm = e.first_module
        if not fm or e.input_nonfinite or e.weights_nonfinite:
            continue
        ids = list(fm.sample_ids or ())
        rows = f"dataset samples {ids[:10]}" if ids else f"batch positions {list(fm.positions or ())[:10]}"
        msg = f"module `{fm.name}` ({fm.type}) is the first to output NaN/Inf at step {e.step} ({rows})"
        causes: dict[str, float] = {"lr-too-high": 0.4, "numerically-unstable-loss": 0.3, "unnormalized-input": 0.2}
        if e.step == 0:
            # no update has happened yet: the learning rate cannot be the cause
            causes = {"numerically-unstable-loss": 0.5, "unnormalized-input": 0.3, "bad-initialization": 0.25}
        normal = inputs_look_normalised(run)
        if normal is False:
            causes["unnormalized-input"] = 0.6
            msg += "; the inputs are not standardised"
        return [r.finding(step=e.step, step_end=e.step, message=msg, evidence=fm.to_json(), causes=list(causes.items()))]
    return []
