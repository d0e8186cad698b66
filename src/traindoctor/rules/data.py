"""Family D: data, as seen live (D001 from the non-finite replay, D004 from a crash)."""
from __future__ import annotations

import re

from ..findings import Finding
from ..run import Run
from . import Rule, rule


@rule("D001", "error")
def nonfinite_inputs(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Names the samples whose inputs hold NaN/Inf, found when the loss first went non-finite.

    Why is this bad?
        One NaN feature makes the whole batch's loss NaN; the gradients then write NaN into every
        weight and the run never recovers, however good the model and learning rate are.

    Evidence:
        The model's input batch at the first non-finite loss: the batch positions with
        non-finite values and, when the data loader tells them, their dataset indices.

    Example:
        Loss NaN at step 4; input rows 7 and 19 of that batch (dataset indices 200 and 1400) are NaN.

    Use instead:
        Drop or repair the listed samples; validate at load time
        (``assert torch.isfinite(x).all()``); impute missing values before training.

    Known false positives:
        None known: the values are read, not inferred.
    """
    for e in run.events_of("nonfinite_loss"):
        inp = e.data.get("input_nonfinite")
        if not inp:
            continue
        ids = inp.get("sample_ids") or []
        who = f"dataset indices {ids[:10]}" if ids else f"batch positions {inp.get('positions', [])[:10]}"
        msg = f"{inp.get('count', len(ids))} of {inp.get('batch_size', '?')} samples in the batch at step {e.step} hold NaN/Inf ({who})"
        return [r.finding(step=e.step, step_end=e.step, message=msg, evidence=dict(inp),
                          causes=[("nonfinite-data", 0.95)])]
    return []


_LABEL_PATTERNS = (
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


@rule("D004", "error")
def labels_out_of_domain(run: Run, r: Rule) -> list[Finding]:
    """What it does:
        Recognises a crash caused by labels that do not fit the loss: a class index ≥ the number
        of outputs or negative, BCE targets outside [0, 1], targets of the wrong dtype or shape.

    Why is this bad?
        The run dies (or, on a GPU, dies with an unhelpful device-side assert) at the first batch
        holding such a label; if it is silenced, the model learns from garbage labels.

    Evidence:
        The exception the script raised, matched against PyTorch's messages for these cases, and
        the step at which it was raised.

    Example:
        ``IndexError: Target 10 is out of bounds.`` at step 3 with a 10-output model: labels run
        1…10 instead of 0…9.

    Use instead:
        Remap labels to 0…C−1 (``y - y.min()`` or a label encoder); size the output layer to the
        number of classes; give BCE float targets in [0, 1] shaped like the output.

    Known false positives:
        None: it fires only on a crash with one of these messages.
    """
    for e in run.events_of("crash"):
        text = f"{e.data.get('type', '')}: {e.data.get('message', '')}"
        for pat, what in _LABEL_PATTERNS:
            m = pat.search(text)
            if m:
                detail = what.format(*m.groups())
                ev = {"exception": e.data.get("type"), "message": e.data.get("message"),
                      "where": e.data.get("where"), "detail": detail}
                msg = f"the script crashed at step {e.step}: {detail} ({e.data.get('type')}: {str(e.data.get('message'))[:120]})"
                return [r.finding(step=e.step, step_end=e.step, message=msg, evidence=ev,
                                  causes=[("label-domain-error", 0.9)])]
    return []
