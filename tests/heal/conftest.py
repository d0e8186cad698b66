"""One thread per healing test, given back after: the runs compare against their healthy twins, and
two threads' reduction order could move a borderline number between the twin and the healed run."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
