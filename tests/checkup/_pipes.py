"""Small real pipelines for the checkup tests: scikit-learn's digits (and diabetes for
regression), an MLP, a DataLoader — healthy by default, each test injects one fault."""
from __future__ import annotations

import functools

import numpy as np
import torch
from sklearn.datasets import load_diabetes, load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from traindoctor.checks.checkup import checkup


@functools.cache
def _digits_np(seed: int = 0):
    X, y = load_digits(return_X_y=True)
    Xtr, Xv, ytr, yv = train_test_split(X, y, test_size=0.2, random_state=seed, stratify=y)
    return Xtr, Xv, ytr, yv


def digits(standardize: bool = True, seed: int = 0):
    """(X_train, y_train, X_val, y_val) tensors: float32 inputs, int64 labels."""
    Xtr, Xv, ytr, yv = _digits_np(seed)
    if standardize:
        sc = StandardScaler().fit(Xtr)
        Xtr, Xv = sc.transform(Xtr), sc.transform(Xv)
    f = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return f(Xtr), torch.tensor(ytr), f(Xv), torch.tensor(yv)


def diabetes(standardize_y: bool = True):
    X, y = load_diabetes(return_X_y=True)
    Xtr, Xv, ytr, yv = train_test_split(X, y, test_size=0.2, random_state=0)
    sc = StandardScaler().fit(Xtr)
    Xtr, Xv = sc.transform(Xtr), sc.transform(Xv)
    if standardize_y:
        m, s = ytr.mean(), ytr.std()
        ytr, yv = (ytr - m) / s, (yv - m) / s
    f = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    return f(Xtr), f(ytr).unsqueeze(1), f(Xv), f(yv).unsqueeze(1)


def loader(X, y, batch_size: int = 32, shuffle: bool = True, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(X, y), batch_size=batch_size, shuffle=shuffle, generator=g if shuffle else None)


def mlp(inp: int = 64, hidden: int = 64, out: int = 10, seed: int = 0, depth: int = 1, act=nn.ReLU) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(inp, hidden), act()]
    for _ in range(depth - 1):
        layers += [nn.Linear(hidden, hidden), act()]
    layers.append(nn.Linear(hidden, out))
    return nn.Sequential(*layers)


def digits_pipeline(**kw):
    """The healthy pipeline: standardised digits, MLP 64-64-10, CrossEntropyLoss, Adam 1e-3."""
    Xtr, ytr, Xv, yv = digits()
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    return model, loader(Xtr, ytr), nn.CrossEntropyLoss(), loader(Xv, yv, 256, shuffle=False), opt


def run(model, train, loss_fn, val=None, opt=None, **kw):
    kw.setdefault("show", False)
    return checkup(model, train, loss_fn, val, opt, **kw)


DATA_ONLY = ()  # probes=() : the data and model checks without the training probes
