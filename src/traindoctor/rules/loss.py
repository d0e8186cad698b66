"""Family L: the loss curve (L001–L011).

Every rule here reads the ``loss`` series (and, where noted, run metadata the live monitor
records: ``loss_kind``, ``num_classes``, ``batch_size``, ``lr``, ``optimizer``). Offline logs
lack the metadata; the rules that need it then stay silent and the diagnosis says so.
"""
from __future__ import annotations

import math

import numpy as np

from ..events import Config, NonfiniteLoss, StateDictLoad
from ..findings import Finding
from ..losskinds import REGRESSION, chance_loss
from ..numfmt import fmt
from ..run import Run, Series
from . import Rule, rule
from ._signals import (
    adversarial,
    best_layer_update_ratio,
    bottleneck,
    eps_note,
    eps_swamps,
    first_nonfinite_loss_step,
    inputs_look_normalised,
    recurrent,
    vanishing_ratio,
    zero_weights,
)
from ._stats import bin_medians, finite_prefix, kendall_tau, late, nanmedian, rel_iqr, segment, sustained

MIN_POINTS = 20  # fewer finite loss points than this: no trend verdicts


def _loss(run: Run) -> Series | None:
    return run.get("loss")


def _chance(run: Run) -> tuple[float, str] | None:
    """The loss of a constant prediction when the run tells the loss kind and class count (None for
    a loss summed from several terms: ln C is the chance level of one of them only)."""
    if len(run.names("loss_term")) >= 2:
        return None
    return chance_loss(run.meta.get("loss_kind"), run.meta.get("num_classes"))


def _lr_context(run: Run) -> dict:
    return {"lr": run.meta.get("lr"), "optimizer": run.info.optimizer.get("class")}


def _nonfinite_event(run: Run) -> NonfiniteLoss:
    return next(iter(run.facts(NonfiniteLoss)), NonfiniteLoss())


def lr_raised(run: Run, lo: int, hi: int) -> dict | None:
    """The learning rate stepped up ≥ 3× at a sample in [lo − one sampling interval, hi]: what a
    blow-up starting there most likely came from."""
    lr = run.get("lr")
    if lr is None or len(lr) < 2:
        return None
    v, st = lr.values, lr.steps
    gap = int(np.median(np.diff(st))) if len(st) > 2 else 0
    for i in range(1, len(v)):
        # the LR is sampled every few steps: the step-up lies anywhere between two samples
        if lo - gap <= st[i] <= hi + gap and v[i - 1] > 0 and np.isfinite(v[i]) and v[i] >= 3 * v[i - 1]:
            return {"step": int(st[i]), "from_step": int(st[i - 1]), "factor": float(v[i] / v[i - 1]),
                    "from": float(v[i - 1]), "to": float(v[i])}
    return None


def _config_faults(run: Run) -> set[str]:
    return {c.fault or "" for c in run.facts(Config)}


