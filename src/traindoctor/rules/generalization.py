"""Family V: training against validation (V001–V007).

The backbone is the five train/validation curve patterns practitioners read off their plots:
both falling (learning), train falling while validation rises (overfitting), train flat while
validation falls (a data problem), both flat (underfitting), both rising (broken setup). The
training loss is compared at the validation points: for each evaluation, the median training
loss over the steps since the previous one.
"""
from __future__ import annotations

import math

import numpy as np

from ..events import DataProfile, EvalTrainMode, InputShift, ModelGraph
from ..findings import Finding
from ..losskinds import chance_loss
from ..numfmt import fmt
from ..run import Run
from . import Rule, rule
from ._signals import adversarial, best_layer_update_ratio, bottleneck, eps_note, eps_swamps
from ._stats import kendall_tau, late, nanmedian, sustained

MIN_EVALS = 4


def _paired(run: Run) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(steps, train level, val loss) at each evaluation; train level from the steps before it."""
    val, tr = run.get("val_loss"), run.get("loss")
    if val is None or tr is None:
        return None
    ok = np.isfinite(val.values)
    vs, vv = val.steps[ok], val.values[ok]
    if vs.size < MIN_EVALS:
        return None
    fin = np.isfinite(tr.values)
    ts, tv = tr.steps[fin], tr.values[fin]
    if ts.size < MIN_EVALS:
        return None
    edges = np.searchsorted(ts, vs, side="right")
    starts = np.concatenate(([0], edges[:-1]))
    level = np.array([np.median(tv[a:b]) if b > a else np.nan for a, b in zip(starts, edges)])
    keep = np.isfinite(level)
    if keep.sum() < MIN_EVALS:
        return None
    return vs[keep], level[keep], vv[keep]


def _epoch_of(run: Run, step: int) -> int | None:
    ep = run.get("epoch")
    if ep is None:
        return None
    i = int(np.searchsorted(ep.steps, step, side="right")) - 1
    return int(ep.values[i]) if i >= 0 and math.isfinite(ep.values[i]) else None


def _trend(y: np.ndarray) -> float:
    return kendall_tau(y)


@rule("V001", "warning", causes=("overfitting", "batch-too-large", "lr-too-high", "class-imbalance", "label-noise"))
def overfitting(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Finds validation loss that passed its minimum and rises while the training loss keeps
        falling, and names the best evaluation to keep.

    Why is this bad?
        From the best step on, the model memorises the training set: every further step makes
        it worse on new data.

    Evidence:
        The validation minimum is not among the last two evaluations and is ≥ 10 % below the
        first (or, with a known chance loss, ≤ 0.25× it: then the first may be the best); since it, validation rose steadily (Kendall τ ≥ 0.5 over ≥ 4
        evaluations, the last two ≥ 3 % and ≥ 5 % above the minimum) or by ≥ 10 %, and by at least
        twice its median change between evaluations; on medians of three evaluations (six or
        more) still ≥ 5 % and twice that noise up; the rise ≥ 0.015× ln C (classification) or
        0.015× the first validation loss; and the training loss fell ≥ 5 % since the minimum.

    Example:
        val_loss 0.41 at step 600 (best), 0.48 at 900, 0.57 at 1200, while train goes 0.30 → 0.05.

    Use instead:
        Early stopping with best-checkpoint restore (keep step of the minimum); more data or
        augmentation; dropout; weight decay; a smaller model.

    Known false positives:
        Noisy validation on a tiny validation set; the 10 % bar, two evaluations and a rise of at
        least twice the validation loss's median change between evaluations guard it.
    """
    p = _paired(run)
    if p is None:
        return []
    steps, tr, va = p
    k = int(np.argmin(va))
    best = float(va[k])
    if k >= len(va) - 2 or best <= 0:
        return []
    # it must have learned something general first: a minimum at the first evaluation, or one
    # barely below it, is a validation set that never matched (V005), not memorisation — unless that
    # first evaluation is already at ≤ 0.25× the chance loss (a small set learned in one epoch)
    chance0 = _chance_loss(run)
    learned_first = chance0 is not None and best <= 0.25 * chance0
    if not learned_first and (k == 0 or best > 0.9 * float(va[0])):
        return []
    after = va[k:]
    rising = after.size >= 4 and _trend(after) >= 0.5
    if not (va[-1] >= 1.05 * best and va[-2] >= 1.03 * best and (rising or va[-1] >= 1.1 * best)
            and tr[-1] <= 0.95 * tr[k]):
        return []
    # the rise must stand out of the validation loss's own noise (its typical change from one
    # evaluation to the next): a noisy validation set dipping once to a low minimum is not memorisation
    noise = float(np.median(np.abs(np.diff(va))))
    if float(va[-1]) - best < 2 * noise:
        return []
    if len(va) >= 6:
        # and on medians of three evaluations, so one lucky low evaluation is not the best
        med3 = np.array([np.median(va[i:i + 3]) for i in range(len(va) - 2)])
        if float(med3[-1]) < 1.05 * float(med3.min()) or float(med3[-1]) - float(med3.min()) < 2 * noise:
            return []
    # and it must matter: a rise of a few thousandths of a nat at the same accuracy is not a sick run
    chance = _chance_loss(run)
    scale = chance if chance is not None else float(va[0])
    if float(va[-1]) - best < 0.015 * scale:
        return []
    ep = _epoch_of(run, int(steps[k]))
    ev = {"best_step": int(steps[k]), "best_val_loss": best, "last_val_loss": float(va[-1]),
          "train_at_best": float(tr[k]), "train_last": float(tr[-1]), "best_epoch": ep}
    where = f"step {int(steps[k])}" + (f" (epoch {ep})" if ep is not None else "")
    msg = (f"validation loss bottomed at {fmt(best)} at {where} and rose to {fmt(float(va[-1]))} while the "
           f"training loss fell {fmt(float(tr[k]))} → {fmt(float(tr[-1]))}: keep the checkpoint from {where}")
    causes = [("overfitting", 0.8), ("batch-too-large", 0.1)]
    from .loss import lr_raised

    raised = lr_raised(run, int(steps[k]), int(steps[-1]))
    if raised:
        # the model got worse on new data after the schedule raised the LR: the steps, not memorisation
        ev["lr_raised"] = raised
        msg += f"; the learning rate was raised {fmt(raised['factor'])}× at step {raised['step']}, after the best step"
        causes = [("lr-too-high", 0.75), ("overfitting", 0.35)]
    if chance is not None and best >= 0.7 * chance:
        # validation never got far from the chance loss: nothing general was learned before the
        # memorising began, so the training labels may not go with their inputs
        ev["best_over_chance"] = best / chance
        msg += f"; even at its best, validation stayed at {fmt(best / chance)}× the chance loss"
        causes = [("label-noise", 0.55), ("overfitting", 0.45)]
    ratio = _class_ratio(run)
    if ratio is not None and ratio >= 5:
        ev["class_ratio"] = ratio
        msg += f"; the training classes are imbalanced ({fmt(ratio)}× between the most and least frequent)"
        causes.append(("class-imbalance", 0.45))
    return [r.finding(step=int(steps[k]), step_end=int(steps[-1]), message=msg, evidence=ev, causes=causes)]


