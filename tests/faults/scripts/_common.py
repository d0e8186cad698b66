"""Plain PyTorch plumbing shared by the fault scripts (they import it as user code would)."""
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def digits(standardise=True, seed=0, train_size=None):
    X, y = load_digits(return_X_y=True)
    Xtr, Xva, ytr, yva = train_test_split(X, y, test_size=0.25, random_state=seed, stratify=y)
    if standardise:
        mu, sd = Xtr.mean(0), Xtr.std(0)
        sd[sd < 1e-8] = 1.0  # constant pixels: leave them (as StandardScaler does)
        Xtr, Xva = (Xtr - mu) / sd, (Xva - mu) / sd
    if train_size:
        Xtr, ytr = Xtr[:train_size], ytr[:train_size]
    f = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return f(Xtr), torch.tensor(ytr), f(Xva), torch.tensor(yva)


def loader(X, y, batch_size=32, shuffle=True, seed=0):
    return DataLoader(TensorDataset(X, y), batch_size=batch_size, shuffle=shuffle,
                      generator=torch.Generator().manual_seed(seed))


def train(model, opt, loss_fn, dl, epochs, Xva=None, yva=None, scheduler=None):
    for epoch in range(epochs):
        model.train()
        total, n = 0.0, 0
        for x, y in dl:
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            total += loss.item() * len(y)
            n += len(y)
        if scheduler is not None:
            scheduler.step()
        line = f"epoch {epoch} train {total / n:.4f}"
        if Xva is not None:
            model.eval()
            with torch.no_grad():
                out = model(Xva)
                line += f" val {loss_fn(out, yva).item():.4f}"
        print(line)


def mlp(sizes, act=nn.ReLU):
    layers = []
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(a, b), act()]
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)


def seed(s=0):
    torch.manual_seed(s)
    np.random.seed(s)
