"""Per-step cost of HessianLRAdaptation over its base optimizer, measured side by side.

For each model and each Adam mode (foreach, fused) it times ``step()`` of the bare base optimizer
and of the wrapped one in each of its implementations -- ``default`` (what ``fused=None`` picks: on
CPU the C++ kernel where it is built, on other devices whichever path the one-time measurement of
:mod:`hessian_lr.optim.autotune` found faster), ``kernel`` (the C++ kernel, ``fused=True``; CPU
only), ``compiled`` (the ``torch.compile``-d pure-torch path: ``fused=True`` with the kernel hidden)
and ``eager`` (``_foreach_`` ops, ``fused=False``) -- interleaved repeat by repeat (so load from
other processes hits all variants alike), and prints medians and ratios. Gradients are restored
from a saved copy before every timed step (outside the timing), so every step sees the same data;
on a GPU every timed step is bracketed by synchronisations. It also counts the wrapper's
persistent state (tensors per parameter, bytes) and the bytes allocated during one step (torch
profiler on CPU, the allocator's peak on CUDA), to show that the pre-conditioning allocates no
model-sized temporaries.

    python benchmarks/step_overhead.py [--device cpu|cuda] [--threads 1 2] [--repeats 25]
        [--models a b c d] [--variants ...]
    python benchmarks/step_overhead.py --first-use [--threads 1]

``--first-use`` measures what a plain ``pip install`` gets: each path in a fresh process with
empty caches (``TORCH_EXTENSIONS_DIR`` and ``TORCHINDUCTOR_CACHE_DIR`` in a temporary folder) on the
10.5M model: the first ``step()`` -- the kernel's build, or torch.compile's compilation, included --
then the steady-state ratios against Adam foreach / fused.

The compiled variant's first steps compile it (seconds to a minute, cached by inductor); they are
warm-up steps, not timed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import torch
from gpu_common import describe, device_or_exit, synchronize

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


def model_d() -> torch.nn.Module:
    """~100M parameters: Linear(4096, 4096) x 6 (100,687,872)."""
    return torch.nn.Sequential(*[torch.nn.Linear(4096, 4096) for _ in range(6)])


MODELS = {
    "a": ("mnist1d MLP", model_a),
    "b": ("10.5M (2048x2048 x2 + 2048x1024)", model_b),
    "c": ("200 small tensors", model_c),
    "d": ("100.7M (4096x4096 x6)", model_d),
}


VARIANTS = ("base", "default", "kernel", "compiled", "eager")


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


def _setup(make, mode: str, variant: str, device: torch.device):
    torch.manual_seed(0)
    model = make().to(device)
    params = list(model.parameters())
    g = torch.Generator().manual_seed(1)
    grads = [(torch.randn(p.shape, generator=g) * 1e-2).to(device) for p in params]
    base = torch.optim.Adam(params, lr=1e-3, **{mode: True})
    if variant == "base":
        return params, grads, base
    if variant == "compiled":
        with _kernel_hidden():
            opt = HessianLRAdaptation(base, fused=True)
    else:
        opt = HessianLRAdaptation(base, fused={"default": None, "kernel": True, "eager": False}[variant])
    expected = {"kernel": {"kernel"}, "compiled": {"compiled"}, "eager": {"foreach"}}.get(variant)
    assert expected is None or opt.implementations == expected, opt.implementations
    return params, grads, opt


def _restore(params, grads) -> None:
    for p, g in zip(params, grads):
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.copy_(g)


def _time_step(params, grads, opt) -> float:
    _restore(params, grads)
    device = params[0].device
    synchronize(device)
    t0 = time.perf_counter()
    opt.step()
    synchronize(device)
    return time.perf_counter() - t0


def _allocated_bytes(params, grads, opt) -> int:
    """Bytes allocated during one step(): by ATen ops (torch profiler, CPU allocator), or on CUDA
    the allocator's peak above what was allocated before the step."""
    _restore(params, grads)
    device = params[0].device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        opt.step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
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


