"""The ``hessian-lr`` command: parses, validates, calls the library, prints errors as one line.

Bad input — a value of the wrong type, out of range or not finite, an unknown name, a place that
cannot be used, a storage that cannot be reached, a file of the wrong shape — ends with exit code
2 and a single ``hessian-lr: error: ...`` line on stderr that names the option or the file,
before anything is created; never a traceback. A run that fails on the way (a full disk, a
database that went away for good) ends with one such line and exit code 1; Ctrl-C, at any
moment, with ``hessian-lr: interrupted; ...`` and exit code 130 (:mod:`hessian_lr.interrupts`).
The CLI holds no logic a test would need: every subcommand calls one library function.
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from hessian_lr import events, interrupts
from hessian_lr.protocols import PROTOCOLS  # the presets, beside the write-up they reproduce

__all__ = ["main", "build_parser", "console_main"]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
PROG = "hessian-lr"
INTERRUPTED = f"{PROG}: interrupted; run the same command again to resume"
MAX_SEED = 2**32 - 1  # numpy's seed range
MAX_THREADS = 1024
MAX_COUNT = 10**6
MAX_FIDELITY_LR = 10.0  # Adam's lr; far beyond any that trains, below any that overflows


class UsageError(Exception):
    """A problem with the user's input: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse prints usage + message; we want one line
        raise UsageError(message)


def _int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer in [{low}, {high}], got {text!r}")
        return value

    parse.__name__ = "integer"
    return parse


_positive_int = _int_in(1, MAX_COUNT)
_thread_count = _int_in(1, MAX_THREADS)


