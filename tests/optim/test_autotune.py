"""The default implementation on devices other than the CPU is decided by measurement
(``hessian_lr.optim.autotune``). Tested on CPU with a fake clock whose time advances by what each
implementation is made to cost, so nothing here depends on real timings.
"""

from __future__ import annotations

import pytest
import torch
from optim_helpers import mlp, reference_train, train

from hessian_lr.optim import HessianLRAdaptation, autotune
from hessian_lr.optim import functional as F

FOREACH, COMPILED, FOR_LOOP = F.Implementation.FOREACH, F.Implementation.COMPILED, F.Implementation.FOR_LOOP


class FakeClock:
    """``now`` advances by ``costs[impl]`` each time ``run(impl)`` runs; ``fail`` candidates
    report that they could not run as themselves."""

    def __init__(self, costs: dict[F.Implementation, list[float] | float], fail: tuple = ()) -> None:
        self.now = 0.0
        self.costs = {k: (v if isinstance(v, list) else [v]) for k, v in costs.items()}
        self.calls: list[F.Implementation] = []
        self.fail = fail

    def __call__(self) -> float:
        return self.now

    def run(self, impl: F.Implementation) -> bool:
        costs = self.costs[impl]
        self.now += costs[sum(c is impl for c in self.calls) % len(costs)]
        self.calls.append(impl)
        return impl not in self.fail


@pytest.mark.parametrize("foreach_ms, compiled_ms, expected", [(3.0, 1.0, COMPILED), (1.0, 3.0, FOREACH), (2.0, 2.0, FOREACH)])
def test_the_lower_median_wins_and_a_tie_keeps_the_eager_ops(foreach_ms, compiled_ms, expected):
    clock = FakeClock({FOREACH: foreach_ms, COMPILED: compiled_ms})
    best, medians = autotune.pick_fastest(clock.run, timer=clock, repeats=5)
    assert best is expected and medians == {FOREACH: foreach_ms, COMPILED: compiled_ms}
    # one warm-up call each (the compilation), then 5 timed calls each, interleaved
    assert clock.calls == [FOREACH, COMPILED] + [FOREACH, COMPILED] * 5


def test_the_median_ignores_one_slow_outlier():
    # the first timed compiled call is slow (e.g. another process ran); its median is still lower
    clock = FakeClock({FOREACH: 2.0, COMPILED: [9.0, 50.0, 1.0, 1.0, 1.0, 1.0]})
    best, medians = autotune.pick_fastest(clock.run, timer=clock, repeats=5)
    assert best is COMPILED and medians[COMPILED] == 1.0


def test_a_candidate_that_cannot_run_as_itself_is_left_out():
    clock = FakeClock({FOREACH: 3.0, COMPILED: 1.0}, fail=(COMPILED,))  # torch.compile failed: eager ops ran
    best, medians = autotune.pick_fastest(clock.run, timer=clock, repeats=3)
    assert best is FOREACH and medians == {FOREACH: 3.0}
    assert clock.calls == [FOREACH, COMPILED, FOREACH, FOREACH, FOREACH]


def _state(shapes, dtype=torch.float32):
    return [torch.zeros(s, dtype=dtype) for s in shapes], [torch.zeros(s, dtype=dtype) for s in shapes]


