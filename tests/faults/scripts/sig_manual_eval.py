"""A validation written by hand (no torch loss function), without model.eval(), on a split where a third
of the validation rows were also appended to the training set: V008 and D006 must still be seen."""
import torch
from _common import digits, loader, seed
from torch import nn

seed()
Xtr, ytr, Xva, yva = digits()
Xtr, ytr = torch.cat([Xtr, Xva[:150]]), torch.cat([ytr, yva[:150]])  # "more training data"
model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, 10))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.CrossEntropyLoss()
for epoch in range(4):
    for x, y in loader(Xtr, ytr):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    with torch.no_grad():
        logp = model(Xva).log_softmax(1)
        val = -logp.gather(1, yva[:, None]).mean().item()
        acc = (logp.argmax(1) == yva).float().mean().item()
    print(f"epoch {epoch} val_loss {val:.4f} val_acc {acc:.4f}")
