"""How well does each curvature estimator track the exact Hessian diagonal during training?

Protocol (:func:`run_fidelity`): train the workload's model with one base optimizer (torch Adam
by default) and, on that single trajectory, feed every estimator the same information in
*shadow* — each keeps its own state exactly as it would inside ``HessianLRAdaptation``, but
never changes the gradient the base optimizer sees. Each step:

* the minibatch gradient ``g_t`` at ``θ_{t−1}`` (the base optimizer's input);
* one Hutchinson sample ``z ⊙ Hz`` and one Gauss–Newton–Bartlett sample from the same minibatch
  (for ``hutchinson`` and ``gauss-newton``), both folded in with the estimator's own ``absorb_``;
* gradient-only estimators run their own ``precondition_`` on a copy of ``g_t``.

At each checkpoint (after ``t`` steps, before the base optimizer takes step ``t``) the exact
diagonal of the training objective — the workload's loss (plus its L2 penalty) over *all*
training rows (or the validation rows with ``exact_on="val"``, or the first ``exact_rows`` of
them), at the parameters where ``g_t`` was taken — is computed with
:func:`hessian_lr.analysis.exact.workload_hessian_diagonal` by the workload's exact route and
compared with each estimate over all parameters. Estimates are first put in curvature units,
``sign(e)·|e|^(1/estimate_power)`` (the square root for grad-diff and squared-grad); Spearman and
log-magnitude correlations do not depend on that choice. Metrics (:func:`fidelity_metrics`):

* ``pearson`` / ``spearman`` over all coordinates (exact zeros from dead units included);
* ``log_pearson``: Pearson of ``log|estimate|`` vs ``log exact`` over coordinates where both are
  non-zero;
* ``median_rel_error``: median of ``|estimate − exact| / exact`` over coordinates with
  ``exact > 0`` — meaningful only for estimators in the units of ``diag(H)`` (secant,
  hutchinson, gauss-newton); ``median_rel_error_fitted`` first rescales the estimate by the one
  constant that best matches in log space (the median log-ratio), so it compares shapes.

``references`` adds two instantaneous estimators computed at each checkpoint on the same rows
as the exact diagonal: Hutchinson and Gauss–Newton–Bartlett averaged over ``reference_probes``
draws. They show what each sampling scheme can reach without an EMA across a moving trajectory.

Gauss–Newton–Bartlett (``gauss-newton``) samples labels from the model's softmax, so it applies to
classification workloads only; on regression workloads it is skipped and listed under ``skipped``
with the reason. Its samples carry no L2 term (as in the optimizer), while the exact diagonal does.
:func:`suite_fidelity` runs the study at reduced settings for a benchmark suite.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hessian_lr.analysis.exact import workload_hessian_diagonal
from hessian_lr.arms import Arm, TrainStep
from hessian_lr.optim.estimators import CurvatureEstimator, get_estimator
from hessian_lr.optim.hvp import gauss_newton_bartlett_sample, hutchinson_sample
from hessian_lr.training.loop import InMemoryBatches, Schedule, run_schedule
from hessian_lr.training.records import Run
from hessian_lr.training.single import SingleModel
from hessian_lr.workloads import Splits, Workload, get_workload

__all__ = [
    "DEFAULT_ESTIMATORS",
    "METRICS",
    "fidelity_metrics",
    "default_checkpoints",
    "run_fidelity",
    "suite_fidelity",
    "format_fidelity_table",
    "plot_fidelity",
]

DEFAULT_ESTIMATORS = ("grad-diff", "squared-grad", "secant", "secant-rms", "hutchinson", "gauss-newton")
NEEDS_LOGITS = {"gauss-newton": "samples labels from the model's softmax: classification workloads only"}
METRICS = ("spearman", "pearson", "log_pearson", "median_rel_error", "median_rel_error_fitted")


def _nan_to_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _pearson(a: Tensor, b: Tensor) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denom = float(a.norm() * b.norm())
    return float((a * b).sum()) / denom if denom > 0 else math.nan


def _ranks(a: Tensor) -> Tensor:
    """Average ranks (ties share the mean rank), as scipy.stats.rankdata(method="average")."""
    values, inverse, counts = torch.unique(a, sorted=True, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).to(torch.float64)
    mean_rank = ends - (counts.to(torch.float64) - 1) / 2  # 1-based average rank of each group
    return mean_rank[inverse]


def fidelity_metrics(estimate: Tensor, exact: Tensor, *, power: float = 1.0) -> dict[str, float | None]:
    """Agreement of one flattened estimate with the exact diagonal (see the module docstring)."""
    e = estimate.detach().reshape(-1).to(torch.float64)
    h = exact.detach().reshape(-1).to(torch.float64)
    if power != 1.0:
        e = e.sign() * e.abs().pow(1.0 / power)
    positive = h > 0
    both = positive & (e != 0)
    out: dict[str, float | None] = {
        "spearman": _nan_to_none(_pearson(_ranks(e), _ranks(h))),
        "pearson": _nan_to_none(_pearson(e, h)),
        "log_pearson": None,
        "median_rel_error": None,
        "median_rel_error_fitted": None,
    }
    if int(both.sum()) > 1:
        out["log_pearson"] = _nan_to_none(_pearson(e[both].abs().log(), h[both].log()))
    if int(positive.sum()) > 0:
        out["median_rel_error"] = float(((e[positive] - h[positive]).abs() / h[positive]).median())
        if int(both.sum()) > 0:
            scale = float((h[both].log() - e[both].abs().log()).median().exp())
            out["median_rel_error_fitted"] = float(((scale * e[positive] - h[positive]).abs() / h[positive]).median())
    return out


def default_checkpoints(steps_per_epoch: int, epochs: int) -> list[int]:
    """After epoch 1 (start), a quarter, half (middle) and the last epoch (end), as step counts."""
    epochs_at = sorted({1, max(1, epochs // 4), max(1, epochs // 2), epochs})
    return [e * steps_per_epoch for e in epochs_at]


def _flat(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors])


def run_fidelity(
    out_dir: Path,
    *,
    workload: str = "mnist1d-mlp",
    estimators: Sequence[str | CurvatureEstimator] = DEFAULT_ESTIMATORS,
    epochs: int | None = None,
    lr: float = 2e-3,
    beta: float = 0.99,
    eps: float = 1e-8,
    seed: int = 0,
    checkpoints: Sequence[int] | None = None,
    exact_on: str = "train",
    exact_rows: int | None = None,
    reference_probes: int = 100,
    threads: int | None = 1,
    plot: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train ``workload`` with Adam(``lr``) for ``epochs`` (default: the workload's budget) and
    measure every estimator against the exact diagonal.

    Writes ``out_dir/fidelity.json`` (the returned dict) and, with ``plot``, ``out_dir/fidelity.png``.
    ``checkpoints`` are step counts (default :func:`default_checkpoints`); ``exact_on`` is
    ``"train"`` (the training objective) or ``"val"``; ``exact_rows`` limits the exact diagonal to
    the first rows of that split (the exact diagonal of the objective on those rows: the
    Hessian-vector-product route costs time in proportion to the rows). ``threads`` sets torch's
    intra-op threads for the run (restored afterwards; ``None`` leaves them). Estimators that need
    logits are skipped on regression workloads (``result["skipped"]``).
    """
    if exact_on not in ("train", "val"):
        raise ValueError(f"exact_on must be 'train' or 'val', got {exact_on!r}")
    if epochs is None:
        epochs = get_workload(workload).epochs
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if exact_rows is not None and exact_rows < 1:
        raise ValueError(f"exact_rows must be >= 1, got {exact_rows}")
    say = progress or (lambda message: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(out_dir, workload, estimators, epochs, lr, beta, eps, seed, checkpoints, exact_on,
                    exact_rows, reference_probes, plot, say)
    finally:
        torch.set_num_threads(previous_threads)


SUITE_EXACT_ROWS = 128  # rows of the exact diagonal on the Hessian-vector-product route in suite_fidelity


def suite_fidelity(
    out_dir: Path,
    workload: str,
    *,
    seed: int = 0,
    lr: float = 2e-3,
    estimators: Sequence[str | CurvatureEstimator] = DEFAULT_ESTIMATORS,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """:func:`run_fidelity` at the reduced settings of a benchmark suite: half the workload's budget
    (at least one epoch), checkpoints after the first and the last epoch, the exact diagonal on the first :data:`SUITE_EXACT_ROWS` training rows where the route is
    ``"hvp"`` (all rows otherwise), 10 reference probes, no figure. Writes ``out_dir/fidelity.json``
    and ``fidelity.md`` and returns the result."""
    work = get_workload(workload)
    epochs = max(1, work.epochs // 2)
    steps_per_epoch = work.steps_per_epoch()
    return run_fidelity(
        out_dir, workload=workload, estimators=estimators, epochs=epochs, lr=lr, seed=seed,
        checkpoints=sorted({steps_per_epoch, epochs * steps_per_epoch}),
        exact_rows=SUITE_EXACT_ROWS if work.curvature == "hvp" else None,
        reference_probes=10, plot=False, progress=progress,
    )


class _ShadowStep(TrainStep):
    """The watched run's training step: the base optimizer's gradient, plus every estimator fed
    in shadow from the same minibatch, and the exact diagonal at the checkpoints (at the
    parameters where ``g_t`` was taken, before the base optimizer takes step ``t``).

    The skeleton calls :meth:`backward` once per step (``step`` 0-based); it leaves the
    gradient in ``p.grad`` for the base optimizer's ``step()``. ``model`` is set once the model
    set is built."""

    plain = False
    stacks = False

    def __init__(self, work: Workload, estimators: list[CurvatureEstimator], beta: float, eps: float,
                 checkpoints: list[int], exact: tuple[Tensor, Tensor], reference_probes: int, total_steps: int,
                 say: Callable[[str], None], seed: int) -> None:
        self.work, self.estimators, self.beta, self.eps = work, estimators, beta, eps
        self.checkpoints, self.x_exact, self.y_exact = set(checkpoints), *exact
        self.reference_probes, self.total_steps, self.say = reference_probes, total_steps, say
        self.probe_rng = torch.Generator().manual_seed(seed + 1)  # shadow samples never touch the global RNG
        self.model: nn.Module | None = None
        self.states: dict[str, list[dict[str, Any]]] = {}
        self.wants_hutchinson = any(est.name == "hutchinson" for est in estimators)
        self.wants_gnb = any(est.name == "gauss-newton" for est in estimators)
        self.names = [est.name for est in estimators]
        self.series: dict[str, dict[str, list]] = {name: {m: [] for m in METRICS} for name in self.names}
        self.references: dict[str, dict[str, list]] = {}
        self.scatter: dict[str, Any] = {}
        self.exact_seconds = 0.0
        self.train_losses: list[float] = []

    def backward(self, optimizer: torch.optim.Optimizer, loss: Tensor, *, logits: Tensor, step: int) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if not self.states:
            self.states = {est.name: [dict(step=0, **est.init(p, p.dtype)) for p in params] for est in self.estimators}
        step += 1  # the checkpoints count steps from 1
        gnb = gauss_newton_bartlett_sample(logits, params, generator=self.probe_rng, retain_graph=True) \
            if self.wants_gnb else None
        if self.wants_hutchinson:
            grads, hutch = hutchinson_sample(loss, params, generator=self.probe_rng)
        else:
            grads, hutch = list(torch.autograd.grad(loss, params)), None
        self.train_losses.append(float(loss.detach()))
        for est in self.estimators:
            states = self.states[est.name]
            for state in states:
                state["step"] += 1
            if est.name in ("hutchinson", "gauss-newton"):
                if est.due(step - 1):
                    for state, sample in zip(states, hutch if est.name == "hutchinson" else gnb):
                        est.absorb_(state, sample, beta=self.beta)
            else:
                with torch.no_grad():
                    est.precondition_([g.clone() for g in grads], params, states, beta=self.beta, eps=self.eps,
                                      step=step, foreach=False)
        if step in self.checkpoints:
            self._checkpoint(step, params)
        for p, g in zip(params, grads):
            p.grad = g

    def _checkpoint(self, step: int, params: list[Tensor]) -> None:
        assert self.model is not None
        self.model.eval()
        t0 = time.perf_counter()
        exact = _flat(workload_hessian_diagonal(self.work, self.model, self.x_exact, self.y_exact))
        self.exact_seconds += time.perf_counter() - t0
        estimates = {}
        for est in self.estimators:
            estimate = _flat([est.estimate(s, beta=self.beta, step=step) for s in self.states[est.name]])
            estimates[est.name] = estimate
            for metric, value in fidelity_metrics(estimate, exact, power=est.estimate_power).items():
                self.series[est.name][metric].append(value)
        for ref_name, ref in _references(self.work, self.model, params, self.x_exact, self.y_exact,
                                         self.reference_probes, self.probe_rng).items():
            bucket = self.references.setdefault(ref_name, {m: [] for m in METRICS})
            estimates[ref_name] = ref
            for metric, value in fidelity_metrics(ref, exact, power=1.0).items():
                bucket[metric].append(value)
        self.scatter = {"step": step, "exact": exact, "estimates": estimates}
        row = ", ".join(f"{name} {self.series[name]['spearman'][-1]:.2f}"
                        if self.series[name]["spearman"][-1] is not None else f"{name} -" for name in self.names)
        self.say(f"step {step}/{self.total_steps}: Spearman {row}")
        self.model.train()


def _run(out_dir: Path, workload_name: str, estimator_specs: Sequence[str | CurvatureEstimator], epochs: int,
         lr: float, beta: float, eps: float, seed: int, checkpoints: Sequence[int] | None, exact_on: str,
         exact_rows: int | None, reference_probes: int, plot: bool, say: Callable[[str], None]) -> dict[str, Any]:
    """The watched run: the training skeleton (one model, torch Adam at ``lr``) with the shadow
    step (:class:`_ShadowStep`), then the result files."""
    start_time = time.perf_counter()
    work = get_workload(workload_name)
    data = work.data
    if not isinstance(data, Splits):
        raise ValueError(f"workload {work.name!r}: the fidelity study needs in-memory splits (its exact diagonal "
                         "is over the training rows), not loaders")
    x_train = data.x_train
    x_exact, y_exact = (x_train, data.y_train) if exact_on == "train" else (data.x_val, data.y_val)
    x_exact, y_exact = x_exact[:exact_rows], y_exact[:exact_rows]
    batch_size = work.batch_size
    steps_per_epoch = work.steps_per_epoch()
    total_steps = steps_per_epoch * epochs
    checkpoints = sorted(set(checkpoints or default_checkpoints(steps_per_epoch, epochs)))
    if checkpoints[0] < 1 or checkpoints[-1] > total_steps:
        raise ValueError(f"checkpoints must lie in [1, {total_steps}] (steps), got {checkpoints}")

    estimators = [get_estimator(spec) for spec in estimator_specs]
    classification = work.task == "classification"
    skipped = {est.name: NEEDS_LOGITS[est.name] for est in estimators if not classification and est.name in NEEDS_LOGITS}
    estimators = [est for est in estimators if est.name not in skipped]
    for name, why in skipped.items():
        say(f"fidelity: {name} skipped on {work.name} ({work.task}): {why}")
    if not estimators:
        raise ValueError(f"no estimator applies to {work.name}: {', '.join(skipped)} need logits")
    names = [est.name for est in estimators]
    if len(set(names)) != len(names):
        raise ValueError(f"estimator names must be unique, got {names}")

    shadow = _ShadowStep(work, estimators, beta, eps, checkpoints, (x_exact, y_exact), reference_probes, total_steps,
                         say, seed)
    base = Arm(name="adam (watched)", build=torch.optim.Adam, step=shadow)
    run = Run({"lr": lr}, seed)
    models = SingleModel(work, base, run)
    shadow.model = models.model
    parameters = sum(p.numel() for p in models.params)
    say(f"fidelity: {work.name}, {parameters:,} parameters, {total_steps} steps, checkpoints {checkpoints}")
    [trained] = run_schedule(work, models, [run], InMemoryBatches(work, [seed]), Schedule(steps_per_epoch, epochs),
                             evaluate_test=False)
    powers = {est.name: est.estimate_power for est in estimators}
    result: dict[str, Any] = {
        "checkpoints": checkpoints,
        "estimators": shadow.series,
        "references": shadow.references,
        "skipped": skipped,
        "estimate_power": powers,
        "config": {
            "workload": work.name,
            "task": work.task,
            "exact_route": work.curvature,
            "l2": work.l2,
            "parameters": parameters,
            "base_optimizer": "torch.optim.Adam",
            "lr": lr,
            "beta": beta,
            "eps": eps,
            "seed": seed,
            "epochs": epochs,
            "batch_size": batch_size,
            "exact_on": exact_on,
            "exact_rows": int(len(x_exact)),
            "exact_rows_of": int(len(x_train) if exact_on == "train" else len(data.x_val)),
            "reference_probes": reference_probes,
            "estimators": {est.name: repr(est) for est in estimators},
        },
        "final_val_loss": trained.val_loss,
        "train_loss_first_last": [shadow.train_losses[0], shadow.train_losses[-1]],
        "wall_s": time.perf_counter() - start_time,
        "exact_wall_s": shadow.exact_seconds,
    }
    (out_dir / "fidelity.json").write_text(json.dumps(result, indent=2) + "\n")
    if plot:
        plot_fidelity(result, shadow.scatter, out_dir / "fidelity.png")
    (out_dir / "fidelity.md").write_text(format_fidelity_table(result) + "\n")
    say(f"wrote {out_dir / 'fidelity.json'} ({result['wall_s']:.1f} s)")
    return result


def _references(work, model: nn.Module, params: list[Tensor], x: Tensor, y: Tensor, probes: int,
                rng: torch.Generator) -> dict[str, Tensor]:
    """Instantaneous Hutchinson (on the objective) and, for classification, GNB estimates averaged
    over ``probes`` draws on (x, y)."""
    if probes < 1:
        return {}
    refs: dict[str, Tensor] = {}
    with torch.enable_grad():
        logits = model(x)
        loss = work.loss_fn(logits, y) + work.penalty(params)
        if work.task == "classification":
            gnb_sum = None
            for _ in range(probes):
                sample = _flat(gauss_newton_bartlett_sample(logits, params, generator=rng, retain_graph=True))
                gnb_sum = sample if gnb_sum is None else gnb_sum + sample
            refs[f"gauss-newton-x{probes}"] = gnb_sum / probes
        _, hutch = hutchinson_sample(loss, params, n_samples=probes, generator=rng)
    return {f"hutchinson-x{probes}": _flat(hutch), **refs}


def format_fidelity_table(result: dict[str, Any]) -> str:
    """A markdown table: one row per estimator (and reference), one column group per metric."""
    steps = result["checkpoints"]
    rows = {**result["estimators"], **{f"{k} (ref)": v for k, v in result.get("references", {}).items()}}
    lines = []
    for metric in ("spearman", "log_pearson", "pearson", "median_rel_error", "median_rel_error_fitted"):
        lines.append(f"**{metric}** at steps {', '.join(map(str, steps))}")
        lines.append("")
        lines.append("| estimator | " + " | ".join(f"step {s}" for s in steps) + " |")
        lines.append("|---|" + "---:|" * len(steps))
        for name, series in rows.items():
            cells = ["–" if v is None else f"{v:.3g}" if "error" in metric else f"{v:.3f}" for v in series[metric]]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    for name, why in result.get("skipped", {}).items():
        lines.append(f"- {name}: skipped ({why})")
    return "\n".join(lines).rstrip()


def plot_fidelity(result: dict[str, Any], scatter: dict[str, Any], path: Path) -> None:
    """Scatter of estimate vs exact (log–log, one panel per estimator, at the last checkpoint) and
    Spearman / log-Pearson over training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(scatter["estimates"])
    powers = {**result.get("estimate_power", {})}
    cols = 4
    rows = math.ceil(len(names) / cols) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.6 * rows), squeeze=False)
    exact = scatter["exact"].numpy()
    positive = exact > 0
    for ax, name in zip(axes[:-1].flat, names):
        est = scatter["estimates"][name]
        power = powers.get(name, 1.0)
        e = (est.sign() * est.abs().pow(1.0 / power)).numpy()
        keep = positive & (e != 0)
        neg = keep & (e < 0)
        ax.loglog(exact[keep & ~neg], abs(e[keep & ~neg]), ".", ms=1.5, alpha=0.4, label="estimate > 0")
        if neg.any():
            ax.loglog(exact[neg], abs(e[neg]), ".", ms=1.5, alpha=0.4, color="tab:red", label="estimate < 0 (|·|)")
            ax.legend(fontsize=7, loc="upper left", markerscale=4)
        unit = "" if power == 1.0 else f"^(1/{power:g})"
        ax.set_title(f"{name}{unit}", fontsize=9)
        ax.set_xlabel("exact diag(H)", fontsize=8)
    for ax in list(axes[:-1].flat)[len(names):]:
        ax.axis("off")
    steps = result["checkpoints"]
    panels = [("spearman", "Spearman"), ("log_pearson", "Pearson of log magnitudes"), ("pearson", "Pearson"),
              ("median_rel_error_fitted", "median rel. error (best scale)")]
    all_series = {**result["estimators"], **{f"{k} (ref)": v for k, v in result.get("references", {}).items()}}
    for ax, (metric, title) in zip(axes[-1], panels):
        for name, series in all_series.items():
            ys = [math.nan if v is None else v for v in series[metric]]
            ax.plot(steps, ys, marker="o", ms=3, label=name, ls="--" if name.endswith("(ref)") else "-")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        if metric == "median_rel_error_fitted":
            ax.set_yscale("log")
    axes[-1][0].legend(fontsize=7)
    fig.suptitle(f"Estimated vs exact Hessian diagonal ({result['config']['workload']}, "
                 f"{result['config']['parameters']:,} params; scatter at step {scatter['step']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
