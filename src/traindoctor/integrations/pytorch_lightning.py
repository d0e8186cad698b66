"""PyTorch Lightning as the ``pytorch_lightning`` package: ``pytorch_lightning.Trainer(callbacks=[DoctorCallback()])``.

The same callback as :mod:`traindoctor.integrations.lightning`, on ``pytorch_lightning.Callback`` (that
package's Trainer accepts only its own callbacks).
"""
from __future__ import annotations

from pytorch_lightning import Callback

from ._lightning import LightningDoctor


class DoctorCallback(LightningDoctor, Callback):
    """traindoctor's Doctor on a ``pytorch_lightning`` Trainer's fit."""


__all__ = ["DoctorCallback"]
