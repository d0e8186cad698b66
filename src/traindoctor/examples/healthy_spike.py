"""Healthy run with one dirty batch: a single isolated loss spike at step 150, then straight back.

The healthy digits setup (MLP 64-64-10, standardised inputs, Adam lr 1e-3, batch 32, 10 epochs)
with a flaky data pipeline: the 151st batch (step 150) comes back corrupted, its inputs scaled
x10 and its labels shifted by one row, like a bad read from a sharded store. The loss at that one
step jumps from about 0.4 to about 40, recovers at the very next step and keeps falling to about
0.15. Nothing else is wrong: one spike that recovers at once points at that batch, not at the
optimiser.
"""

import argparse
import json
import math

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, default_collate

DIRTY_BATCH = 150


class FlakyCollate:
    """default_collate, except that batch number ``bad`` (counted from 0 over the whole run)
    comes back corrupted: inputs scaled x10 and labels misaligned by one row."""

    def __init__(self, bad):
        self.bad = bad
        self.calls = 0

    def __call__(self, samples):
        x, y = default_collate(samples)
        if self.calls == self.bad:
            x, y = x * 10, y.roll(1)
        self.calls += 1
        return x, y


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--steps", type=int, default=None, help="stop after this many optimizer steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--save", default=None, help="save the final state_dict here")
    p.add_argument("--dump-losses", default=None, help="write the per-step training losses here (JSON)")
    return p.parse_args()


def main():
    args = parse_args()
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    X, y = load_digits(return_X_y=True)
    X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.2, random_state=args.seed, stratify=y)
    scaler = StandardScaler().fit(X_train)
    X_train, X_val = scaler.transform(X_train), scaler.transform(X_val)
    train_ds = TensorDataset(torch.tensor(X_train, dtype=torch.float32), torch.tensor(y_train))
    X_val, y_val = torch.tensor(X_val, dtype=torch.float32), torch.tensor(y_val)
    g = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(
        train_ds, batch_size=args.batch_size, shuffle=True, generator=g, collate_fn=FlakyCollate(DIRTY_BATCH)
    )

    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)

    epochs = math.ceil(args.steps / len(loader)) if args.steps else args.epochs
    losses = []
    for epoch in range(1, epochs + 1):
        model.train()
        total, count = 0.0, 0
        for x, y in loader:
            opt.zero_grad()
            out = model(x)
            loss = loss_fn(out, y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            total += loss.item() * len(y)
            count += len(y)
            if args.steps and len(losses) >= args.steps:
                break
        model.eval()
        with torch.no_grad():
            out = model(X_val)
            val_loss = loss_fn(out, y_val).item()
            val_acc = (out.argmax(1) == y_val).float().mean().item()
        print(f"epoch {epoch:3d}  train_loss {total / count:.4f}  val_loss {val_loss:.4f}  val_acc {val_acc:.3f}")
        if args.steps and len(losses) >= args.steps:
            break

    if args.save:
        torch.save(model.state_dict(), args.save)
    if args.dump_losses:
        with open(args.dump_losses, "w") as f:
            json.dump({"losses": losses, "dirty_step": DIRTY_BATCH}, f)


if __name__ == "__main__":
    main()
