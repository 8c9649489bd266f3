"""Shared fixtures. Tests run on CPU with one intra-op thread, as the experiments do."""

from __future__ import annotations

import torch

torch.set_num_threads(1)
