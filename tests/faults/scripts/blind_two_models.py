"""Two models trained side by side in one loop, each with its own loss and optimizer.

    python blind_two_models.py CASE [--bad]

CASE: ce_mse (a 3-class classifier with CrossEntropyLoss, then a regressor with MSELoss),
mse_ce (the same, the regressor first), ae_head (an autoencoder with MSELoss on its input, then a
classifier head on its codes with CrossEntropyLoss), bce_mse (a binary classifier with
BCEWithLogitsLoss and a regressor). ``--bad``: one wrong label in sample 5 (class 7 of 3; a
binary label 2.0).
"""
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

case = sys.argv[1]
bad = "--bad" in sys.argv
torch.manual_seed(0)
N = 512
X = torch.randn(N, 16)
yc = (X[:, 0] > 0).long() + (X[:, 1] > 0).long()
yb = (X[:, 0] > 0).float().unsqueeze(1)
yr = 2 * X[:, 2:4].sum(1, keepdim=True)
if bad:
    yc[5] = 7
    yb[5] = 2.0
loader = DataLoader(TensorDataset(X, yc, yb, yr), batch_size=32, shuffle=False)


def mlp(i, o):
    return nn.Sequential(nn.Linear(i, 32), nn.ReLU(), nn.Linear(32, o))


ce, mse, bce = nn.CrossEntropyLoss(), nn.MSELoss(), nn.BCEWithLogitsLoss()
if case == "ae_head":
    enc, dec, head = mlp(16, 4), mlp(4, 16), nn.Linear(4, 3)
    opt_a = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3)
    opt_b = torch.optim.SGD(head.parameters(), lr=0.1)
else:
    outs = {"ce_mse": (3, 1), "mse_ce": (1, 3), "bce_mse": (1, 1)}[case]
    a, b = mlp(16, outs[0]), mlp(16, outs[1])
    opt_a = torch.optim.SGD(a.parameters(), lr=0.05)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.05)
for epoch in range(2):
    for x, c, t, r in loader:
        if case == "ae_head":
            opt_a.zero_grad()
            loss_a = mse(dec(enc(x)), x)
            loss_a.backward()
            opt_a.step()
            opt_b.zero_grad()
            loss_b = ce(head(enc(x).detach()), c)
            loss_b.backward()
            opt_b.step()
            continue
        first = {"ce_mse": (ce, c), "mse_ce": (mse, r), "bce_mse": (bce, t)}[case]
        second = {"ce_mse": (mse, r), "mse_ce": (ce, c), "bce_mse": (mse, r)}[case]
        opt_a.zero_grad()
        first[0](a(x), first[1]).backward()
        opt_a.step()
        opt_b.zero_grad()
        second[0](b(x), second[1]).backward()
        opt_b.step()
    print(f"epoch {epoch} done")