def _float_in(low: float, high: float) -> Callable[[str], float]:
    """An argparse type: a finite number in (low, high] — "inf", "nan" and "1e309" (which is inf
    as a float) are refused, as float() alone would accept them."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or not low < value <= high:
            raise argparse.ArgumentTypeError(f"expected a finite number in ({low:g}, {high:g}], got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


_positive_float = _float_in(0.0, sys.float_info.max)


def _folder(text: str) -> Path:
    """An argparse type: a folder path (not empty: Path('') would be the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder path, got an empty string")
    return Path(text)


def _check_out_dir(out: Path) -> None:
    """Refuse an output folder that cannot be written, without creating it (the run does)."""
    from hessian_lr.tuning.storage import folder_problem

    problem = folder_problem(out)
    if problem:
        raise UsageError(f"cannot write to output folder {out}: {problem}")


# -- compare ----------------------------------------------------------------------------------------

def _add_protocol_options(parser: argparse.ArgumentParser, defaults: dict[str, str]) -> None:
    """The options compare and suite share; ``defaults`` words their help where they differ."""
    from hessian_lr.arms import ARMS
    from hessian_lr.arms.names import REFERENCE_ESTIMATOR, estimator_names

    add = parser.add_argument
    add("--trials", type=_positive_int, help="Optuna trials per optimizer (default: 20)")
    add("--seed", type=_int_in(0, MAX_SEED), help="seed of the sampler, initial weights and batch order (default: 0)")
    add("--optimizers", help=f"comma-separated arms (default: {defaults['optimizers']}); the first is the baseline. "
        f"An arm is a known name ({', '.join(ARMS)}), an import path package.module:name of your own Arm or optimizer "
        "factory (params, lr, **hyperparameters), any of these wrapped in HessianLRAdaptation as hessian-<arm> "
        "(grad-diff estimator: hessian-adam, hessian-lion, hessian-my_pkg.mod:MyOpt) or hessian-<arm>-<estimator> "
        f"(another estimator: {', '.join(e for e in estimator_names() if e != REFERENCE_ESTIMATOR)}; e.g. "
        "hessian-sgd-secant; every arm can be wrapped but those whose step differentiates the gradient: adahessian, "
        "sophiah), or a name declared by an [arms.NAME] table in --config")
    add("--lr-low", type=_positive_float, help="lower end of the log-uniform lr search range (default: 1e-4)")
    add("--lr-high", type=_positive_float, help="upper end of the log-uniform lr search range (default: 1e-1)")
    add("--storage", help="Optuna storage: a journal-file path or an RDB URL such as sqlite:///x.db or "
        "postgresql+psycopg2://user@host:port/db (default: OUT/optuna.journal)")
    add("--space", choices=("default", "wide"), help="search space preset: 'default' = each arm's own space (the "
        "lr, log-uniform in [--lr-low, --lr-high]); 'wide' = also momentum/beta1, beta2, eps, weight decay and, for "
        "wrapped arms, curvature_beta and curvature_eps (Choi et al. 2019). [space.ARM] tables in --config set any "
        "constructor hyperparameter per arm")
    add("--studies", type=_positive_int, help="independent tuning studies per optimizer (different sampler seeds), "
        "each with its own final runs, to measure tuning luck (default: 1)")
    add("--seeds", type=_positive_int, help="final runs per optimizer with seeds SEED..SEED+K-1, paired across "
        f"optimizers (default: {defaults['seeds']})")
    add("--ablation", action=argparse.BooleanOptionalAction, default=None,
        help=f"also train every optimizer at every other optimizer's tuned lr (default: {defaults['ablation']})")
    add("--workers", type=_int_in(0, 256), help="worker processes (default: 0 = automatic: one per optimizer up to the CPU "
        "count; with --batch-trials above 1 one process, whose optimizers train side by side in threads)")
    add("--batch-trials", type=_positive_int, help="train this many models at once with torch.func, for trials "
        "(asked from TPE with constant liar) and final seeds (default: 1 = plain sequential)")
    add("--batch-startup", action=argparse.BooleanOptionalAction, default=None,
        help="train TPE's 10 random start-up trials (which depend only on the sampler seed) as one batch: "
        "the same lrs as one by one, trained to float tolerance of sequential runs (default: on; "
        "--no-batch-startup with --workers 1 --batch-trials 1 is the plain sequential, bit-reproducible mode)")
    add("--study", help=f"prefix of the Optuna study names, one study per optimizer (default: {defaults['study']})")
    add("--threads", type=_thread_count, help="intra-op torch threads per process (default: 1, as tiny models "
        "are faster and steadier so on a shared machine; a single batched process shares its cores among its "
        "optimizers, each training in its own thread while cores last)")
    add("--device", help="where the models train: auto (CUDA where present, else CPU; default), cpu, cuda, cuda:N, mps")
    add("--devices", help="comma-separated devices, one worker process on each (e.g. cuda:0,cuda:1; default: "
        "one device, --device)")
    add("--precision", choices=("fp32", "bf16", "fp16"), help="fp32 (default); bf16 or fp16: the forward under "
        "torch.autocast, fp16 with a GradScaler (its skipped steps never reach the optimizer)")
    add("--compile", action=argparse.BooleanOptionalAction, default=None,
        help="torch.compile each model (trained one at a time; default: off)")
    _add_data_dir_option(parser)
    add("--config", type=Path, help="TOML file with any of these options by long name, [space.ARM] tables and "
        "[arms.NAME] tables (base = an arm, estimator = its name, and the estimator's options); flags override it")
    add("--quiet", action="store_true", help="no progress bars or summary table")


def _add_data_dir_option(parser: argparse.ArgumentParser) -> None:
    from hessian_lr.workloads.datadir import DATA_ENV
    from hessian_lr.workloads.registry import DATA_WORKLOADS

    parser.add_argument("--data-dir", type=_folder, help=f"folder the workloads that read data from disk "
                        f"({', '.join(DATA_WORKLOADS)}) read it from; 'hessian-lr data download' fetches it there "
                        f"(default: ${DATA_ENV}, else data/ in the cache folder: $HESSIAN_LR_CACHE, else "
                        "~/.cache/hessian-lr)")


def _use_data_dir(args: argparse.Namespace) -> None:
    """``--data-dir`` becomes ``$HESSIAN_LR_DATA`` of this process, which its worker processes inherit."""
    if getattr(args, "data_dir", None) is not None and getattr(args, "command", None) != "data":
        import os

        from hessian_lr.workloads.datadir import DATA_ENV

        os.environ[DATA_ENV] = str(args.data_dir)


def _add_compare_options(parser: argparse.ArgumentParser) -> None:
    from hessian_lr.workloads import WORKLOADS
    from hessian_lr.workloads.registry import DATA_WORKLOADS

    add = parser.add_argument
    add("--out", type=_folder, help="run folder for results.json, trials.csv, comparison.png, report.md and the "
        "Optuna study (default: runs/compare)")
    add("--workload", help=f"workload (default: mnist1d-mlp); known: {', '.join(WORKLOADS)}; reading data from "
        f"--data-dir: {', '.join(DATA_WORKLOADS)}; or an import path "
        "package.module:name of your own Workload, or of a factory returning one (its keyword options: a [workload] "
        "table in --config)")
    add("--epochs", type=_positive_int, help="training epochs of every trial and final run (default: the workload's "
        "budget, 20 for mnist1d-mlp)")
    add("--steps", type=_positive_int, help="a budget in optimizer steps instead of epochs (default: the workload's "
        "budget); the curves then index steps")
    add("--eval-every", type=_positive_int, help="evaluate on the validation split every N steps and after the last "
        "(default: after every epoch); the curves then index steps")
    add("--protocol", choices=("seed", "full"), help="presets: 'full' = 10 paired seeds and the equal-lr ablation "
        "(default); 'seed' = the original write-up's one final run per optimizer (explicit --seeds/--ablation win)")
    _add_protocol_options(parser, {"optimizers": "adam,hessian-adam", "seeds": "10; 1 with --protocol seed",
                                   "ablation": "on; off with --protocol seed", "study": "compare"})


def _add_suite_options(parser: argparse.ArgumentParser) -> None:
    from hessian_lr.workloads import WORKLOADS

    add = parser.add_argument
    add("--out", type=_folder, help="suite folder: suite.json, suite.md, suite.html, profiles.png, the shared Optuna "
        "journal and one compare run folder per workload (default: runs/suite)")
    add("--workloads", help=f"'all' or comma-separated workloads (default: all = {', '.join(WORKLOADS)}), known "
        "names or import paths package.module:name of your own; each trains for its own default budget")
    add("--fidelity", action=argparse.BooleanOptionalAction, default=None,
        help="also measure every estimator against the exact Hessian diagonal on every workload (default: on)")
    add("--question", choices=("estimators", "bases"), help="run the arms that answer one of the write-up's open "
        "questions, and say so in the report: 'estimators' = adam, sgd and each wrapped with every curvature "
        "estimator; 'bases' = adam, sgd, adamw, lion, adabelief, soap, each bare and wrapped (grad-diff). It sets "
        "the arms: --optimizers (or optimizers in --config) must then be left out (default: none)")
    _add_protocol_options(parser, {"optimizers": "adam,hessian-adam,sgd,hessian-sgd", "seeds": "5",
                                   "ablation": "off", "study": "suite"})


COMPARE_KEYS = ("out", "trials", "epochs", "seed", "optimizers", "workload", "lr_low", "lr_high", "storage",
                "workers", "threads", "seeds", "ablation", "batch_trials", "batch_startup", "study", "space", "studies",
                "steps", "eval_every", "device", "precision", "compile", "devices")


SUITE_KEYS = tuple(k for k in COMPARE_KEYS if k not in ("workload", "epochs", "steps", "eval_every")) + (
    "workloads", "fidelity", "question")


def _settings(args: argparse.Namespace, keys: tuple[str, ...], allowed: set[str]) -> dict[str, Any]:
    """Defaults < the protocol preset < the TOML file < the flags given."""
    from hessian_lr.config import load_toml

    settings = dict(PROTOCOLS[args.protocol]) if getattr(args, "protocol", None) else {}
    settings.update(load_toml(args.config, allowed) if args.config is not None else {})
    settings.update({k: getattr(args, k) for k in keys if getattr(args, k) is not None})
    if isinstance(settings.get("optimizers"), str):
        settings["optimizers"] = settings["optimizers"].split(",")
    return settings


def _compare_config(args: argparse.Namespace) -> Any:
    from dataclasses import fields

    from hessian_lr.config import CompareConfig

    config = CompareConfig(**_settings(args, COMPARE_KEYS, {f.name for f in fields(CompareConfig)}))
    _check_run(config)
    return config


def _check_run(config: Any) -> None:
    """What a compare run needs before anything is created: spaces that fit their arms, a
    storage that can be used, an output folder that can be written."""
    from hessian_lr.pipeline.compare import check_spaces
    from hessian_lr.tuning.storage import check_storage

    from hessian_lr.workloads.registry import check_data

    _check_out_dir(config.out)
    check_data(config.workload, config.workload_options)
    check_spaces(config)
    check_storage(config.storage, config.out)


def _suite_config(args: argparse.Namespace) -> Any:
    from dataclasses import fields

    from hessian_lr.pipeline.compare import check_spaces
    from hessian_lr.pipeline.suite import SuiteConfig
    from hessian_lr.tuning.storage import check_storage

    config = SuiteConfig(**_settings(args, SUITE_KEYS, {f.name for f in fields(SuiteConfig)}))
    from hessian_lr.workloads.registry import check_data

    _check_out_dir(config.out)
    for workload in config.workloads:
        check_data(workload)
        check_spaces(config.compare_config(workload))
    check_storage(config.storage, config.out)
    return config


# True in the console script's own process (console_main), where the CLI may tune the garbage
# collector; False when main() is called from other Python code.
_OWN_PROCESS = False


def _freeze_imported_objects() -> None:
    """Exempt every object alive now — the imported modules of torch, optuna and matplotlib,
    ~200k objects — from garbage collection. A full collection otherwise walks them all, several
    times per run, holding the GIL that every training thread needs (~0.1-0.2 s of a 4 s
    compare). Called by commands once they have imported what they use; only in the console
    script's own process."""
    if _OWN_PROCESS:
        gc.freeze()


def _checked(update: Callable[[Any], None]) -> Callable[[Any], None]:
    """A progress callback that first raises a Ctrl-C Python discarded (see interrupts.check)."""
    def progress(event: Any) -> None:
        interrupts.check()
        update(event)

    return progress


def _compare(args: argparse.Namespace) -> None:
    config = _compare_config(args)
    import hessian_lr.report  # noqa: F401 - the outputs' modules, imported now so that the freeze covers them
    from hessian_lr.pipeline import run_compare
    from hessian_lr.console import ProgressDisplay, print_summary

    _freeze_imported_objects()
    with ProgressDisplay(config, enabled=not args.quiet) as display:
        results = run_compare(config, progress=_checked(display.update))
    if not args.quiet:
        print_summary(results, config.out)


def _suite(args: argparse.Namespace) -> None:
    config = _suite_config(args)
    import hessian_lr.report  # noqa: F401 - imported before the freeze, as in compare
    from hessian_lr.console import SuiteProgressDisplay
    from hessian_lr.pipeline.suite import run_suite

    _freeze_imported_objects()
    with SuiteProgressDisplay(config, enabled=not args.quiet) as display:
        run_suite(config, progress=_checked(display.update))
    if not args.quiet:
        print(f"suite:  {config.out / 'suite.json'}\nreport: {config.out / 'suite.md'} and {config.out / 'suite.html'}\n"
              f"plot:   {config.out / 'profiles.png'}")


# -- worker ---------------------------------------------------------------------------------------

def _worker(args: argparse.Namespace) -> None:
    from hessian_lr.pipeline import run_worker

    if not args.study.strip() or "." in args.study:
        raise UsageError(f"--study must be a non-empty name without '.', got {args.study!r}")
    _freeze_imported_objects()
    if args.device is not None:
        from hessian_lr.training.placement import resolve_device

        resolve_device(args.device)  # a device that is not there: one line, before joining anything
    names = run_worker(args.storage, args.study, threads=args.threads, progress=_checked(lambda event: None),
                       overrides={} if args.device is None else {"device": args.device})
    print(f"finished: {', '.join(names)}")


# -- report -----------------------------------------------------------------------------------------

def _report(args: argparse.Namespace) -> None:
    from hessian_lr.pipeline.outputs import write_outputs
    from hessian_lr.pipeline.suite import SUITE_FILE, write_suite
    from hessian_lr.results import Results, check_results, check_suite

    if not args.run_dir.is_dir():
        raise UsageError(f"cannot read {args.run_dir}: not a folder (give a run folder holding results.json)")
    suite = args.run_dir / SUITE_FILE
    if suite.exists():
        data = _read_run_file(suite, "suite")
        check_suite(data, suite)
        try:
            write_suite(data, args.run_dir)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise UsageError(f"{suite} is not a valid suite file: {_reason(exc)}") from None
        print(f"suite report written to {args.run_dir / 'suite.md'}")
        return
    path = args.run_dir / "results.json"
    data = _read_run_file(path, "results")
    check_results(data, path)
    try:
        results = Results.from_dict(data)
        write_outputs(results, args.run_dir)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise UsageError(f"{path} is not a valid results file: {_reason(exc)}") from None
    print(f"report written to {args.run_dir / 'report.md'}")


def _reason(exc: BaseException) -> str:
    return f"missing key {exc}" if isinstance(exc, KeyError) else f"{exc}" or type(exc).__name__


def _read_run_file(path: Path, kind: str) -> Any:
    from hessian_lr.results import read_json

    try:
        return read_json(path)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"{path} is not a valid {kind} file: not JSON ({exc})") from None


