"""A plain PyTorch Lightning script (no traindoctor in it): a small MLP on scikit-learn's digits.

    python lit_digits.py [LR] [EPOCHS]

The integration tests import ``fit`` from here too, so the zero-code run and the callback run train the
same thing.
"""
from __future__ import annotations

import sys

import lightning.pytorch as pl
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class DigitsNet(pl.LightningModule):
    def __init__(self, lr: float, dropout: float = 0.0, nan_after: int | None = None, record: bool = False) -> None:
        super().__init__()
        self.lr = lr
        self.losses: list[float] | None = [] if record else None  # each training_step's loss, as computed
        self.nan_after = nan_after  # a loss that turns NaN at this step and stays so (nothing can heal it)
        self.net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Dropout(dropout), nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        if self.nan_after is not None and self.global_step >= self.nan_after:
            loss = loss * float("nan")
        if self.losses is not None:
            self.losses.append(float(loss))
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def loaders(batch_size: int = 32) -> tuple[DataLoader, DataLoader]:
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    train = TensorDataset(x[:1400], y[:1400])
    val = TensorDataset(x[1400:], y[1400:])
    return DataLoader(train, batch_size=batch_size, shuffle=True), DataLoader(val, batch_size=128)


def fit(lr: float, epochs: int, callbacks: list | None = None, trainer_args: dict | None = None,
        **kw) -> tuple[pl.Trainer, DigitsNet]:
    pl.seed_everything(0, verbose=False)
    model = DigitsNet(lr, **kw)
    train, val = loaders()
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks or [],
                         **(trainer_args or {}))
    trainer.fit(model, train, val)
    return trainer, model


if __name__ == "__main__":
    fit(float(sys.argv[1]) if len(sys.argv) > 1 else 1e-3, int(sys.argv[2]) if len(sys.argv) > 2 else 4)
