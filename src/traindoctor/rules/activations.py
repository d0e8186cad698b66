"""Family A: activations (A004 here; A001–A003 with issue 3)."""
from __future__ import annotations

from ..findings import Finding
from ..run import Run
from . import Rule, rule


@rule("A004", "error")
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
    for e in run.events_of("nonfinite_loss"):
        fm = e.data.get("first_module")
        if not fm or e.data.get("input_nonfinite") or e.data.get("weights_nonfinite"):
            continue
        ids = fm.get("sample_ids") or []
        rows = f"dataset samples {ids[:10]}" if ids else f"batch positions {fm.get('positions', [])[:10]}"
        msg = f"module `{fm['name']}` ({fm['type']}) is the first to output NaN/Inf at step {e.step} ({rows})"
        causes = [("lr-too-high", 0.4), ("numerically-unstable-loss", 0.25), ("unnormalized-input", 0.2)]
        return [r.finding(step=e.step, step_end=e.step, message=msg, evidence=dict(fm), causes=causes)]
    return []
