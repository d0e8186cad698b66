"""Verdicts on active experiments (probes): fitting tiny data, shallow against deep, gradient
checks of custom autograd functions, the input-independent baseline, the LR range test.

The probes themselves live in ``checks/probes/`` (one module each) and record plain numbers as events
(``fit_probe``, ``depth_probe``, ``gradcheck``, ``input_baseline``, ``lr_range_test``); a Run
without those events — any live run or log — gets nothing from here. The train/eval probe
records the ``train_mode_loss``/``eval_mode_loss`` series a live run records too, and V007
(rules/generalization.py) judges both the same way.
"""
from __future__ import annotations

import math

from ..events import Config, DepthProbe, FitProbe, GradCheck, InputBaseline, LrRangeTest, finite
from ..findings import Finding
from ..numfmt import fmt
from ..run import Run
from . import Rule, rule


def _config_faults(run: Run) -> set[str]:
    return {c.fault or "" for c in run.facts(Config)}


@rule("M004", "error", causes=("code-bug", "insufficient-capacity", "double-softmax"))
def cannot_overfit_tiny_batch(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Trains the model on about 10 samples (and on one sample repeated) with Adam, from its
        initial weights, and reports when the loss does not get near its floor.

    Why is this bad?
        Any network worth training can memorise ten samples in a few hundred steps. If it
        cannot, the longer run will not work either: the model, the loss or the data plumbing is
        broken (outputs not connected to the input, a softmax applied twice, a loss that cannot
        reach 0 on these targets, parameters the optimizer does not update), or the model is far
        too small.

    Evidence:
        ``fit_probe`` events: initial and best loss, steps, Adam learning rates tried (1e-3, then
        1e-2 from the same start), the target ``floor + 3 % of (initial − floor)`` (the floor is
        0, or the entropy left by label smoothing or soft targets), train- and eval-mode losses.

    Example:
        ``nn.Softmax`` before ``nn.CrossEntropyLoss``: 10 samples, loss 2.30 → 1.47 after 600
        steps; it can never go below ln(1 + 9/e) = 1.46.

    Use instead:
        Follow the other findings first (double softmax, output activation, labels); then check
        that ``forward`` uses its input, that the optimizer holds every parameter, and that the
        targets reach the loss unchanged; compare with a known-good model on the same batch.

    Known false positives:
        Losses with a floor above 0 that the probe does not know (a regulariser added inside the
        loss function, a custom loss), and models with so much dropout or noise that train-mode
        losses cannot reach the target (the eval-mode loss is used too).
    """
    fails = [p for p in run.facts(FitProbe) if not p.fitted and finite(p.initial_loss)]
    if not fails:
        return []
    d = fails[0]
    tried = ", ".join(fmt(t.lr) for t in d.tries or ())
    steps = sum(t.steps or 0 for t in d.tries or ())
    what = "10 samples" if d.variant == "tiny_batch" else "one sample repeated"
    if d.variant == "tiny_batch" and d.samples:
        what = f"{d.samples} samples"
    msg = (f"the model cannot fit {what}: loss {fmt(d.initial_loss)} → best {fmt(d.best_loss)} after {steps} steps "
           f"of Adam (lr {tried}); a working pipeline gets below {fmt(d.target)}")
    if len(fails) > 1:
        msg += "; one repeated sample cannot be fitted either"
    causes: dict[str, float] = {"code-bug": 0.6, "insufficient-capacity": 0.3}
    faults = _config_faults(run)
    if "double_softmax" in faults:
        causes["double-softmax"] = 0.8
        msg += " — the double softmax caps how low the loss can go"
    if any(x.variant == "one_sample" for x in fails):
        causes["code-bug"] = 0.75
    ev = {"probes": [x.to_json() for x in fails], "sample_ids": None if d.sample_ids is None else list(d.sample_ids)}
    return [r.finding(step=None, step_end=None, message=msg, evidence=ev, causes=list(causes.items()))]


@rule("M005", "warning", causes=("optimization-difficulty", "vanishing-gradient", "bad-initialization"))
def optimization_failure(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Compares the training loss of the model with that of a shallower variant trained the same
        way (same optimizer class and settings, same data, same number of steps).

    Why is this bad?
        A deeper model contains the shallower one (its extra layers could learn the identity), so
        it should reach at least as low a training loss. When it does worse, the problem is
        optimisation — vanishing gradients, bad init, saturating activations, a too small or too
        large LR for the depth — not capacity; adding layers will not help.

    Evidence:
        ``depth_probe``: mean loss of the last 20 % of steps for both models; fires when the deep
        model ends ≥ 10 % and ≥ 5 % of the initial loss above the shallow one.

    Example:
        10 sigmoid layers with plain SGD: 2.29 after 300 steps, against 0.41 for the 2-layer
        variant.

    Use instead:
        ReLU-family activations, Kaiming init, normalisation layers, residual connections; Adam or
        SGD with momentum; warm-up.

    Known false positives:
        Very short comparisons where the deeper model only starts slower; give the probe more
        steps (``steps=``) before acting on it.
    """
    for d in run.facts(DepthProbe):
        deep, shallow = d.deep or {}, d.shallow or {}
        fd, fs, init = deep.get("final_loss"), shallow.get("final_loss"), deep.get("initial_loss")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (fd, fs)):
            if isinstance(fs, (int, float)) and math.isfinite(fs) and not (isinstance(fd, (int, float)) and math.isfinite(fd)):
                pass  # the deep model diverged where the shallow one did not: still an optimisation failure
            else:
                continue
        scale = abs(init) if isinstance(init, (int, float)) and math.isfinite(init) else abs(fs)
        if isinstance(fd, (int, float)) and math.isfinite(fd) and not (fd > 1.1 * fs and fd - fs > 0.05 * scale):
            continue
        msg = (f"the model reaches a training loss of {fmt(fd)} after {d.steps} steps of {d.optimizer}, "
               f"a shallower variant {fmt(fs)} ({d.how}): optimisation, not capacity, is failing")
        return [r.finding(step=None, step_end=None, message=msg, evidence=d.to_json(),
                          causes=[("optimization-difficulty", 0.7), ("vanishing-gradient", 0.3),
                                  ("bad-initialization", 0.2)])]
    return []


