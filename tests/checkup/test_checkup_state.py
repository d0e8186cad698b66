"""A checkup leaves no trace: parameters, buffers, gradients, modes, optimizer state, RNGs and the
loader's generator are bitwise as they were — and training after a checkup is bitwise the
training without one."""
from __future__ import annotations

import copy
import random

import numpy as np
import torch
from _pipes import digits, loader, run
from torch import nn


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, 10))


def _bits(t):
    return t.detach().contiguous().view(torch.uint8).clone() if t.is_floating_point() else t.detach().clone()


def _state(model, opt, tl):
    return {
        "params": [_bits(p) for p in model.parameters()],
        "buffers": [_bits(b) for b in model.buffers()],
        "grads": [None if p.grad is None else _bits(p.grad) for p in model.parameters()],
        "modes": [m.training for m in model.modules()],
        "opt": copy.deepcopy(opt.state_dict()),
        "torch_rng": torch.get_rng_state().clone(),
        "np_rng": np.random.get_state()[1].copy(),
        "py_rng": random.getstate(),
        "loader_gen": tl.generator.get_state().clone(),
    }


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _train(model, opt, tl, steps=30):
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    for i, (x, y) in enumerate(tl):
        if i == steps:
            break
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_every_state_bitwise_identical_after_a_full_checkup():
    Xtr, ytr, Xv, yv = digits()
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    tl = loader(Xtr, ytr)
    _train(model, opt, tl, steps=5)  # a non-empty Adam state, BN statistics, gradients in place
    model.eval()  # and a mode that is not the training one
    torch.manual_seed(123)
    np.random.seed(7)
    random.seed(9)
    before = _state(model, opt, tl)
    r = run(model, tl, nn.CrossEntropyLoss(), loader(Xv, yv, 128, False), opt, shallow="auto")
    assert r.restored
    after = _state(model, opt, tl)
    for k in before:
        assert _same(before[k], after[k]), k


def test_training_after_a_checkup_equals_training_without_one():
    Xtr, ytr, _, _ = digits()

    def fresh():
        model = _model()
        return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), loader(Xtr, ytr, seed=5)

    model, opt, tl = fresh()
    torch.manual_seed(1)
    plain = _train(model, opt, tl)
    plain_params = [_bits(p) for p in model.parameters()]

    model, opt, tl = fresh()
    torch.manual_seed(1)
    run(model, tl, nn.CrossEntropyLoss(), None, opt)
    checked = _train(model, opt, tl)
    assert checked == plain
    assert all(torch.equal(a, _bits(b)) for a, b in zip(plain_params, model.parameters()))
