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
