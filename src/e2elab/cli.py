"""The command line: list, run, reproduce, report, export, diagnose snr.

Every user error becomes one line on stderr, ``e2elab: error: ...``, and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from e2elab import experiment as experiments
from e2elab.blame import describe as describe_user_error
from e2elab.blame import user_frame
from e2elab.claims import Verdict
from e2elab.errors import E2ELabError, choices
from e2elab.paths import not_a_store, writable_file, writable_folder
from e2elab.records import Settings

# The training half (torch) is imported inside the commands that train: ``report``,
# ``export`` and ``list --help`` start without it.

DEFAULT_OUT = Path("runs")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2, as argparse does)."""

    def error(self, message: str) -> NoReturn:
        raise E2ELabError(f"{message} (see '{self.prog} --help')")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Every user error is one line and exit code 2; Ctrl-C and SIGTERM
    exit 130 keeping what is stored; anything unforeseen is one line and exit code 1
    (``E2ELAB_DEBUG=1`` shows its traceback)."""
    parser = _build_parser()
    previous = _terminate_as_interrupt()
    # like `python -m`: a user's own package in the current folder can be named as
    # --task my_pkg.tasks:Task (worker processes inherit this path)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        args = parser.parse_args(argv)
        if not hasattr(args, "handler"):
            parser.print_help()
            return 2
        return args.handler(args)
    except E2ELabError as error:
        print(f"e2elab: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("e2elab: interrupted; results already written are kept", file=sys.stderr)
        return 130
    except OSError as error:  # a file system problem the checks could not foresee
        print(f"e2elab: error: {error}; nothing stored was lost", file=sys.stderr)
        return 2
    except Exception as error:
        if os.environ.get("E2ELAB_DEBUG"):
            raise
        where = user_frame(error)
        if where is not None:  # raised in the user's own task or system code
            print(f"e2elab: error: {describe_user_error(error, where)}", file=sys.stderr)
            return 2
        text = " ".join(str(error).split())[:300]
        print(
            f"e2elab: internal error: {type(error).__name__}: {text} (a bug: please report "
            "it; E2ELAB_DEBUG=1 shows the traceback); results already stored are kept",
            file=sys.stderr,
        )
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminate_as_interrupt() -> Any:
    """SIGTERM ends a command the way Ctrl-C does (workers stop, the store is kept)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


NO_BATCH_HELP = "train each seed alone (default: the seeds of a spec train together, vmapped)"
EXECUTOR_HELP = "local (default: a process pool, one process per core), serial or ray"


def _executor_flags(command: argparse.ArgumentParser) -> None:
    command.add_argument("--executor", default=None, help=EXECUTOR_HELP)
    command.add_argument(
        "--address", help="Ray cluster address HOST:PORT (with --executor ray; default: local)"
    )
    command.add_argument("--workers", type=int, help="processes for --executor local")
    command.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    command.add_argument("--no-batch-seeds", action="store_true", help=NO_BATCH_HELP)
    command.add_argument("--force", action="store_true", help="retrain runs already stored")
    command.add_argument(
        "--save-modules",
        nargs="?",
        const="*",
        metavar="MODULE[,MODULE...]",
        help="keep the trained modules (all, or those named) in the store, for --load and "
        "'e2elab modules export'",
    )
    command.add_argument(
        "--oracle",
        metavar="SET[;SET...]",
        help="also evaluate with ports forced to their true values: 'trained' (the ports "
        "of the modules the last phase trains), 'others', or port patterns",
    )
    command.add_argument(
        "--max-hours",
        type=float,
        help="refuse a sweep whose estimated time (from timed training steps) exceeds this",
    )


def _setting_flags(command: argparse.ArgumentParser) -> None:
    """A flag for every Settings field whose metadata asks for one (see records.setting):
    --budget, --batch-size, --lr, ..., each defaulting to the task's own."""
    types = {"int": int, "float": float, "str": str}
    for f in dataclasses.fields(Settings):
        if f.metadata.get("flag"):
            command.add_argument(
                "--" + f.name.replace("_", "-"),
                type=types[str(f.type)],
                help=f"{f.metadata['help']} (default: the task's)",
            )


