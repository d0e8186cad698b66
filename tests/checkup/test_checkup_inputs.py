"""Bad input gets one clear line saying what was expected — never a traceback from deep inside."""
from __future__ import annotations

import pytest
import torch
from _pipes import DATA_ONLY, digits, loader, mlp, run
from torch import nn
from torch.utils.data import DataLoader, Dataset

from traindoctor.errors import TrainDoctorError


def _error(*args, **kw) -> str:
    with pytest.raises(TrainDoctorError) as ei:
        run(*args, probes=DATA_ONLY, **kw)
    msg = str(ei.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


class Dicts(Dataset):
    def __init__(self, n=64):
        self.x, self.y = torch.randn(n, 64), torch.randint(0, 10, (n,))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "label": self.y[i]}


class Triples(Dicts):
    def __getitem__(self, i):
        return self.x[i], self.y[i], i


class Ragged(Dataset):
    def __len__(self):
        return 40

    def __getitem__(self, i):
        return torch.randn(3 + i % 5), i % 10


def test_loader_of_dicts():
    msg = _error(mlp(), DataLoader(Dicts(), batch_size=8), nn.CrossEntropyLoss())
    assert "batch 0 is a dict with keys ['image', 'label']" in msg and "(inputs, targets)" in msg
    assert "batch_fn=" in msg
    # and the fix the message proposes works
    r = run(mlp(), DataLoader(Dicts(), batch_size=8), nn.CrossEntropyLoss(), probes=DATA_ONLY,
            batch_fn=lambda b: (b["image"], b["label"]))
    assert r.run.events_of("data_profile")[0].data["samples"] == 64


def test_loader_of_triples():
    msg = _error(mlp(), DataLoader(Triples(), batch_size=8), nn.CrossEntropyLoss())
    assert "is a list of 3 (tensor[8, 64], tensor[8], tensor[8])" in msg and "(inputs, targets)" in msg


def test_ragged_samples_the_collate_cannot_stack():
    msg = _error(mlp(), DataLoader(Ragged(), batch_size=8), nn.CrossEntropyLoss())
    assert "batch 0 could not be built" in msg and "pad" in msg


def test_ragged_batches_as_lists_of_tensors():
    batches = [([torch.randn(5), torch.randn(7)], torch.tensor([1, 2]))]
    msg = _error(mlp(), batches, nn.CrossEntropyLoss())
    assert "ragged list of 2 tensors of different shapes" in msg
    batches = [(torch.randn(8, 64), torch.randint(0, 10, (7,)))]
    msg = _error(mlp(), batches, nn.CrossEntropyLoss())
    assert "inputs have 8 rows but targets 7" in msg


def test_loader_that_yields_nothing():
    Xtr, ytr, _, _ = digits()
    assert "yielded no batches" in _error(mlp(), loader(Xtr[:0], ytr[:0], shuffle=False), nn.CrossEntropyLoss())
    assert "yielded no batches" in _error(mlp(), [], nn.CrossEntropyLoss())
    assert "not an iterable of batches" in _error(mlp(), 42, nn.CrossEntropyLoss())


def test_model_whose_forward_raises():
    Xtr, ytr, _, _ = digits()
    wrong = nn.Sequential(nn.Linear(60, 10))  # expects 60 features, gets 64
    msg = _error(wrong, loader(Xtr, ytr), nn.CrossEntropyLoss())
    assert msg.startswith("model(inputs) raised RuntimeError: mat1 and mat2 shapes cannot be multiplied")
    assert "tensor[32, 64] of float32" in msg

    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            raise ValueError("forgot to implement")

    msg = _error(Broken(), loader(Xtr, ytr), nn.CrossEntropyLoss())
    assert "ValueError: forgot to implement" in msg and "test_checkup_inputs.py:" in msg  # where, in user code


def test_wrong_arguments():
    Xtr, ytr, _, _ = digits()
    assert "needs a torch.nn.Module" in _error(lambda x: x, loader(Xtr, ytr), nn.CrossEntropyLoss())
    assert "needs a callable loss" in _error(mlp(), loader(Xtr, ytr), None)
    assert "torch.optim.Optimizer" in _error(mlp(), loader(Xtr, ytr), nn.CrossEntropyLoss(), None, "adam")
    with pytest.raises(TrainDoctorError, match="unknown probe"):
        run(mlp(), loader(Xtr, ytr), nn.CrossEntropyLoss(), probes=["lr_rnage"])


def test_a_loss_that_crashes_on_the_labels_is_evidence_not_an_error():
    """An unknown loss function that raises on the labels: recorded as a crash (D004), no traceback."""
    Xtr, ytr, _, _ = digits()

    def my_loss(out, y):
        return torch.nn.functional.nll_loss(out.log_softmax(1), y)

    r = run(mlp(), loader(Xtr, ytr + 1), my_loss, probes=DATA_ONLY)
    assert "D004" in r.codes and r.run.events_of("crash")