def _chance_loss(run: Run) -> float | None:
    """ln C for a single cross-entropy over C classes, ln 2 for binary cross-entropy, else None."""
    if len(run.names("loss_term")) >= 2:
        return None
    ch = chance_loss(run.meta.get("loss_kind"), run.meta.get("num_classes"))
    return ch[0] if ch else None


def _class_ratio(run: Run) -> float | None:
    """Most over least frequent class in the training data profile (None when unknown)."""
    for d in reversed(run.facts(DataProfile)):
        counts = d.class_counts
        if d.train and len(counts) >= 2:
            v = [c for c in counts.values() if isinstance(c, (int, float)) and c > 0]
            if len(v) >= 2 and sum(v) >= 100:
                return max(v) / min(v)
    return None


def _rel_drop(y: np.ndarray) -> float:
    a = float(np.median(y[: max(1, len(y) // 4)]))
    b = float(np.min(y[len(y) // 4 :])) if len(y) > 1 else a
    return (a - b) / abs(a) if a else 0.0


@rule(
    "V002",
    "warning",
    causes=(
        "insufficient-capacity",
        "optimization-difficulty",
        "missing-nonlinearity",
        "over-regularization",
        "label-noise",
        "wrong-optimizer-settings",
    ),
)
def underfitting(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Finds training and validation losses that are both high and both flat.

    Why is this bad?
        The model does not fit even the training data: more epochs will not help. It lacks
        capacity, is over-regularised, or cannot be optimised as set up.

    Evidence:
        Over the evaluations: neither loss improves by 10 % after the first quarter, or (after a
        first fall, with a known class count) by 5 % over the second half; and the training loss
        stays above half its first level (above 0.5·ln C when the class count is known).

    Example:
        weight_decay=1.0: train 1.95 → 1.93, val 1.96 → 1.95 over 20 epochs on digits.

    Use instead:
        Lower weight decay and dropout; a wider/deeper model; check optimisation first
        (compare with a shallower model, LR range test).

    Known false positives:
        A hard task at its noise floor is flat and "high"; with a known class count the bar is
        half the chance loss.
    """
    p = _paired(run)
    if p is None:
        return []
    steps, tr, va = p
    first_train = nanmedian(run.get("loss").values[:5])
    c = run.info.num_classes
    floor = 0.5 * math.log(c) if c is not None and c >= 2 else 0.5 * first_train
    flat = _rel_drop(tr) < 0.1 and _rel_drop(va) < 0.1 and float(np.median(tr)) >= floor
    # or flat over the second half after a first fall: stuck high at the end is underfitting too
    h = len(va) // 2
    # (with a known chance loss only: a regression's achievable floor is unknown)
    late_flat = isinstance(c, int) and c >= 2 and len(va) - h >= 4 and _rel_drop(tr[h:]) < 0.05 \
        and _rel_drop(va[h:]) < 0.05 and float(np.median(tr[h:])) >= floor
    if not ((flat or late_flat) and float(tr[-1]) > 0):
        return []
    ev = {"train": float(tr[-1]), "val": float(va[-1]), "train_drop": _rel_drop(tr), "val_drop": _rel_drop(va),
          "evaluations": int(len(va))}
    msg = f"training ({fmt(float(tr[-1]))}) and validation ({fmt(float(va[-1]))}) losses both high and flat over {len(va)} evaluations"
    causes: dict[str, float] = {"insufficient-capacity": 0.35, "optimization-difficulty": 0.2, "missing-nonlinearity": 0.1}
    chance = _chance_loss(run)
    u = best_layer_update_ratio(run)
    if chance is not None and abs(float(np.median(va)) - chance) <= 0.05 * chance \
            and abs(float(np.median(tr)) - chance) <= 0.05 * chance and u is not None and u >= 3e-4:
        # both sit at the loss of a constant prediction while the weights move at a working pace:
        # there may be nothing in the inputs that tells the labels
        causes["label-noise"] = 0.45
        ev["at_chance"] = True
    neck = bottleneck(run)
    if neck:
        causes["insufficient-capacity"] = 0.75
        ev["bottleneck"] = neck
        msg += (f"; `{neck['layer']}` is {neck['width']} unit{'s' if neck['width'] > 1 else ''} wide, narrower than the "
                f"{neck['outputs']} outputs it must separate")
    wd = run.info.optimizer.get("weight_decay")
    if isinstance(wd, (int, float)) and wd >= 1e-2:
        causes["over-regularization"] = 0.7
        ev["weight_decay"] = wd
        msg += f"; weight_decay={fmt(wd)} is strong"
    else:
        causes["over-regularization"] = 0.2
    sw = eps_swamps(run)
    if sw:
        causes["wrong-optimizer-settings"] = 0.7
        ev["eps_swamps"] = sw
        msg += eps_note(sw)
    return [r.finding(step=int(steps[0]), step_end=int(steps[-1]), message=msg, evidence=ev, causes=list(causes.items()))]


@rule("V003", "warning", causes=("label-noise", "code-bug", "over-regularization"))
def train_flat_val_falls(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Finds a training loss that stays flat while the validation loss falls.

    Why is this bad?
        The model learns something general that the training loss does not show: the training
        targets are mostly noise (wrong or shuffled labels, misaligned data and labels), or the
        training loss is computed on corrupted inputs. Almost always a data problem.

    Evidence:
        Training loss changes < 10 % over the evaluations and less than half as much as the
        validation loss, which falls ≥ 10 % with a downward trend (Kendall τ ≤ −0.5). Or, for a
        classification loss: over the second half of the evaluations the training loss stays
        ≥ 0.15× ln C above validation and ≥ 0.4× ln C itself while validation improved ≥ 10 %,
        and the same batch does not score far lower in eval mode (that would be dropout: V009).

    Example:
        80 % of training labels shuffled: train 2.28 → 2.25, val 2.30 → 1.70.

    Use instead:
        Audit label/data alignment in the training loader; compare a few samples with their
        labels by eye; check augmentation is not destroying the signal.

    Known false positives:
        Heavy dropout or augmentation makes the training loss lag; it still falls.
    """
    p = _paired(run)
    if p is None:
        return []
    steps, tr, va = p
    drop_tr = (float(tr[0]) - float(np.median(tr[-2:]))) / abs(float(tr[0])) if tr[0] else 0.0
    drop_va = (float(va[0]) - float(np.median(va[-2:]))) / abs(float(va[0])) if va[0] else 0.0
    if not (abs(drop_tr) < 0.1 and abs(drop_tr) < 0.5 * drop_va and drop_va >= 0.1 and _trend(va) <= -0.5):
        return _train_above_val(run, r, steps, tr, va)
    ev = {"train_first": float(tr[0]), "train_last": float(tr[-1]), "val_first": float(va[0]), "val_last": float(va[-1])}
    msg = (f"training loss flat ({fmt(float(tr[0]))} → {fmt(float(tr[-1]))}) while validation falls "
           f"({fmt(float(va[0]))} → {fmt(float(va[-1]))}): the training data or labels are suspect")
    return [r.finding(step=int(steps[0]), step_end=int(steps[-1]), message=msg, evidence=ev,
                      causes=[("label-noise", 0.65), ("code-bug", 0.3)])]


def _train_above_val(run: Run, r: Rule, steps: np.ndarray, tr: np.ndarray, va: np.ndarray) -> list[Finding]:
    """Training loss held well above validation for the whole second half while validation
    improved: the training targets are harder than the validation targets — noisy training labels —
    unless dropout explains it (the same batch measured in eval mode is far lower, or dropout is
    present and that could not be measured)."""
    scale = _chance_loss(run)  # (None for a sum of several losses: not on the scale of ln C)
    if scale is None:
        return []
    label = "the chance loss"
    h = len(va) // 2
    if len(va) - h < 2:
        return []
    # the training level just before each evaluation (the last fifth of the steps since the one
    # before), not the epoch's median, which lags a falling curve
    loss = run.get("loss")
    fin = np.isfinite(loss.values)
    ts, tv = loss.steps[fin], loss.values[fin]
    ends = np.searchsorted(ts, steps, side="right")
    starts = np.concatenate(([0], ends[:-1]))
    just = np.array([np.median(tv[max(a, b - max(1, (b - a) // 5)):b]) if b > a else np.nan for a, b in zip(starts, ends)])
    if not np.all(np.isfinite(just[h:])):
        return []
    gap = float(np.median(just[h:] - va[h:]))
    level = float(np.median(just[h:]))
    gain = (float(va[0]) - float(va.min())) / float(va[0]) if va[0] > 0 else 0.0
    if not (gap >= 0.15 * scale and level >= 0.4 * scale and gain >= 0.1):
        return []
    causes: list[tuple[str, float]] = [("label-noise", 0.65), ("code-bug", 0.2)]
    em, tm = run.get("eval_mode_loss"), run.get("train_mode_loss")
    ev = {"train_level": level, "val_level": float(np.median(va[h:])), "gap": gap, "scale": scale, "val_gain": gain}
    if em is not None and tm is not None and len(em) == len(tm) and len(em):
        with np.errstate(all="ignore"):
            r_mode = float(np.nanmedian(em.values / tm.values))
        ev["eval_over_train_mode"] = r_mode
        if r_mode < 0.7:
            return []  # the same batch scores far lower in eval mode: dropout, V009's case
    elif _has_dropout(run):
        return []  # dropout could explain the gap and the eval-mode pass could not tell
    msg = (f"the training loss stays {fmt(gap)} above validation over the second half ({fmt(level)} against "
           f"{fmt(ev['val_level'])}, {fmt(gap / scale)}× {label}) while validation improved {gain * 100:.0f} %: the "
           "training labels are harder to fit than the validation labels — noisy or misaligned training labels")
    return [r.finding(step=int(steps[h]), step_end=int(steps[-1]), message=msg, evidence=ev, causes=causes)]


def _has_dropout(run: Run) -> bool:
    for g in run.facts(ModelGraph):
        if any("Dropout" in str(t) for t in g.module_types) or any(op.startswith("dropout") for op in g.op_names):
            return True
    return False


@rule("V004", "error", causes=("lr-too-high", "code-bug", "label-noise"))
def both_rising(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Finds training and validation losses that rise together.

    Why is this bad?
        The optimisation itself goes the wrong way: the setup is broken (learning rate, loss
        sign, architecture) or the data is dirty.

    Evidence:
        Over the last half of the evaluations both losses trend upward (Kendall τ ≥ 0.5) and end
        ≥ 20 % above their minimum.

    Example:
        train 0.8 → 1.9 and val 0.9 → 2.2 over the last 10 epochs.

    Use instead:
        Lower the learning rate; check the loss and its sign; check the data pipeline.

    Known false positives:
        None known beyond short noisy windows; the trend must hold over half the evaluations.
    """
    p = _paired(run)
    if p is None:
        return []
    steps, tr, va = p
    h = len(va) // 2
    t2, v2 = tr[h:], va[h:]
    if len(v2) < 3:
        return []
    if not (_trend(t2) >= 0.5 and _trend(v2) >= 0.5 and t2[-1] >= 1.2 * tr.min() and v2[-1] >= 1.2 * va.min()):
        return []
    ev = {"train_min": float(tr.min()), "train_last": float(tr[-1]), "val_min": float(va.min()), "val_last": float(va[-1])}
    msg = (f"training ({fmt(float(tr.min()))} → {fmt(float(tr[-1]))}) and validation ({fmt(float(va.min()))} → "
           f"{fmt(float(va[-1]))}) losses both rise since step {int(steps[h])}")
    return [r.finding(step=int(steps[h]), step_end=int(steps[-1]), message=msg, evidence=ev,
                      causes=[("lr-too-high", 0.5), ("code-bug", 0.3), ("label-noise", 0.2)])]


@rule("V005", "warning", causes=("distribution-mismatch", "overfitting", "label-noise", "class-imbalance"))
def distribution_mismatch(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Finds validation far worse than training from the first evaluation, with a gap that does
        not close as training improves.

    Why is this bad?
        The model learns the training distribution well, and the validation data is something
        else: a different preprocessing, a shifted source, a split by time or by class. More
        training or regularisation cannot fix that.

    Evidence:
        Training loss falls ≥ 50 % while validation never improves by 10 % on its first
        evaluation, and ends ≥ 2× the training loss. Or validation is ≥ 3× the training loss at
        the first evaluation and at the last, and never within 2× of it (neither when validation
        reaches ≤ 0.25× a known chance loss: it generalises). Or, with a known chance
        loss, validation never below 0.9× it while training falls to ≤ 0.85× it (and 15 % below
        its start): then the training labels themselves are suspect too. (Overfitting, V001,
        starts together and drifts apart.) Or, measured live, the first evaluation's inputs have
        moved: the median feature's mean is ≥ 0.5 training standard deviations from the training
        window's, or its spread changed ≥ 1.5× either way (each ≥ 5× what sampling alone gives),
        and validation ends ≥ 1.5× the training loss; that measurement, when present, names
        distribution-mismatch outright.

    Example:
        Validation features shifted by +3 std: train 2.2 → 0.1, val 6.4 → 7.9.

    Use instead:
        Re-split the data randomly; apply identical preprocessing (same scaler fitted on
        training) to both; check the sources match.

    Known false positives:
        A tiny validation set dominated by hard cases; check it has the class balance of
        training.
    """
    p = _paired(run)
    if p is None:
        return []
    steps, tr, va = p
    drop_tr = (float(tr[0]) - float(tr.min())) / abs(float(tr[0])) if tr[0] else 0.0
    val_gain = (float(va[0]) - float(va.min())) / abs(float(va[0])) if va[0] else 0.0
    never_improved = drop_tr >= 0.5 and val_gain < 0.1 and va[-1] >= 2 * tr[-1]
    # or: validation several times the training loss from the first evaluation on, never closer than
    # 2× — the gap was there before any memorisation could have made it
    with np.errstate(all="ignore"):
        gap = va / tr
    apart = bool(tr.min() > 0 and np.all(np.isfinite(gap)) and gap[0] >= 3 and gap.min() >= 2 and gap[-1] >= 3)
    chance = _chance_loss(run)
    if chance is not None and float(va.min()) <= 0.25 * chance:
        # validation reached a quarter of the chance loss: it learned most of what there is to
        # learn, and a training loss falling further is memorisation (V001's), not another population
        never_improved = apart = False
    # or: validation never better than the chance loss while training learns: nothing learned from
    # the training labels carries over to the validation labels
    at_chance = chance is not None and len(va) >= 4 and float(va.min()) >= 0.9 * chance \
        and float(tr[-1]) <= 0.85 * chance and float(tr[-1]) <= 0.85 * float(tr[0])
    shift = _input_shift(run)
    # or: the inputs themselves moved — the first evaluation's features sit, feature by feature, far
    # from the training window's in training standard deviations — and validation is worse for it
    shifted_and_hurt = shift is not None and float(tr[-1]) > 0 and float(va[-1]) >= 1.5 * float(tr[-1])
    if not (never_improved or apart or at_chance or shifted_and_hurt):
        return []
    ev = {"train_first": float(tr[0]), "train_last": float(tr[-1]), "val_first": float(va[0]), "val_last": float(va[-1]),
          "gap_ratio_last": float(va[-1] / tr[-1]) if tr[-1] else None}
    msg = (f"validation ({fmt(float(va[0]))} → {fmt(float(va[-1]))}) is far worse than training "
           f"({fmt(float(tr[0]))} → {fmt(float(tr[-1]))}) from the first evaluation and never catches up")
    causes = [("distribution-mismatch", 0.7), ("overfitting", 0.15)]
    if at_chance and not (never_improved or apart):
        ev["validation_at_chance"] = float(va.min()) / chance
        msg = (f"validation never got below {fmt(float(va.min()))} ({fmt(float(va.min()) / chance)}× the chance loss) "
               f"while training fell {fmt(float(tr[0]))} → {fmt(float(tr[-1]))}: what the model learns from the "
               "training labels does not carry over to the validation labels")
        causes = [("label-noise", 0.55), ("distribution-mismatch", 0.45)]
    if shift is not None:
        med = shift.median_shift_sd
        measured = shift.to_json()
        ev["input_shift"] = {k: measured[k] for k in ("median_shift_sd", "median_std_ratio", "median_abs_log_std_ratio",
                                                      "features", "val_samples", "noise_sd", "noise_log_std",
                                                      "most_shifted") if k in measured}
        if _moved(med, shift.noise_sd):
            msg += (f"; the validation inputs are shifted: the typical feature's mean moved {fmt(med)} training "
                    f"standard deviations (sampling noise alone: about {fmt(shift.noise_sd)})")
        else:
            msg += (f"; the validation inputs are rescaled: the typical feature's spread is "
                    f"{fmt(shift.median_std_ratio)}× its spread in training (same preprocessing on both?)")
        causes = [("distribution-mismatch", 0.85), ("overfitting", 0.1)]
        ratio = _train_class_ratio(run)
        if ratio is not None and ratio >= 10:
            # classes kept at very different rates in training: the inputs' marginal moves with the
            # class mix alone, so a balanced validation set differs for that reason
            ev["train_class_ratio"] = ratio
            msg += f" — though training's classes are {fmt(ratio)}:1 apart, which moves the inputs on its own"
            causes = [("class-imbalance", 0.6), ("distribution-mismatch", 0.45), ("overfitting", 0.1)]
    return [r.finding(step=int(steps[0]), step_end=int(steps[-1]), message=msg, evidence=ev, causes=causes)]


def _train_class_ratio(run: Run) -> float | None:
    """Most over least frequent class in the training data profile (None: no label counts)."""
    from .data import _profiles

    for d in _profiles(run):
        if d.first_batch:
            continue
        counts = [v for v in d.class_counts.values() if isinstance(v, (int, float)) and v > 0]
        if len(counts) >= 2 and sum(counts) >= 50:
            return max(counts) / min(counts)
    return None


def _moved(value: object, noise: object, floor: float = 0.5) -> bool:
    """A statistic at or above ``floor`` and 5× what sampling alone gives (both finite numbers)."""
    return isinstance(value, (int, float)) and isinstance(noise, (int, float)) and math.isfinite(value) \
        and math.isfinite(noise) and value >= floor and value >= 5 * noise


def _input_shift(run: Run) -> InputShift | None:
    """The ``input_shift`` measurement when it shows a real covariate shift: the median feature's
    mean moved ≥ 0.5 training standard deviations, or its spread changed ≥ 1.5× either way, and
    by ≥ 5× what sampling alone gives."""
    for d in run.facts(InputShift):
        if _moved(d.median_shift_sd, d.noise_sd) or _moved(d.median_abs_log_std_ratio, d.noise_log_std, math.log(1.5)):
            return d
    return None


@rule("V006", "info", causes=("undertrained", "lr-too-low", "wrong-optimizer-settings"))
def unconfident_predictions(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Measures the mean probability the model gives its predicted class (sampled steps).

    Why is this bad?
        Probabilities near uniform (1/C, or 0.5 for binary) mean the classifier has not
        separated the classes yet: it is undertrained or not learning.

    Evidence:
        The mean top-class probability within 0.05 of 1/C (0.5 for binary) for the median of the
        last half of the samples and each of the last two, after at least 100 steps, while the
        loss fell less than 5 % over the last half (a run still learning is left alone).

    Example:
        10 classes, mean top probability 0.12 at step 400.

    Use instead:
        Train longer, or fix what keeps it from learning (see the loss findings).

    Known false positives:
        Genuinely ambiguous data; calibrated models on hard tasks stay well above the bar.
    """
    if adversarial(run):
        return []  # two optimizers in turn (a GAN): the loss is a game, not a descent
    s = run.get("pred_confidence")
    if s is None or len(s) < 3 or int(s.steps[-1]) < 100:
        return []
    c = run.meta.get("num_classes")
    kind = run.meta.get("loss_kind")
    if kind in ("bce", "bce_logits"):
        uniform = 0.5
    elif isinstance(c, int) and c >= 2:
        uniform = 1.0 / c
    else:
        return []
    if not sustained(s.values, lambda x: x <= uniform + 0.05):
        return []
    loss = run.get("loss")
    if loss is not None:
        half = loss.values[len(loss) // 2 :]
        half = half[np.isfinite(half)]
        k = max(2, half.size // 5)
        if half.size >= 10 and np.median(half[:k]) > 0 and (np.median(half[:k]) - np.median(half[-k:])) / np.median(half[:k]) >= 0.05:
            return []  # still learning: near-uniform now is the start of a healthy run
    v = float(np.median(late(s.values)))
    ev = {"mean_top_probability": v, "uniform": uniform}
    msg = f"the model gives its predicted class a mean probability of {v:.3f}, near uniform ({uniform:.3f})"
    causes = [("undertrained", 0.5)]
    best = best_layer_update_ratio(run)
    if best is not None and best < 1e-4:
        causes.append(("lr-too-low", 0.3))
    sw = eps_swamps(run)
    if sw:
        causes.append(("wrong-optimizer-settings", 0.6))
        ev["eps_swamps"] = sw
        msg += eps_note(sw)
    return [r.finding(step=int(s.steps[len(s) // 2]), step_end=int(s.steps[-1]), message=msg, evidence=ev,
                      causes=causes)]


@rule("V007", "error", causes=("batchnorm-misuse",))
def eval_mode_gap(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Compares the loss of the same training batch in eval mode and in train mode (live: a
        side-effect-free eval-mode pass on sampled steps when the model has BatchNorm or
        dropout).

    Why is this bad?
        Eval mode should do at least as well on data the model is training on. A far higher
        eval-mode loss means BatchNorm's running statistics do not describe the data (momentum
        0, frozen statistics on new data, tiny or unshuffled batches) or dropout is misused:
        validation and deployment see a different, worse model.

    Evidence:
        Eval-mode loss ≥ 2× the train-mode loss and ≥ 0.1 above it, for the median of the last
        half of the samples and each of the last two. A run short enough to hold one such
        measurement: ≥ 4× and ≥ 0.3 above, with the validation loss (eval mode too) ≥ 3× the
        training loss at the last evaluation.

    Example:
        BatchNorm1d(momentum=0.0) on raw inputs: train-mode loss 0.2, eval-mode loss 9.8.

    Use instead:
        Let BatchNorm statistics update on the new data (momentum 0.1, model.train() while
        training); call model.eval() only for evaluation, model.train() after it.

    Known false positives:
        The first steps, before running statistics settle; only the last half is judged.
    """
    e, t = run.get("eval_mode_loss"), run.get("train_mode_loss")
    if e is None or t is None or len(e) != len(t) or len(e) < 1:
        return []
    with np.errstate(all="ignore"):
        ratio = e.values / t.values
        diff = e.values - t.values
    if len(e) == 1:
        # a short run has one such measurement: enough only when it is large and validation (which
        # runs in eval mode) says the same — several times the training loss at the last evaluation
        p = _paired(run)
        if not (ratio[0] >= 4 and diff[0] >= 0.3 and p is not None and p[2][-1] >= 3 * p[1][-1]):
            return []
    elif not (sustained(ratio, lambda x: x >= 2) and sustained(diff, lambda x: x >= 0.1)):
        return []
    ev = {"eval_mode_loss": float(np.median(late(e.values))), "train_mode_loss": float(np.median(late(t.values))),
          "ratio": float(np.median(late(ratio)))}
    msg = (f"the same batch scores {fmt(ev['eval_mode_loss'])} in eval mode against {fmt(ev['train_mode_loss'])} in "
           f"train mode ({fmt(ev['ratio'])}×): BatchNorm statistics or dropout misused")
    return [r.finding(step=int(e.steps[len(e) // 2]), step_end=int(e.steps[-1]), message=msg, evidence=ev,
                      causes=[("batchnorm-misuse", 0.8)])]



@rule("V008", "warning", causes=("batchnorm-misuse",))
def eval_in_train_mode(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Notices validation computed while the model's dropout or BatchNorm modules were in
        training mode: a loss evaluated under ``torch.no_grad()`` (or ``inference_mode``) with
        ``model.eval()`` never called.

    Why is this bad?
        Dropout still drops units, so validation numbers are noisy and pessimistic; BatchNorm
        normalises each validation batch with its own statistics and folds them into its running
        averages — the validation data leaks into the model, and the model you evaluate is not
        the one you will deploy.

    Evidence:
        Live: at an evaluation (a loss computed with gradients off, between training steps), the
        dropout/BatchNorm modules of the model that were in training mode, and the line of the
        loss call.

    Example:
        ``with torch.no_grad(): val_loss = loss_fn(model(X_val), y_val)`` right after the training
        loop, with ``nn.Dropout(0.3)`` and ``nn.BatchNorm1d`` still training.

    Use instead:
        ``model.eval()`` before evaluating and ``model.train()`` after (or a context manager).

    Known false positives:
        Monte-Carlo dropout on purpose (dropout kept on to sample predictions).
    """
    for d in run.facts(EvalTrainMode):
        mods = list(d.modules or ())
        if not mods:
            continue
        kinds = sorted(set(d.types or ()))
        msg = (f"validation at step {d.step} ran with {len(mods)} {'/'.join(kinds) or 'dropout/BatchNorm'} module"
               f"{'s' if len(mods) > 1 else ''} in training mode ({', '.join(f'`{m}`' for m in mods[:4])}"
               f"{' …' if len(mods) > 4 else ''}): model.eval() was not called")
        return [r.finding(step=d.step, step_end=None, message=msg, evidence=d.to_json(),
                          causes=[("batchnorm-misuse", 0.85)])]
    return []


@rule("V009", "warning", causes=("over-regularization",))
def regularization_gap(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Compares the loss of the same training batch in train mode (dropout and other
        training-only noise active) and in eval mode — the measurement V007 makes, read the other
        way round.

    Why is this bad?
        When dropout (or noise) is so strong that the network cannot fit even the batch it is
        training on, the training loss stays high, the gradients mostly teach the model to survive
        the noise, and it ends far from what it could represent: underfitting by regularisation.

    Evidence:
        Sampled steps with both losses (models with dropout or BatchNorm): the train-mode loss
        ≥ 1.5× the eval-mode loss and above it by ≥ 0.3× the chance loss ln C (or the first loss
        when C is unknown), while the train-mode loss itself stays ≥ 0.5× that scale — for the
        median of the last half of the samples and each of the last two.

    Example:
        ``nn.Dropout(0.9)`` after a 32-unit layer on digits: the same batch scores 1.6 in train
        mode and 0.6 in eval mode; validation (eval mode) keeps improving, training cannot.

    Use instead:
        Lower dropout (0.1–0.3 for small models) and other noise; raise them again only once
        validation shows overfitting.

    Known false positives:
        A converged model with moderate dropout has a train-mode loss several times its eval-mode
        loss, but both are small: the ln C-scaled bars keep it out.
    """
    e, t = run.get("eval_mode_loss"), run.get("train_mode_loss")
    if e is None or t is None or len(e) != len(t) or len(e) < 2:
        return []
    chance = _chance_loss(run)
    if chance is not None:
        scale, label = chance, "the chance loss"
    else:
        loss = run.get("loss")
        first = float(loss.values[0]) if loss is not None and len(loss) and math.isfinite(loss.values[0]) else None
        if first is None or first <= 0:
            return []
        scale, label = first, "the first loss"
    with np.errstate(all="ignore"):
        ratio = t.values / e.values
        gap = t.values - e.values
    if not (sustained(ratio, lambda x: x >= 1.5) and sustained(gap, lambda x: x >= 0.3 * scale)
            and sustained(t.values, lambda x: x >= 0.5 * scale)):
        return []
    tm, em = float(np.median(late(t.values))), float(np.median(late(e.values)))
    ev = {"train_mode_loss": tm, "eval_mode_loss": em, "ratio": tm / em if em else None, "scale": scale,
          "scale_is": label}
    msg = (f"the same batch scores {fmt(tm)} in train mode and {fmt(em)} in eval mode: with dropout active the model "
           f"cannot fit even the batch it trains on ({fmt(tm / scale)}× {label})")
    return [r.finding(step=int(t.steps[len(t) // 2]), step_end=int(t.steps[-1]), message=msg, evidence=ev,
                      causes=[("over-regularization", 0.75)])]
