"""Training tests run on one intra-op thread: several compare rows bit for bit, and a batched
matrix product may split its work differently across threads for different batch sizes. Another
test of the session may have left torch with more threads."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
