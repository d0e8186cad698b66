"""Family G: gradients, weights and updates (G001–G007), from the sampled per-layer norms."""
from __future__ import annotations

import math

import numpy as np

from ..events import Hessian, NoGrad, NonfiniteLoss, StaleGrad
from ..findings import Finding
from ..numfmt import fmt
from ..run import Run
from . import Rule, rule
from ._signals import depth_layers, eps_note, eps_swamps, per_step, recurrent, weight_update_ratios, zero_weights
from ._stats import late, nanmedian, sustained


@rule("G001", "error", causes=("exploding-gradient", "lr-too-high", "bad-initialization"))
def exploding_gradients(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Finds a global gradient norm that grows by orders of magnitude over the run.

    Why is this bad?
        Each update is proportional to the gradient: a norm 100× larger than at the start makes
        steps 100× larger, which throws the weights out of the region the model was learning in
        and usually ends in Inf/NaN.

    Evidence:
        The sampled global gradient norm (every ``cadence`` steps, fused per-layer norms) reaching
        ≥ 100× the median of the first fifth of the samples, or non-finite after growing ≥ 10×,
        with the loss hurt from the onset on (non-finite, or its smoothed level ≥ 2× the best
        before); the layer whose norm grew most is named.

    Example:
        grad_norm 0.8 at step 0, 95 at step 50, 3e+04 at step 75, then NaN.

    Use instead:
        Clip the gradient norm (torch.nn.utils.clip_grad_norm_(params, 5.0)); lower the LR;
        normalisation layers or residual connections in deep or recurrent models.

    Known false positives:
        Gradients legitimately grow a few-fold when a plateau breaks, and by orders of magnitude
        in a deep net started small: the bar is 100×, and growth that does not hurt — the loss
        neither goes non-finite nor rises to 2× its best level after the onset — is not reported.
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
    if not went_nonfinite and not _loss_hurt_after(run, onset):
        # a gradient that grows from a tiny start while the loss keeps falling (a deep net started
        # small, a plateau breaking) is learning, not exploding: no harm, no finding
        return []
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
    if recurrent(run):
        # a recurrent layer multiplies its gradient once per time step: the classic explosion through time
        ev["recurrent"] = True
        msg += "; the model is recurrent, where gradients multiply once per time step"
        causes = [("exploding-gradient", 0.8), ("lr-too-high", 0.4), ("bad-initialization", 0.1)]
    return [r.finding(step=onset, step_end=int(g.steps[-1]), message=msg, evidence=ev, causes=causes)]


def _loss_hurt_after(run: Run, step: int) -> bool:
    """Whether the loss got worse from ``step`` on: non-finite, or its smoothed level ≥ 2× the best
    reached before ``step``."""
    s = run.get("loss")
    if s is None:
        return True  # no loss to tell: keep the old judgement
    v = s.values
    if (~np.isfinite(v[s.steps >= step])).any():
        return True
    before, after = v[(s.steps < step) & np.isfinite(v)], v[(s.steps >= step) & np.isfinite(v)]
    if before.size < 3 or after.size < 3:
        return True
    w = max(3, min(before.size, after.size) // 10)
    kernel = np.ones(w) / w
    best_before = float(np.min(np.convolve(before, kernel, mode="valid"))) if before.size >= w else float(before.min())
    worst_after = float(np.max(np.convolve(after, kernel, mode="valid"))) if after.size >= w else float(after.max())
    return worst_after >= 2 * best_before


@rule("G003", "error", causes=("numerically-unstable-loss", "exploding-gradient", "lr-too-high"))
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
    for nf in run.facts(NonfiniteLoss):
        if nf.weights_nonfinite:
            # the update of the step before wrote non-finite values: its gradient was non-finite
            st = max(0, nf.step - 1)
            if first_step is None or st < first_step:
                first_step, params, source = st, list(nf.weights_nonfinite), "weight"
    if first_step is None:
        return []
    if loss_bad_step is not None and first_step >= loss_bad_step:
        return []
    ev = {"first_step": first_step, "parameters": params[:20], "count": len(params), "seen_in": source}
    msg = f"non-finite {source}s at step {first_step} while the loss was finite, in {', '.join(params[:4])}"
    if len(params) > 4:
        msg += f" and {len(params) - 4} more"
    causes = [("numerically-unstable-loss", 0.6), ("exploding-gradient", 0.3), ("lr-too-high", 0.2)]
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


def _loss_drop(run: Run) -> float | None:
    """Relative drop of the loss from its first tenth to its last tenth (None when unknown)."""
    s = run.get("loss")
    if s is None:
        return None
    v = s.values[np.isfinite(s.values)]
    if v.size < 20:
        return None
    a, b = np.median(v[: max(2, v.size // 10)]), np.median(v[-max(2, v.size // 10) :])
    return float((a - b) / a) if a > 0 else None


@rule(
    "G002",
    "warning",
    causes=("vanishing-gradient", "saturating-activation", "bad-initialization", "dying-relu", "exploding-gradient"),
)
def vanishing_gradients(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Compares the gradient reaching the first weight layer with the gradient at the last one.

    Why is this bad?
        When the gradient shrinks by orders of magnitude on its way back through the layers, the
        early layers barely move: the network trains like a shallow one on top of random
        features. Typical of deep stacks of sigmoid/tanh (each derivative ≤ 0.25 or ≤ 1) and of
        too-small initialisation.

    Evidence:
        The RMS gradient (norm / √size) of the first weight layer over that of the last, median
        of the last half of the sampled steps and each of the last two samples, below 1e-3; at
        least three weight layers.

    Example:
        10-layer sigmoid MLP: `0.weight` RMS grad 2e-8, `18.weight` 4e-3 — ratio 5e-6.

    Use instead:
        ReLU/GELU in hidden layers; Kaiming init; normalisation layers; residual connections.

    Known false positives:
        A first layer fed by sparse or tiny inputs (most features zero) gets small gradients by
        construction; check its input scale. A run whose loss fell by 90 % or more was not hurt: info,
        not a warning. Embedding tables and the projections inside attention
        modules are not counted as depth (a lookup's gradient is spread over unused rows; query/key
        get little gradient while attention is near uniform).
    """
    layers = depth_layers(run)
    if len(layers) < 3:
        return []
    (first, n0), (lastl, n1) = layers[0], layers[-1]
    a, b = run.series[f"grad_norm/{first}"], run.series[f"grad_norm/{lastl}"]
    if len(a) < 2 or len(a) != len(b):
        return []
    with np.errstate(all="ignore"):
        ratio = (a.values / math.sqrt(n0)) / (b.values / math.sqrt(n1))
    if not sustained(ratio, lambda x: x < 1e-3):
        return []
    med = float(np.median(late(ratio)))
    ev = {"first_layer": first, "last_layer": lastl, "rms_ratio": med,
          "first_rms": float(np.median(late(a.values))) / math.sqrt(n0),
          "last_rms": float(np.median(late(b.values))) / math.sqrt(n1), "weight_layers": len(layers)}
    msg = (f"the gradient reaching `{first}` is {fmt(med)}× the one at `{lastl}` (RMS per weight, "
           f"{len(layers)} weight layers): the early layers barely learn")
    causes: dict[str, float] = {"vanishing-gradient": 0.65, "bad-initialization": 0.2}
    sat = [float(np.median(late(run.series[k].values))) for k in run.names("saturated_frac")]
    dead = [float(np.median(late(run.series[k].values))) for k in run.names("dead_frac") if len(run.series[k])]
    g = run.get("grad_norm")
    growth = None
    if g is not None and len(g) >= 4:
        gv = g.values[np.isfinite(g.values)]
        base = float(np.median(gv[: max(1, gv.size // 5)])) if gv.size else 0.0
        growth = float(gv.max() / base) if base > 0 and gv.size else None
    if dead and max(dead) >= 0.5:
        # the gradient is cut by dead ReLUs (they pass none back), not thinned layer by layer
        causes = {"dying-relu": 0.55, "vanishing-gradient": 0.2}
        ev["max_dead_fraction"] = max(dead)
        msg += f"; {max(dead) * 100:.0f} % of a ReLU layer's units are dead and pass no gradient back"
    elif growth is not None and growth >= 10:
        # it vanished after it exploded: the weights grew until the sigmoid/tanh units saturated
        causes = {"exploding-gradient": 0.5, "saturating-activation": 0.45, "vanishing-gradient": 0.25}
        ev["grad_growth_before"] = growth
        msg += f", after the gradient norm had grown {fmt(growth)}×: the units saturated"
    elif sat and max(sat) >= 0.3:
        causes["saturating-activation"] = 0.55
        ev["max_saturated_fraction"] = max(sat)
    else:
        causes["saturating-activation"] = 0.3
    drop = _loss_drop(run)
    severity = None
    if drop is not None and drop >= LEARNED_ANYWAY:
        # the hazard did not hurt this run: its loss fell by nine tenths or more all the same
        severity = "info"
        ev["loss_drop"] = drop
        msg += f" — though the loss fell {drop * 100:.0f} % all the same"
    return [r.finding(step=int(a.steps[len(a) // 2]), step_end=int(a.steps[-1]), message=msg, evidence=ev,
                      causes=list(causes.items()), severity=severity)]


LEARNED_ANYWAY = 0.9  # G002: a run whose loss fell this much (first tenth → last tenth) was not hurt by it


@rule("G004", "warning", causes=("lr-too-high", "over-regularization"))
def update_ratio_high(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Measures each optimizer step's update against the weights it changes:
        ‖Δw‖ / ‖w‖ per weight layer, on sampled steps.

    Why is this bad?
        A healthy step changes a weight matrix by roughly a thousandth of its size. Steps of a
        few percent or more every time throw away what the weights learned: training is
        unstable, units die, and the loss oscillates or diverges.

    Evidence:
        The median over weight layers of each layer's ratio above 3e-2, for the median of the
        last half of the samples and each of the last two (Adam's normal early ratio of ~1e-2 on
        small weights stays below the bar). Or, anywhere in the run, updates of half the weights'
        own norm or more (median over layers ≥ 0.5) on two sampled steps, or 3× their norm on the first
        step (an adaptive optimizer's first step moves every weight by about lr).

    Example:
        SGD lr=1.0 on a tanh MLP: update/weight ratio 0.4 at every sampled step.

    Use instead:
        Lower the learning rate until the ratio sits near 1e-3; warm-up; gradient clipping.

    Known false positives:
        The first steps from a zero or tiny initialisation have large ratios; only the last half
        of the run is judged.
    """
    ratios = weight_update_ratios(run)
    med_steps = per_step(ratios, "median")
    if med_steps is None:
        return []
    if not sustained(med_steps, lambda x: x > 3e-2):
        return _catastrophic_updates(run, r, ratios, med_steps)
    med = float(np.median(late(med_steps)))
    worst = max(ratios, key=lambda k: float(np.nanmedian(late(ratios[k]))) if late(ratios[k]).size else -1)
    steps = run.series[f"update_ratio/{worst}"].steps
    lr = run.meta.get("lr")
    ev = {"median_ratio": med, "worst_layer": worst, "worst_ratio": float(np.median(late(ratios[worst]))), "lr": lr}
    msg = f"each step changes the weights by {fmt(med)} of their norm (≫ 1e-3), most in `{worst}`"
    if isinstance(lr, (int, float)) and lr > 0:
        msg += f"; at lr={fmt(lr)} a ratio near 1e-3 suggests lr ≈ {fmt(lr * 1e-3 / med)}"
        ev["suggested_lr"] = lr * 1e-3 / med
    causes = [("lr-too-high", 0.65)]
    wd = run.info.optimizer.get("weight_decay")
    if isinstance(wd, (int, float)) and isinstance(lr, (int, float)) and wd * lr >= 1e-2:
        msg += f"; weight decay alone shrinks them {wd * lr * 100:.0f} % per step (weight_decay={fmt(wd)})"
        causes = [("over-regularization", 0.6), ("lr-too-high", 0.3)]
    return [r.finding(step=int(steps[len(steps) // 2]), step_end=int(steps[-1]), message=msg, evidence=ev,
                      causes=causes)]


def _catastrophic_updates(run: Run, r: Rule, ratios: dict[str, np.ndarray], med_steps: np.ndarray) -> list[Finding]:
    """Sampled steps that moved the weights by half their own size or more, at any point of the
    run: whatever followed (a slow recovery, dead units, a loss at chance) started there."""
    steps = run.series[f"update_ratio/{next(iter(ratios))}"].steps
    big = np.isfinite(med_steps) & (med_steps >= 0.5)
    # an adaptive optimizer's first step moves every weight by about lr (Adagrad at 0.025 moves
    # small weights by half their size): alone, the first step must be far larger to count
    first = bool(steps[0] == 0 and np.isfinite(med_steps[0]) and med_steps[0] >= 3)
    if big.sum() < 2 and not first:
        return []
    idx = np.nonzero(big)[0]
    worst = float(np.nanmax(med_steps[idx]))
    lr = run.meta.get("lr")
    ev = {"steps": [int(steps[i]) for i in idx[:20]], "ratios": [float(med_steps[i]) for i in idx[:20]],
          "max_ratio": worst, "lr": lr}
    msg = (f"{int(big.sum())} sampled step{'s' if big.sum() > 1 else ''} changed the weights by {fmt(worst)} of their "
           f"norm (first at step {int(steps[idx[0]])}): updates the size of the weights themselves")
    return [r.finding(step=int(steps[idx[0]]), step_end=int(steps[idx[-1]]), message=msg, evidence=ev,
                      causes=[("lr-too-high", 0.85)])]


@rule("G005", "warning", causes=("lr-too-low", "wrong-optimizer-settings"))
def update_ratio_low(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Finds optimizer steps that change the weights by less than 1e-5 of their norm while the
        loss still has a long way to go.

    Why is this bad?
        At that rate a weight matrix needs a hundred thousand steps to change by its own size:
        training crawls, and a run that "does not learn" is often just this.

    Evidence:
        ‖Δw‖/‖w‖ of the weight layer that moves most below 1e-5 (median of the last half of the
        samples and each of the last two), while the loss fell less than 30 % over the run.
        Using the best-moving layer keeps vanishing gradients (only early layers slow) out.

    Example:
        SGD lr=1e-5 on digits: ratio 3e-6, loss 2.331 → 2.330 over 450 steps.

    Use instead:
        Raise the learning rate ×10–×100 until the ratio nears 1e-3 (an LR range test finds it).

    Known false positives:
        A converged run can have tiny updates: a loss that fell by 30 % or more is not judged.
    """
    # the layer that moves most: an LR too low slows all of them, a vanishing gradient only some
    best = per_step(weight_update_ratios(run), "max")
    drop = _loss_drop(run)
    if best is None or drop is None or drop >= 0.3 or not sustained(best, lambda x: x < 1e-5):
        return []
    if float(np.nanmax(late(best), initial=0.0)) == 0.0:
        return []  # no weight moved at all: no gradient reached them (G006), not a small learning rate
    med = float(np.median(late(best)))
    steps = run.series[next(iter(run.names("update_ratio")))].steps
    lr = run.meta.get("lr")
    ev = {"median_ratio": med, "loss_drop": drop, "lr": lr}
    msg = (f"each step changes even the fastest-moving weights by only {fmt(med)} of their norm (≪ 1e-3) "
           f"while the loss fell {drop * 100:.1f} %")
    if isinstance(lr, (int, float)) and lr > 0:
        ev["suggested_lr"] = min(lr * 1e-3 / med, lr * 1000) if med > 0 else lr * 100
        msg += f"; at lr={fmt(lr)} a ratio near 1e-3 suggests lr ≈ {fmt(ev['suggested_lr'])}"
    causes = [("lr-too-low", 0.75), ("wrong-optimizer-settings", 0.2)]
    sw = eps_swamps(run)
    if sw:
        causes = [("wrong-optimizer-settings", 0.8), ("lr-too-low", 0.3)]
        ev["eps_swamps"] = sw
        msg += eps_note(sw)
    return [r.finding(step=int(steps[0]), step_end=int(steps[-1]), message=msg, evidence=ev, causes=causes)]


@rule(
    "G006",
    "warning",
    causes=("code-bug", "bad-initialization", "dying-relu", "lr-too-high", "exploding-gradient", "saturating-activation"),
)
def no_gradient_flow(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Names the parameters the optimizer is asked to train that never receive a gradient
        (``.grad`` stays None), or whose gradient is exactly zero on every sampled step.

    Why is this bad?
        They never change. Usually a bug: a ``.detach()`` or ``.data`` cutting the graph, a
        branch computed but not used in the loss, ``requires_grad=False`` left on by mistake,
        or a layer registered but never called in ``forward``.

    Evidence:
        On every sampled step (at least two): the parameter had no gradient, or a gradient norm
        of exactly 0. Parameters frozen on purpose and left out of the optimizer are not seen. Or:
        for at least half the model's tensors, a gradient that was alive and then stayed exactly
        0 from some step to the end (at least two samples and half the run): the network died
        (dead ReLUs pass nothing back), with the update ratio before it.

    Example:
        ``h = self.encoder(x).detach()``: all of `encoder.*` get no gradient.

    Use instead:
        Remove the detach/``.data``; make sure every branch reaches the loss; pass only the
        parameters you mean to train to the optimizer (``filter(lambda p: p.requires_grad, ...)``).

    Known false positives:
        Embedding rows never looked up get zero gradients legitimately; only whole tensors that
        are zero on every sample count.
    """
    evs = run.facts(NoGrad)
    g = run.get("grad_norm")
    samples = len(g) if g is not None else 0
    never: list[str] = []
    frozen: set[str] = set()
    if evs and samples + len(evs) >= 2:
        # an event is written on every sampled step that had missing gradients
        counts: dict[str, int] = {}
        for e in evs:
            for p in e.params or ():
                counts[p] = counts.get(p, 0) + 1
            frozen.update(e.requires_grad_false or ())
        total = max(samples, len(evs))
        never = [p for p, c in counts.items() if c >= max(2, total)]
    zero = []
    died: dict[str, int] = {}  # parameter → step from which its gradient stayed exactly 0
    for name in run.names("grad_norm"):
        st, v = run.series[name].steps, run.series[name].values
        if v.size >= 2 and np.all(v == 0):
            zero.append(name.split("/", 1)[1])
        elif v.size >= 3 and v[-1] == 0 and v[-2] == 0:
            nz = np.nonzero(v != 0)[0]
            j = int(nz[-1]) + 1  # first sample of the final all-zero stretch
            if v.size - j >= max(2, v.size // 2):
                died[name.split("/", 1)[1]] = int(st[j])
    if not never and not zero:
        return _died(run, r, died)
    parts = []
    if never:
        parts.append(f"no gradient ever reached {', '.join(f'`{p}`' for p in never[:5])}"
                     + (f" and {len(never) - 5} more" if len(never) > 5 else ""))
    if zero:
        parts.append(f"gradient exactly 0 on every sample for {', '.join(f'`{p}`' for p in zero[:5])}")
    zinit = set(zero_weights(run))
    zero_init = [p for p in zero if p in zinit or p.rsplit(".", 1)[0] + ".weight" in zinit]
    frozen_named = sorted(set(never) & frozen)
    if frozen_named:
        parts.append(f"{', '.join(frozen_named[:5])} have requires_grad=False but are in the optimizer")
    ev = {"no_gradient": never[:50], "zero_gradient": zero[:50], "requires_grad_false": frozen_named[:50],
          "sampled_steps": max(samples, len(evs))}
    causes: dict[str, float] = {"code-bug": 0.7}
    if zero_init and not never:
        # all-zero weights: every unit computes the same thing, no gradient can break the tie
        parts.append("those weights are all zero: zero initialisation keeps the units symmetric")
        ev["zero_initialised"] = zero_init[:50]
        causes = {"bad-initialization": 0.85, "code-bug": 0.15}
    first = evs[0].step if evs else int(run.series[f"grad_norm/{zero[0]}"].steps[0])
    return [r.finding(step=first, step_end=None, message="; ".join(parts), evidence=ev, causes=list(causes.items()))]


def _died(run: Run, r: Rule, died: dict[str, int]) -> list[Finding]:
    """Gradients that were alive at first and are exactly zero on every sample from some step to the
    end: the network died during training (dead ReLUs pass no gradient back), which a check that
    needs every sample to be zero would miss."""
    total = len(run.names("grad_norm"))
    if not died or len(died) < max(2, total // 2):
        return []
    onset = min(died.values())
    names = sorted(died, key=lambda k: died[k])
    ev = {"died": names[:50], "count": len(died), "of": total, "from_step": onset}
    msg = (f"the gradients of {len(died)} of {total} parameter tensors became exactly 0 from step {onset} on and stayed "
           f"there ({', '.join(f'`{n}`' for n in names[:4])}{' …' if len(names) > 4 else ''}): the network died after "
           "training started")
    from ._signals import per_step, weight_update_ratios

    before = per_step(weight_update_ratios(run), "max")
    causes = [("dying-relu", 0.6), ("lr-too-high", 0.4), ("code-bug", 0.15)]
    if recurrent(run):
        # saturated tanh/gates pass exactly zero back once the recurrent weights blew up
        causes = [("exploding-gradient", 0.6), ("saturating-activation", 0.4), ("lr-too-high", 0.35)]
    steps = run.series[run.names("grad_norm")[0]].steps
    if before is not None and len(before) == len(steps):
        early = before[(steps < onset) & np.isfinite(before)]
        if early.size and float(early.max()) >= 0.1:
            ev["update_ratio_before"] = float(early.max())
            msg += f", after updates of {fmt(float(early.max()))} of the weights per step"
            causes = [("lr-too-high", 0.75), ("dying-relu", 0.55)] if not recurrent(run) else \
                [("exploding-gradient", 0.65), ("lr-too-high", 0.55)]
    return [r.finding(step=onset, step_end=int(steps[-1]), message=msg, evidence=ev, causes=causes)]


@rule("G007", "warning", causes=("optimization-difficulty", "vanishing-gradient", "wrong-optimizer-settings"))
def critical_point(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Finds a gradient norm that collapsed to nearly zero while the loss is still high: the
        optimizer sits at a critical point. With a Hessian probe it tells a saddle point (mixed
        eigenvalue signs: escapable) from a poor local minimum (all positive).

    Why is this bad?
        Gradient descent stops where the gradient vanishes, whether or not the point is good.

    Evidence:
        The sampled global gradient norm in the last half below 1e-3× its early median (each of
        the last two samples too), while the loss is above half its starting value and fell less
        than 10 % over the last half. ``Doctor.probe_hessian`` adds the extreme eigenvalues.

    Example:
        Gradient norm 2e-7 from step 300 on, loss flat at 1.9 of a 2.3 start.

    Use instead:
        Momentum or Adam (they carry through saddles); a learning-rate schedule with warm
        restarts; normalisation and residual connections; a different initialisation.

    Known false positives:
        Converged runs have small gradients too; the loss bar (> half the start) keeps them out.
    """
    g = run.get("grad_norm")
    s = run.get("loss")
    if g is None or s is None or len(g) < 6:
        return []
    base = nanmedian(g.values[: max(2, len(g) // 5)])
    if not math.isfinite(base) or base <= 0 or not sustained(g.values, lambda x: x < 1e-3 * base):
        return []
    v = s.values[np.isfinite(s.values)]
    if v.size < 20:
        return []
    start = float(np.median(v[: max(2, v.size // 10)]))
    half = v[v.size // 2 :]
    end = float(np.median(half[-max(2, half.size // 5) :]))
    if not (start > 0 and end > 0.5 * start and (float(np.median(half[: max(2, half.size // 5)])) - end) < 0.1 * end):
        return []
    gl = float(np.median(late(g.values)))
    ev: dict = {"grad_norm": gl, "early_grad_norm": base, "loss": end, "start_loss": start}
    msg = f"gradient norm fell to {fmt(gl)} ({fmt(gl / base)}× its early level) while the loss is still {fmt(end)}"
    causes: dict[str, float] = {"optimization-difficulty": 0.6, "vanishing-gradient": 0.2}
    hs = run.facts(Hessian)
    if hs:
        h = hs[-1]
        lo, hi = h.min_eigenvalue, h.max_eigenvalue
        ev["hessian"] = h.to_json()
        if lo is not None and hi is not None:
            kind = "a saddle point (eigenvalues of both signs)" if lo < -1e-3 * abs(hi) else "a local minimum (all eigenvalues ≥ 0)"
            msg += f"; Hessian eigenvalues {fmt(lo)} … {fmt(hi)}: {kind}"
            ev["kind"] = "saddle" if lo < -1e-3 * abs(hi) else "minimum"
    opt = run.info.optimizer
    if opt.get("class") == "SGD" and not opt.get("momentum"):
        causes["wrong-optimizer-settings"] = 0.45
    return [r.finding(step=int(g.steps[len(g) // 2]), step_end=int(g.steps[-1]), message=msg, evidence=ev,
                      causes=list(causes.items()))]


@rule("G008", "error", causes=("code-bug",))
def stale_gradients(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Notices gradients that were not cleared between optimizer steps: at the first backward pass
        after a step, the parameters' ``.grad`` still held the previous gradient.

    Why is this bad?
        ``loss.backward()`` adds to ``.grad``. Without ``optimizer.zero_grad()`` every step applies
        the sum of all gradients since the start: the steps grow with the run, the loss oscillates
        or diverges, and lowering the learning rate only delays it.

    Evidence:
        Live, on sampled steps: how many of the optimizer's parameters still had a non-zero
        gradient when the next backward pass began. Gradient accumulation done on purpose clears
        the gradients after each optimizer step and is not reported.

    Example:
        A loop with ``loss.backward(); optimizer.step()`` and no ``zero_grad``: at step 50, 6 of 6
        parameters still hold the gradients of steps 0–49.

    Use instead:
        Call ``optimizer.zero_grad()`` once per step, before ``loss.backward()`` (or after
        ``optimizer.step()``).

    Known false positives:
        Hand-written update rules that reuse ``.grad`` on purpose across steps.
    """
    evs = run.facts(StaleGrad)
    if not evs:
        return []
    d = evs[0]
    params = list(d.params or ())
    msg = (f"the gradients were not cleared between optimizer steps: at step {d.step}, "
           f"{d.count if d.count is not None else len(params)} of {d.of if d.of is not None else '?'} parameters "
           "still held the last step's gradient when backward() began (no optimizer.zero_grad())")
    ev = {"params": params[:20], "count": d.count, "of": d.of, "steps": [e.step for e in evs[:20]], "where": d.where}
    return [r.finding(step=evs[0].step, step_end=evs[-1].step, message=msg, evidence=ev, causes=[("code-bug", 0.9)])]