# -- fidelity ---------------------------------------------------------------------------------------

def _fidelity(args: argparse.Namespace) -> None:
    from hessian_lr.analysis.fidelity import DEFAULT_ESTIMATORS, format_fidelity_table, run_fidelity
    from hessian_lr.optim.estimators import ESTIMATORS

    estimators = tuple(e.strip() for e in args.estimators.split(",") if e.strip()) if args.estimators \
        else DEFAULT_ESTIMATORS
    unknown = [e for e in estimators if e not in ESTIMATORS]
    if unknown or not estimators:
        raise UsageError(f"unknown estimator(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(ESTIMATORS)}")
    from hessian_lr.workloads import WORKLOADS

    if args.workload not in WORKLOADS:
        raise UsageError(f"unknown workload {args.workload!r}; choose from {', '.join(WORKLOADS)}")
    _check_out_dir(args.out)
    result = run_fidelity(args.out, workload=args.workload, estimators=estimators, epochs=args.epochs, lr=args.lr,
                          seed=args.seed, exact_on=args.exact_on, exact_rows=args.exact_rows,
                          reference_probes=args.reference_probes, threads=args.threads, plot=not args.no_plot,
                          progress=None if args.quiet else (lambda line: print(line, file=sys.stderr)))
    print(format_fidelity_table(result))
    print(f"written: {args.out / 'fidelity.json'}" + ("" if args.no_plot else f", {args.out / 'fidelity.png'}"))


