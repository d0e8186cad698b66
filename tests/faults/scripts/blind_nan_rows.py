"""An in-memory training set with NaN in two of its 1,500 rows (700 and 1203), batches of 32, in order.

    python blind_nan_rows.py CASE [DUMP.json]

CASE: tensor (a TensorDataset in a DataLoader), subset (random_split of it, the NaN/Inf moved to
samples 400 and 900 of the training split: the loader numbers the samples of the Subset), numpy
(a Dataset holding NumPy arrays, converting a row per item), slices (batches sliced by hand from the tensors), transformed (a Dataset that normalises each row
in __getitem__: its samples are not its arrays' rows).
Each step sleeps 5 ms, the time a real step takes at least.
"""
import json
import sys
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset, random_split

case = sys.argv[1]
torch.manual_seed(0)
X = torch.randn(1500, 20)
y = (X[:, 0] > 0).long() + (X[:, 1] > 0).long()
X[700, 3] = float("nan")
X[1203, 11] = float("nan")


class Arrays(Dataset):
    def __init__(self, x, y, normalise=False):
        self.x, self.y, self.normalise = x, y, normalise

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        row = torch.tensor(self.x[i], dtype=torch.float32)
        if self.normalise:
            row = (row - 0.5) / 2.0
        return row, int(self.y[i])


facts = {}
if case == "tensor":
    ds = TensorDataset(X, y)
elif case == "subset":
    X[700, 3] = X[1203, 11] = 0.0
    ds, _ = random_split(TensorDataset(X, y), [1200, 300], generator=torch.Generator().manual_seed(0))
    X[ds.indices[400], 5] = float("inf")  # samples 400 and 900 of the training split
    X[ds.indices[900], 0] = float("nan")
    facts["rows"] = [ds.indices[400], ds.indices[900]]
elif case in ("numpy", "transformed"):
    ds = Arrays(X.double().numpy(), y.numpy(), normalise=case == "transformed")
model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 3))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
ce = nn.CrossEntropyLoss()
if case == "slices":
    batches = ((X[i:i + 32], y[i:i + 32]) for i in range(0, 1500, 32))
else:
    batches = DataLoader(ds, batch_size=32, shuffle=False)
for step, (xb, yb) in enumerate(batches):
    opt.zero_grad()
    loss = ce(model(xb), yb)
    loss.backward()
    opt.step()
    time.sleep(0.005)
    if step == 40:
        break
if len(sys.argv) > 2:
    json.dump(facts, open(sys.argv[2], "w"))