@rule(
    "L001",
    "error",
    causes=(
        "lr-too-high",
        "exploding-gradient",
        "nonfinite-data",
        "numerically-unstable-loss",
        "bad-initialization",
        "precision-overflow",
        "unbalanced-loss-terms",
    ),
)
def nonfinite_loss(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Finds the first step whose training loss is NaN or ±Inf.

    Why is this bad?
        Once the loss is NaN the gradients are NaN, the optimizer writes NaN into every weight,
        and the run is lost from that step on; every later step only burns compute.

    Evidence:
        The first non-finite step and value, how many steps are non-finite, the last finite value
        and how far the loss had grown before. Live, the step is replayed once with the weights
        that produced it, naming the first module whose output went non-finite and the samples
        (dataset indices) behind it, or saying that the inputs themselves were non-finite.

    Example:
        SGD with lr=20 on standardised digits: loss 2.3 → 41 → 2e+04 → nan at step 3.

    Use instead:
        Depends on the cause the diagnosis ranks first: lower the learning rate ×0.1 and clip
        gradients; drop or repair the named samples; use the fused losses
        (CrossEntropyLoss on logits, BCEWithLogitsLoss).

    Known false positives:
        None: a non-finite loss is always reported. Mixed-precision runs whose GradScaler skips
        steps with Inf gradients see Inf in the gradients, not in the loss.
    """
    s = _loss(run)
    if s is None:
        return []
    bad = ~np.isfinite(s.values)
    if not bad.any():
        return []
    i = int(np.argmax(bad))
    step = int(s.steps[i])
    value = float(s.values[i])
    ev: dict = {"first_step": step, "value": value, "nonfinite_steps": int(bad.sum()), "of_steps": len(s)}
    causes: dict[str, float] = {}
    msg = f"loss is {value} from step {step} ({int(bad.sum())} of {len(s)} logged steps non-finite)"
    if i > 0:
        last = float(s.values[i - 1])
        ev["last_finite_step"] = int(s.steps[i - 1])
        ev["last_finite_value"] = last
        start = float(s.values[0])
        ev["start_value"] = start
        if math.isfinite(start) and start > 0 and last > 0:
            growth = last / start
            ev["growth_before"] = growth
            msg += f"; it was {fmt(last)} at step {int(s.steps[i - 1])}"
            if i > 1:
                trend = "up from" if growth >= 2 else "starting from"
                msg += f", {trend} {fmt(start)} at step {int(s.steps[0])}"
            if growth >= 10:
                causes["lr-too-high"] = 0.8
                causes["exploding-gradient"] = 0.45
                if recurrent(run):  # the explosion through time of a recurrent layer
                    causes["lr-too-high"], causes["exploding-gradient"] = 0.55, 0.75
                imb = first_term_imbalance(run)
                if imb is not None and imb >= 30:
                    # one term of the summed loss dwarfed the others from the first step (L011)
                    causes["lr-too-high"] = 0.45
                    causes["unbalanced-loss-terms"] = 0.8
                    ev["term_imbalance"] = imb
                    msg += f"; one term of the summed loss was {fmt(imb)}× another at step 0"
    nf = _nonfinite_event(run)
    if nf.input_nonfinite:
        inp = nf.input_nonfinite
        ev["input_nonfinite"] = inp.to_json()
        ids = list(inp.sample_ids or ())
        who = f"dataset samples {ids[:10]}" if ids else f"batch positions {list(inp.positions or ())[:10]}"
        msg += f"; the input batch already held NaN/Inf ({who})"
        causes = {"nonfinite-data": 0.95}
    elif nf.weights_nonfinite:
        ev["weights_nonfinite"] = list(nf.weights_nonfinite)
        msg += f"; the weights were already non-finite ({', '.join(nf.weights_nonfinite[:3])})"
        if not causes:
            # the last update wrote NaN although the loss was finite and not growing: the
            # backward pass produced it (a derivative that is infinite at the value it saw)
            causes = {"numerically-unstable-loss": 0.55, "exploding-gradient": 0.25, "lr-too-high": 0.2}
    elif nf.first_module:
        fm = nf.first_module
        ev["first_module"] = fm.to_json()
        msg += f"; first non-finite output: module `{fm.name}` ({fm.type})"
    elif nf.in_loss:
        ev["in_loss"] = True
        if causes.get("lr-too-high"):
            msg += "; the model's outputs were finite: the loss itself overflowed after that growth"
        elif nf.dtype in ("float16", "bfloat16") and math.isinf(value):
            msg += f"; the model's outputs were finite: the {nf.dtype} loss overflowed"
        else:
            msg += "; the model's outputs were finite: the loss formula itself produced it (log of 0, 0/0)"
            causes["numerically-unstable-loss"] = 0.7
    if _config_faults(run) & {"sigmoid_bce", "log_softmax_unfused"}:
        causes["numerically-unstable-loss"] = max(causes.get("numerically-unstable-loss", 0), 0.6)
    dtype = nf.dtype
    if dtype in ("float16", "bfloat16") and not nf.input_nonfinite and math.isinf(value):
        # an overflow in a 16-bit loss: float16 ends at 65504
        ev["dtype"] = dtype
        msg += f"; the loss was computed in {dtype}"
        causes["precision-overflow"] = 0.8 if dtype == "float16" else 0.5
    if not causes:
        if i == 0:
            causes = {"nonfinite-data": 0.35, "numerically-unstable-loss": 0.3, "bad-initialization": 0.25}
        else:
            causes = {"lr-too-high": 0.5, "numerically-unstable-loss": 0.25, "nonfinite-data": 0.2}
    return [r.finding(step=step, step_end=int(s.steps[-1]), message=msg, evidence=ev, causes=list(causes.items()))]


@rule("L002", "error", causes=("lr-too-high", "exploding-gradient", "unnormalized-target", "unbalanced-loss-terms"))
def divergence(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Finds a loss that climbs by an order of magnitude above its best level and does not come
        back, usually on its way to Inf/NaN; a loss that blows up within its first steps, whatever
        it does afterwards; and a classification loss sitting 100× above the chance loss.

    Why is this bad?
        The optimizer is stepping uphill: updates are too large for the curvature of the loss,
        so each step makes the model worse. A blow-up in the first steps is the same fault seen
        early: the weights are thrown far from their initialisation, units die, and what follows
        (a slow fall from the peak, or a loss pinned at ln C) must not be read as the baseline.

    Evidence:
        The smoothed loss (bin medians) against its running minimum: the step from which it stays
        above 2× its best, and the final ratio (≥ 10×, or ≥ 3× with a steadily rising trend).
        Or: within the first 5 % of the steps (20–200), a loss ≥ 10× the step-0 loss. Or, with a
        known class count: the median of the last half ≥ 100× ln C (judged even on a short log).

    Example:
        Loss 2.30 at step 0, 0.9 at step 40, then 2, 9, 85, 4e+03: divergence from step 45.
        Adam at lr=1.3: loss 1.1 at step 0, 7.2 at step 12, then 1.10 ≈ ln 3 to the end.

    Use instead:
        Lower the learning rate ×0.1, add warm-up, clip the gradient norm; standardise inputs and
        regression targets.

    Known false positives:
        Losses that can be negative are skipped (ratios are meaningless there). A tiny loss near
        convergence rising 10× on mini-batch noise is not reported unless it climbs back to
        half the starting loss or ends non-finite.
    """
    s = _loss(run)
    if s is None:
        return []
    found = _diverging_to_end(run, r, s)
    return found or _early_blowup(run, r, s) or _far_above_chance(run, r, s)


def _l002_causes(run: Run, lr_weight: float = 0.7) -> list[tuple[str, float]]:
    causes = [("lr-too-high", lr_weight), ("exploding-gradient", 0.35)]
    if recurrent(run):
        causes = [("lr-too-high", min(lr_weight, 0.55)), ("exploding-gradient", 0.6)]
    if run.meta.get("loss_kind") is None or run.meta.get("loss_kind") in REGRESSION:
        causes.append(("unnormalized-target", 0.1))
    imb = first_term_imbalance(run)
    if imb is not None and imb >= 30:
        # the loss summed terms 30x apart from the first step: the step size was set for a sum
        # one term dominates, and rescaling that term is the fix before any LR change
        causes[0] = ("lr-too-high", min(causes[0][1], 0.45))
        causes.append(("unbalanced-loss-terms", 0.8))
    return causes


def first_term_imbalance(run: Run) -> float | None:
    """Largest over smallest term of a summed loss at its first sample (None: one term, or unknown)."""
    vals = []
    for n in run.names("loss_term"):
        s = run.series[n]
        if len(s) and int(s.steps[0]) == 0 and np.isfinite(s.values[0]):
            vals.append(abs(float(s.values[0])))
    if len(vals) < 2 or min(vals) <= 0:
        return None
    return max(vals) / min(vals)


def _diverging_to_end(run: Run, r: Rule, s: Series) -> list[Finding]:
    n = finite_prefix(s.values)
    if n < 5:
        return []
    # medians of ≥ 3 points once there are enough: one lucky or unlucky batch is not a level
    steps, vals = bin_medians(s.steps[:n], s.values[:n], max_bins=min(100, n // 3) if n >= 30 else n)
    if vals.size < 5 or np.nanmin(vals) <= 0:
        return []
    best = np.fmin.accumulate(vals)
    ratio = vals / best
    above = ratio > 2.0
    if not above[-1]:
        return []
    # onset: first bin of the final stretch that stays above 2x the running best
    below_idx = np.nonzero(~above)[0]
    onset = int(below_idx[-1] + 1) if below_idx.size else 0
    if onset == 0:
        return []  # never was below: that is a bad start, not a divergence
    final = float(ratio[-1])
    tau = kendall_tau(vals[onset:]) if vals.size - onset >= 3 else 1.0
    if not (final >= 10 or (final >= 3 and tau >= 0.6 and vals.size - onset >= 3)):
        return []
    # a rise must last (two smoothed points at least) unless it ends non-finite; and near
    # convergence a tiny loss rising 10x is still tiny next to where it started: under a tenth of
    # the starting loss it is noise around a converged model, not a divergence
    if n == len(s) and (vals.size - onset < 2 or vals[-1] < 0.1 * float(vals[0])):
        return []
    ev = {
        "onset_step": int(steps[onset]),
        "best_value": float(best[onset]),
        "final_value": float(vals[-1]),
        "growth": final,
        "trend_tau": tau,
        "followed_by_nonfinite": bool(n < len(s)),
    }
    msg = (
        f"loss rose {fmt(final)}× above its best ({fmt(float(best[onset]))}) from step {int(steps[onset])}"
        f" to {fmt(float(vals[-1]))}"
    )
    if n < len(s):
        msg += f", then went non-finite at step {int(s.steps[n])}"
    raised = lr_raised(run, int(steps[max(0, onset - 1)]), int(steps[onset]) + 1)
    causes = _l002_causes(run, 0.9 if raised else 0.7)
    if raised:
        ev["lr_raised"] = raised
        msg += (f"; the learning rate rose {fmt(raised['factor'])}× between steps {raised['from_step']} and "
                f"{raised['step']}, around the onset")
    return [r.finding(step=int(steps[onset]), step_end=int(s.steps[n - 1]), message=msg, evidence=ev, causes=causes)]



def _early_blowup(run: Run, r: Rule, s: Series) -> list[Finding]:
    """The loss jumps by an order of magnitude within the first steps: the first updates threw the
    weights out (an LR far too high). The rest of the curve, falling from that peak or sitting at
    the chance level, must not become the baseline that hides it."""
    v, st = s.values, s.steps
    fin = np.isfinite(v)
    if fin.sum() < 10 or not fin[0] or v[0] <= 0:
        return []
    k = int(min(200, max(20, 0.05 * len(v))))
    head = np.where(fin[:k], v[:k], -np.inf)
    i = int(np.argmax(head))
    peak, start = float(head[i]), float(v[0])
    if i == 0 or not (peak >= 10 * start):
        return []
    rest = v[fin]
    end = nanmedian(rest[-max(3, rest.size // 4):])
    ev: dict = {"start": start, "peak": peak, "peak_step": int(st[i]), "jump": peak / start, "end": end,
                "window_steps": int(st[min(k, len(st)) - 1])}
    msg = (f"the loss jumped {fmt(peak / start)}× in the first steps: {fmt(start)} at step {int(st[0])}, "
           f"{fmt(peak)} at step {int(st[i])}")
    chance = _chance(run)
    if chance and abs(end - chance[0]) <= 0.1 * chance[0]:
        msg += f"; it then sat at {fmt(end)} ≈ {chance[1]}, the loss of a constant prediction"
        ev["ended_at_chance"] = True
    else:
        msg += f"; it ended at {fmt(end)}"
    if not all(np.isfinite(v)):
        msg += f", then went non-finite at step {int(st[int(np.argmax(~fin))])}"
    causes = _l002_causes(run, 0.85)
    return [r.finding(step=int(st[0]), step_end=int(st[i]), message=msg, evidence=ev, causes=causes)]


def _far_above_chance(run: Run, r: Rule, s: Series) -> list[Finding]:
    """A classification loss two orders of magnitude above the chance loss ln C is broken, whatever
    its trend and however few points the log has."""
    chance = _chance(run)
    if not chance:
        return []
    v = s.values[np.isfinite(s.values)]
    if v.size < 2:
        return []
    level = nanmedian(v[v.size // 2:])
    if not level >= 100 * chance[0]:
        return []
    ev = {"level": level, "chance_level": chance[0], "ratio": level / chance[0]}
    msg = (f"the loss sits at {fmt(level)}, {fmt(level / chance[0])}× the {chance[1]} = {fmt(chance[0])} a constant "
           "prediction gives: the model's outputs have blown up")
    return [r.finding(step=int(s.steps[0]), step_end=int(s.steps[-1]), message=msg, evidence=ev,
                      causes=_l002_causes(run))]


@rule("L003", "warning", causes=("no-lr-decay", "lr-too-high", "unshuffled-data", "label-noise", "nonfinite-data"))
def loss_spikes(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Finds repeated sudden jumps of the loss far above its recent level mid-training, and a
        blow-up that lasts a while mid-run and comes back down.

    Why is this bad?
        Repeated spikes mean single batches push the weights far off: an LR too high for the
        late, sharp part of training (no decay), dirty batches, or batches ordered by class. A
        stretch of the run at many times the loss already reached throws that progress away: a
        schedule that raised the learning rate, or a run of bad batches.

    Evidence:
        Steps where the loss exceeds 3× the median and 2× the maximum of the preceding window,
        and half the loss of the first steps, and recovers within the window. Three or more are
        needed, each leaving the next steps elevated (the optimizer had to recover), unless they
        recur at a fixed period (one bad batch coming back). Or, on bin medians, a stretch (after
        the first tenth, ≥ 3 bins and ≥ 5 % of the run) at ≥ 2× the level of the tenth of the run
        before it began, peaking at ≥ 5× that level and coming back under half its peak; a
        learning-rate step-up of ≥ 3× at its start is named.

    Example:
        Loss ≈ 0.4 with jumps to 3.1, 2.7 and 4.0 at steps 310, 520 and 800. Or: 0.005 at step
        250, 0.77 from step 260 to 360 (the LR raised 21× at step 257), back to 0.02 by step 450.

    Use instead:
        Decay the learning rate (×0.5 when validation stalls, or cosine); clip gradients;
        shuffle every epoch; audit the batches at the listed steps; cap the schedule's peak.

    Known false positives:
        Very small batches (≤ 4) with heavy-tailed per-batch losses produce isolated spikes;
        a one-batch spike with no after-effect is not counted, and the 2×-the-recent-maximum bar
        keeps ordinary noise out.
    """
    s = _loss(run)
    if s is None:
        return []
    v = s.values
    n = v.shape[0]
    if n < 60:
        return []
    w = int(min(50, max(10, n // 20)))
    from numpy.lib.stride_tricks import sliding_window_view

    win = sliding_window_view(np.where(np.isfinite(v), v, np.nan), w)[:-1]  # window before point i+w
    with np.errstate(all="ignore"):
        med = np.nanmedian(win, axis=1) if n <= 200_000 else np.repeat(
            bin_medians(s.steps, v, max_bins=n // w)[1], w
        )[: win.shape[0]]
        mx = np.nanmax(win, axis=1)
    cur = v[w:]
    initial = nanmedian(v[:5])
    with np.errstate(all="ignore"):
        # the jump must also be large on the scale of the run: near convergence a batch of four
        # with one wrong sample jumps 100x over a loss of 0.01 and means nothing
        spike = np.isfinite(cur) & (med > 0) & (cur > 3 * med) & (cur > 2 * mx) & (cur > 0.5 * initial)
    idx = np.nonzero(spike)[0]
    # collapse adjacent points into one spike event
    if idx.size:
        idx = idx[np.concatenate(([True], np.diff(idx) > 3))]
    # a jump into divergence is L002's, not a spike: require recovery within the window
    spikes = []
    for j in idx[:1000]:
        after = cur[j + 1 : j + 1 + w]
        if after.size and np.isfinite(after).all() and np.median(after) < 2 * med[j]:
            spikes.append(j)
    st = [int(s.steps[j + w]) for j in spikes]
    gaps = np.diff(st)
    periodic = len(spikes) >= 3 and gaps.size >= 2 and np.ptp(gaps) <= 2
    if not periodic:
        # one bad batch and straight back is mini-batch noise; a spike the optimizer has to recover
        # from leaves the next steps elevated too
        spikes = [j for j in spikes if np.any((cur[j + 1 : j + 3] > 1.5 * med[j]) & (cur[j + 1 : j + 3] > 0.1 * initial))]
        st = [int(s.steps[j + w]) for j in spikes]
    if len(spikes) < 3:
        return _excursion(run, r, s)
    ev = {
        "spike_steps": st[:20],
        "spike_values": [float(cur[j]) for j in spikes[:20]],
        "levels_before": [float(med[j]) for j in spikes[:20]],
        "count": len(spikes),
    }
    msg = f"{len(spikes)} loss spikes far above the running level (steps {', '.join(map(str, st[:5]))}{' …' if len(st) > 5 else ''})"
    causes = [("no-lr-decay", 0.4), ("lr-too-high", 0.4), ("unshuffled-data", 0.15)]
    if periodic:
        # spikes at a fixed period: the same batch or shard comes back, not the optimizer
        ev["period"] = int(np.median(gaps))
        msg += f"; they recur every {int(np.median(gaps))} steps: one batch or shard of data is bad"
        causes = [("label-noise", 0.6), ("nonfinite-data", 0.1), ("lr-too-high", 0.2)]
    return [r.finding(step=st[0], step_end=st[-1], message=msg, evidence=ev, causes=causes)]


def _excursion(run: Run, r: Rule, s: Series) -> list[Finding]:
    """A blow-up that lasts a while mid-run and comes back down: neither a spike of one batch nor a
    divergence to the end. On bin medians: a stretch (medians of three bins) after the first tenth
    at ≥ 2× the level of the tenth of the run before it began, ≥ 3 bins and ≥ 5 % of the run long,
    peaking at ≥ 5× that level, then back under half its peak."""
    n = finite_prefix(s.values)
    if n < 60:
        return []
    steps, b = bin_medians(s.steps[:n], s.values[:n], max_bins=min(100, n // 3))
    if b.size < 20 or not np.all(np.isfinite(b)) or np.min(b) <= 0:
        return []
    start = max(1, b.size // 10)
    # the level before a bin: the median of the tenth of the run just before it (a running minimum
    # would pick one lucky bin and make ordinary noise look like a blow-up); the stretch itself on
    # medians of three bins, so one calm bin inside a noisy blow-up does not end it
    w = max(2, b.size // 10)
    level = np.array([np.median(b[max(0, k - w):k]) if k > 0 else b[0] for k in range(b.size)])
    b3 = np.array([np.median(b[max(0, k - 1):k + 2]) for k in range(b.size)])
    i = start
    while i < b.size:
        if not b3[i] >= 2 * level[i]:
            i += 1
            continue
        # an elevated stretch, judged against the level before it began (a blow-up that ramps up
        # would otherwise raise its own reference as it goes)
        before = float(level[i])
        j = i
        while j < b.size and b3[j] >= 2 * before:
            j += 1
        length = j - i
        peak = float(b[i:j].max())
        # came back under half its peak afterwards — or, running to the end, ends under half its
        # peak while still above the old level (a blow-up the run never fully recovered from)
        tail = b[j:] if j < b.size else b[max(i + 1, b.size - max(2, b.size // 10)):]
        if length >= max(3, int(0.05 * b.size)) and peak >= 5 * before and tail.size \
                and float(np.median(tail)) <= 0.5 * peak and peak >= 0.2 * float(b[0]) \
                and (j < b.size or length <= 0.7 * b.size):
            after = float(np.median(tail))
            ev = {"from_step": int(steps[i]), "to_step": None, "peak": peak, "level_before": before,
                  "level_after": after, "fraction_of_run": length / b.size}
            end = int(steps[j]) if j < b.size else int(s.steps[n - 1])
            ev["to_step"] = end
            msg = (f"the loss blew up from step {int(steps[i])} to step {end} ({length / b.size * 100:.0f} % of "
                   f"the run), peaking at {fmt(peak)} ({fmt(peak / before)}× the {fmt(before)} just before), then "
                   + (f"came back to {fmt(after)}" if j < b.size else
                      f"came down to {fmt(after)} by the end, still {fmt(after / before)}× the level before"))
            causes = [("lr-too-high", 0.6), ("no-lr-decay", 0.2), ("label-noise", 0.1)]
            raised = lr_raised(run, int(steps[max(0, i - 1)]), int(steps[i]) + 1)
            if raised:
                ev["lr_raised"] = raised
                msg += f"; the learning rate was raised {fmt(raised['factor'])}× at step {raised['step']}"
                causes = [("lr-too-high", 0.9)]
            return [r.finding(step=int(steps[i]), step_end=end, message=msg, evidence=ev, causes=causes)]
        i = j + 1
    return []


@rule("L004", "warning", causes=("lr-too-high", "batch-too-small", "unnormalized-input", "unshuffled-data"))
def oscillation(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Finds a loss that swings widely from the start and never trends downward.

    Why is this bad?
        The steps are so large that the optimizer bounces across the valley instead of descending
        into it; the model is not learning.

    Evidence:
        Interquartile range ≥ 0.5× the median in both halves of the run (≥ 0.25× when the loss
        kind is known and the level sits at or above half the chance loss ln C), the last third's
        median not below 0.9× the first third's, and the run's median not below 0.8× the loss
        of its first steps.

    Example:
        SGD lr=3 on digits: loss jumps between 1.4 and 40 for 300 steps, ending where it began.

    Use instead:
        Lower the learning rate ×0.1 (search 0.1, 0.01, 0.001); a larger batch; shuffle the data;
        standardise inputs.

    Known false positives:
        Very noisy small-batch SGD that does make progress is excluded by the trend condition.
    """
    s = _loss(run)
    if s is None:
        return []
    v = s.values[np.isfinite(s.values)]
    if v.size < 50 or finite_prefix(s.values) < len(s) * 0.9:
        return []
    first, last = nanmedian(segment(v, 0, 1 / 3)), nanmedian(segment(v, 2 / 3, 1))
    h1, h2 = rel_iqr(segment(v, 0, 0.5)), rel_iqr(segment(v, 0.5, 1))
    initial = nanmedian(v[:5])
    level = nanmedian(v)
    chance = _chance(run)
    # a converged run fluctuating around a low level is not oscillating: with a known loss
    # kind the level must sit at or above half the chance loss; without it the swings must be wider
    if chance:
        wide, high = 0.25, level >= 0.5 * chance[0]
    else:
        wide, high = 0.5, True
    if not (h1 >= wide and h2 >= wide and last >= 0.9 * first and level >= 0.8 * initial and high):
        return []
    if last >= 3 * first:
        return []  # rising: divergence's case
    ev = {"first_third_median": first, "last_third_median": last, "rel_iqr_first_half": h1,
          "rel_iqr_second_half": h2, "min": float(v.min()), "max": float(v.max()), **_lr_context(run)}
    msg = (
        f"loss swings widely (IQR {fmt(h1)}× and {fmt(h2)}× its median in each half, range {fmt(float(v.min()))}"
        f"–{fmt(float(v.max()))}) with no downward trend ({fmt(first)} → {fmt(last)})"
    )
    bs = run.info.batch_size
    causes = [("lr-too-high", 0.7), ("batch-too-small", 0.45 if bs is not None and bs <= 8 else 0.15),
              ("unnormalized-input", 0.15), ("unshuffled-data", 0.1)]
    return [r.finding(step=int(s.steps[0]), step_end=int(s.steps[-1]), message=msg, evidence=ev, causes=causes)]


@rule(
    "L005",
    "warning",
    causes=(
        "lr-too-low",
        "vanishing-gradient",
        "wrong-output-activation",
        "label-noise",
        "bad-initialization",
        "optimization-difficulty",
        "over-regularization",
        "double-softmax",
        "wrong-optimizer-settings",
    ),
)
def no_progress(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Finds a loss that stays flat from the first step: the network is not learning at all.

    Why is this bad?
        Every step costs compute and changes nothing; usually the updates are too small to
        matter, or no gradient reaches the weights.

    Evidence:
        The medians of ten equal segments of the run: the best is within 2 % of the first (a
        crawl of 0.1 % over hundreds of steps counts as no progress), and the curve is quiet (IQR < 0.2× median; a wild curve is L004).
        Live, the update/weight ratio tells a too-small LR (≪ 1e-5) from a blocked gradient.

    Example:
        Adam lr=1e-7 on digits: loss 2.3031 at step 0 and 2.3027 at step 400.

    Use instead:
        Raise the learning rate ×10 (an LR range test finds the value); check that gradients flow
        (no detach, nothing frozen); check the last activation and the loss fit each other.

    Known false positives:
        A run resumed from a converged checkpoint is flat too; it is skipped when the loss starts
        below 1e-3.
    """
    if adversarial(run):
        return []  # two optimizers in turn (a GAN): the loss is a game, not a descent
    s = _loss(run)
    if s is None:
        return []
    n = finite_prefix(s.values)
    if n < 50:
        return []
    v = s.values[:n]
    # ten segment medians: wide enough that batch-to-batch noise cannot fake an improvement
    _, b = bin_medians(s.steps[:n], v, max_bins=10)
    start = float(b[0])
    if not math.isfinite(start) or abs(start) < 1e-3:
        return []
    best = float(np.nanmin(b))
    improvement = (start - best) / abs(start)
    tau = kendall_tau(b)
    quiet = rel_iqr(v) < 0.2
    if not (improvement < 0.02 and quiet):
        return []
    end = nanmedian(segment(v, 0.9, 1))
    ev = {"start": start, "end": end, "best_smoothed": best, "improvement": improvement, "trend_tau": tau,
          **_lr_context(run)}
    msg = f"loss flat from the start: {fmt(start)} → {fmt(end)} over {n} steps (best {fmt(best)}, {improvement * 100:.2f} % better)"
    causes: dict[str, float] = {"lr-too-low": 0.55, "vanishing-gradient": 0.15, "wrong-output-activation": 0.1,
                                "label-noise": 0.1}
    best = best_layer_update_ratio(run)
    vanish = vanishing_ratio(run)
    zeros = zero_weights(run)
    if zeros:
        causes = {"bad-initialization": 0.8, "optimization-difficulty": 0.3}
        ev["zero_weights"] = zeros[:20]
        msg += f"; {len(zeros)} weight tensors are still exactly zero (zero init)"
    elif vanish is not None and vanish < 1e-3:
        causes["vanishing-gradient"] = 0.6
        causes["lr-too-low"] = 0.2
        ev["vanishing_ratio"] = vanish
    elif best is not None and math.isfinite(best):
        ev["median_update_ratio"] = best
        if best < 1e-5:
            causes["lr-too-low"] = 0.85
            msg += f"; update/weight ratio {fmt(best)} ≪ 1e-3"
        elif best > 1e-3:
            causes["lr-too-low"] = 0.2
    wd, lr0 = run.info.optimizer.get("weight_decay"), run.info.lr
    if isinstance(wd, (int, float)) and lr0 is not None and wd * lr0 >= 1e-2:
        # decay alone shrinks the weights by ≥ 1 % a step: nothing learned survives
        causes["over-regularization"] = 0.7
        causes["lr-too-low"] = 0.1
        ev["weight_decay"] = wd
        msg += f"; weight_decay={fmt(wd)} shrinks the weights {wd * lr0 * 100:.0f} % every step"
    lr = run.info.lr
    if lr is not None and lr <= 1e-5 and "lr-too-low" in causes:
        causes["lr-too-low"] = max(causes["lr-too-low"], 0.8)
    if "double_softmax" in _config_faults(run):
        causes["double-softmax"] = 0.5
    sw = eps_swamps(run)
    if sw:
        causes["wrong-optimizer-settings"] = 0.75
        causes["lr-too-low"] = min(causes.get("lr-too-low", 0.3), 0.3)
        ev["eps_swamps"] = sw
        msg += eps_note(sw)
    return [r.finding(step=int(s.steps[0]), step_end=int(s.steps[n - 1]), message=msg, evidence=ev,
                      causes=list(causes.items()))]


def _double_softmax_floor(c: int) -> float:
    """Lowest cross-entropy reachable when its inputs are probabilities: ln(1 + (C-1)/e)."""
    return math.log(1 + (c - 1) / math.e)


@rule(
    "L006",
    "warning",
    causes=(
        "no-lr-decay",
        "optimization-difficulty",
        "insufficient-capacity",
        "wrong-optimizer-settings",
        "over-regularization",
        "double-softmax",
    ),
)
def stalled(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Finds a loss that fell, then stopped improving for a long stretch at a level far above
        a good one.

    Why is this bad?
        The optimizer has settled at a plateau it cannot leave with the current settings: the
        classic signal to decay the learning rate, or a sign the model cannot represent more.

    Evidence:
        Bin medians of the loss: from the first point after which the best loss improves by less
        than 1 % of the starting loss in total, the plateau lasts ≥ 40 % of the run at ≥ 50 % of the
        starting loss (classification with a known class count: ≥ 0.3·ln C; a known regression
        loss, whose achievable floor is unknown: ≥ 80 %, a loss that barely left its start). For cross-entropy, a plateau at ln(1 + (C−1)/e) — the
        floor when the loss receives probabilities — points at a double softmax.

    Example:
        Digits with nn.Softmax before CrossEntropyLoss: 2.30 → 1.52 by step 150, then 1.50–1.52
        until step 600 (floor ln(1 + 9/e) = 1.461).

    Use instead:
        Decay the LR ×0.5 when the loss stalls (ReduceLROnPlateau, cosine); check the last
        activation and loss pairing; a larger model once the optimisation is ruled out.

    Known false positives:
        A regression model that has reached the noise level of its data plateaus legitimately;
        without a known loss kind the bar is a plateau ≥ 50 % of the starting loss.
    """
    if adversarial(run):
        return []  # two optimizers in turn (a GAN): the loss is a game, not a descent
    s = _loss(run)
    if s is None:
        return []
    n = finite_prefix(s.values)
    if n < 100:
        return []
    steps, b = bin_medians(s.steps[:n], s.values[:n], max_bins=100)
    ok = np.isfinite(b)
    if ok.sum() < 20 or np.nanmin(b) <= 0:
        return []
    start = nanmedian(b[: max(2, b.size // 20)])
    best = np.fmin.accumulate(np.where(ok, b, np.inf))
    # the stall begins at the first bin after which the running best gains < 1 % of the start in all
    last_gain = int(np.argmax(best - best[-1] < 0.01 * start))
    plateau_frac = (b.size - 1 - last_gain) / b.size
    level = nanmedian(b[last_gain:])
    drop = (start - level) / start
    chance = _chance(run)
    # a regression's achievable floor is unknown: there, a plateau is "far above a good level" only
    # when the loss barely left its start; a log that does not say its loss kind keeps half the start
    regression = run.meta.get("loss_kind") in REGRESSION
    floor_bar = 0.3 * chance[0] if chance else 0.8 * start if regression else 0.5 * start
    if not (drop >= 0.05 and plateau_frac >= 0.4 and level >= floor_bar):
        return []
    head = s.values[: int(min(200, max(20, 0.05 * len(s))))]
    if math.isfinite(s.values[0]) and s.values[0] > 0 and np.nanmax(np.where(np.isfinite(head), head, -np.inf)) >= 10 * s.values[0]:
        return []  # it fell from an early blow-up (L002): that peak is not the level the run reached
    lr = run.get("lr")
    if lr is not None:
        during = lr.values[(lr.steps >= steps[last_gain]) & np.isfinite(lr.values) & (lr.values > 0)]
        if during.size >= 2 and during.max() >= 10 * during[-1]:
            # the LR came down 10x over the plateau and the loss still did not move: the model
            # converged where this data and capacity let it, it is not stuck on a too-large step
            return []
    ev = {"start": start, "plateau_level": level, "stalled_from_step": int(steps[last_gain]),
          "plateau_fraction": plateau_frac, **_lr_context(run)}
    msg = (
        f"loss fell from {fmt(start)} to {fmt(level)} and has not improved since step {int(steps[last_gain])}"
        f" ({plateau_frac * 100:.0f} % of the run)"
    )
    causes: dict[str, float] = {"no-lr-decay": 0.4, "optimization-difficulty": 0.25, "insufficient-capacity": 0.15}
    neck = bottleneck(run)
    if neck:
        causes["insufficient-capacity"] = 0.65
        ev["bottleneck"] = neck
        msg += f"; `{neck['layer']}` is only {neck['width']} wide for {neck['outputs']} outputs"
    opt = run.info.optimizer
    if opt.get("class") == "SGD" and not opt.get("momentum"):
        causes["wrong-optimizer-settings"] = 0.35
    if isinstance(opt.get("weight_decay"), (int, float)) and opt["weight_decay"] >= 1e-2:
        causes["over-regularization"] = 0.4
    sw = eps_swamps(run)
    if sw:
        causes["wrong-optimizer-settings"] = 0.7
        ev["eps_swamps"] = sw
        msg += eps_note(sw)
    c = run.info.num_classes
    if run.meta.get("loss_kind") in ("cross_entropy", None) and c is not None and c >= 2:
        fl = _double_softmax_floor(c)
        ev["double_softmax_floor"] = fl
        if fl <= level <= fl + 0.25:
            causes["double-softmax"] = 0.6
            msg += f"; the plateau sits just above ln(1 + {c - 1}/e) = {fl:.3f}, the floor of cross-entropy fed probabilities"
    return [r.finding(step=int(steps[last_gain]), step_end=int(s.steps[n - 1]), message=msg, evidence=ev,
                      causes=list(causes.items()))]


@rule(
    "L007",
    "warning",
    causes=(
        "wrong-output-activation",
        "dying-relu",
        "class-imbalance",
        "lr-too-high",
        "double-softmax",
        "wrong-loss-function",
        "lr-too-low",
        "insufficient-capacity",
        "label-noise",
    ),
)
def stuck_at_chance(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Finds a loss pinned at the value of a constant prediction: ln(C) for C-class
        cross-entropy (ln 2 = 0.6931 for binary).

    Why is this bad?
        The model outputs the same (prior) distribution for every input: it has learned nothing
        about the inputs. Typical after ReLUs died, with a softmax fed to the loss twice, or when
        the output layer cannot express the classes.

    Evidence:
        The median of the last half of the run within 3 % of ln(C), with a quiet curve (IQR of
        ten-step medians < 5 % of the level). C comes from the live run (the loss input's width); in a log
        without it, only a very tight match to ln(C) for C = 2…20 counts.

    Example:
        Loss 2.3026 ± 0.001 from step 50 to 500 with 10 classes: uniform predictions.

    Use instead:
        Return logits (no softmax/ReLU before CrossEntropyLoss); lower the LR if the units died;
        reweight classes if the prior dominates.

    Known false positives:
        At initialisation the loss is ≈ ln(C) by design (that is L009's check); only a long
        stretch pinned there counts.
    """
    if adversarial(run):
        return []  # two optimizers in turn (a GAN): the loss is a game, not a descent
    s = _loss(run)
    if s is None:
        return []
    n = finite_prefix(s.values)
    if n < 40:
        return []
    tail = s.values[n // 2 : n]
    level = nanmedian(tail)
    # the spread of the level, on medians of ten-step bins: a small batch's loss scatters around
    # ln 2 by itself, the level does not move
    _, tb = bin_medians(s.steps[n // 2 : n], tail, max_bins=max(4, tail.size // 10))
    spread = rel_iqr(tb) if tb.size >= 4 else rel_iqr(tail)
    chance = _chance(run)
    candidates: list[tuple[float, str, float]] = []
    if chance:
        candidates.append((chance[0], chance[1], 0.03))
    else:
        candidates += [(math.log(c), f"ln({c})", 0.005) for c in range(2, 21)]
    for value, label, tol in candidates:
        if abs(level - value) <= tol * value and spread <= (0.05 if chance else 0.01):
            ev = {"level": level, "chance_level": value, "chance": label, "rel_iqr": spread,
                  "num_classes": run.meta.get("num_classes")}
            msg = (
                f"loss pinned at {fmt(level)} ≈ {label} = {value:.4f} from step {int(s.steps[n // 2])}:"
                " the model predicts the same distribution for every input"
            )
            causes: dict[str, float] = {"wrong-output-activation": 0.3, "dying-relu": 0.25, "class-imbalance": 0.2,
                                        "lr-too-high": 0.2, "double-softmax": 0.2, "wrong-loss-function": 0.15}
            if "double_softmax" in _config_faults(run):
                causes["double-softmax"] = 0.6
            neck = bottleneck(run)
            if neck:
                causes["insufficient-capacity"] = 0.55
                ev["bottleneck"] = neck
            u = best_layer_update_ratio(run)
            if u is not None and u >= 3e-4 and not neck:
                # the weights move at a working pace and the loss still says nothing was learned:
                # the labels may not go with the inputs
                causes["label-noise"] = 0.35
                ev["update_ratio"] = u
            head = s.values[: max(5, n // 10)]
            if abs(nanmedian(head) - value) <= 0.03 * value:
                # never left the chance level: nothing was learned from the start
                causes["lr-too-low"] = 0.3
                ev["since_start"] = True
            return [r.finding(step=int(s.steps[n // 2]), step_end=int(s.steps[n - 1]), message=msg, evidence=ev,
                              causes=list(causes.items()))]
    return []


CLAMPS = (
    (87.3365, "−ln(FLT_MIN): a probability underflowed to the float32 minimum"),
    (103.2789, "−ln of the smallest float32 subnormal"),
    (100.0, "PyTorch's BCELoss clamps log(p) at −100"),
    (9.7041, "−ln of the float16 minimum"),
    (16.6355, "−ln of the smallest float16 subnormal"),
)


@rule("L008", "error", causes=("numerically-unstable-loss", "lr-too-high", "unnormalized-input"))
def saturated_loss(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Finds a loss pinned at a numeric clamp: 87.3365 = −ln(FLT_MIN), 103.28, 100 (BCELoss's
        log clamp), 9.70 (float16) — or, live, batch losses that are exact multiples of
        clamp/batch size, meaning every sample's loss is either 0 or the clamp.

    Why is this bad?
        The logits have blown up and the softmax/sigmoid saturated to exactly 0 or 1: the loss
        no longer measures anything and its gradient is zero or meaningless.

    Evidence:
        At least 3 steps within 0.05 % of a clamp value, three of them in a row or a tenth of all
        the steps after the first (a diverging loss merely passing through the value does not
        count), or (live, with the batch size known)
        ≥ 50 % of the last window's losses on the lattice clamp·k/batch.

    Example:
        nn.Sigmoid + nn.BCELoss with a large LR: losses 46.875, 50.0, 53.125 … with batch 32,
        i.e. 15, 16, 17 samples at the 100 clamp.

    Use instead:
        Fused losses on logits (BCEWithLogitsLoss, CrossEntropyLoss); lower the LR; standardise
        inputs.

    Known false positives:
        A loss that legitimately sits at one of these values for three logged steps is very
        unlikely; the lattice test needs ten lattice points.
    """
    s = _loss(run)
    if s is None:
        return []
    v = s.values
    fin = np.isfinite(v)
    for c, why in CLAMPS:
        hits = fin & (np.abs(v - c) <= 5e-4 * c)
        if hits.sum() < 3:
            continue
        i = int(np.argmax(hits))
        # pinned, not passing through: three in a row, or a tenth of everything after the first
        run3 = bool(np.any(hits[:-2] & hits[1:-1] & hits[2:])) if hits.size >= 3 else False
        if run3 or hits.sum() >= 0.1 * fin[i:].sum():
            ev = {"clamp": c, "meaning": why, "steps_at_clamp": int(hits.sum()), "first_step": int(s.steps[i])}
            msg = f"loss pinned at {c} ({why}) on {int(hits.sum())} steps from step {int(s.steps[i])}"
            return [r.finding(step=int(s.steps[i]), step_end=int(s.steps[-1]), message=msg, evidence=ev,
                              causes=_l008_causes(run))]
    bs = run.info.batch_size
    if bs is not None and bs > 0 and run.meta.get("loss_kind") in ("bce", "nll", "cross_entropy"):
        tail = v[len(v) // 2 :]
        tail = tail[np.isfinite(tail)]
        if tail.size >= 10:
            for c, why in CLAMPS[:3]:
                k = tail * bs / c
                on = (np.abs(k - np.round(k)) < 1e-3) & (np.round(k) >= 1)
                if on.sum() >= 10 and on.mean() >= 0.5:
                    ev = {"clamp": c, "meaning": why, "batch_size": bs, "fraction_on_lattice": float(on.mean()),
                          "samples_at_clamp_median": float(np.median(np.round(k[on])))}
                    msg = (
                        f"per-sample losses clamped at {c:g} ({why}): {on.mean() * 100:.0f} % of the late batch losses are "
                        f"exact multiples of {c:g}/{bs} = {fmt(c / bs)} (median {int(ev['samples_at_clamp_median'])} of {bs} samples saturated)"
                    )
                    first = int(s.steps[len(v) // 2])
                    return [r.finding(step=first, step_end=int(s.steps[-1]), message=msg, evidence=ev,
                                      causes=_l008_causes(run))]
    return []


def _l008_causes(run: Run) -> list[tuple[str, float]]:
    causes = {"numerically-unstable-loss": 0.6, "lr-too-high": 0.45, "unnormalized-input": 0.2}
    if _config_faults(run) & {"sigmoid_bce", "log_softmax_unfused"}:
        causes["numerically-unstable-loss"] = 0.85
    return list(causes.items())


@rule("L009", "warning", causes=("unnormalized-input", "bad-initialization", "wrong-output-activation"), hazard=True)
def bad_initial_loss(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Compares the first step's loss with what a freshly initialised model should give:
        ≈ ln(C) for C-class cross-entropy, ln 2 for binary cross-entropy, ≈ mean(y²) for MSE.

    Why is this bad?
        A first loss far above that means the initial logits are huge: a wrong init scale,
        unscaled inputs, or an output layer that is not what the loss expects. Training starts
        in a saturated, badly conditioned region.

    Evidence:
        First loss > 3× the expected value (and > expected + 1 for cross-entropy); needs the
        loss kind from the live run.

    Example:
        Cross-entropy on 10 classes starting at 41.7 instead of ≈ 2.30: inputs in [0, 255].

    Use instead:
        Standardise the inputs; Kaiming/Xavier init; zero the last layer's bias; return logits.

    Known false positives:
        Models initialised from a checkpoint start anywhere: live, a ``load_state_dict`` that
        loaded weights before the first step turns the rule off; only step 0 is judged.
    """
    s = _loss(run)
    if s is None or s.steps[0] != 0 or not math.isfinite(s.values[0]):
        return []
    if any((d.loaded or 0) > 0 and d.early for d in run.facts(StateDictLoad)):
        return []  # started from a checkpoint, not a fresh initialisation
    first = float(s.values[0])
    chance = _chance(run)
    expected, label = (chance[0], chance[1]) if chance else (None, "")
    if expected is None and run.meta.get("loss_kind") == "mse" and isinstance(run.meta.get("target_sq_mean"), (int, float)):
        expected, label = float(run.meta["target_sq_mean"]), "mean(y²)"
    if expected is None or expected <= 0:
        return []
    if not (first > 3 * expected and (run.meta.get("loss_kind") == "mse" or first > expected + 1)):
        return []
    ev = {"first_loss": first, "expected": expected, "expected_formula": label, "ratio": first / expected}
    msg = f"first loss {fmt(first)} is {first / expected:.1f}× the {fmt(expected)} ({label}) a fresh model gives"
    causes = [("unnormalized-input", 0.45), ("bad-initialization", 0.45), ("wrong-output-activation", 0.15)]
    normal = inputs_look_normalised(run)
    if normal is not None:
        st = run.meta["input_stats"]
        ev["input_stats"] = st
        if normal:
            msg += f"; the inputs are well scaled (std {fmt(st['std'])}), so the initial weights are"
            causes = [("bad-initialization", 0.7), ("wrong-output-activation", 0.15)]
        else:
            msg += f"; the inputs are not standardised (mean {fmt(st['mean'])}, max |x| {fmt(st['absmax'])})"
            causes = [("unnormalized-input", 0.7), ("bad-initialization", 0.3)]
    return [r.finding(step=0, step_end=0, message=msg, evidence=ev, causes=causes)]


@rule("L010", "info", causes=("undertrained",))
def accuracy_jump_pending(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Finds accuracy flat at its floor (0 or chance) while the loss is still falling.

    Why is this bad?
        It is not bad yet: accuracy only moves once the right class's probability overtakes the
        others, which can happen late. Stopping now throws the progress away.

    Evidence:
        Over the last 40 % of the evaluations: validation accuracy within 1 point (a training
        batch's accuracy: no upward trend) at ≤ chance + 5 points, while the loss fell ≥ 5 %
        with a downward trend.

    Example:
        Loss 2.30 → 2.05 over 300 steps while accuracy stays at 0.10.

    Use instead:
        Train longer; judge progress by the loss, not the accuracy.

    Known false positives:
        A loss falling only by shrinking confident mistakes; the verdict is "wait", not "fix".
    """
    s = _loss(run)
    if s is None:
        return []
    em, tm = run.get("eval_mode_loss"), run.get("train_mode_loss")
    if em is not None and tm is not None and len(em) == len(tm) and np.nanmedian(em.values / tm.values) >= 2:
        return []  # evaluation is broken (V007), not pending: "keep training" would be wrong advice
    c = run.info.num_classes
    chance = 1.0 / c if c is not None and c >= 2 else 0.1
    for name in ("val_accuracy", "accuracy"):
        acc = run.get(name)
        if acc is None or len(acc) < 4:
            continue
        lo = acc.steps[int(len(acc) * 0.6)]
        a = acc.values[acc.steps >= lo]
        a = a[np.isfinite(a)]
        if a.size < 3:
            continue
        a = a / (100.0 if np.nanmax(a) > 1.0 else 1.0)
        # evaluation accuracy is measured on many samples: flat means flat; a training batch's
        # accuracy is noisy: flat means no upward trend around the same level
        flat = np.ptp(a) <= 0.01 if name == "val_accuracy" else (kendall_tau(a) < 0.3 and np.ptp(a) <= 0.15)
        if not (flat and float(np.median(a)) <= chance + 0.05):
            continue
        lv = s.values[(s.steps >= lo) & np.isfinite(s.values)]
        if lv.size < 10:
            return []
        k = lv.size // 5 + 1
        l0, l1 = nanmedian(lv[:k]), nanmedian(lv[-k:])
        if not (l0 > 0 and (l0 - l1) / l0 >= 0.05 and kendall_tau(lv) < -0.2):
            return []
        ev = {"accuracy": float(np.median(a)), "accuracy_series": name, "loss_from": l0, "loss_to": l1,
              "window_start_step": int(lo), "chance": chance}
        msg = (f"{name.replace('_', ' ')} flat at {np.median(a):.3f} since step {int(lo)} while the loss still falls "
               f"({fmt(l0)} → {fmt(l1)}): keep training")
        return [r.finding(step=int(lo), step_end=int(s.steps[-1]), message=msg, evidence=ev, causes=[("undertrained", 0.6)])]
    return []


@rule("L011", "warning", causes=("unbalanced-loss-terms", "unnormalized-target"))
def unbalanced_loss_terms(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Compares the terms of a loss summed from several loss functions (multi-task, auxiliary
        losses): live, every call of a torch loss function with gradients on is one term,
        valued on sampled steps.

    Why is this bad?
        The gradient of a sum is dominated by its largest term: a term 30× the others drowns
        them, and the tasks they stand for are not learned.

    Evidence:
        Two or more terms per step; the largest term's median over the last half of the samples
        at least 30× the smallest's (and each of the last two samples too), over the samples where
        every term is finite; a run that went non-finite before its second sample is judged on
        its one finite sample.

    Example:
        cross_entropy ≈ 2.1 next to mse_loss on raw prices ≈ 3.4e+04.

    Use instead:
        Weight the terms so they sit within one order of magnitude (or standardise the
        regression target); train the main task first, then add the others.

    Known false positives:
        Hand-written terms (``w.pow(2).sum()``) are not seen: only torch loss functions.
    """
    names = run.names("loss_term")
    if len(names) < 2:
        return []
    series = {n.split("/", 1)[1]: run.series[n] for n in names}
    # the terms of the training loss are sampled together; a term seen on one step only (a loss
    # computed once with gradients on, outside the loop) is not part of the sum being stepped
    longest = max(len(s) for s in series.values())
    series = {k: s for k, s in series.items() if len(s) == longest}
    if len(series) < 2 or (longest < 2 and first_nonfinite_loss_step(run) is None):
        return []
    mat = np.vstack([np.abs(s.values) for s in series.values()])
    ok = np.all(np.isfinite(mat), axis=0)
    with np.errstate(all="ignore"):
        ratio = mat.max(axis=0) / mat.min(axis=0)
    died = first_nonfinite_loss_step(run) is not None
    if ok.sum() >= 2:
        if not sustained(ratio[ok], lambda x: x >= 30):
            return []
    elif not (ok.sum() == 1 and died and float(ratio[ok][0]) >= 30):
        # one finite sample judges only a run that went non-finite before it could leave another
        return []
    med = {k: float(np.median(late(s.values[ok]))) for k, s in series.items()}
    big = max(med, key=lambda k: abs(med[k]))
    small = min(med, key=lambda k: abs(med[k]))
    steps = next(iter(series.values())).steps
    ev = {"terms": med, "largest": big, "smallest": small, "ratio": float(np.median(late(ratio[ok]))),
          "samples": int(ok.sum())}
    msg = (f"loss term {big} ≈ {fmt(med[big])} is {fmt(ev['ratio'])}× term {small} ≈ {fmt(med[small])}: "
           "it dominates the gradient")
    return [r.finding(step=int(steps[0]), step_end=int(steps[-1]), message=msg, evidence=ev,
                      causes=[("unbalanced-loss-terms", 0.8), ("unnormalized-target", 0.3)])]


@rule("L012", "info", causes=("undertrained", "lr-too-low"))
def stopped_while_improving(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Finds a run that ended while its training loss was still falling steeply.

    Why is this bad?
        The model had more to learn from this data with these settings: stopping now leaves
        accuracy on the table. A run that needs far more steps than it was given also often
        means the learning rate is too low.

    Evidence:
        Medians of (up to) ten equal stretches of the loss: the last fifth brings ≥ 30 % of the
        whole drop from the first stretch to the last, with a clearly falling trend over the last
        third (Kendall τ ≤ −0.5); when validation is measured twice or more, its last evaluation
        still improved ≥ 5 % on the one before. Said as info: nothing is broken. A loss falling
        at an even, slow pace (a straight line) is not reported: slow is not broken.

    Example:
        One epoch on digits: 2.30 → 0.95, with 0.80 → 0.62 in the last fifth of the steps.

    Use instead:
        Train longer (the evidence gives how much of the drop is still coming); if many more steps
        are needed, raise the learning rate.

    Known false positives:
        A schedule that ends with its LR near zero flattens the loss on purpose: such a run is not
        reported as still improving (the curve is flat at the end). A loss that falls in
        proportion forever (log-linear) near zero is excluded by the share-of-the-drop bar.
    """
    s = _loss(run)
    if s is None:
        return []
    n = finite_prefix(s.values)
    if n < 12 or n < len(s):
        return []
    _, b = bin_medians(s.steps[:n], s.values[:n], max_bins=min(10, n // 3))
    if b.size < 4 or not np.all(np.isfinite(b)):
        return []
    k = max(1, round(b.size / 5))  # the last fifth, in bins
    total = float(b[0] - b[-1])
    tail = float(b[-1 - k] - b[-1])
    if not (total > 0 and b[0] > 0 and tail >= 0.3 * total):
        return []
    last_third = s.values[int(n * 2 / 3):n]
    tau = kendall_tau(last_third)
    if tau > -0.5:
        return []
    val = run.get("val_loss")
    if val is not None:
        vv = val.values[np.isfinite(val.values)]
        if vv.size >= 2 and not (vv[-2] > 0 and (vv[-2] - vv[-1]) / vv[-2] >= 0.05):
            return []
    share = tail / total
    ev = {"start": float(b[0]), "end": float(b[-1]), "last_fifth_from": float(b[-1 - k]), "share_of_drop": share,
          "drop_last_fifth_pct": round(100 * tail / float(b[-1 - k]), 1) if b[-1 - k] else None, "trend_tau": tau,
          "factor": 2, "extra_steps": int(s.steps[n - 1] + 1)}
    msg = (f"the loss was still falling when the run ended: {fmt(float(b[-1 - k]))} → {fmt(float(b[-1]))} over the "
           f"last fifth of the steps, {share * 100:.0f} % of its whole drop from {fmt(float(b[0]))}")
    causes = [("undertrained", 0.7), ("lr-too-low", 0.25)]
    return [r.finding(step=int(s.steps[int(n * 0.8)]), step_end=int(s.steps[n - 1]), message=msg, evidence=ev,
                      causes=causes)]

