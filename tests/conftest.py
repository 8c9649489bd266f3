"""Shared fixtures. Tests run on CPU with one intra-op thread, as the experiments do: every test
starts on one thread whatever the one before it left (several compare runs bit for bit, and a
batched matrix product may split its work differently across threads)."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