def _build_parser() -> _Parser:
    parser = _Parser(prog="e2elab", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(title="commands", parser_class=_Parser)

    listing = commands.add_parser("list", help="tasks, strategies and knobs with their defaults")
    listing.set_defaults(handler=_cmd_list)

    run = commands.add_parser("run", help="train a task under strategies and seeds")
    run.add_argument(
        "--task",
        default="digit-chain",
        help="task: a shipped name, module:Class, or a published entry point "
        "(default: digit-chain)",
    )
    run.add_argument(
        "--knob", action="append", default=[], metavar="NAME=VALUE", help="set a task knob"
    )
    run.add_argument(
        "--strategy",
        action="append",
        default=[],
        metavar="NAME[:K=V,...]",
        help="strategy to train (repeatable; default: all; frozen_others without "
        "module=... means one run per module)",
    )
    run.add_argument("--seeds", type=int, default=3, help="number of seeds, 0..N-1 (default 3)")
    run.add_argument(
        "--ports", action="store_true", help="a column per port in the table, in its own metric"
    )
    run.add_argument(
        "--name", help="the experiment's name in the store (default: run-TASK-HASH of the flags)"
    )
    _setting_flags(run)
    run.add_argument(
        "--load",
        action="append",
        default=[],
        metavar="MODULE=RUN_ID|FILE",
        help="start MODULE from a saved module: a run id in the --out store (saved with "
        "--save-modules) or a checkpoint file; freeze it with the strategy's freeze=MODULE",
    )
    run.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"folder of the store, OUT/results.sqlite (default: {DEFAULT_OUT})",
    )
    _executor_flags(run)
    run.set_defaults(handler=_cmd_run)

    reproduce = commands.add_parser("reproduce", help="run a shipped experiment, then report")
    reproduce.add_argument("experiment", help="shipped experiment name or path to a YAML file")
    reproduce.add_argument("--quick", action="store_true", help="the quick profile")
    reproduce.add_argument("--profile", help="a named profile of the experiment")
    reproduce.add_argument("--out", type=Path, help="output folder (default results/NAME)")
    _versions_flag(reproduce)
    _executor_flags(reproduce)
    reproduce.set_defaults(handler=_cmd_reproduce)

    report = commands.add_parser("report", help="claims and figures from a results store")
    report.add_argument(
        "store",
        type=Path,
        nargs="+",
        help="results.sqlite files; with several, one page each under OUT and an index",
    )
    report.add_argument("-o", "--out", type=Path, required=True, help="folder for the report")
    report.add_argument("--experiment", help="report only this experiment in the store")
    _versions_flag(report)
    report.set_defaults(handler=_cmd_report)

    checks = commands.add_parser(
        "checks", help="every claim check: its parameters, their types, what a PASS means"
    )
    checks.add_argument("name", nargs="?", help="one check (default: all)")
    checks.add_argument(
        "--markdown", action="store_true", help="as docs/checks.md (generated from the code)"
    )
    checks.set_defaults(handler=_cmd_checks)

    prune = commands.add_parser(
        "prune", help="drop the runs of older code that later runs of the same cell replaced"
    )
    prune.add_argument("store", type=Path, help="a results.sqlite file")
    prune.add_argument(
        "--dry-run", action="store_true", help="say what would be dropped, drop nothing"
    )
    prune.set_defaults(handler=_cmd_prune)

    diagnose = commands.add_parser("diagnose", help="diagnostics: gradient SNR per module")
    which = diagnose.add_subparsers(title="diagnostics", parser_class=_Parser)
    snr = which.add_parser("snr", help="gradient signal-to-noise per module against a knob")
    snr.add_argument("--task", default="digit-chain", help="task (default digit-chain)")
    snr.add_argument("--knob", action="append", default=[], metavar="NAME=VALUE")
    snr.add_argument(
        "--sweep", required=True, metavar="NAME=V1,V2,...", help="the knob to vary, e.g. n=1,2,3"
    )
    snr.add_argument("--strategy", action="append", default=[], help="default: e2e and hinted")
    snr.add_argument("--inits", type=int, default=3, help="random initialisations (default 3)")
    snr.add_argument("--batches", type=int, default=32, help="mini-batches per init (default 32)")
    snr.add_argument("--batch-size", type=int, help="examples per batch (default: task's)")
    snr.add_argument(
        "--out", type=Path, default=Path("results/snr"), help="folder of the store and figure"
    )
    snr.add_argument("--force", action="store_true", help="measure again what is stored")
    snr.set_defaults(handler=_cmd_snr)

    rerun = commands.add_parser(
        "rerun", help="retrain one stored run and say whether it reproduced bit for bit"
    )
    rerun.add_argument("store", type=Path, help="a results.sqlite file")
    rerun.add_argument("run_id", help="the run's id (or a unique prefix of it)")
    rerun.set_defaults(handler=_cmd_rerun)

    modules = commands.add_parser("modules", help="list or export the modules runs saved")
    actions = modules.add_subparsers(title="actions", parser_class=_Parser)
    listed = actions.add_parser("list", help="the runs of a store that saved modules")
    listed.add_argument("store", type=Path, help="a results.sqlite file")
    listed.set_defaults(handler=_cmd_modules_list)
    exported = actions.add_parser("export", help="write one saved module as a checkpoint file")
    exported.add_argument("store", type=Path, help="a results.sqlite file")
    exported.add_argument("run_id", help="the run's id (or a unique prefix of it)")
    exported.add_argument("module", help="the module's name, e.g. recognizer")
    exported.add_argument("-o", "--output", type=Path, required=True, help=".safetensors file")
    exported.set_defaults(handler=_cmd_modules_export)

    export = commands.add_parser("export", help="write a store's runs or curves as a table")
    export.add_argument("store", type=Path, help="a results.sqlite file")
    export.add_argument("--format", default="csv", help="csv (default), parquet or json")
    export.add_argument(
        "--table", default="runs", help="runs (one row per run, default) or curves (long form)"
    )
    export.add_argument("--experiment", help="only this experiment's runs")
    export.add_argument(
        "--to",
        default="table",
        help="table (default: a file in --format), mlflow (a local MLflow store in the folder "
        "-o) or tensorboard (event files in the folder -o)",
    )
    _versions_flag(export, "with --to mlflow|tensorboard: ")
    export.add_argument(
        "-o", "--output", type=Path, required=True, help="file to write (a folder with --to)"
    )
    export.set_defaults(handler=_cmd_export)
    return parser


