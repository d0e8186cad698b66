"""unbalanced-loss-terms: a classifier with an auxiliary regression head on a raw target in the
hundreds (digits' pixel sum). The summed loss is cross-entropy ≈ 2.3 plus an MSE ≈ 1e5, so the
step SGD takes is set by the auxiliary term: the run blows up within a few steps."""
import torch
from _common import digits, loader, seed
from torch import nn

seed()
Xtr, ytr, Xva, yva = digits(standardise=False)
aux = Xtr.sum(1)  # raw, ~300: never standardised
Xtr = (Xtr - Xtr.mean(0)) / (Xtr.std(0) + 1e-8)
model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 11))
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
ce, mse = nn.CrossEntropyLoss(), nn.MSELoss()
dl = loader(Xtr, torch.stack([ytr.float(), aux], 1))
for _epoch in range(3):
    for x, t in dl:
        opt.zero_grad()
        out = model(x)
        loss = ce(out[:, :10], t[:, 0].long()) + mse(out[:, 10], t[:, 1])
        loss.backward()
        opt.step()
