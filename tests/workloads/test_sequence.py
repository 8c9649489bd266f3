"""mnist1d-gru: the hand-written GRU is torch's GRU; the paper's architecture."""

from __future__ import annotations

import torch
from torch import nn

from hessian_lr.workloads import get_workload
from hessian_lr.workloads.sequence import BiGRUClassifier


def test_hand_written_gru_matches_nn_gru():
    torch.manual_seed(0)
    model = BiGRUClassifier().double()
    ref = nn.GRU(1, 6, batch_first=True, bidirectional=True).double()
    with torch.no_grad():
        for suffix, d in (("", 0), ("_reverse", 1)):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(ref, f"{name}_l0{suffix}").copy_(getattr(model, name)[d])
    x = torch.randn(9, 40, dtype=torch.float64)
    states, _ = ref(x.unsqueeze(-1))
    torch.testing.assert_close(model(x), model.linear(states.reshape(9, -1)), rtol=1e-12, atol=1e-12)


def test_gru_is_the_papers_gru_base():
    model = get_workload("mnist1d-gru").build_model()
    shapes = {k: tuple(p.shape) for k, p in model.named_parameters()}
    assert shapes == {"weight_ih": (2, 18, 1), "weight_hh": (2, 18, 6), "bias_ih": (2, 18), "bias_hh": (2, 18),
                      "linear.weight": (10, 480), "linear.bias": (10,)}
    assert sum(p.numel() for p in model.parameters()) == 5134  # GRUBase(1, 10, hidden_size=6), 40 steps
    bound = 1 / 6**0.5  # nn.GRU's initialisation
    assert all(float(getattr(model, k).detach().abs().max()) <= bound for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
