"""An optional compiled (C++) kernel for the grad-diff pre-conditioning step.

Four entry points, all on CPU tensors:

* ``first_nonfinite(grads)`` -- the index of the first gradient holding inf/NaN (or -1): an
  integer OR over exponent bits, one read of each gradient, so the wrapper can refuse a step
  *before* any state is touched;
* ``grad_diff_(grads, prevs, hs, rows, betas, epss, scales, into_prev)`` -- the update of every
  parameter in one call: one pass over memory per tensor that reads ``g, g_prev, h`` and writes
  ``h`` and either ``g_prev`` (``into_prev``: the rescaled gradient goes into ``g_prev``'s buffer and
  ``g`` is only read -- the wrapper's step, which never writes ``p.grad``) or ``g`` and ``g_prev``
  (in place, as :func:`hessian_lr.optim.functional.single_tensor_grad_diff_`), with
  ``at::parallel_for`` over elements;
* ``copy_(dsts, srcs)`` -- ``g_prev <- p.grad`` after the base step, one copy per tensor (streaming
  stores for large ones);
* ``grad_diff_tensor_(g, g_prev, h, beta, eps, scale)`` -- the in-place update of one triple given
  directly (batched training's flat ``[K, P]`` state).

The arithmetic is the same sequence of roundings as
:func:`hessian_lr.optim.functional.single_tensor_grad_diff_` (contraction into FMA is disabled), and
triples the fast loop does not cover (non-dense or mismatched layouts, unusual dtype pairs) go
through the same ATen ops as that reference. Tensors on other devices never reach this module: the
wrapper's dispatcher (:mod:`hessian_lr.optim.functional`) sends them to the ``torch.compile`` path.

The extension is compiled with ``torch.utils.cpp_extension.load_inline`` (needs a C++ compiler and
ninja; ~40 s on a 2-core machine) and cached on disk under torch's extension directory
(``$TORCH_EXTENSIONS_DIR``), keyed by a hash of the source, flags and torch version, so later
processes load it in well under a second. ``HESSIAN_LR_KERNEL`` says when it is built:

* ``auto`` (default): at the first wrapper step that has CPU tensors, once per machine. The build
  is announced in one log line; processes starting at the same time wait on a file lock and load
  the one build. Without a toolchain, or when the build fails (recorded next to the build folder,
  so later processes do not retry it), one line says so and the pure-torch path runs -- a step
  never raises for it;
* ``prebuilt``: only a kernel something else built (``python -m hessian_lr.optim.kernel``, as
  ``make install`` runs) is used;
* ``never`` (or ``0``; also the older ``HESSIAN_LR_NO_KERNEL=1``): never, the pure-torch path.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from types import ModuleType

try:
    import fcntl
except ImportError:  # Windows: torch's own lock file only
    fcntl = None  # type: ignore[assignment]

import torch

__all__ = ["MODES", "ENV_VAR", "mode", "load", "build", "is_built", "available", "missing_toolchain"]

_CPP = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#include <c10/util/BFloat16.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif
#include <cmath>
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

constexpr int64_t kGrain = 32768;

// Non-finite <=> all exponent bits set. An integer OR-reduction vectorizes, unlike isfinite().
template <typename T> struct Bits;
template <> struct Bits<float> { using U = uint32_t; static constexpr U mask = 0x7f800000u; };
template <> struct Bits<double> { using U = uint64_t; static constexpr U mask = 0x7ff0000000000000ull; };
template <> struct Bits<c10::Half> { using U = uint16_t; static constexpr U mask = 0x7c00u; };
template <> struct Bits<c10::BFloat16> { using U = uint16_t; static constexpr U mask = 0x7f80u; };

template <typename T>
bool all_finite(const T* data, int64_t n) {
  using U = typename Bits<T>::U;
  const U* u = reinterpret_cast<const U*>(data);
  return at::parallel_reduce(
      0, n, kGrain, true,
      [&](int64_t b, int64_t e, bool ok) {
        U bad = 0;
        for (int64_t i = b; i < e; ++i) bad |= static_cast<U>((u[i] & Bits<T>::mask) == Bits<T>::mask);
        return ok && bad == 0;
      },
      [](bool a, bool c) { return a && c; });
}

// One grad-diff update per element; S is the state's dtype, G the gradient's.
//   in place  (kIntoPrev = false): g <- g / sqrt(hhat + eps), prev <- g, h updated;
//   into prev (kIntoPrev = true, G == S): prev <- g / sqrt(hhat + eps), g untouched, h updated.
// The rounding sequence is the reference's (ATen's vectorized mul_ + addcmul_, then rsqrt, mul).
// A function of its own, with restrict pointers, so that the loop vectorizes inside OpenMP's
// outlined region too (a lambda's captured pointers may alias).
template <typename G, typename S, bool kIntoPrev>
void update_range(G* __restrict__ g, S* __restrict__ prev, S* __restrict__ h, int64_t n, S beta, S omb, S eps,
                  S scale) {
  for (int64_t i = 0; i < n; ++i) {
    const S gi = static_cast<S>(g[i]);
    const S nd = prev[i] - gi;                          // -d_t
    const S hn = std::fma(omb * nd, nd, h[i] * beta);   // as ATen's vectorized mul_ + addcmul_
    h[i] = hn;
    const S rescaled = (S(1) / std::sqrt(hn * scale + eps)) * gi;
    if constexpr (kIntoPrev) {
      prev[i] = rescaled;
    } else {
      prev[i] = gi;
      g[i] = static_cast<G>(rescaled);
    }
  }
}

template <typename G, typename S, bool kIntoPrev>
void update(G* g, S* prev, S* h, int64_t n, double beta_d, double eps_d, double scale_d) {
  const S beta = static_cast<S>(beta_d);
  const S omb = static_cast<S>(1.0 - beta_d);
  const S eps = static_cast<S>(eps_d);
  const S scale = static_cast<S>(scale_d);
  at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    update_range<G, S, kIntoPrev>(g + b, prev + b, h + b, e - b, beta, omb, eps, scale);
  });
}

// The reference's ATen ops, for the layouts the loop above does not cover.
void reference(at::Tensor g, at::Tensor prev, at::Tensor h, double beta, double eps, double scale, bool into_prev) {
  prev.sub_(g);
  h.mul_(beta).addcmul_(prev, prev, 1.0 - beta);
  if (into_prev) {
    at::mul_out(prev, h, scale);
    prev.add_(eps).rsqrt_().mul_(g);
    return;
  }
  prev.copy_(g);
  if (g.scalar_type() == h.scalar_type()) {
    at::mul_out(g, h, scale);
    g.add_(eps).rsqrt_().mul_(prev);
  } else {
    g.copy_(h.mul(scale).add_(eps).rsqrt_().mul_(prev));
  }
}

bool dense_alike(const at::Tensor& a, const at::Tensor& b) {
  return a.is_non_overlapping_and_dense() && a.sizes() == b.sizes() && a.strides() == b.strides();
}

// Whether the one-pass loop covers this triple: dense CPU tensors of one layout.
bool is_fast(const at::Tensor& g, const at::Tensor& prev, const at::Tensor& h) {
  return g.device().is_cpu() && prev.device().is_cpu() && h.device().is_cpu() && dense_alike(g, prev) &&
         dense_alike(g, h) && prev.scalar_type() == h.scalar_type();
}

template <typename G, typename S>
bool try_fast(const at::Tensor& g, const at::Tensor& prev, const at::Tensor& h, double beta, double eps,
              double scale, bool into_prev) {
  if (g.scalar_type() != c10::CppTypeToScalarType<G>::value) return false;
  if (h.scalar_type() != c10::CppTypeToScalarType<S>::value) return false;
  if constexpr (std::is_same_v<G, S>) {
    if (into_prev) {
      update<G, S, true>(g.data_ptr<G>(), prev.data_ptr<S>(), h.data_ptr<S>(), g.numel(), beta, eps, scale);
      return true;
    }
  } else {
    TORCH_CHECK(!into_prev, "grad_diff: the rescaled gradient goes into prev_grad only when their dtypes agree");
  }
  update<G, S, false>(g.data_ptr<G>(), prev.data_ptr<S>(), h.data_ptr<S>(), g.numel(), beta, eps, scale);
  return true;
}

// One triple's update: the one-pass loop where it applies, else the reference's ATen ops.
void apply(const at::Tensor& g, const at::Tensor& prev, const at::Tensor& h, double beta, double eps,
           double scale, bool into_prev) {
  TORCH_CHECK(g.sizes() == prev.sizes() && g.sizes() == h.sizes(), "grad_diff: gradient and state shapes differ");
  const bool done = is_fast(g, prev, h) &&
                    (try_fast<float, float>(g, prev, h, beta, eps, scale, into_prev) ||
                     try_fast<double, double>(g, prev, h, beta, eps, scale, into_prev) ||
                     try_fast<c10::Half, float>(g, prev, h, beta, eps, scale, into_prev) ||
                     try_fast<c10::BFloat16, float>(g, prev, h, beta, eps, scale, into_prev) ||
                     try_fast<float, double>(g, prev, h, beta, eps, scale, into_prev));
  if (done) {  // raw pointer writes: tell autograd's version counters
    if (!into_prev) g.unsafeGetTensorImpl()->bump_version();
    prev.unsafeGetTensorImpl()->bump_version();
    h.unsafeGetTensorImpl()->bump_version();
  } else {
    reference(g, prev, h, beta, eps, scale, into_prev);
  }
}

bool finite(const at::Tensor& g) {
  if (g.device().is_cpu() && g.is_non_overlapping_and_dense()) {
    switch (g.scalar_type()) {
      case at::kFloat: return all_finite(g.data_ptr<float>(), g.numel());
      case at::kDouble: return all_finite(g.data_ptr<double>(), g.numel());
      case at::kHalf: return all_finite(g.data_ptr<c10::Half>(), g.numel());
      case at::kBFloat16: return all_finite(g.data_ptr<c10::BFloat16>(), g.numel());
      default: break;
    }
  }
  return at::isfinite(g).all().item<bool>();
}

}  // namespace

// The index of the first gradient holding inf/NaN, or -1 when all are finite.
int64_t first_nonfinite(const std::vector<at::Tensor>& grads) {
  for (size_t i = 0; i < grads.size(); ++i) {
    if (!finite(grads[i])) return static_cast<int64_t>(i);
  }
  return -1;
}

// The grad-diff update of every triple i with hyperparameter row rows[i]: betas/epss/scales[rows[i]]
// (scale = 1 / (1 - beta^t), the bias correction of its step t). into_prev[i] chooses where the
// rescaled gradient goes (see update()). No finiteness check: first_nonfinite() comes first.
void grad_diff_(const std::vector<at::Tensor>& grads, const std::vector<at::Tensor>& prevs,
                const std::vector<at::Tensor>& hs, const std::vector<int64_t>& rows,
                const std::vector<double>& betas, const std::vector<double>& epss,
                const std::vector<double>& scales, const std::vector<bool>& into_prev) {
  const size_t n = grads.size();
  TORCH_CHECK(prevs.size() == n && hs.size() == n && rows.size() == n && into_prev.size() == n,
              "grad_diff_: list lengths differ");
  TORCH_CHECK(betas.size() == epss.size() && betas.size() == scales.size(), "grad_diff_: row lengths differ");
  for (size_t i = 0; i < n; ++i) {
    const int64_t row = rows[i];
    TORCH_CHECK(row >= 0 && static_cast<size_t>(row) < betas.size(), "grad_diff_: bad row");
    apply(grads[i], prevs[i], hs[i], betas[row], epss[row], scales[row], into_prev[i]);
  }
}

// n bytes from s to d. Large copies use streaming stores: g_prev's lines are not read first
// (a plain store loads each line before overwriting it), a third less memory traffic.
void copy_bytes(char* d, const char* s, size_t n) {
#if defined(__AVX__)
  if (n >= (size_t{1} << 20)) {
    const size_t head = std::min(n, (32 - (reinterpret_cast<uintptr_t>(d) & 31)) & 31);
    std::memcpy(d, s, head);
    size_t i = head;
    for (; i + 32 <= n; i += 32) {
      _mm256_stream_si256(reinterpret_cast<__m256i*>(d + i), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i)));
    }
    std::memcpy(d + i, s + i, n - i);
    _mm_sfence();  // streaming stores are weakly ordered: finish them before anyone reads g_prev
    return;
  }
#endif
  std::memcpy(d, s, n);
}

// dsts[i] <- srcs[i]: the wrapper's refill of g_prev from p.grad after the base step. One copy
// per dense pair of one dtype and layout (at::copy_'s per-tensor dispatch dominates for small ones).
void copy_(const std::vector<at::Tensor>& dsts, const std::vector<at::Tensor>& srcs) {
  TORCH_CHECK(dsts.size() == srcs.size(), "copy_: list lengths differ");
  for (size_t i = 0; i < dsts.size(); ++i) {
    const at::Tensor& dst = dsts[i];
    const at::Tensor& src = srcs[i];
    if (dst.device().is_cpu() && src.device().is_cpu() && dst.scalar_type() == src.scalar_type() &&
        dense_alike(dst, src)) {
      char* d = static_cast<char*>(dst.data_ptr());
      const char* s = static_cast<const char*>(src.data_ptr());
      at::parallel_for(0, dst.numel() * dst.element_size(), 4 * kGrain, [&](int64_t b, int64_t e) {
        copy_bytes(d + b, s + b, static_cast<size_t>(e - b));
      });
      dst.unsafeGetTensorImpl()->bump_version();
    } else {
      dst.copy_(src);
    }
  }
}

// The in-place update of one (gradient, g_prev, h) triple given directly: batched training keeps
// them as flat [K, P] tensors. No finiteness check (the caller does it).
void grad_diff_tensor_(at::Tensor g, at::Tensor prev, at::Tensor h, double beta, double eps, double scale) {
  apply(g, prev, h, beta, eps, scale, false);
}
"""



