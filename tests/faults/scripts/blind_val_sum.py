"""Validation loops that sum their loss, written the ways people write them.

    python blind_val_sum.py CASE DUMP.json

CASE: sum (nn.CrossEntropyLoss(reduction='sum') in the eval loop, averaged per sample by the script,
which prints it), lm (a causal LM's eval: a token sum with ignore_index=-100 divided by the token
count, as Hugging Face models compute it), misprint (the eval loop sums, the script divides by the
number of batches and prints that as val_loss: not the per-sample mean).
"""
import json
import sys

import torch
import torch.nn.functional as F
from torch import nn

case, dump = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
evals = []
if case in ("sum", "misprint"):
    X = torch.randn(400, 10)
    y = (X[:, 0] > 0).long() + (X[:, 1] > 0).long()
    Xtr, ytr, Xva, yva = X[:300], y[:300], X[300:], y[300:]
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train_fn, eval_fn = nn.CrossEntropyLoss(), nn.CrossEntropyLoss(reduction="sum")
    for epoch in range(3):
        for i in range(0, 300, 30):
            opt.zero_grad()
            train_fn(model(Xtr[i:i + 30]), ytr[i:i + 30]).backward()
            opt.step()
        total, n, batches = 0.0, 0, 0
        with torch.no_grad():
            for i in range(0, 100, 25):
                total += eval_fn(model(Xva[i:i + 25]), yva[i:i + 25]).item()
                n += 25
                batches += 1
        shown = total / batches if case == "misprint" else total / n
        evals.append({"mean": total / n, "shown": shown})
        print(f"epoch {epoch} val_loss {shown:.6f}")
else:
    V, T = 11, 8
    toks = torch.randint(0, V, (320, T))
    labels = torch.roll(toks, -1, 1)
    labels[torch.arange(320) % 3 == 0, -3:] = -100  # padded tails
    labels[:, -1] = -100  # nothing to predict after the last token
    tr, va = slice(0, 256), slice(256, 320)
    model = nn.Sequential(nn.Embedding(V, 16), nn.Linear(16, V))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _epoch in range(2):
        for i in range(0, 256, 32):
            opt.zero_grad()
            logits = model(toks[tr][i:i + 32])
            F.cross_entropy(logits.reshape(-1, V), labels[tr][i:i + 32].reshape(-1), ignore_index=-100).backward()
            opt.step()
        model.eval()
        total, tokens, correct = 0.0, 0, 0
        with torch.no_grad():
            for i in range(0, 64, 16):
                lab = labels[va][i:i + 16].reshape(-1)
                logits = model(toks[va][i:i + 16]).reshape(-1, V)
                s = F.cross_entropy(logits, lab, ignore_index=-100, reduction="sum")
                k = int((lab != -100).sum())
                batch_loss = s / k  # what the model returns as its loss
                total += s.item()
                tokens += k
                correct += int(((logits.argmax(1) == lab) & (lab != -100)).sum())
                assert torch.isfinite(batch_loss)
        model.train()
        evals.append({"mean": total / tokens, "accuracy": correct / tokens})
json.dump({"evals": evals}, open(dump, "w"))