def bench(key: str, mode: str, repeats: int, variants: list[str], device: torch.device) -> dict:
    name, make = MODELS[key]
    setups = {v: _setup(make, mode, v, device) for v in variants}
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
    params = setups["base"][0]
    result = {
        "model": name,
        "mode": mode,
        "n_params": n_params,
        "n_tensors": len(params),
        "median_ms": {v: m * 1e3 for v, m in med.items()},
        "ratio": {v: med[v] / med["base"] for v in variants if v != "base"},
        "state_tensors_per_param": len(state_tensors) / len(params),
        "state_bytes": sum(t.numel() * t.element_size() for t in state_tensors),
        "param_bytes": sum(p.numel() * p.element_size() for p in params),
        "alloc_bytes_per_step": {v: _allocated_bytes(*setups[v]) for v in variants},
        "default_is": "+".join(sorted(setups["default"][2].implementations)) if "default" in setups else None,
    }
    del setups, wrapped, state_tensors, params
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the next model's setups start from a clean allocator
    return result


def _print_table(device: torch.device, models: list[str], repeats: int, variants: list[str]) -> None:
    header = f"{'model':<34}{'Adam':<8}{'base':>9}" + "".join(f"{v:>10}{'ratio':>7}" for v in variants[1:])
    print(header)
    for key in models:
        for mode in ("foreach", "fused"):
            r = bench(key, mode, repeats, variants, device)
            m, q = r["median_ms"], r["ratio"]
            cells = "".join(f"{m[v]:10.3f}{q[v]:6.2f}x" for v in variants[1:])
            print(f"{r['model']:<34}{mode:<8}{m['base']:9.3f}{cells}", flush=True)
            alloc = r["alloc_bytes_per_step"]
            print(f"{'':<4}bytes allocated during one step(): "
                  + ", ".join(f"{v} {b / 2**20:.2f} MiB" for v, b in alloc.items())
                  + (f"; default = {r['default_is']}" if r["default_is"] else ""))
            if mode == "fused":
                print(
                    f"{'':<4}{r['n_params']:,} params in {r['n_tensors']} tensors; wrapper state: "
                    f"{r['state_tensors_per_param']:.0f} tensors/param, {r['state_bytes'] / 2**20:.1f} MiB "
                    f"(= {r['state_bytes'] / r['param_bytes']:.2f} x params)"
                )


# -- --first-use: a fresh process per path, empty caches -------------------------------------------
FIRST_USE_PATHS = {
    # name: (fused, HESSIAN_LR_KERNEL, what it is)
    "default": (None, "auto", "fused=None (default): the kernel, built at the first step"),
    "compiled": (True, "never", "torch.compile of the functional step (fused=True, kernel hidden)"),
    "eager": (None, "never", "eager _foreach_ ops (HESSIAN_LR_KERNEL=never / no compiler)"),
}


