"""The data scan's plan on datasets that hold no tensors: said, never an internal error."""
from __future__ import annotations

import torch

from traindoctor.watch.datascan import plan_for_loader


def test_a_plain_list_dataset_gets_a_reason_not_an_error():
    rows = [{"input_ids": [1, 2, 3], "labels": 0} for _ in range(8)]  # as many Hugging Face examples are
    batch = torch.tensor([[1, 2, 3]] * 4)
    plan = plan_for_loader(rows, batch, [0, 1, 2, 3])
    assert plan == "list: no tensor or array with one row per sample"