@rule("M006", "error", causes=("code-bug",))
def gradient_check_failure(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Runs ``torch.autograd.gradcheck`` in float64 on every custom ``torch.autograd.Function``
        found in the model's autograd graph, with its real inputs from a training batch.

    Why is this bad?
        A wrong ``backward`` trains the network on gradients of a different function: the loss
        may fall slowly, plateau or diverge, and nothing in the curves points at the bug.

    Evidence:
        ``gradcheck`` events: the Function, the module that calls it, the input shapes, the
        verdict and gradcheck's message, and the relative error of one random directional
        derivative (analytic against central differences).

    Example:
        A hand-written Swish whose backward forgets the sigmoid's derivative term: directional
        error 0.41.

    Use instead:
        Fix ``backward`` (check it with ``torch.autograd.gradcheck`` in float64), or write the
        forward with differentiable torch operations and let autograd derive it.

    Known false positives:
        Functions that are deliberately not the gradient of their forward (straight-through
        estimators, gradient reversal, clipping in backward), and functions that compute in
        float32 internally (finite differences then disagree by rounding).
    """
    for d in run.facts(GradCheck):
        if d.passed is False:
            err = d.directional_rel_error
            msg = (f"custom autograd function {d.function} (called in `{d.module}`) fails gradcheck in "
                   f"float64: its backward disagrees with finite differences"
                   + (f" (directional relative error {fmt(err)})" if err is not None else ""))
            return [r.finding(step=None, step_end=None, message=msg, evidence=d.to_json(), causes=[("code-bug", 0.9)])]
    return []


@rule("M011", "error", causes=("code-bug", "label-noise"))
def input_ignored(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Trains the model twice from the same start for the same short time — once on the real
        inputs, once with every input zeroed — and reports when the real inputs do not give a
        clearly lower loss (the input-independent baseline).

    Why is this bad?
        A model that does as well without its input has learned only the label prior: its
        output does not depend on the input (the input is overwritten, detached, or never reaches
        the layers that matter), or the labels do not depend on the inputs (inputs and labels
        shuffled apart).

    Evidence:
        ``input_baseline``: after the two short trainings (Adam 1e-3) on four fifths of the kept
        training samples, the eval-mode loss of each on the held-out fifth (real inputs for one,
        zeros for the other); fires when the real-input loss is above 95 % of the zeroed-input
        loss. Held-out samples keep a model that memorises labels unrelated to its inputs from
        passing for one that learned.

    Example:
        ``forward`` returns ``self.head(torch.zeros_like(x))`` after a refactor: 2.30 with the real
        inputs, 2.30 with zeros.

    Use instead:
        Check that ``forward`` uses its argument; that inputs and labels are indexed together
        (one permutation for both); print a few (input, label) pairs.

    Known false positives:
        Tasks whose inputs carry little signal that a few hundred steps can find.
    """
    for d in run.facts(InputBaseline):
        real, zero = d.real_input_loss, d.zero_input_loss
        if real is None or zero is None or not (math.isfinite(real) and math.isfinite(zero)):
            continue
        if real < 0.95 * zero:
            continue
        on = d.evaluated_on if d.evaluated_on is not None else "the samples"
        msg = (f"after {d.steps} steps the loss on {on} is {fmt(real)} with the "
               f"real inputs and {fmt(zero)} with every input zeroed: the model has learned nothing from its inputs "
               f"that carries over to other samples")
        return [r.finding(step=None, step_end=None, message=msg, evidence=d.to_json(),
                          causes=[("code-bug", 0.6), ("label-noise", 0.4)])]
    return []


@rule("M012", "warning", causes=("lr-too-high", "lr-too-low"))
def lr_outside_working_range(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Compares the optimizer's learning rate with an LR range test run on the same model, data
        and optimizer class: an exponential sweep from 1e-7 to 10 over 100 steps.

    Why is this bad?
        At or above the LR where the sweep's loss diverged, training blows up within the first
        steps; orders of magnitude below the LR where the loss falls fastest, training crawls and
        looks stuck.

    Evidence:
        ``lr_range_test``: the suggested LR (steepest descent of the smoothed loss), the LR of the
        lowest loss, the LR where the loss diverged, the user's LR. Fires when the user's LR is at
        or above the divergence LR, or more than 10× above the lowest-loss LR (error), or more
        than 1000× below the suggested LR (warning). A sweep whose loss never fell by 10 % gives no
        suggestion and no lowest-loss LR; only its divergence point is used then.

    Example:
        SGD with lr=10 on the digits MLP: the sweep's loss diverged at 0.42; suggested 0.033.

    Use instead:
        Start from the suggested LR (or a little below it), with warm-up for large models; use a
        schedule to decay it.

    Known false positives:
        The sweep uses a short, noisy run: the suggestion is a starting point, not an optimum.
        LR schedules that start low by design (warm-up) are judged by the LR the optimizer holds
        when the checkup runs.
    """
    for d in run.facts(LrRangeTest):
        lr, sug, div, lmin = d.user_lr, d.suggested_lr, d.diverged_at_lr, d.min_loss_lr
        if lr is None or lr <= 0:
            continue
        measured = d.to_json()
        ev = {k: measured.get(k) for k in ("user_lr", "suggested_lr", "min_loss_lr", "diverged_at_lr", "optimizer", "rule")}
        if (div is not None and lr >= div) or (lmin is not None and lr > 10 * lmin):
            where = f"the loss diverged at {fmt(div)}" if div is not None and lr >= div else \
                f"the loss was lowest at {fmt(lmin)} and rose beyond it"
            msg = (f"learning rate {fmt(lr)} is beyond the working range of an LR range test with {d.optimizer}: "
                   f"{where}" + (f"; suggested {fmt(sug)}" if sug is not None else ""))
            return [r.finding(step=None, step_end=None, message=msg, evidence=ev, causes=[("lr-too-high", 0.8)],
                              severity="error")]
        if sug is not None and lr < sug / 1000:
            msg = (f"learning rate {fmt(lr)} is {fmt(sug / lr)}× below the LR where the range test's loss falls fastest "
                   f"({fmt(sug)}, {d.optimizer}): training will crawl")
            return [r.finding(step=None, step_end=None, message=msg, evidence=ev, causes=[("lr-too-low", 0.7)])]
    return []