def _cpu_seconds() -> float:
    """CPU time of this process and its waited-for children (the compiler processes of a build)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _first_use_child(path: str, threads: int, repeats: int) -> None:
    """In a fresh process: the first wrapped step (build or compile included), then the steady
    state against both Adam modes; one JSON line on stdout."""
    torch.set_num_threads(threads)
    fused = FIRST_USE_PATHS[path][0]
    setups = {}
    for mode in ("foreach", "fused"):
        setups[f"base {mode}"] = _setup(model_b, mode, "base", torch.device("cpu"))
        params, grads, base = _setup(model_b, mode, "base", torch.device("cpu"))
        setups[f"wrapped {mode}"] = (params, grads, base)  # wrapped below, after the clock starts
    params, grads, base = setups["wrapped foreach"]
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    opt = HessianLRAdaptation(base, fused=fused)
    _restore(params, grads)
    opt.step()
    first, first_cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    setups["wrapped foreach"] = (params, grads, opt)
    params, grads, base = setups["wrapped fused"]
    setups["wrapped fused"] = (params, grads, HessianLRAdaptation(base, fused=fused))
    for setup in setups.values():
        for _ in range(3):
            _time_step(*setup)
    times: dict[str, list[float]] = {k: [] for k in setups}
    for _ in range(repeats):
        for k, setup in setups.items():
            times[k].append(_time_step(*setup))
    med = {k: statistics.median(t) for k, t in times.items()}
    print(json.dumps({
        "first_step_s": first,
        "first_step_cpu_s": first_cpu,
        "implementations": sorted(opt.implementations),
        "median_ms": {k: v * 1e3 for k, v in med.items()},
        "ratio": {mode: med[f"wrapped {mode}"] / med[f"base {mode}"] for mode in ("foreach", "fused")},
    }))


def _first_use(threads: int, repeats: int) -> None:
    print(f"10.5M-parameter model, {threads} thread(s); each path in a fresh process with an empty "
          "TORCH_EXTENSIONS_DIR and TORCHINDUCTOR_CACHE_DIR (what a plain `pip install` finds)")
    print("1st step: wall seconds [CPU seconds of the process and its compiler processes; inductor compiles in "
          "process (TORCHINDUCTOR_COMPILE_THREADS=1)]: on a shared machine the CPU time is the steadier figure")
    print(f"{'path':<72}{'1st step s':>11}{'[cpu s]':>9}{'then vs foreach':>17}{'vs fused':>10}")
    for path, (_, mode, label) in FIRST_USE_PATHS.items():
        with tempfile.TemporaryDirectory(prefix="hlr-first-use-") as tmp:
            env = {**os.environ, "HESSIAN_LR_KERNEL": mode, "TORCH_EXTENSIONS_DIR": os.path.join(tmp, "ext"),
                   "TORCHINDUCTOR_CACHE_DIR": os.path.join(tmp, "inductor"), "TORCHINDUCTOR_COMPILE_THREADS": "1"}
            env.pop("HESSIAN_LR_NO_KERNEL", None)
            out = subprocess.run([sys.executable, __file__, "--first-use-child", path, "--threads", str(threads),
                                  "--repeats", str(repeats)], env=env, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{label:<72} failed: {out.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        notes = [line for line in out.stderr.splitlines() if "hessian-lr" in line]
        print(f"{label:<72}{r['first_step_s']:11.1f}{r['first_step_cpu_s']:9.1f}"
              f"{r['ratio']['foreach']:16.2f}x{r['ratio']['fused']:9.2f}x"
              f"   ({'+'.join(r['implementations'])}; Adam foreach {r['median_ms']['base foreach']:.1f} ms, "
              f"fused {r['median_ms']['base fused']:.1f} ms; load average {os.getloadavg()[0]:.1f})", flush=True)
        for line in notes:
            print(f"{'':<4}stderr: {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="intra-op threads (default: 1 and all on CPU, all on a GPU)")
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--models", nargs="+", default=None, choices=list(MODELS),
                        help="default: a b c on CPU, b d on a GPU")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS[1:]), choices=VARIANTS[1:])
    parser.add_argument("--no-build", action="store_true", help="do not compile the kernel if it is not built")
    parser.add_argument("--first-use", action="store_true", help="fresh processes with empty caches (see above)")
    parser.add_argument("--first-use-child", choices=list(FIRST_USE_PATHS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.first_use_child:
        _first_use_child(args.first_use_child, (args.threads or [1])[0], args.repeats)
        return
    if args.first_use:
        _first_use((args.threads or [1])[0], args.repeats)
        return

    device = device_or_exit(args.device, "step_overhead.py")
    gpu = device.type != "cpu"
    models = args.models or (["b", "d"] if gpu else ["a", "b", "c"])
    threads = args.threads or ([torch.get_num_threads()] if gpu else [1, torch.get_num_threads()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with_kernel = not gpu and kernel.load(compile=not args.no_build) is not None
    variants = ["base"] + [v for v in args.variants if v != "kernel" or with_kernel]
    print(describe(device))
    if not gpu:
        print(f"compiled kernel: {'yes' if with_kernel else 'NO (not measured)'}")
    print("columns: median step() in ms; ratio = wrapped / base, measured interleaved in this run")
    print("  default = fused=None (CPU: the kernel; other devices: the path measured faster, named below);")
    print("  kernel = C++ pre-conditioning (fused=True); compiled = torch.compile-d pure torch (fused=True,")
    print("  kernel hidden: the GPU/DTensor/no-compiler path); eager = _foreach_ ops (fused=False)")
    for n in dict.fromkeys(threads):
        torch.set_num_threads(n)
        print(f"\n== torch.get_num_threads() = {torch.get_num_threads()}, os.getloadavg() = "
              f"{tuple(round(x, 2) for x in os.getloadavg())} at start")
        _print_table(device, models, args.repeats, variants)
        print(f"   os.getloadavg() at end: {tuple(round(x, 2) for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
