"""D006 live: 30 % of the validation rows copied into the training set before training.

    python sig_leakage.py [--leak] [--train-eval] [--by-hand DUMP.json]

``--leak`` appends validation rows 0–134 (of 450) to the training tensors. ``--train-eval`` also
evaluates on the training tensor every epoch (a train-accuracy pass, not a validation).
``--by-hand`` draws batches as ``Xtr[perm[i:i + 32]]`` (copies: no dataset to hash, only the first
batches) and writes the permutation to DUMP.json.
"""
import json
import sys

import torch
from _common import digits, loader, seed
from torch import nn

seed()
Xtr, ytr, Xva, yva = digits()
if "--leak" in sys.argv:
    Xtr, ytr = torch.cat([Xtr, Xva[:135]]), torch.cat([ytr, yva[:135]])
model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
opt = torch.optim.Adam(model.parameters(), lr=3e-3)
loss_fn = nn.CrossEntropyLoss()
by_hand = "--by-hand" in sys.argv
perms = []
for epoch in range(3):
    model.train()
    if by_hand:
        perm = torch.randperm(len(Xtr), generator=torch.Generator().manual_seed(epoch))
        perms.append(perm.tolist())
        batches = ((Xtr[perm[i:i + 32]], ytr[perm[i:i + 32]]) for i in range(0, len(Xtr), 32))
    else:
        batches = loader(Xtr, ytr, seed=epoch)
    for x, y in batches:
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        if "--train-eval" in sys.argv:
            train_loss = loss_fn(model(Xtr), ytr).item()
        val_loss = loss_fn(model(Xva), yva).item()
    print(f"epoch {epoch} val_loss {val_loss:.4f}")
if by_hand:
    json.dump({"perms": perms, "train_rows": len(Xtr)}, open(sys.argv[sys.argv.index("--by-hand") + 1], "w"))
