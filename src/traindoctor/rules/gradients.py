"""Family G: gradients, weights and updates (G001, G003 here; the rest with issue 3)."""
from __future__ import annotations

import math

import numpy as np

from ..findings import Finding
from ..run import Run
from . import Rule, rule
from ._stats import fmt, nanmedian


@rule("G001", "error")
def exploding_gradients(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Finds a global gradient norm that grows by orders of magnitude over the run.

    Why is this bad?
        Each update is proportional to the gradient: a norm 100× larger than at the start makes
        steps 100× larger, which throws the weights out of the region the model was learning in
        and usually ends in Inf/NaN.

    Evidence:
        The sampled global gradient norm (every ``cadence`` steps, fused per-layer norms) reaching
        ≥ 100× the median of the first fifth of the samples, or non-finite after growing ≥ 10×;
        the layer whose norm grew most is named.

    Example:
        grad_norm 0.8 at step 0, 95 at step 50, 3e+04 at step 75, then NaN.

    Use instead:
        Clip the gradient norm (torch.nn.utils.clip_grad_norm_(params, 5.0)); lower the LR;
        normalisation layers or residual connections in deep or recurrent models.

    Known false positives:
        Gradients legitimately grow a few-fold when a plateau breaks; the bar is 100×.
    """
    g = run.get("grad_norm")
    if g is None or len(g) < 4:
        return []
    loss = run.get("loss")
    cutoff = None
    if loss is not None and (~np.isfinite(loss.values)).any():
        # after the loss broke, gradients only echo it: judge the growth that came before
        cutoff = int(loss.steps[int(np.argmax(~np.isfinite(loss.values)))])
        keep = g.steps <= cutoff
        g = type(g)(g.steps[keep], g.values[keep])
        if len(g) < 4:
            return []
    v = g.values
    k = max(2, len(v) // 5)
    base = nanmedian(v[:k])
    if not math.isfinite(base) or base <= 0:
        return []
    later = v[k:]
    fin = np.isfinite(later)
    if not fin.any():
        return []
    peak_i = int(np.nanargmax(np.where(fin, later, -np.inf)))
    peak = float(later[peak_i])
    growth = peak / base
    went_nonfinite = bool((~fin).any() and np.argmax(~fin) > peak_i)
    if not (growth >= 100 or (growth >= 10 and went_nonfinite)):
        return []
    # onset: first sample after the baseline above 10x it
    over = np.nonzero(np.isfinite(v[k:]) & (v[k:] >= 10 * base))[0]
    onset = int(g.steps[k + over[0]]) if over.size else int(g.steps[k + peak_i])
    ev: dict = {"baseline": base, "peak": peak, "peak_step": int(g.steps[k + peak_i]), "growth": growth,
                "onset_step": onset, "went_nonfinite": went_nonfinite}
    worst, worst_growth = None, 0.0
    for name in run.names("grad_norm"):
        ls = run.series[name]
        lv = ls.values if cutoff is None else ls.values[ls.steps <= cutoff]
        kb = max(1, len(lv) // 5)
        b = nanmedian(lv[:kb])
        p = lv[kb:][np.isfinite(lv[kb:])]
        if b > 0 and p.size and p.max() / b > worst_growth:
            worst, worst_growth = name.split("/", 1)[1], float(p.max() / b)
    if worst:
        ev["layer"] = worst
        ev["layer_growth"] = worst_growth
    msg = f"gradient norm grew {fmt(growth)}× ({fmt(base)} → {fmt(peak)} at step {ev['peak_step']})"
    if worst:
        msg += f", most in `{worst}` ({fmt(worst_growth)}×)"
    causes = [("exploding-gradient", 0.6), ("lr-too-high", 0.55), ("bad-initialization", 0.15)]
    return [r.finding(step=onset, step_end=int(g.steps[-1]), message=msg, evidence=ev, causes=causes)]


@rule("G003", "error")
def nonfinite_gradients(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Names the parameters whose gradient (or weight) became NaN/Inf while the loss was still
        finite.

    Why is this bad?
        A non-finite gradient written into the weights by one optimizer step poisons every later
        forward pass. When the loss itself was finite, the fault is in the backward pass: an
        operation whose derivative is infinite at the value it saw (sqrt or pow at 0, log near
        0, division by a tiny norm) or an overflow in a large gradient.

    Evidence:
        Sampled per-parameter gradient norms that are non-finite, or a replay at the first
        non-finite loss that found the weights already non-finite. Gradients that go NaN only
        after the loss did, or weights that overflow together with a loss that grew by orders of
        magnitude and broke within two steps, are an echo of L001/L002 and are reported there.

    Example:
        ``x.norm()`` of an all-zero row inside the model: loss finite, grad of `encoder.weight`
        NaN at step 120.

    Use instead:
        Add an epsilon inside sqrt/log/division; clip gradients; lower the LR.

    Known false positives:
        Mixed-precision training with a GradScaler sees Inf gradients by design on skipped steps.
    """
    loss = run.get("loss")
    loss_bad_step = None
    if loss is not None:
        bad = ~np.isfinite(loss.values)
        if bad.any():
            loss_bad_step = int(loss.steps[int(np.argmax(bad))])
    first_step, params = None, []
    for name in run.names("grad_norm"):
        s = run.series[name]
        bad = ~np.isfinite(s.values)
        if bad.any():
            st = int(s.steps[int(np.argmax(bad))])
            if first_step is None or st < first_step:
                first_step, params = st, [name.split("/", 1)[1]]
            elif st == first_step:
                params.append(name.split("/", 1)[1])
    source = "gradient"
    for e in run.events_of("nonfinite_loss"):
        if e.data.get("weights_nonfinite"):
            # the update of the step before wrote non-finite values: its gradient was non-finite
            st = max(0, e.step - 1)
            if first_step is None or st < first_step:
                first_step, params, source = st, list(e.data["weights_nonfinite"]), "weight"
    if first_step is None:
        return []
    if loss_bad_step is not None and first_step >= loss_bad_step:
        return []
    ev = {"first_step": first_step, "parameters": params[:20], "count": len(params), "seen_in": source}
    msg = f"non-finite {source}s at step {first_step} while the loss was finite, in {', '.join(params[:4])}"
    if len(params) > 4:
        msg += f" and {len(params) - 4} more"
    causes = [("numerically-unstable-loss", 0.45), ("exploding-gradient", 0.4), ("lr-too-high", 0.35)]
    if loss is not None:
        before = loss.values[(loss.steps <= first_step) & np.isfinite(loss.values)]
        if before.size >= 2 and before[0] > 0 and before.max() / before[0] >= 1e3 and loss_bad_step is not None \
                and loss_bad_step - first_step <= 2:
            # the loss climbed by orders of magnitude and broke right after: the weights overflowed
            # with it; L001 and L002 already tell this story (and L001 names the weights)
            return []
        if before.size >= 2 and before[0] > 0 and before.max() / before[0] >= 10:
            # the loss was climbing into the overflow: the gradients grew with it
            ev["loss_growth_before"] = float(before.max() / before[0])
            msg += f", after the loss grew {fmt(ev['loss_growth_before'])}×"
            causes = [("lr-too-high", 0.6), ("exploding-gradient", 0.5)]
    return [r.finding(step=first_step, step_end=first_step, message=msg, evidence=ev, causes=causes)]
