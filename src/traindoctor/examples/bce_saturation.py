"""Saturated sigmoid + BCELoss: unscaled inputs push the sigmoid to exactly 0 or 1, the loss sits at BCELoss's clamp.

A binary MLP (30-32-1, ReLU) with nn.Sigmoid() at the end and nn.BCELoss(), on the breast-cancer
features left unstandardised (areas in the thousands), plain SGD lr 0.01, batch 32 (drop_last).
After the first step or two the pre-sigmoid logits are in the hundreds, the sigmoid returns
exactly 0.0 or 1.0 in float32, and every misclassified sample costs exactly 100 (BCELoss clamps
log(0) at -100) while every correct one costs exactly 0. The batch loss therefore sits at
multiples of 100/32 = 3.125 (typically ~37.5: the model predicts one class for everything), the
gradient through the saturated sigmoid is exactly zero, and training is stuck without ever
crashing. Fix: standardise the inputs, and use nn.BCEWithLogitsLoss on the raw logits.
"""

import argparse
import json
import math

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--steps", type=int, default=None, help="stop after this many optimizer steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--save", default=None, help="save the final state_dict here")
    p.add_argument("--dump-losses", default=None, help="write the per-step training losses here (JSON)")
    return p.parse_args()


def main():
    args = parse_args()
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    X, y = load_breast_cancer(return_X_y=True)
    X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.2, random_state=args.seed, stratify=y)
    # (no StandardScaler: features go in on their own scales, from ~0.01 up to ~4000)
    train_ds = TensorDataset(
        torch.tensor(X_train, dtype=torch.float32), torch.tensor(y_train, dtype=torch.float32).unsqueeze(1)
    )
    X_val = torch.tensor(X_val, dtype=torch.float32)
    y_val = torch.tensor(y_val, dtype=torch.float32).unsqueeze(1)
    g = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(train_ds, batch_size=args.batch_size, shuffle=True, drop_last=True, generator=g)

    model = nn.Sequential(nn.Linear(30, 32), nn.ReLU(), nn.Linear(32, 1), nn.Sigmoid())
    loss_fn = nn.BCELoss()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)

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
            val_acc = ((out > 0.5).float() == y_val).float().mean().item()
        print(f"epoch {epoch:3d}  train_loss {total / count:.4f}  val_loss {val_loss:.4f}  val_acc {val_acc:.3f}")
        if args.steps and len(losses) >= args.steps:
            break

    if args.save:
        torch.save(model.state_dict(), args.save)
    if args.dump_losses:
        with open(args.dump_losses, "w") as f:
            json.dump({"losses": losses, "batch_size": args.batch_size}, f)


if __name__ == "__main__":
    main()
