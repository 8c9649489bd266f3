"""Per-step overhead of the training skeleton against a plain hand-written PyTorch loop.

The same small CNN, the same in-memory data (random CIFAR-shaped images), the same torch Adam (fused) and
batch size, one model: ``hessian_lr.training.train_run`` (the skeleton with
:class:`~hessian_lr.training.single.SingleModel`: seeding, batch order, the finiteness check, the
model's own RNG stream, evaluation after every epoch) against a loop that does only
``zero_grad; loss = cross_entropy(model(x), y); backward; step`` plus the same per-epoch
validation pass. Both are timed alternately in one process (CPU seconds of the process), and the
ratio of each pair is reported: median [min, max].

Run: ``.venv/bin/python benchmarks/skeleton_overhead.py [--repeats 7] [--epochs 2] [--threads 1]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from hessian_lr.arms import get_arm
from hessian_lr.training import train_run
from hessian_lr.workloads import Splits, Workload

ROWS, VAL_ROWS, BATCH = 2048, 512, 64


def small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 4 * 4, 10))


def images() -> Splits:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(ROWS + 2 * VAL_ROWS, 3, 16, 16, generator=g)
    y = torch.randint(0, 10, (ROWS + 2 * VAL_ROWS,), generator=g)
    return Splits(x[:ROWS], y[:ROWS], x[ROWS:ROWS + VAL_ROWS], y[ROWS:ROWS + VAL_ROWS], x[ROWS + VAL_ROWS:],
                  y[ROWS + VAL_ROWS:])


WORKLOAD = Workload(name="bench-cnn", description="benchmark: small CNN on random 3x16x16 images",
                    load_data=images, build_model=small_cnn, batch_size=BATCH)


def plain_loop(epochs: int, lr: float, seed: int) -> float:
    data = WORKLOAD.data
    torch.manual_seed(seed)
    model = small_cnn()
    optimizer = get_arm("adam").build(list(model.parameters()), lr=lr)  # the same Adam (fused) as the arm's
    order = torch.Generator().manual_seed(seed)
    n = len(data.x_train)
    with torch.no_grad():
        model.eval()
        val = float(nn.functional.cross_entropy(model(data.x_val), data.y_val))
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=order)
        x_epoch, y_epoch = data.x_train[perm], data.y_train[perm]
        for i in range(0, n, BATCH):
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x_epoch[i:i + BATCH]), y_epoch[i:i + BATCH])
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            model.eval()
            val = float(nn.functional.cross_entropy(model(data.x_val), data.y_val))
    return val


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    adam, lr = get_arm("adam"), 1e-3
    WORKLOAD.data
    skeleton_val = train_run(WORKLOAD, adam, lr, epochs=1, seed=0, evaluate_test=False).val_loss  # warm-up
    plain_val = plain_loop(1, lr, 0)
    assert skeleton_val == plain_val, (skeleton_val, plain_val)  # the same training, to the bit
    ratios, times = [], {"skeleton": [], "plain": []}
    for _ in range(args.repeats):
        t0 = time.process_time()
        train_run(WORKLOAD, adam, lr, epochs=args.epochs, seed=0, evaluate_test=False)
        t1 = time.process_time()
        plain_loop(args.epochs, lr, 0)
        t2 = time.process_time()
        times["skeleton"].append(t1 - t0)
        times["plain"].append(t2 - t1)
        ratios.append((t1 - t0) / (t2 - t1))
    steps = args.epochs * (ROWS // BATCH)
    for name, values in times.items():
        print(f"{name:9s} {statistics.median(values) / steps * 1e3:.3f} ms/step (median of {args.repeats}, "
              f"{steps} steps, {args.threads} thread(s), validation included)")
    print(f"skeleton / plain: {statistics.median(ratios):.3f} [{min(ratios):.3f}, {max(ratios):.3f}]")


if __name__ == "__main__":
    main()
