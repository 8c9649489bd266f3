"""Per-step cost of HessianLRAdaptation over its base optimizer, measured side by side.

For each model and each Adam mode (foreach, fused) it times ``step()`` of the bare base optimizer
and of the wrapped one in its three implementations -- the C++ kernel (``fused=True``), the
``torch.compile``-d pure-torch path (``fused=True`` with the kernel hidden, as on a GPU or a machine
without the kernel) and the eager ``_foreach_`` ops (``fused=False``) -- interleaved repeat by repeat
(so load from other processes hits all variants alike), and prints medians and ratios. Gradients are restored from a saved copy before every timed step (outside the timing), so
every step sees the same data. It also counts the wrapper's persistent state (tensors per
parameter, bytes) and the bytes allocated during one step (torch profiler), to show that the
pre-conditioning allocates no model-sized temporaries.

    python benchmarks/step_overhead.py [--threads 1 2] [--repeats 25] [--models a b c] [--variants ...]

The compiled variant's first steps compile it (seconds to a minute, cached by inductor); they are
warm-up steps, not timed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import time
import warnings

import torch

from hessian_lr.optim import HessianLRAdaptation, kernel


def model_a() -> torch.nn.Module:
    """The mnist1d MLP: 40 -> 100 -> 100 -> 10 (15,210 parameters)."""
    return torch.nn.Sequential(
        torch.nn.Linear(40, 100), torch.nn.ReLU(), torch.nn.Linear(100, 100), torch.nn.ReLU(), torch.nn.Linear(100, 10)
    )


def model_b() -> torch.nn.Module:
    """~10.5M parameters: Linear(2048, 2048) x 2 + Linear(2048, 1024)."""
    return torch.nn.Sequential(torch.nn.Linear(2048, 2048), torch.nn.Linear(2048, 2048), torch.nn.Linear(2048, 1024))


def model_c() -> torch.nn.Module:
    """200 small tensors (100 Linear(16, 16) layers: weight + bias)."""
    return torch.nn.Sequential(*[torch.nn.Linear(16, 16) for _ in range(100)])


MODELS = {"a": ("mnist1d MLP", model_a), "b": ("10M (2048x2048 x2 + 2048x1024)", model_b), "c": ("200 small tensors", model_c)}


VARIANTS = ("base", "kernel", "compiled", "eager")


@contextlib.contextmanager
def _kernel_hidden():
    """HESSIAN_LR_NO_KERNEL=1 while a wrapper is built: it then takes the path a GPU would."""
    before = os.environ.get("HESSIAN_LR_NO_KERNEL")
    os.environ["HESSIAN_LR_NO_KERNEL"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["HESSIAN_LR_NO_KERNEL"]
        else:
            os.environ["HESSIAN_LR_NO_KERNEL"] = before


def _setup(make, mode: str, variant: str):
    torch.manual_seed(0)
    model = make()
    params = list(model.parameters())
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(p.shape, generator=g) * 1e-2 for p in params]
    base = torch.optim.Adam(params, lr=1e-3, **{mode: True})
    if variant == "base":
        return params, grads, base
    if variant == "compiled":
        with _kernel_hidden():
            opt = HessianLRAdaptation(base, fused=True)
    else:
        opt = HessianLRAdaptation(base, fused=variant == "kernel")
    expected = {"kernel": "kernel", "compiled": "compiled", "eager": "foreach"}[variant]
    assert opt.implementations == {expected}, opt.implementations
    return params, grads, opt


def _restore(params, grads) -> None:
    for p, g in zip(params, grads):
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.copy_(g)


def _time_step(params, grads, opt) -> float:
    _restore(params, grads)
    t0 = time.perf_counter()
    opt.step()
    return time.perf_counter() - t0


def _allocated_bytes(params, grads, opt) -> int:
    """Bytes allocated by ATen ops during one step() (torch profiler, CPU allocator)."""
    _restore(params, grads)
    stderr = os.dup(2)  # the profiler prints start/stop lines on stderr
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
            opt.step()
    finally:
        os.dup2(stderr, 2)
        os.close(devnull)
        os.close(stderr)
    # Total bytes the ATen ops allocated (an upper bound on the step's peak temporaries).
    return sum(e.self_cpu_memory_usage for e in prof.events() if e.name.startswith("aten::") and e.self_cpu_memory_usage > 0)


def bench(key: str, mode: str, repeats: int, variants: list[str]) -> dict:
    name, make = MODELS[key]
    setups = {v: _setup(make, mode, v) for v in variants}
    n_params = sum(p.numel() for p in setups["base"][0])
    for v in variants:  # warm-up: state allocation, first-step paths
        for _ in range(3):
            _time_step(*setups[v])
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(repeats):
        for v in variants:
            times[v].append(_time_step(*setups[v]))
    med = {v: statistics.median(t) for v, t in times.items()}
    wrapped = setups[variants[-1]][2]
    state_tensors = [
        t for s in wrapped.state.values() for t in s.values() if isinstance(t, torch.Tensor)
    ]
    alloc = {v: _allocated_bytes(*setups[v]) for v in variants}
    return {
        "model": name,
        "mode": mode,
        "n_params": n_params,
        "n_tensors": len(setups["base"][0]),
        "median_ms": {v: m * 1e3 for v, m in med.items()},
        "ratio": {v: med[v] / med["base"] for v in variants if v != "base"},
        "state_tensors_per_param": len(state_tensors) / len(setups["base"][0]),
        "state_bytes": sum(t.numel() * t.element_size() for t in state_tensors),
        "param_bytes": sum(p.numel() * p.element_size() for p in setups["base"][0]),
        "alloc_bytes_per_step": alloc,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, torch.get_num_threads()])
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS[1:]), choices=VARIANTS[1:])
    parser.add_argument("--no-build", action="store_true", help="do not compile the kernel if it is not built")
    args = parser.parse_args()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with_kernel = kernel.load(compile=not args.no_build) is not None
    variants = ["base"] + [v for v in args.variants if v != "kernel" or with_kernel]
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(f"compiled kernel: {'yes' if with_kernel else 'NO (not measured)'}")
    print("columns: median step() in ms; ratio = wrapped / base, measured interleaved in this run")
    print("  kernel = C++ pre-conditioning (fused=True); compiled = torch.compile-d pure torch (fused=True,")
    print("  kernel hidden: the GPU/DTensor/no-compiler path); eager = _foreach_ ops (fused=False)")
    for threads in dict.fromkeys(args.threads):
        torch.set_num_threads(threads)
        print(f"\n== torch.get_num_threads() = {torch.get_num_threads()}, os.getloadavg() = "
              f"{tuple(round(x, 2) for x in os.getloadavg())} at start")
        header = f"{'model':<34}{'Adam':<8}{'base':>9}" + "".join(f"{v:>10}{'ratio':>7}" for v in variants[1:])
        print(header)
        for key in args.models:
            for mode in ("foreach", "fused"):
                r = bench(key, mode, args.repeats, variants)
                m, q = r["median_ms"], r["ratio"]
                cells = "".join(f"{m[v]:10.3f}{q[v]:6.2f}x" for v in variants[1:])
                print(f"{r['model']:<34}{mode:<8}{m['base']:9.3f}{cells}")
                alloc = r["alloc_bytes_per_step"]
                print(f"{'':<4}bytes allocated by ops during one step(): "
                      + ", ".join(f"{v} {b / 2**20:.2f} MiB" for v, b in alloc.items()))
                if mode == "fused":
                    print(
                        f"{'':<4}{r['n_params']:,} params in {r['n_tensors']} tensors; wrapper state: "
                        f"{r['state_tensors_per_param']:.0f} tensors/param, {r['state_bytes'] / 2**20:.1f} MiB "
                        f"(= {r['state_bytes'] / r['param_bytes']:.2f} x params)"
                    )
        print(f"   os.getloadavg() at end: {tuple(round(x, 2) for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