def _cpu_flags() -> list[str]:
    """``-mavx2 -mfma`` where the CPU has them (std::fma is a slow libm call otherwise)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []
    return ["-mavx2", "-mfma"] if {"avx2", "fma"} <= set(flags) else []


# -fopenmp: at::parallel_for is inline and runs its chunks on OpenMP threads only when the caller
# is compiled with OpenMP (without it the kernel is serial whatever torch.get_num_threads() says).
# The extension then links libgomp.so.1, the runtime torch itself loaded, so there is one pool.
_OPENMP = torch.__config__.parallel_info().find("OpenMP") >= 0 and sys.platform.startswith("linux")
_FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", *_cpu_flags(), *(["-fopenmp"] if _OPENMP else [])]
_LDFLAGS = ["-fopenmp"] if _OPENMP else []
_NAME = "hessian_lr_graddiff_" + hashlib.sha256(
    (_CPP + repr(_FLAGS) + repr(_LDFLAGS) + torch.__version__).encode()
).hexdigest()[:12]

# How a process gets the kernel (HESSIAN_LR_KERNEL): "auto" builds it on first use where a C++
# toolchain exists; "prebuilt" only loads a kernel something else built; "never" hides it.
MODES = ("auto", "prebuilt", "never")
ENV_VAR = "HESSIAN_LR_KERNEL"
_MODE_ALIASES = {"": "auto", "1": "auto", "on": "auto", "0": "never", "off": "never"}

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_module: ModuleType | None = None
_failed: str | None = None  # why this process has no kernel, once it tried and failed


def mode() -> str:
    """The kernel mode from ``HESSIAN_LR_KERNEL`` (default ``"auto"``; ``0``/``off`` mean ``"never"``,
    ``1``/``on`` ``"auto"``); the older ``HESSIAN_LR_NO_KERNEL=1`` means ``"never"``.

    Returns:
        One of :data:`MODES`.

    Raises:
        ValueError: the variable holds anything else.
    """
    if os.environ.get("HESSIAN_LR_NO_KERNEL"):
        return "never"
    raw = os.environ.get(ENV_VAR, "").strip().lower()
    value = _MODE_ALIASES.get(raw, raw)
    if value not in MODES:
        raise ValueError(f"{ENV_VAR} must be one of {', '.join(MODES)} (or 0/1), got {raw!r}")
    return value


def _build_dir() -> str:
    """Where ``load_inline`` puts this kernel: torch's ``cpp_extension._get_build_directory``,
    computed here because importing ``torch.utils.cpp_extension`` (setuptools and all) costs
    ~0.1 s of every process that merely loads the built kernel. A test checks it against torch's."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root is None:
        from torch._appdirs import user_cache_dir

        if torch.version.hip is not None:
            accelerator = f"rocm{torch.version.hip.replace('.', '')}"
        elif torch.version.cuda is not None:
            accelerator = f"cu{torch.version.cuda.replace('.', '')}"
        else:
            accelerator = "cpu"
        python = f"py{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}"
        root = os.path.join(os.path.realpath(user_cache_dir(appname="torch_extensions")),
                            f"{python}_{accelerator}")
    return os.path.join(root, _NAME)