def _cmd_checks(args: argparse.Namespace) -> int:
    from e2elab.checkdoc import documented, markdown

    docs = documented()
    if args.name is not None and args.name not in {d.name for d in docs}:
        raise choices("check", args.name, [d.name for d in docs])
    if args.markdown:
        print(markdown(), end="")
        return 0
    table = Table(title="claim checks (docs/checks.md has the conventions)", show_lines=True)
    for column in ("check", "parameters (type = default)", "PASS means"):
        table.add_column(column, overflow="fold")
    for doc in docs:
        if args.name is not None and doc.name != args.name:
            continue
        params = "\n".join(
            f"{p.name}: {p.type}" + ("" if p.default is None else f" = {p.default}")
            for p in doc.parameters
        )
        meaning = doc.summary + (f"\n\n{doc.details}" if args.name and doc.details else "")
        table.add_row(doc.name, escape(params), escape(meaning))  # list[str] is no style tag
    wide_console().print(table)
    return 0


def _slug(name: str) -> str:
    return re.sub(r"[^\w.+-]", "-", name)


def _version() -> str:
    from e2elab import __version__
    from e2elab.records import SPEC_VERSION
    from e2elab.store import SCHEMA_VERSION

    return f"e2elab {__version__} (spec version {SPEC_VERSION}, store schema {SCHEMA_VERSION})"


def _versions_flag(command: argparse.ArgumentParser, what: str = "") -> None:
    command.add_argument(
        "--all-versions",
        action="store_true",
        help=f"{what}read runs of older code too, labelled (default: the current code's only)",
    )


