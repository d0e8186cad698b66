"""PyTorch Lightning: ``Trainer(callbacks=[DoctorCallback()])``.

    from traindoctor.integrations.lightning import DoctorCallback

    trainer = Trainer(max_epochs=10, callbacks=[DoctorCallback()])        # observe: diagnosis at the end
    trainer = Trainer(max_epochs=10, callbacks=[DoctorCallback(heal=True)])  # and treat the run as it trains

What it feeds and what healing does there: :mod:`traindoctor.integrations._lightning`. The diagnosis is
printed when ``fit`` ends and kept in ``callback.diagnosis``; ``store=PATH`` keeps the run for
``traindoctor diagnose PATH``. Uses ``lightning.pytorch``, or ``pytorch_lightning`` when only that is
installed (:mod:`traindoctor.integrations.pytorch_lightning` for that package explicitly).
"""
from __future__ import annotations

try:
    from lightning.pytorch import Callback
except ImportError:  # the standalone package
    from pytorch_lightning import Callback

from ._lightning import LightningDoctor, lightning_args


class DoctorCallback(LightningDoctor, Callback):
    """traindoctor's Doctor on a Lightning Trainer's fit (see the module's docstring)."""


__all__ = ["DoctorCallback", "lightning_args"]
