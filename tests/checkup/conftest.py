"""The checkup tests run on one intra-op thread (their numbers are recorded that way), and give the
thread count back afterwards: set at import, it leaked into every later test of the session."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