def _cmd_prune(args: argparse.Namespace) -> int:
    from e2elab import versions
    from e2elab.store import Store

    with Store(args.store, readonly=args.dry_run, create=False) as store:
        _, old = versions.split(store.results())
        if not old:
            print(f"{args.store}: no runs of older code; nothing to drop")
            return 0
        counts: dict[tuple[str, str], int] = {}
        for result in old:
            key = (result.spec["strategy"], result.code_version)
            counts[key] = counts.get(key, 0) + 1
        table = Table(title=f"runs of older code in {args.store}", title_justify="left")
        for column in ("strategy", "code", "runs"):
            table.add_column(column)
        for (strategy, code), count in sorted(counts.items()):
            table.add_row(strategy, code, str(count))
        wide_console().print(table)
        if args.dry_run:
            print(f"would drop {_plural(len(old), 'run')} (--dry-run: nothing dropped)")
            return 0
        store.drop([r.id for r in old])
    print(f"dropped {_plural(len(old), 'run')} of older code from {args.store}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from e2elab import strategy as strategies
    from e2elab.tasks import TASKS, published

    console = wide_console()
    tasks = Table(title="tasks", title_justify="left")
    for column in ("task", "knob", "default", "meaning"):
        tasks.add_column(column)
    for name, cls in TASKS.items():
        d = cls.defaults
        tasks.add_row(
            name,
            "",
            "",
            f"{cls.description} [dim](budget {d.budget}, batch {d.batch_size}, lr {d.lr}, "
            f"threshold {d.threshold})[/dim]",
        )
        for knob_name, knob in cls.knobs.items():
            tasks.add_row("", knob_name, str(knob.default), knob.help)
    for name, ref in published().items():
        if name not in TASKS:
            tasks.add_row(name, "", "", f"published by an installed package: {ref}")
    console.print(tasks)
    table = Table(title="strategies", title_justify="left")
    for column in ("strategy", "parameters (defaults)", "what it does", "how it spends the budget"):
        table.add_column(column)
    for name, info in strategies.STRATEGIES.items():
        params = ", ".join(
            f"{k}={info.defaults[k]}" if k in info.defaults else f"{k} ({v.__name__})"
            for k, v in info.params.items()
        )
        table.add_row(name, params or "-", info.help, info.schedule)
    console.print(table)
    console.print(strategies.COMMON_HELP)
    return 0


def parse_knobs(pairs: list[str], task: str) -> dict[str, Any]:
    """``["n=3", "m=2"]`` -> ``{"n": "3", "m": "2"}``; types are checked by the task."""
    from e2elab.tasks import task_class

    knobs: dict[str, Any] = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not eq or not name:
            raise E2ELabError(f"--knob expects NAME=VALUE, got {pair!r}; e.g. --knob n=3")
        knobs[name.strip()] = value.strip()
    task_class(task).resolve_knobs(knobs)
    return knobs


def _load_sources(pairs: list[str], store: Path) -> str | None:
    """``--load MODULE=RUN_ID|FILE`` flags as ``Settings.load_from`` text."""
    from e2elab.checkpoints import parse_pairs, store_source

    if not pairs:
        return None
    sources = parse_pairs(",".join(pairs), "--load")
    out = []
    for module, source in sources.items():
        if Path(source).is_file():
            out.append(f"{module}={Path(source).resolve()}")
        elif "/" in source or source.endswith(".safetensors"):
            raise E2ELabError(f"--load {module}={source}: no such file; give a checkpoint file")
        else:
            if not store.exists():
                raise E2ELabError(
                    f"--load {module}={source}: no store at {store} to find run {source} in; "
                    "give --out the folder of the run's store, or a checkpoint file"
                )
            out.append(f"{module}={store_source(store, _full_id(store, source))}")
    return ",".join(out)


def _full_id(path: Path, prefix: str) -> str:
    """The one stored run id that starts with ``prefix`` (kept whole in a run's spec)."""
    from e2elab.store import Store

    with Store(path, create=False, readonly=True) as store:
        found = sorted(i for i in store.ids() if i.startswith(prefix)) if prefix else []
    if len(found) != 1:
        what = "no run" if not found else f"{len(found)} runs ({', '.join(found[:3])}...)"
        raise E2ELabError(f"{path}: {what} with an id starting with {prefix!r}; give more of it")
    return found[0]


def _one_cell(args: argparse.Namespace, load_from: str | None = None) -> experiments.Experiment:
    """``e2elab run``'s arguments as an experiment of one grid point."""
    from e2elab import strategy as strategies
    from e2elab.prepare import prepare
    from e2elab.tasks import make_task

    if args.seeds < 1:
        raise E2ELabError(f"--seeds must be at least 1, got {args.seeds}")
    knobs = parse_knobs(args.knob, args.task)
    task = make_task(args.task, knobs)
    # every setting an experiment's training: block takes and the command line sets
    training = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(Settings)
        if f.metadata.get("training") and f.metadata.get("flag")
    }
    # every setting checked here, once, with the task's defaults under it
    type(task).defaults.override(budget=args.budget, device=args.device, **training).validate()
    point = prepare(task)  # traced once here; the runner and the runs reuse it
    names = args.strategy or _applicable(task, point)
    expanded = [s for text in names for s in strategies.expand(text, list(point.graph.modules))]
    definition = {
        "task": args.task,
        "knobs": {**task.knobs},
        "strategies": expanded,
        "seeds": args.seeds,
        "budget": args.budget,
        "training": {k: v for k, v in training.items() if v is not None},
    }
    text = json.dumps({**definition, "load": load_from}, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    task = re.sub(r"[^\w.+-]", ".", args.task)[:80]  # one safe path component
    name = args.name or f"run-{task}-{digest}"
    # the same checks as an experiment file's, named as the command line's flags
    return experiments.parse({"name": name, **definition}, "e2elab run")


def _applicable(task: Any, point: Any) -> list[str]:
    """Every strategy that can train this task (the default of ``run``)."""
    from e2elab import strategy as strategies

    names = []
    for name in strategies.STRATEGIES:
        try:
            for text in strategies.expand(name, list(point.graph.modules)):
                point.strategy(text, task)
        except E2ELabError:
            continue
        names.append(name)
    return names


def _cmd_run(args: argparse.Namespace) -> int:
    from e2elab.summary import port_label, port_names, strategy_table, summarize

    load_from = _load_sources(args.load, args.out / "results.sqlite")
    experiment = _one_cell(args, load_from)
    executor = _executor(args)
    overrides = {
        "device": args.device,
        "save_modules": args.save_modules,
        "load_from": load_from,
        "oracle": args.oracle,
    }
    specs = _specs(experiment, overrides)  # every check, before the store is touched
    writable_folder(args.out, "--out")
    with _opened(args.out / "results.sqlite") as store:
        counts = _sweep(experiment, store, executor, overrides, args, specs)
        results = store.results_by_id([s.id for s in specs])
    by_id = {r.id: r for r in results}
    # judged at this command's threshold (a stored run may have been scored at another)
    results = [by_id[s.id].rescored(s.settings.threshold) for s in specs if s.id in by_id]
    console = wide_console()
    knob_text = ", ".join(f"{k}={v}" for k, v in specs[0].knobs.items())
    budget = specs[0].settings.budget
    seeds = f"{args.seeds} seed{'s' if args.seeds > 1 else ''}"
    title = f"{specs[0].task} ({knob_text}); budget {budget} examples; {seeds}"
    ports = None
    if args.ports:  # a column per port besides the output, each in its own metric
        others = [p for p in port_names(results) if results and p != results[0].output]
        ports = {p: port_label(results, p) for p in others}
    threshold = specs[0].settings.threshold
    console.print(strategy_table(summarize(results), title, threshold, ports))
    for r in results:
        if r.status != "ok":
            console.print(f"[red]{r.spec['strategy']} seed {r.spec['seed']}: {r.reason}[/red]")
    console.print(
        f"{_plural(counts.total, 'run')} ({counts.skipped} already stored, "
        f"{counts.trained} trained"
        + (f", {counts.recovered} recovered from a spill file" if counts.recovered else "")
        + "); "
        f"store {args.out / 'results.sqlite'} (experiment {experiment.name})"
    )
    return 0


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[Any]:
    """The store at ``path``; one this command made is removed again if the command is
    refused before it stored anything, so a refusal leaves no empty store behind."""
    from e2elab.store import Store

    new = not path.exists()
    folder = path.parent.absolute()
    made = [p for p in [folder, *folder.parents] if not p.exists()]  # deepest first
    store = Store(path)
    try:
        yield store
    except BaseException:
        empty = new and store.count() == 0
        store.close()
        if empty:
            path.unlink(missing_ok=True)
            for created in made:  # and the folders made for it, where nothing else is
                with contextlib.suppress(OSError):
                    created.rmdir()
        raise
    store.close()


def _specs(experiment: experiments.Experiment, overrides: dict[str, Any]) -> list[Any]:
    from e2elab.runner import experiment_specs

    return experiment_specs(experiment, overrides)


def _executor(args: argparse.Namespace) -> Any:
    from e2elab.executors import make_executor

    if args.workers is not None and args.workers < 1:
        raise E2ELabError(f"--workers must be at least 1, got {args.workers}")
    if args.max_hours is not None and not 0 < args.max_hours < float("inf"):
        raise E2ELabError(f"--max-hours must be a positive number, got {args.max_hours}")
    if args.address and args.executor != "ray":
        raise E2ELabError("--address is for --executor ray; add --executor ray")
    executor = make_executor(
        args.executor or "local", args.workers, args.address, batch_seeds=not args.no_batch_seeds
    )
    if args.executor is None and args.workers is None:  # the default: the pool, unless tiny
        return _PoolUnlessTiny(executor, not args.no_batch_seeds)
    return executor


# a sweep estimated below this many seconds trains in-process by default: starting the
# pool's processes (imports, set-up) costs more than it saves
POOL_PAYS_SECONDS = 20.0


class _PoolUnlessTiny:
    """The default executor: the process pool, or this process where the sweep's
    estimate says a pool would cost more than it saves (``choose``)."""

    def __init__(self, pool: Any, batch_seeds: bool) -> None:
        self.inner, self.batch_seeds = pool, batch_seeds
        self.workers = getattr(pool, "workers", 1)

    def choose(self, serial_seconds: float) -> str | None:
        from e2elab.executors import SerialExecutor

        if serial_seconds >= POOL_PAYS_SECONDS or self.workers < 2:
            return None
        self.inner, self.workers = SerialExecutor(self.batch_seeds), 1
        return (
            f"a small sweep (about {_duration(serial_seconds)} in one process): training here, "
            "without starting a pool of processes (--executor local forces the pool)"
        )

    def map(self, specs: list[Any]) -> Any:
        return self.inner.map(specs)


def _available(parts: list[experiments.Experiment]) -> list[experiments.Experiment]:
    """The parts of a suite whose task can be built here; one line for each skipped."""
    from e2elab.tasks import task_class

    kept = []
    for part in parts:
        reason = task_class(part.task).unavailable(part.grid_points()[0])
        if reason is None:
            kept.append(part)
        else:
            print(f"e2elab: skipping {part.name}: {reason}", file=sys.stderr)
    if not kept:
        raise E2ELabError("no part of this suite can run here (see the lines above)")
    return kept


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from e2elab.report.build import Part, build_report
    from e2elab.runner import measure_snr

    if args.quick and args.profile:
        raise E2ELabError("give either --quick or --profile, not both")
    profile = "quick" if args.quick else args.profile
    name, loaded = experiments.load_all(args.experiment)
    parts = [exp.with_profile(profile) for exp in loaded]
    if len(parts) > 1:
        parts = _available(parts)
    name = f"{name}-{profile}" if profile else name
    executor = _executor(args)
    overrides = {"device": args.device, "save_modules": args.save_modules, "oracle": args.oracle}
    planned: dict[str, list[Any]] = {}
    for experiment in parts:
        try:  # every check, before the store is touched
            planned[experiment.name] = _specs(experiment, overrides)
        except E2ELabError as error:
            raise E2ELabError(
                f"{args.experiment} (experiment {experiment.name}): {error}"
            ) from None
    out = args.out or Path("results") / name
    writable_folder(out, "--out")
    writable_folder(out / "report", "--out")
    console = wide_console()
    began = time.perf_counter()
    with _opened(out / "results.sqlite") as store:
        done = []
        for experiment in parts:
            # a transfer's runs need the store (its source runs): the runner makes them
            specs = None if experiment.transfer is not None else planned[experiment.name]
            counts = _sweep(experiment, store, executor, overrides, args, specs)
            workers = 1 if args.executor == "serial" else getattr(executor, "workers", None)
            snr = measure_snr(experiment, store, workers=workers)
            rescored = f", {counts.rescored} re-scored" if counts.rescored else ""
            rescored += f", {counts.recovered} recovered from a spill file" * bool(counts.recovered)
            console.print(
                f"{experiment.name}: {counts.total} runs, {counts.skipped} already stored, "
                f"{counts.trained} trained{rescored}"
                + (f", {len(snr)} SNR measurements" if snr else "")
            )
            sources = experiments.source_labels(experiment, store)
            runs, left_out = _versions(store.results(experiment.name), args, experiment.name)
            done.append(Part(experiment, runs, snr, sources, left_out))
        # a store shared with other experiments keeps their reports: each in its own folder
        others = set(store.experiments()) - {p.name for p in parts}
        folder = out / "report" / _slug(name) if others else out / "report"
        report = build_report(done, folder, f"e2elab report: {name}")
    console.print(claims_table(report.verdicts, name))
    minutes = (time.perf_counter() - began) / 60
    console.print(
        f"report: {report.markdown} (and report.html, {len(report.figures)} figures); "
        f"store {out / 'results.sqlite'}; {minutes:.1f} min"
    )
    return 0


def _sweep(
    experiment: experiments.Experiment,
    store: Any,
    executor: Any,
    overrides: dict[str, Any],
    args: argparse.Namespace,
    specs: list[Any] | None = None,
) -> Any:
    from e2elab.runner import estimate_seconds, run_experiment

    def plan(todo: list[Any]) -> None:
        if not todo:
            return
        seconds, untimed = estimate_seconds(todo)
        if isinstance(executor, _PoolUnlessTiny):
            note = executor.choose(seconds)
            if note is not None:
                print(f"{experiment.name}: {note}", file=sys.stderr)
        workers = getattr(executor, "workers", None) or 1
        seconds /= max(1, min(workers, len(todo)))
        left_out = f"; {_plural(untimed, 'black-box run')} not included" if untimed else ""
        print(
            f"{experiment.name}: {_plural(len(todo), 'run')} to train, estimated "
            f"{_duration(seconds)} on {_plural(workers, 'process')} (from timed training "
            f"steps{left_out})",
            file=sys.stderr,
        )
        if args.max_hours is not None and seconds > args.max_hours * 3600:
            raise E2ELabError(
                f"{experiment.name}: the estimate, {_duration(seconds)}, exceeds --max-hours "
                f"{args.max_hours:g}; shrink the grid, seeds or budget, or raise --max-hours"
            )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("runs"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as progress:
        bar = progress.add_task(experiment.name, total=None)

        def start(total: int, stored: int) -> None:
            progress.update(bar, total=total - stored)

        said: set[str] = set()

        def finished(result: Any) -> None:
            label = f"{experiment.name}: {result.spec['strategy']}"
            progress.update(bar, advance=1, description=label)
            note, why = result.memory.get("stacking_note"), result.memory.get("stacking")
            if note is not None and why not in said:  # once per distinct reason
                said.add(why)
                progress.console.print(note, markup=False, highlight=False, soft_wrap=True)

        return run_experiment(
            experiment,
            store,
            executor,
            overrides,
            start,
            finished,
            force=args.force,
            before_training=plan,
            specs=specs,
        )


def _plural(count: int, word: str) -> str:
    ending = "es" if word.endswith("s") else "s"
    return f"{count} {word}{'' if count == 1 else ending}"


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _cmd_report(args: argparse.Namespace) -> int:
    from e2elab.report.build import build_report
    from e2elab.report.index import write_index
    from e2elab.report.page import slug

    console = wide_console()
    writable_folder(args.out, "-o")
    if len({Path(path).resolve() for path in args.store}) != len(args.store):
        raise E2ELabError("the same store is named twice; name each store once")
    loaded = [_report_parts(path, args.experiment, args) for path in args.store]  # all, first
    if len(loaded) == 1:
        names, parts = loaded[0]
        title = f"e2elab report: {', '.join(names)}"
        report = build_report(parts, args.out, title)
        console.print(claims_table(report.verdicts, ", ".join(names)))
        console.print(f"report: {report.markdown} ({len(report.figures)} figures)")
        return 0
    pages = []
    used: set[str] = set()
    for path, (names, parts) in zip(args.store, loaded, strict=True):
        # a folder name safe in a URL and on any disk, never the index's own name
        label = slug(Path(path).resolve().parent.name or "store")
        folder, k = label, 2
        while folder in used:
            folder, k = f"{label}-{k}", k + 1
        used.add(folder)
        title = f"e2elab report: {', '.join(names)}"
        report = build_report(parts, args.out / folder, title)
        pages.append((f"{', '.join(names)} ({path})", f"{folder}/report.html", report.rows))
        console.print(claims_table(report.verdicts, ", ".join(names)))
    index = write_index(args.out / "index.html", "e2elab reports", pages)
    console.print(f"index: {index} ({len(pages)} reports)")
    return 0


def _report_parts(
    path: Path, only: str | None, args: argparse.Namespace
) -> tuple[list[str], list[Any]]:
    """The experiments of one store, ready for ``build_report`` (a bad store or an
    unknown experiment is refused here, before any page is written)."""
    from e2elab.records import SNRResult
    from e2elab.report.build import Part
    from e2elab.store import Store

    with Store(path, readonly=True) as store:
        stored = store.experiments()
        if not stored:
            raise E2ELabError(f"{path} holds no experiment; run 'e2elab reproduce' first")
        names = [only] if only else list(stored)
        parts = []
        for name in names:
            if name not in stored:
                raise choices(f"experiment in {path}", name, list(stored))
            experiment = experiments.Experiment.model_validate(stored[name])
            snr = [SNRResult(**r) for r in store.snr(name).values()]
            sources = experiments.source_labels(experiment, store)
            runs, left_out = _versions(store.results(name), args, name)
            parts.append(Part(experiment, runs, snr, sources, left_out))
    return names, parts


def _versions(results: list[Any], args: argparse.Namespace, name: str) -> tuple[list[Any], int]:
    """The runs a report reads: those of the current code version (with a note of how
    many older ones it left out), or every version, the older labelled (--all-versions)."""
    from e2elab import versions

    if getattr(args, "all_versions", False):
        return versions.labelled(results), 0
    current, old = versions.split(results)
    if old:
        print(f"e2elab: {versions.left_out_note(len(old), name)}", file=sys.stderr)
    return current, len(old)


def _cmd_snr(args: argparse.Namespace) -> int:
    from e2elab import strategy as strategies
    from e2elab.report.snr import snr_figure
    from e2elab.runner import measure_snr
    from e2elab.store import Store

    knob, eq, raw = args.sweep.partition("=")
    values = [v.strip() for v in raw.split(",") if v.strip()]
    if not eq or not values:
        raise E2ELabError(
            f"--sweep expects NAME=V1,V2,..., got {args.sweep!r}; e.g. --sweep n=1,2,3"
        )
    if args.batch_size is not None and args.batch_size < 1:
        raise E2ELabError(f"--batch-size must be a positive integer, got {args.batch_size}")
    if args.inits < 2 or args.batches < 3:
        raise E2ELabError(
            "--inits must be at least 2 and --batches at least 3 to estimate a mean and spread"
        )
    fixed = parse_knobs(args.knob, args.task)
    for value in values:
        parse_knobs([*args.knob, f"{knob}={value}"], args.task)
    names = args.strategy or ["e2e", "hinted"]
    for name in names:
        strategies.parse_strategy(name)
    definition = {
        "task": args.task,
        "sweep": knob,
        "knobs": fixed,
        "grid": {knob: values},
        "strategies": names,
        "snr": {
            "strategies": names,
            "inits": args.inits,
            "batches": args.batches,
            "batch_size": args.batch_size,
        },
    }
    digest = hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:8]
    name = f"snr-{args.task.replace(':', '.')}-{digest}"
    experiment = experiments.Experiment.model_validate({"name": name, **definition})
    writable_folder(args.out, "--out")
    with Progress(console=Console(stderr=True)) as progress:
        bar = progress.add_task("gradient SNR", total=len(values) * len(names))
        with Store(args.out / "results.sqlite") as store:
            store.put_experiment(experiment.name, experiment.model_dump())
            results = measure_snr(
                experiment, store, lambda: progress.advance(bar), force=args.force
            )
    (args.out / "snr.json").write_text(
        json.dumps([dataclasses.asdict(r) for r in results], indent=1)
    )
    figure = snr_figure(results, knob, args.out / "snr.png")
    table = Table(title=f"log10 gradient SNR at initialisation, {args.task}", title_justify="left")
    columns = ("strategy", knob, "module", "log10 SNR, mean [95% CI] over inits", "noise top dir.")
    for column in columns:
        table.add_column(column)
    for r in results:
        for module in r.per_init:
            _, lo, hi = r.log10_summary(module)
            shares = r.noise_top_share.get(module, [])
            share = f"{sum(shares) / len(shares):.0%}" if shares else "-"
            table.add_row(
                r.strategy,
                str(r.knobs[knob]),
                module,
                f"{r.describe(module)} [{lo:.2f}, {hi:.2f}]",
                share,
            )
    console = wide_console()
    console.print(table)
    if any(r.is_bound(m) for r in results for m in r.per_init):
        console.print(
            "<= : below the resolution of --batches at some init (an upper bound); "
            "more batches resolve smaller SNRs"
        )
    console.print(f"wrote {args.out / 'results.sqlite'}, {args.out / 'snr.json'} and {figure}")
    return 0


def _cmd_rerun(args: argparse.Namespace) -> int:
    """Exit 0 when the retrained run equals the stored one bit for bit, 1 when it differs."""
    from e2elab.execution import execute
    from e2elab.numerics import describe
    from e2elab.records import RunSpec
    from e2elab.store import Store

    with Store(args.store, readonly=True) as store:
        ids = sorted(i for i in store.ids() if i.startswith(args.run_id))
        if len(ids) != 1:
            found = "no run" if not ids else f"{len(ids)} runs ({', '.join(ids[:4])}...)"
            raise E2ELabError(f"{found} in {args.store} has an id starting with {args.run_id!r}")
        (stored,) = store.results_by_id(ids)
    spec = RunSpec.from_dict(_moved_sources(stored.spec, args.store))
    if spec.id != stored.id:
        raise E2ELabError(
            f"run {stored.id} was stored by another e2elab version (its spec now hashes to "
            f"{spec.id}); rerun it with the version that trained it"
        )
    console = wide_console()
    console.print(
        f"retraining {stored.id}: {spec.task} {spec.knobs} {spec.strategy} seed {spec.seed}"
    )
    fresh = execute(spec)
    same = fresh.weights_sha256 == stored.weights_sha256 and fresh.curve == stored.curve
    if same:
        console.print(f"reproduced bit for bit: weights sha256 {fresh.weights_sha256[:16]}...")
        return 0
    gaps = {
        port: abs(fresh.final.get(port, float("nan")) - value)
        for port, value in stored.final.items()
    }
    worst = max(gaps, key=lambda p: gaps[p] if gaps[p] == gaps[p] else float("inf"), default=None)
    now = describe(spec.settings.device)
    changed = [k for k in now if stored.numerics.get(k) != now[k] and k in stored.numerics]
    console.print(
        f"differs: weights sha256 {str(stored.weights_sha256)[:16]}... stored, "
        f"{str(fresh.weights_sha256)[:16]}... now"
        + (f"; largest final-metric gap {worst}: {gaps[worst]:.6g}" if worst else "")
        + (
            f"; numeric environment changed in: {', '.join(changed)}"
            if changed
            else "; same numeric environment (a bug: please report it)"
        )
    )
    return 1


def _moved_sources(spec: dict[str, Any], store: Path) -> dict[str, Any]:
    """A spec whose modules were loaded from runs of a store that has since moved (or
    been copied): read them from ``store``, the one being rerun, which holds those runs.
    The weights' SHA-256 (in the id) still has to match."""
    from e2elab.checkpoints import parse_pairs, store_source

    text = spec.get("load_from") or ""
    if not text:
        return spec
    pairs = parse_pairs(text, "load_from")
    for module, source in pairs.items():
        path, hashmark, run_id = source.rpartition("#")
        if hashmark and not Path(path).exists():
            pairs[module] = store_source(store, run_id)
    return {**spec, "load_from": ",".join(f"{m}={s}" for m, s in pairs.items())}


def _cmd_export(args: argparse.Namespace) -> int:
    from e2elab.query import export

    if args.to != "table":
        return _export_tracking(args)
    writable_file(args.output, "-o")
    not_a_store(args.output, "-o", args.store)
    rows = export(args.store, args.format, args.output, args.table, args.experiment)
    print(f"wrote {rows} {args.table} rows to {args.output}")
    return 0


def _export_tracking(args: argparse.Namespace) -> int:
    """``export --to mlflow|tensorboard``: every experiment's runs (of the current code,
    unless --all-versions) into a tracking folder."""
    from e2elab import tracking
    from e2elab.store import Store

    if args.to not in tracking.TARGETS:
        raise choices("export target (--to)", args.to, ["table", *tracking.TARGETS])
    writable_folder(args.output, "-o")
    with Store(args.store, readonly=True) as store:
        stored = list(store.experiments())
        names = [args.experiment] if args.experiment else stored
        pairs = []
        for name in names:
            if name not in stored:
                raise choices(f"experiment in {args.store}", name, stored)
            runs, _ = _versions(store.results(name), args, name)
            pairs += [(name, run) for run in runs]
    count = tracking.export_runs(pairs, args.to, args.output)
    how = "mlflow ui --backend-store-uri" if args.to == "mlflow" else "tensorboard --logdir"
    print(f"wrote {_plural(count, 'run')} to {args.output} ({args.to}); view: {how} {args.output}")
    return 0


def _cmd_modules_list(args: argparse.Namespace) -> int:
    from e2elab.store import Store

    with Store(args.store, readonly=True) as store:
        saved = store.saved_modules()
        results = {r.id: r for r in store.results_by_id(list(saved))}
    if not saved:
        print(f"{args.store}: no run saved modules; train with --save-modules")
        return 0
    table = Table("run", "task", "knobs", "strategy", "seed", "modules")
    for run_id, names in saved.items():
        spec = results[run_id].spec if run_id in results else {}
        knobs = ", ".join(f"{k}={v}" for k, v in spec.get("knobs", {}).items())
        table.add_row(
            run_id,
            spec.get("task", "?"),
            knobs,
            spec.get("strategy", "?"),
            str(spec.get("seed", "?")),
            ", ".join(names),
        )
    wide_console().print(table)
    return 0


def _cmd_modules_export(args: argparse.Namespace) -> int:
    from e2elab.checkpoints import decode
    from e2elab.store import Store

    with Store(args.store, readonly=True) as store:
        data = store.checkpoint(args.run_id, args.module)
    decode(data, f"run {args.run_id}")  # never write out what would not load
    writable_file(args.output, "-o")
    not_a_store(args.output, "-o", args.store)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.output.with_name(args.output.name + ".part")
    temporary.write_bytes(data)
    temporary.replace(args.output)
    print(f"{args.output}: module {args.module} of run {args.run_id}, {len(data):,} bytes")
    return 0


def claims_table(verdicts: list[Verdict], title: str) -> Any:
    if not verdicts:  # an experiment without claims: a line, not an empty table
        return f"claims: {title}: none declared (the experiment file has no claims:)"
    table = Table(title=f"claims: {title}", title_justify="left", show_lines=True)
    for column in ("claim", "verdict", "numbers"):
        table.add_column(column, overflow="fold")
    colours = {"PASS": "green", "FAIL": "red", "INCONCLUSIVE": "yellow"}
    for v in verdicts:
        how = "\n".join(t for t in (v.stability_text(), v.margin or "") if t and t != "-")
        shown = f"[{colours.get(v.verdict, 'white')}]{v.verdict}[/]" + (f"\n{how}" if how else "")
        table.add_row(v.id, shown, escape(v.details))
    fragile, undecided = sum(v.fragile for v in verdicts), sum(bool(v.undecided) for v in verdicts)
    notes = [f"{fragile} fragile: stable in under 80% of the seed resamples"] if fragile else []
    notes += [f"{undecided} undecided by this profile (its YAML says why)"] if undecided else []
    if notes:
        table.caption = "; ".join(notes)
    return table


def wide_console() -> Console:
    """A console that does not squeeze tables to 80 columns when writing to a pipe."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


if __name__ == "__main__":
    raise SystemExit(main())
