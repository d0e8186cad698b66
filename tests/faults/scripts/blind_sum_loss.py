"""Training losses reduced by a sum, written the ways people write them.

    python blind_sum_loss.py CASE DUMP.json

CASE: ce (nn.CrossEntropyLoss(reduction='sum')), mse (nn.MSELoss(reduction='sum') on 3 outputs),
ce_ignore (sum with ignore_index, some targets ignored), legacy (F.mse_loss(..., size_average=False)),
lm (a Hugging Face style token sum divided by the token count).
"""
import json
import sys

import torch
import torch.nn.functional as F
from torch import nn

case, dump = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
X = torch.randn(256, 10)
yc = (X[:, 0] > 0).long() + (X[:, 1] > 0).long()
yr = X[:, :3] * 2 + 0.1 * torch.randn(256, 3)
facts = {}
if case in ("ce", "ce_ignore"):
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))
    if case == "ce_ignore":
        yc[torch.arange(0, 256, 5)] = -1  # unlabeled samples
        loss_fn = nn.CrossEntropyLoss(reduction="sum", ignore_index=-1)
    else:
        loss_fn = nn.CrossEntropyLoss(reduction="sum")
    target = yc
    facts["first_count"] = int((yc[:32] != -1).sum())
elif case == "mse":
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))
    loss_fn = nn.MSELoss(reduction="sum")
    target = yr
elif case == "legacy":
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))
    loss_fn = lambda out, t: F.mse_loss(out, t, size_average=False)  # noqa: E731 - the pre-1.0 spelling
    target = yr
elif case == "lm":
    V, T = 11, 8
    X = torch.randint(0, V, (256, T))
    target = torch.roll(X, -1, 1)
    target[torch.arange(256) % 3 == 0, -3:] = -100  # padding
    model = nn.Sequential(nn.Embedding(V, 16), nn.Linear(16, V))

    def loss_fn(logits, labels):
        n_items = (labels != -100).sum()
        return F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), ignore_index=-100, reduction="sum") / n_items

    facts["first_count"] = int((target[:32] != -100).sum())
opt = torch.optim.SGD(model.parameters(), lr=0.001 if case != "lm" else 0.1)
losses = []
for _epoch in range(2):
    for i in range(0, 256, 32):
        opt.zero_grad()
        loss = loss_fn(model(X[i:i + 32]), target[i:i + 32])
        loss.backward()
        opt.step()
        losses.append(loss.item())
json.dump({"losses": losses, **facts}, open(dump, "w"))
