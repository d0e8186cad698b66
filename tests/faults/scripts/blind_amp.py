"""Mixed precision on the CPU: autocast to float16 and a GradScaler; the script dumps its own (unscaled) losses.

    python blind_amp.py DUMP.json [--accum]

``--accum``: ``(scaler.scale(loss) / 2).backward()``, a tensor computed from the scaled loss.
"""
import json
import sys

import torch
from torch import nn

torch.manual_seed(0)
X = torch.randn(512, 20)
y = (X[:, :3].sum(1) > 0).long() + (X[:, 3] > 1).long()
model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 3))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
scaler = torch.amp.GradScaler("cpu")
losses = []
for _epoch in range(2):
    for i in range(0, 512, 32):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = nn.functional.cross_entropy(model(X[i:i + 32]), y[i:i + 32])
        if "--accum" in sys.argv:
            (scaler.scale(loss) / 2).backward()
            losses.append(loss.item() / 2)
        else:
            scaler.scale(loss).backward()
            losses.append(loss.item())
        scaler.step(opt)
        scaler.update()
json.dump({"losses": losses, "scale": scaler.get_scale()}, open(sys.argv[1], "w"))
