"""The real workloads on CPU: training steps and evaluation through hessian-lr vs a plain PyTorch loop.

For ``cifar10-3c3d`` and the CPU configuration of ``shakespeare-char-gpt`` this times, side by side
in one process and alternating within each round,

* **training**: ``--steps`` optimizer steps of one run through hessian-lr's skeleton
  (:func:`hessian_lr.training.loop.train_run`: the arm's optimizer, the workload's batch stream,
  seeded model) against the same steps in a plain hand-written loop — the same model, data
  pipeline (the workload's own stream, built from a generator seeded the same way), optimizer
  (the arm's, built the same way) and batch size. Both validate on one small batch before and
  after, so the time is the steps';
* **evaluation**: one step and a full validation pass before and after it, the same way in both:
  hessian-lr's evaluation in minibatches against the plain ``model.eval(); torch.no_grad()`` loop.

It prints each ratio (hessian-lr / plain) of wall and of CPU seconds as the median and [min, max]
over ``--rounds`` rounds (which loop goes first alternates), and checks that both loops end at the
same validation loss (the same training).

Data: the real files under ``--data-dir`` (``$HESSIAN_LR_DATA``) when they are there; otherwise data
of the real files' size and format are written to a scratch folder first (random images, 50,000 +
10,000; random text of 1,115,394 characters over 65 symbols) — timings do not depend on the pixels
or the characters, and the output says which data were used.

Run: ``.venv/bin/python benchmarks/real_workloads.py [--rounds 5] [--steps 20] [--threads 1]``;
``--costs`` prints instead the CPU seconds of one training step and of one validation pass (what a
run at the default budget costs, ``docs/workloads.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from hessian_lr.arms import get_arm
from hessian_lr.training.loop import train_run
from hessian_lr.training.records import initial_model
from hessian_lr.workloads import Workload, cifar10, shakespeare, standard
from hessian_lr.workloads.data import Batch, Loaders
from hessian_lr.workloads.datadir import resolve_data_dir

ARM = "adam"
LR = 1e-3
SEED = 0


def ensure_data(data_dir: Path | None) -> tuple[Path, str]:
    """The data folder holding both data sets, and a note of where they came from."""
    root = resolve_data_dir(data_dir)
    try:
        cifar10.load_cifar10(root)
        shakespeare.load_shakespeare(root)
        return root, f"the real files under {root}"
    except ValueError:
        pass
    scratch = Path(tempfile.gettempdir()) / "hessian-lr-benchmark-data"
    folder = scratch / cifar10.FOLDER
    if not (folder / cifar10.TEST_FILE).exists():
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for name, count in [*((f, 10_000) for f in cifar10.TRAIN_FILES), (cifar10.TEST_FILE, 10_000)]:
            images = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
            cifar10.write_batch_file(folder / name, images, rng.integers(0, 10, count), name)
    text = scratch / shakespeare.FOLDER / shakespeare.FILE
    if not text.exists():
        text.parent.mkdir(parents=True, exist_ok=True)
        alphabet = np.array(list("\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))
        text.write_text("".join(np.random.default_rng(0).choice(alphabet, 1_115_394)))
    return scratch, (f"no real data under {root}: random data of the real files' size and format written to "
                     f"{scratch} (50,000 + 10,000 CIFAR-format images, 1,115,394 characters over 65 symbols)")


def with_small_validation(work: Workload) -> Workload:
    """The workload with a validation split of 64 rows (of its first minibatch), so a training
    measurement is the steps' time."""
    data = work.data
    assert isinstance(data, Loaders)
    x, y = next(iter(data.val()))
    first = [(x[:64], y[:64])]
    small = Loaders(train=data.train, val=lambda: first, test=None, steps_per_epoch=data.steps_per_epoch)
    return dataclasses.replace(work, load_data=lambda: small)


def plain_evaluate(model: torch.nn.Module, batches: Iterable[Batch], loss_fn: Callable) -> float:
    """The mean loss over ``batches`` weighted by rows, the way a hand-written loop does it."""
    model.eval()
    total, rows = 0.0, 0
    with torch.no_grad():
        for x, y in batches:
            total += float(loss_fn(model(x), y)) * len(x)
            rows += len(x)
    return total / rows