def test_fastest_measures_each_parameter_set_once_per_process(monkeypatch):
    autotune.clear()
    clock = FakeClock({FOREACH: 2**-9, COMPILED: 2**-11})  # binary fractions: the clock sums them exactly
    seen = []

    def fake_grad_diff_(grads, prevs, hs, *, rows, hyper, into_prev, implementations, kernel=None):
        seen.append((tuple(tuple(g.shape) for g in grads), tuple(rows), len(hyper), tuple(into_prev)))
        clock.run(implementations[0])

    monkeypatch.setattr(autotune.F, "grad_diff_", fake_grad_diff_)
    prevs, hs = _state([(4, 3), (3,)])
    kwargs = dict(rows=[0, 1], n_rows=2, into_prev=[True, True], timer=clock)
    assert autotune.fastest(prevs, hs, [torch.float32] * 2, **kwargs) is COMPILED
    # the measurement ran on tensors of the real shapes, rows and into_prev (what the compiled
    # function is specialised on, so the real steps reuse its compilation)
    assert set(seen) == {(((4, 3), (3,)), (0, 1), 2, (True, True))} and len(seen) == 2 + 2 * autotune.REPEATS
    assert autotune.fastest(prevs, hs, [torch.float32] * 2, **kwargs) is COMPILED
    assert len(seen) == 2 + 2 * autotune.REPEATS  # cached: not measured again

    clock.costs = {FOREACH: [2**-13], COMPILED: [2**-11]}
    other_prevs, other_hs = _state([(100,)])
    assert autotune.fastest(other_prevs, other_hs, [torch.float32], rows=[0], n_rows=1, into_prev=[True],
                            timer=clock) is FOREACH  # another parameter set: measured on its own
    assert autotune.decisions() == [
        ("cpu", 2, "compiled", {"foreach": 2**-9, "compiled": 2**-11}),
        ("cpu", 1, "foreach", {"foreach": 2**-13, "compiled": 2**-11}),
    ]
    autotune.clear()


def test_the_wrapper_runs_what_was_measured_fastest(monkeypatch):
    """With the default fused=None on a device that asks for a measurement, the wrapper's first
    step measures once and then runs the winner (here the for-loop ops, so no compiler is needed)."""
    asked = []

    def measured(prevs, hs, grad_dtypes, *, rows, n_rows, into_prev):
        asked.append((len(prevs), tuple(rows), n_rows, tuple(into_prev)))
        return FOR_LOOP

    def on_an_accelerator(device_type, *, fused, foreach, kernel):
        return F.Implementation.AUTOTUNE if fused is None else F.Implementation.FOREACH

    monkeypatch.setattr(F, "choose_implementation", on_an_accelerator)
    monkeypatch.setattr(autotune, "fastest", measured)
    model, ref_model = mlp(), mlp()
    opt = HessianLRAdaptation(torch.optim.Adam(model.parameters(), lr=1e-2), fused=None)
    assert opt.implementations == {"autotune"}  # before the first step: decided then
    train(model, opt, 3)
    assert asked == [(6, (0,) * 6, 1, (True,) * 6)] and opt.implementations == {"for-loop"}
    reference_train(ref_model, torch.optim.Adam(ref_model.parameters(), lr=1e-2), 3)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), ref_model.parameters()))

    pinned = HessianLRAdaptation(torch.optim.Adam(mlp().parameters(), lr=1e-2), fused=False)
    assert pinned.implementations == {"foreach"}  # fused=False (or True) pins it: nothing measured
    assert len(asked) == 1


def test_only_the_defaults_ask_for_a_measurement():
    choose = F.choose_implementation
    assert choose("cuda", fused=None, foreach=None, kernel=None) is F.Implementation.AUTOTUNE
    assert choose("cuda", fused=None, foreach=True, kernel=None) is FOREACH  # foreach=True pins the eager ops
    assert choose("cuda", fused=None, foreach=False, kernel=None) is FOR_LOOP
    assert choose("cuda", fused=True, foreach=None, kernel=None) is COMPILED
    assert choose("cuda", fused=False, foreach=None, kernel=None) is FOREACH
    assert choose("cpu", fused=None, foreach=None, kernel=None) is FOREACH  # CPU: the kernel or the eager ops


def test_dispatching_an_unresolved_choice_is_an_error():
    prevs, hs = _state([(3,)])
    with pytest.raises(ValueError, match="resolve Implementation.AUTOTUNE first"):
        F.grad_diff_([torch.ones(3)], prevs, hs, rows=[0], hyper=[(0.9, 1e-8, 1)], into_prev=[True],
                     implementations=[F.Implementation.AUTOTUNE])
