"""Today's workloads train to the exact numbers they trained to before the batch-stream contract
(commit 73feef7, recorded with that tree): one epoch, two paired seeds, one at a time and stacked.

torch's own Adam only, so the numbers do not depend on which path of the package's optimizer
kernel a machine has; float32 results can still differ on a CPU with another vector unit — then
re-record them from the commit above and compare with this tree, never from this tree alone."""

from __future__ import annotations

import pytest

from hessian_lr.arms import get_arm
from hessian_lr.training import Run, train
from hessian_lr.workloads import get_workload

# (workload, batch) -> the two runs' (final validation loss, test loss), lr 3e-3 seed 0 and lr 1e-3 seed 1
PINNED = {
    ("mnist1d-mlp", True): [("0x1.c4d8240000000p+0", "0x1.ba92ce0000000p+0"), ("0x1.005a080000000p+1", "0x1.f7887a0000000p+0")],
    ("teacher-student", False): [("0x1.b6dc140000000p-3", "0x1.c0541a0000000p-3"), ("0x1.cc466e0000000p-2", "0x1.ce34d40000000p-2")],
    ("noisy-quadratic", False): [("0x1.fb93480000000p+3", "0x1.fb93480000000p+3"), ("0x1.9bd3460000000p+4", "0x1.9bd3460000000p+4")],
    ("modular-addition-transformer", False): [("0x1.c0bf760000000p+1", "0x1.bbb20e0000000p+1"), ("0x1.bedce60000000p+1", "0x1.c12c0a0000000p+1")],
}


@pytest.mark.parametrize(("name", "batch"), list(PINNED))
def test_todays_workloads_train_to_the_numbers_they_trained_to_before(name, batch):
    runs = train(get_workload(name), get_arm("adam"), [Run({"lr": 3e-3}, 0), Run({"lr": 1e-3}, 1)], epochs=1, batch=batch)
    assert [(r.val_loss.hex(), r.test_loss.hex()) for r in runs] == [
        (float.fromhex(v).hex(), float.fromhex(t).hex()) for v, t in PINNED[(name, batch)]]