def plain_run(work: Workload, steps: int) -> float:
    """``steps`` steps of a hand-written loop: validate, train, validate; the last validation loss."""
    arm = get_arm(ARM)
    model = initial_model(work, SEED)
    params = list(model.parameters())
    optimizer = arm.build(params, lr=LR)
    data = work.data
    stream = data.train(torch.Generator().manual_seed(SEED))
    plain_evaluate(model, data.val(), work.loss_fn)
    model.train()
    done = 0
    while done < steps:
        for x, y in stream:
            loss = work.loss_fn(model(x), y)
            if work.l2:
                loss = loss + work.penalty(params)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            done += 1
            if done == steps:
                break
    return plain_evaluate(model, data.val(), work.loss_fn)


def hessian_lr_run(work: Workload, steps: int) -> float:
    """The same run through hessian-lr's skeleton; the last validation loss."""
    result = train_run(work, get_arm(ARM), LR, seed=SEED, steps=steps, eval_every=steps, evaluate_test=False)
    return result.val_loss


def timed(fn: Callable[[], float]) -> tuple[float, float, float]:
    """``fn()``'s wall seconds, CPU seconds of this process, and value."""
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, value


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} [{min(values):.3f}, {max(values):.3f}]"


def compare(label: str, work: Workload, steps: int, rounds: int) -> None:
    """Run the two loops ``rounds`` times, alternating which goes first, and print the ratios of
    their wall and CPU times (CPU seconds are the steadier measure on a shared machine)."""
    timed(lambda: hessian_lr_run(work, 1))  # warm-up: first-call costs (imports, kernels) on neither side
    timed(lambda: plain_run(work, 1))
    walls, cpus, seconds, losses = [], [], {"hessian-lr": [], "plain": []}, set()
    for round_ in range(rounds):
        order = [("hessian-lr", hessian_lr_run), ("plain", plain_run)]
        measured = {}
        for name, run in order if round_ % 2 == 0 else order[::-1]:
            measured[name] = timed(lambda run=run: run(work, steps))
            seconds[name].append(measured[name][0])
        walls.append(measured["hessian-lr"][0] / measured["plain"][0])
        cpus.append(measured["hessian-lr"][1] / measured["plain"][1])
        losses.add((measured["hessian-lr"][2], measured["plain"][2]))
    same = all(abs(a - b) <= 1e-6 * max(1.0, abs(b)) for a, b in losses)
    print(f"  {label:<34} wall hessian-lr {statistics.median(seconds['hessian-lr']):7.2f} s, plain "
          f"{statistics.median(seconds['plain']):7.2f} s; ratio wall {_spread(walls)}, CPU {_spread(cpus)}; "
          f"same final val loss: {'yes' if same else 'NO ' + str(sorted(losses))}")


def costs(work: Workload, steps: int = 10) -> None:
    """CPU seconds of one training step (after one untimed step) and of one validation pass: what a
    run at the default budget costs on this machine."""
    model = initial_model(work, SEED)
    optimizer = get_arm(ARM).build(list(model.parameters()), lr=LR)
    batches = iter(work.data.train(torch.Generator().manual_seed(SEED)))

    def step() -> None:
        x, y = next(batches)
        work.objective(model, x, y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    start = time.process_time()
    for _ in range(steps):
        step()
    per_step = (time.process_time() - start) / steps
    start = time.process_time()
    rows = 0
    model.eval()
    with torch.no_grad():
        for x, _ in work.data.val():
            model(x)
            rows += len(x)
    print(f"  one training step {per_step:.3f} CPU s; one validation pass ({rows:,} rows) "
          f"{time.process_time() - start:.2f} CPU s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="training steps per measurement")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--costs", action="store_true", help="print CPU seconds per training step and per "
                        "validation pass instead of the comparison")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root, note = ensure_data(args.data_dir)
    print(f"data: {note}")
    print(f"torch {torch.__version__}, {args.threads} thread(s), arm {ARM} lr {LR}, {args.rounds} rounds, "
          f"ratio = hessian-lr / plain (median [min, max])")
    for work in (standard.cifar10_3c3d(root), standard.shakespeare_char_gpt("cpu", root)):
        print(f"{work.name} (batch {work.batch_size})")
        if args.costs:
            costs(work)
            continue
        compare(f"training, {args.steps} steps", with_small_validation(work), args.steps, args.rounds)
        compare("evaluation (1 step, 2 val passes)", work, 1, args.rounds)


if __name__ == "__main__":
    main()
