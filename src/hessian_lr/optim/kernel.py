"""An optional compiled (C++) kernel for the grad-diff pre-conditioning step.

One call does the whole step for a list of parameters: it reads each ``p.grad`` itself (skipping
parameters without one), optionally checks every gradient for inf/NaN *before* touching any
state, then makes one pass over memory per tensor that reads ``g, g_prev, h`` and writes
``g, g_prev, h`` -- the memory-traffic minimum -- with ``at::parallel_for`` over elements.
The arithmetic is the same sequence of roundings as
:func:`hessian_lr.optim.functional.single_tensor_grad_diff_` (contraction into FMA is disabled),
and tensors the fast loop does not cover (non-dense layouts, unusual dtype pairs, non-CPU
devices) go through the same ATen ops as that reference. ``grad_diff_tensor_(g, g_prev, h, beta,
eps, scale)`` is the same update for one triple of tensors given directly (batched training's
flat ``[K, P]`` state).

The extension is compiled with ``torch.utils.cpp_extension.load_inline`` the first time it is
*asked for* (about a minute on a 2-core machine; needs a C++ compiler and ninja) and cached on
disk under torch's extension directory, keyed by a hash of the source, so later processes load it
in well under a second. Nothing compiles unless a caller passes ``fused=True`` to
:class:`~hessian_lr.optim.HessianLRAdaptation` or calls :func:`load` / :func:`build` (``python -m
hessian_lr.optim.kernel`` builds it ahead of time). With ``fused=None`` (the default) the wrapper
uses the kernel only when it is already built. Set ``HESSIAN_LR_NO_KERNEL=1`` to never use it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import threading
import warnings
from types import ModuleType

import torch

__all__ = ["load", "build", "is_built", "available"]

_CPP = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#include <c10/util/BFloat16.h>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <tuple>
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

// g <- g / sqrt(hhat + eps), with h and g_prev updated; S is the state's dtype.
template <typename G, typename S>
void update(G* __restrict__ g, S* __restrict__ prev, S* __restrict__ h, int64_t n, double beta_d,
            double eps_d, double scale_d) {
  const S beta = static_cast<S>(beta_d);
  const S omb = static_cast<S>(1.0 - beta_d);
  const S eps = static_cast<S>(eps_d);
  const S scale = static_cast<S>(scale_d);
  at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const S gi = static_cast<S>(g[i]);
      const S nd = prev[i] - gi;                 // -d_t
      const S hn = std::fma(omb * nd, nd, h[i] * beta);  // as ATen's vectorized mul_ + addcmul_
      h[i] = hn;
      prev[i] = gi;
      const S r = S(1) / std::sqrt(hn * scale + eps);
      g[i] = static_cast<G>(r * gi);
    }
  });
}

// The reference's ATen ops, for anything the loop above does not cover.
void reference(at::Tensor g, at::Tensor prev, at::Tensor h, double beta, double eps, double scale) {
  prev.sub_(g);
  h.mul_(beta).addcmul_(prev, prev, 1.0 - beta);
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

template <typename G, typename S>
bool try_fast(const at::Tensor& g, const at::Tensor& prev, const at::Tensor& h, double beta,
              double eps, double scale) {
  if (g.scalar_type() != c10::CppTypeToScalarType<G>::value) return false;
  if (h.scalar_type() != c10::CppTypeToScalarType<S>::value) return false;
  update<G, S>(g.data_ptr<G>(), prev.data_ptr<S>(), h.data_ptr<S>(), g.numel(), beta, eps, scale);
  return true;
}

// Whether the one-pass loop covers this triple (dense CPU tensors of one layout).
bool is_fast(const at::Tensor& g, const at::Tensor& prev, const at::Tensor& h) {
  return g.device().is_cpu() && prev.device().is_cpu() && h.device().is_cpu() && dense_alike(g, prev) &&
         dense_alike(g, h) && prev.scalar_type() == h.scalar_type();
}

// One triple's update: the one-pass loop where it applies, else the reference's ATen ops.
void apply(const at::Tensor& g, const at::Tensor& prev, const at::Tensor& h, bool fast, double beta, double eps,
           double scale) {
  const bool done = fast && (try_fast<float, float>(g, prev, h, beta, eps, scale) ||
                             try_fast<double, double>(g, prev, h, beta, eps, scale) ||
                             try_fast<c10::Half, float>(g, prev, h, beta, eps, scale) ||
                             try_fast<c10::BFloat16, float>(g, prev, h, beta, eps, scale) ||
                             try_fast<float, double>(g, prev, h, beta, eps, scale));
  if (done) {
    g.unsafeGetTensorImpl()->bump_version();
    prev.unsafeGetTensorImpl()->bump_version();
    h.unsafeGetTensorImpl()->bump_version();
  } else {
    reference(g, prev, h, beta, eps, scale);
  }
}

bool finite(const at::Tensor& g, bool fast) {
  if (fast) {
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

// One call for every parameter of every group. Tensor i uses hyperparameter row rows[i]:
// betas/epss/scales[rows[i]] (scale = 1 / (1 - beta^t), the bias correction of its step t).
// Returns (index, kind, skipped): kind 0 = done; 1 = params[index] has a non-finite gradient and
// nothing was changed; 2 = params[index] has a sparse gradient and nothing was changed.
// `skipped` lists the indices without a gradient (or not requiring one), left untouched.
std::tuple<int64_t, int64_t, std::vector<int64_t>> grad_diff_step(
    const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& prevs,
    const std::vector<at::Tensor>& hs, const std::vector<int64_t>& rows, const std::vector<double>& betas,
    const std::vector<double>& epss, const std::vector<double>& scales, bool check_finite) {
  const size_t n = params.size();
  TORCH_CHECK(prevs.size() == n && hs.size() == n && rows.size() == n, "grad_diff_step: list lengths differ");
  TORCH_CHECK(betas.size() == epss.size() && betas.size() == scales.size(), "grad_diff_step: row lengths differ");
  std::vector<at::Tensor> grads(n);
  std::vector<char> fast(n, 0);
  std::vector<int64_t> skipped;
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = params[i];
    at::Tensor g = p.grad();
    if (!g.defined() || !p.requires_grad()) { skipped.push_back(static_cast<int64_t>(i)); continue; }
    if (g.is_sparse()) return {static_cast<int64_t>(i), 2, {}};
    TORCH_CHECK(rows[i] >= 0 && static_cast<size_t>(rows[i]) < betas.size(), "grad_diff_step: bad row");
    TORCH_CHECK(g.sizes() == prevs[i].sizes() && g.sizes() == hs[i].sizes(),
                "grad_diff_step: gradient and state shapes differ for parameter ", i);
    fast[i] = is_fast(g, prevs[i], hs[i]);
    grads[i] = std::move(g);
  }
  if (check_finite) {
    for (size_t i = 0; i < n; ++i) {
      if (grads[i].defined() && !finite(grads[i], fast[i])) return {static_cast<int64_t>(i), 1, {}};
    }
  }
  for (size_t i = 0; i < n; ++i) {
    if (grads[i].defined()) apply(grads[i], prevs[i], hs[i], fast[i], betas[rows[i]], epss[rows[i]], scales[rows[i]]);
  }
  return {-1, 0, skipped};
}

// The same update on one (gradient, g_prev, h) triple given directly, without parameters: batched
// training keeps them as flat [K, P] tensors. No finiteness check (the caller does it).
void grad_diff_tensor_(at::Tensor g, at::Tensor prev, at::Tensor h, double beta, double eps, double scale) {
  TORCH_CHECK(g.sizes() == prev.sizes() && g.sizes() == h.sizes(), "grad_diff_tensor_: gradient and state shapes differ");
  apply(g, prev, h, is_fast(g, prev, h), beta, eps, scale);
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


_FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", *_cpu_flags()]
_NAME = "hessian_lr_graddiff_" + hashlib.sha256(
    (_CPP + repr(_FLAGS) + torch.__version__).encode()
).hexdigest()[:12]

_lock = threading.Lock()
_module: ModuleType | None = None
_failed: str | None = None


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


def is_built() -> bool:
    """True when the compiled kernel for this source and torch version is on disk."""
    if os.environ.get("HESSIAN_LR_NO_KERNEL"):
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


def build(verbose: bool = False) -> ModuleType:
    """Compile (or load the cached) kernel; raises if no compiler is available."""
    from torch.utils.cpp_extension import load_inline

    return load_inline(
        name=_NAME,
        cpp_sources=[_CPP],
        functions=["grad_diff_step", "grad_diff_tensor_"],
        extra_cflags=_FLAGS,
        verbose=verbose,
    )


def load(compile: bool = True) -> ModuleType | None:
    """The kernel module, or None when it is unavailable.

    ``compile=False`` only loads an already-built kernel. ``compile=True`` builds it if needed
    (once per machine and source version; a warning says so) and returns None with a warning if
    the build fails, so callers can fall back to the pure-torch path.
    """
    global _module, _failed
    if _module is not None:
        return _module
    if os.environ.get("HESSIAN_LR_NO_KERNEL"):
        return None
    with _lock:
        if _module is not None:
            return _module
        if is_built():
            try:
                _module = _import_built()
                return _module
            except Exception:  # noqa: BLE001 - stale or foreign build: rebuild below if allowed
                pass
        if not compile or _failed is not None:
            return None
        warnings.warn(
            "hessian_lr: compiling the fused grad-diff kernel (once per machine, cached under "
            f"{_build_dir()}); this takes about a minute",
            stacklevel=3,
        )
        try:
            _module = build()
        except Exception as exc:  # noqa: BLE001 - no compiler / ninja: fall back to torch ops
            _failed = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"hessian_lr: fused kernel unavailable, using pure-torch ops ({_failed})", stacklevel=3)
            return None
        return _module


def available() -> bool:
    """True when the kernel is loaded or loadable without compiling."""
    return _module is not None or is_built()


if __name__ == "__main__":
    import time

    t0 = time.perf_counter()
    build(verbose=True)
    print(f"built {_NAME} in {time.perf_counter() - t0:.1f} s under {_build_dir()}")
