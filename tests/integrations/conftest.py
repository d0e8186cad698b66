"""The framework integrations, each on a real tiny training run (CPU, one thread, seconds each).

The frameworks import lazily and heavily, so each test module imports its own at module level, once.
"""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