def _failure_file() -> str:
    """Where a failed build leaves its error, next to the build folder: later processes read it
    instead of spending another build on the same failure (delete it to retry)."""
    return _build_dir() + ".failed"


def is_built() -> bool:
    """True when the compiled kernel for this source and torch version is on disk (and the mode
    is not ``"never"``)."""
    if mode() == "never":
        return False
    try:
        return os.path.exists(os.path.join(_build_dir(), f"{_NAME}.so"))
    except Exception:  # noqa: BLE001 - an unusable cache dir just means "not built"
        return False


def _import_built() -> ModuleType:
    path = os.path.join(_build_dir(), f"{_NAME}.so")
    spec = importlib.util.spec_from_file_location(_NAME, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules.setdefault(_NAME, module)
    return module


def missing_toolchain() -> str | None:
    """What ``load_inline`` needs and this machine lacks (a C++ compiler, ninja), or None.

    Returns:
        A short reason such as ``"no C++ compiler (c++, g++ or $CXX) on PATH"``, or None.
    """
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None and shutil.which("g++") is None:
        return f"no C++ compiler ({compiler}, g++) on PATH"
    if shutil.which("ninja") is None and importlib.util.find_spec("ninja") is None:
        return "no ninja (pip install ninja)"
    return None


def build(verbose: bool = False) -> ModuleType:
    """Compile (or load the cached) kernel with ``torch.utils.cpp_extension.load_inline``.

    Args:
        verbose: print the compiler's commands and output.

    Returns:
        The extension module.

    Raises:
        Exception: whatever ``load_inline`` raises (no compiler, no ninja, a compile error).
    """
    from torch.utils.cpp_extension import load_inline

    return load_inline(
        name=_NAME,
        cpp_sources=[_CPP],
        functions=["first_nonfinite", "grad_diff_", "copy_", "grad_diff_tensor_"],
        extra_cflags=_FLAGS,
        extra_ldflags=_LDFLAGS,
        verbose=verbose,
    )


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    """An exclusive ``flock`` on ``<build dir>.lock`` while this process builds or loads.

    torch's own guard (``FileBaton``: a ``lock`` file created with ``O_EXCL`` inside the build
    folder, polled until it disappears) lets only one process build, but a builder killed midway
    leaves the file behind and every later process waits on it forever. A ``flock`` is released by
    the OS when its holder dies, so under it a leftover baton is known to be stale and is removed.
    Where ``fcntl`` does not exist (Windows) only torch's guard applies.
    """
    if fcntl is None:
        yield
        return
    directory = os.path.dirname(_build_dir())
    os.makedirs(directory, exist_ok=True)
    with open(_build_dir() + ".lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            _log.warning("waiting for another process building hessian-lr's fused grad-diff kernel (%s)",
                         _build_dir())
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(_build_dir(), "lock"))  # a dead builder's baton (see above)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_once(builder: Callable[[], ModuleType]) -> ModuleType:
    """Build the kernel unless another process did meanwhile, under :func:`_machine_lock`,
    announcing the build in one log line; a failure is recorded in :func:`_failure_file`.

    Raises:
        RuntimeError: the toolchain is missing, this source failed to build before, or
            ``builder`` failed (the message says which, in one line).
    """
    reason = missing_toolchain()
    if reason is not None:
        raise RuntimeError(reason)
    with _machine_lock():
        if os.path.exists(os.path.join(_build_dir(), f"{_NAME}.so")):
            return _import_built()  # another process built it while this one waited
        if os.path.exists(_failure_file()):
            raise RuntimeError(f"it failed to build before (see {_failure_file()}; delete it to retry)")
        _log.warning("building hessian-lr's fused grad-diff kernel once (~40 s), cached in %s", _build_dir())
        try:
            return builder()
        except Exception as exc:  # noqa: BLE001 - recorded, then reported by the caller
            error = " ".join(f"{type(exc).__name__}: {exc}".split())
            with contextlib.suppress(OSError):
                with open(_failure_file(), "w") as handle:
                    handle.write(error + "\n")
            raise RuntimeError(f"its build failed ({error[:200]}; recorded in {_failure_file()})") from exc


