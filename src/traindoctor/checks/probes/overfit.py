"""``overfit``: can the pipeline drive the loss of 10 samples near its floor (M004)?

Ten samples with as many different labels as possible, Adam at 1e-3 then 1e-2, up to
``steps`` steps each. A model, loss and label plumbing that work memorise ten samples; one that
cannot (a double softmax, a detached graph, frozen layers) fails here in seconds.

    >>> report = traindoctor.checkup(model, loader, nn.CrossEntropyLoss(), probes=["overfit"])
    >>> "M004" in report.codes
"""
from __future__ import annotations

from ._fit import FitProbe


class OverfitProbe(FitProbe):
    name = "overfit"
    order = 20
    title = "overfit 10 samples"
    help = "overfit 10 samples (M004)"
    variant = "tiny_batch"
