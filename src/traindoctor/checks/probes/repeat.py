"""``repeat``: fit one sample repeated four times — the smallest problem the pipeline must solve.

When even this fails while the labels are right, the model or loss cannot learn at all (no
gradient reaches the weights, outputs squashed), which separates a plumbing bug from hard data.

    >>> report = traindoctor.checkup(model, loader, nn.CrossEntropyLoss(), probes=["repeat"])
    >>> [ln.outcome for ln in report.lines if ln.probe == "fit one repeated sample"]
"""
from __future__ import annotations

from ._fit import FitProbe


class RepeatProbe(FitProbe):
    name = "repeat"
    order = 30
    title = "fit one repeated sample"
    help = "fit one repeated sample"
    variant = "one_sample"