# -- dashboard --------------------------------------------------------------------------------------

def _dashboard(args: argparse.Namespace) -> None:
    from hessian_lr.dashboard import serve_dashboard

    serve_dashboard(args.run_dir, host=args.host, port=args.port)  # checks the storage and the address first


def _data_download(args: argparse.Namespace) -> None:
    from hessian_lr.workloads.datasets import download

    print(f"{args.dataset}: {download(args.dataset, args.data_dir, force=args.force)}")


# -- the parser -------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Curvature-adaptive learning rates: tune and compare "
                     "HessianLRAdaptation against baselines.")
    from hessian_lr import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    compare = commands.add_parser(
        "compare", help="tune each optimizer with Optuna, train the best settings, write the report",
        description="Tune each optimizer's search space (by default its learning rate) with Optuna on equal budgets, "
        "train the best settings with paired seeds and write results.json, trials.csv, comparison.png and report.md. "
        "The same command run again resumes: finished trials and final runs are reused.")
    _add_compare_options(compare)
    compare.set_defaults(handler=_compare)

    suite = commands.add_parser(
        "suite", help="compare's protocol on every workload, and one report across them",
        description="Run compare's protocol (tuning on equal budgets, paired-seed finals) for every (workload, "
        "optimizer), the estimator-fidelity study of every workload, and write suite.json, suite.md, suite.html and "
        "profiles.png: per-workload tables, a win/tie/loss table, AlgoPerf performance profiles and a generated "
        "conclusion. The same command run again resumes; workers on a shared --storage can join with "
        "'hessian-lr worker --study SUITE_STUDY'.")
    _add_suite_options(suite)
    suite.set_defaults(handler=_suite)

    worker = commands.add_parser(
        "worker", help="join a compare or suite run on a shared storage (many machines, one per GPU)",
        description="Work on the run that 'hessian-lr compare|suite --storage URL --study NAME' started: on a database "
        "storage, its trials and final runs, following a suite from workload to workload, until the run is done "
        "(started first, it waits for the run); on a journal file, the trials of the studies that exist. Start any "
        "number of these on any hosts that reach the storage; each needs the run's arms and workloads importable "
        "(the same packages, and the folder of your own modules as the current folder).")
    worker.add_argument("--storage", required=True, help="the shared storage URL, e.g. "
                        "postgresql+psycopg2://user@host:5432/hessian_lr")
    worker.add_argument("--study", default="compare", help="the study name prefix given to compare (default: compare)")
    worker.add_argument("--threads", type=_thread_count, default=1, help="intra-op torch threads (default: 1)")
    worker.add_argument("--device", help="where this worker's models train, e.g. cuda:1 for one worker per GPU "
                        "(default: the run's --device)")
    _add_data_dir_option(worker)
    worker.set_defaults(handler=_worker)

    report = commands.add_parser("report", help="rebuild the report from a saved results.json (no training)",
                                 description="Rebuild trials.csv, comparison.png and report.md from RUN_DIR/"
                                 "results.json without training.")
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder holding results.json")
    report.set_defaults(handler=_report)

    fidelity = commands.add_parser(
        "fidelity", help="how well each curvature estimator tracks the exact Hessian diagonal",
        description="Train the workload's model with Adam and, at checkpoints, compare every estimator's current "
        "estimate with the exact Hessian diagonal (Spearman, Pearson, log-Pearson, median relative error). "
        "Writes OUT/fidelity.json, OUT/fidelity.md and OUT/fidelity.png.")
    fidelity.add_argument("--out", type=_folder, default=Path("runs/fidelity"), help="output folder (default: runs/fidelity)")
    fidelity.add_argument("--workload", default="mnist1d-mlp", help="any workload; its exact diagonal comes by its "
                          "own route: closed form (quadratics), Gauss-Newton identity (piecewise-linear nets), or "
                          "Hessian-vector products (GRU, transformer; time grows with the rows, see --exact-rows); "
                          "estimators that need logits are skipped on regression workloads (default: mnist1d-mlp)")
    fidelity.add_argument("--estimators", help="comma-separated (default: all)")
    fidelity.add_argument("--epochs", type=_int_in(1, 100_000), help="training epochs (default: the workload's budget)")
    fidelity.add_argument("--lr", type=_float_in(0.0, MAX_FIDELITY_LR), default=2e-3,
                          help=f"Adam's lr for the watched run, in (0, {MAX_FIDELITY_LR:g}] (default: 2e-3)")
    fidelity.add_argument("--seed", type=_int_in(0, MAX_SEED), default=0, help="seed (default: 0)")
    fidelity.add_argument("--exact-on", choices=("train", "val"), default="train",
                          help="rows the exact diagonal is computed on (default: train)")
    fidelity.add_argument("--exact-rows", type=_int_in(1, 10**7), help="compute the exact diagonal on the first N rows of that "
                          "split only (default: all; ~15 s per checkpoint for the transformer on all 768 rows, "
                          "~60 s for the GRU on 3,500)")
    fidelity.add_argument("--reference-probes", type=_int_in(0, 10_000), default=100,
                          help="Hutchinson/GNB probes of the one-shot reference estimates (default: 100; 0 = none)")
    fidelity.add_argument("--threads", type=_thread_count, default=1, help="intra-op torch threads (default: 1)")
    fidelity.add_argument("--no-plot", action="store_true", help="skip fidelity.png")
    fidelity.add_argument("--quiet", action="store_true", help="no progress lines")
    fidelity.set_defaults(handler=_fidelity)

    dashboard = commands.add_parser("dashboard", help="browse a run's trials with optuna-dashboard",
                                    description="Serve RUN_DIR's Optuna storage with optuna-dashboard (the "
                                    "'dashboard' extra) on a local address.")
    dashboard.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a compare run folder")
    dashboard.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    dashboard.add_argument("--port", type=_int_in(1, 65535), default=8080, help="port (default: 8080)")
    dashboard.set_defaults(handler=_dashboard)

    data = commands.add_parser("data", help="fetch the data sets of the real workloads (cifar10, shakespeare)",
                               description="Manage the data sets that workloads read from disk.")
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION", parser_class=_Parser, required=True)
    download = data_commands.add_parser(
        "download", help="fetch a data set, verify its published checksum and install it",
        description="Download DATASET once (the only command that uses the network), check it against its published "
        "checksum, and install it under --data-dir atomically: a failed download leaves nothing behind. Data already "
        "there that read cleanly are kept.")
    from hessian_lr.workloads.datadir import DATA_ENV
    from hessian_lr.workloads.datasets import SOURCES

    download.add_argument("dataset", choices=tuple(SOURCES), metavar="DATASET", help="cifar10 (a 170 MB archive, "
                          "installed as cifar-10-batches-py/) or shakespeare (shakespeare_char/input.txt, 1.1 MB)")
    download.add_argument("--data-dir", type=_folder, help=f"data folder (default: ${DATA_ENV}, else data/ in the "
                          "cache folder: $HESSIAN_LR_CACHE, else ~/.cache/hessian-lr)")
    download.add_argument("--force", action="store_true", help="download again even if the data are there")
    download.set_defaults(handler=_data_download)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes (tests replace it per test)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _log_to_stderr() -> None:
    """Notices of the library (a repaired journal) as ``hessian-lr: warning: ...`` lines."""
    logger = logging.getLogger("hessian_lr")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(f"{PROG}: warning: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code (0, 1 a run that failed, 2 bad
    input, 130 interrupted), having printed at most one ``hessian-lr: ...`` line for it."""
    own_handler = not interrupts.installed()
    interrupts.install()  # main thread only; the console script installed it already
    try:
        return _main(argv)
    finally:
        if own_handler:
            interrupts.uninstall()


def _main(argv: Sequence[str] | None) -> int:
    message: object = ""
    try:
        if _OWN_PROCESS:
            # No collections while torch and the registries are imported (every object they make
            # lives as long as the process; the collections they would trigger cost ~0.15 s).
            gc.disable()
        try:
            parser = build_parser()
        finally:
            if _OWN_PROCESS:
                _freeze_imported_objects()
                gc.enable()
        _log_to_stderr()
        import hessian_lr.pipeline.compare  # noqa: F401 - caches numpy's float limits before training (see there)
        args = parser.parse_args(argv)
        handler: Callable[[argparse.Namespace], None] | None = getattr(args, "handler", None)
        if handler is None:
            parser.print_help()
            return EXIT_USAGE
        _use_data_dir(args)
        handler(args)
        code = 0
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except (UsageError, ValueError) as exc:
        code, message = EXIT_USAGE, exc
    except Exception as exc:
        if not _is_run_failure(exc):
            raise
        code, message = EXIT_FAILED, _os_error(exc) if isinstance(exc, OSError) else exc
    if interrupts.received() or code == EXIT_INTERRUPTED:
        print(INTERRUPTED, file=sys.stderr)
        return EXIT_INTERRUPTED
    if code:
        print(f"{PROG}: error: {_one_line(message)}", file=sys.stderr)
    return code


def _is_run_failure(exc: BaseException) -> bool:
    """A run that failed on the way for a reason outside it (one line, exit code 1), not a bug."""
    if isinstance(exc, OSError):
        return True
    from hessian_lr.tuning.storage import JournalWriteError, StorageLost
    from hessian_lr.workloads.datasets import DownloadError

    return isinstance(exc, (JournalWriteError, StorageLost, DownloadError))


def _os_error(exc: OSError) -> str:
    where = f" {exc.filename}" if exc.filename else ""
    return f"cannot use{where}: {exc.strerror or exc}"


def console_main() -> None:
    """The ``hessian-lr`` console script: Ctrl-C handling from the first moment, :func:`main`,
    then a quick exit.

    Every output is written and closed by the time ``main`` returns; ``gc.freeze()`` spares the
    interpreter's final garbage collection over torch's, optuna's and matplotlib's object graphs
    (~0.4 s of every command, for memory the OS takes back anyway). Not in ``main`` itself, which
    tests and library users call in a process that goes on. Whatever ends the command, what
    :mod:`hessian_lr.interrupts` still holds (lanes to join, workers to end) is done with SIGINT
    only counted, and a SIGINT that came at any point makes the exit code 130."""
    global _OWN_PROCESS
    _OWN_PROCESS = True
    code = EXIT_INTERRUPTED
    reported = False
    try:
        interrupts.install()
        events.announce("cli-start")
        code = main()
        reported = code == EXIT_INTERRUPTED or bool(interrupts.received())
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    while True:  # at most one KeyboardInterrupt is ever raised: a second pass cannot be cut short
        try:
            interrupts.quiet()
            interrupts.run_cleanups()
            if interrupts.received():
                code = EXIT_INTERRUPTED
            if code == EXIT_INTERRUPTED and not reported:
                reported = True
                print(INTERRUPTED, file=sys.stderr)
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            gc.freeze()
            break
        except KeyboardInterrupt:
            code = EXIT_INTERRUPTED
    sys.exit(code)


if __name__ == "__main__":
    console_main()