def load(compile: bool | None = None) -> ModuleType | None:
    """The kernel module, or None when it is unavailable (the caller uses the pure-torch path).

    Args:
        compile: whether to build the kernel when it is not built yet: ``None`` follows
            :func:`mode` (``"auto"`` builds, ``"prebuilt"`` does not), ``True`` builds (unless the
            mode is ``"never"``), ``False`` only loads a built kernel.

    Returns:
        The extension module, or None. A build happens at most once per process and, through a
        file lock, once per machine (other processes wait for it, then load it); it is announced
        in one log line (``hessian_lr.optim.kernel`` logger: on stderr unless logging is
        configured), and so is a fallback. Never raises for a missing compiler or a failed build.
    """
    global _module, _failed
    kernel_mode = mode()
    if kernel_mode == "never":  # checked first: it also hides an already-loaded kernel
        return None
    if _module is not None:
        return _module
    with _lock:
        if _module is not None:
            return _module
        if is_built():
            try:
                _module = _import_built()
                return _module
            except Exception:  # noqa: BLE001 - stale or foreign build: rebuild below if allowed
                pass
        if not (kernel_mode == "auto" if compile is None else compile) or _failed is not None:
            return None
        try:
            _module = _build_once(build)
        except Exception as exc:  # noqa: BLE001 - the pure-torch path takes over
            _failed = " ".join(str(exc).split())
            _log.warning(
                "hessian-lr's fused grad-diff kernel is unavailable: %s; using the pure-torch path "
                "(slower on CPU; %s=never silences this)", _failed, ENV_VAR,
            )
            return None
        return _module


def available() -> bool:
    """True when the kernel is loaded or loadable without compiling."""
    return _module is not None or is_built()


if __name__ == "__main__":
    import time

    logging.basicConfig(format="%(message)s")
    t0 = time.perf_counter()
    with _machine_lock():
        build(verbose=True)
    print(f"built {_NAME} in {time.perf_counter() - t0:.1f} s under {_build_dir()}")
