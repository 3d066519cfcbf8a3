"""``e2elab run``: train a task under strategies and seeds (one grid point)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from e2elab import experiment as experiments
from e2elab.cli.common import (
    DEFAULT_OUT,
    _executor,
    _executor_flags,
    _full_id,
    _opened,
    _plural,
    _setting_flags,
    _specs,
    parse_knobs,
    time_split,
    wide_console,
)
from e2elab.cli.sweep import _sweep
from e2elab.errors import E2ELabError
from e2elab.paths import writable_folder
from e2elab.records import Settings


def add(commands: Any) -> None:
    """The ``run`` command's parser."""
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
    name = args.name or experiments.digest_name("run", args.task, {**definition, "load": load_from})
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
            console.print(f"[red]{r.spec.strategy} seed {r.spec.seed}: {r.reason}[/red]")
    console.print(
        f"{_plural(counts.total, 'run')} ({counts.skipped} already stored, "
        f"{counts.trained} trained"
        + (f", {counts.recovered} recovered from a spill file" if counts.recovered else "")
        + "); "
        f"store {args.out / 'results.sqlite'} (experiment {experiment.name})"
    )
    time_split(console, args.out, executor, [counts])
    return 0
