"""``e2elab reproduce``: run a shipped (or your) experiment, then report."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from e2elab import experiment as experiments
from e2elab.cli.common import (
    _executor,
    _executor_flags,
    _opened,
    _slug,
    _specs,
    _versions,
    _versions_flag,
    claims_table,
    time_split,
    wide_console,
)
from e2elab.cli.sweep import _sweep
from e2elab.errors import E2ELabError
from e2elab.paths import writable_folder


def add(commands: Any) -> None:
    """The ``reproduce`` command's parser."""
    reproduce = commands.add_parser("reproduce", help="run a shipped experiment, then report")
    reproduce.add_argument("experiment", help="shipped experiment name or path to a YAML file")
    reproduce.add_argument("--quick", action="store_true", help="the quick profile")
    reproduce.add_argument("--profile", help="a named profile of the experiment")
    reproduce.add_argument("--out", type=Path, help="output folder (default results/NAME)")
    _versions_flag(reproduce)
    _executor_flags(reproduce)
    reproduce.set_defaults(handler=_cmd_reproduce)


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
    sweeps, snr_wall = [], 0.0
    with _opened(out / "results.sqlite") as store:
        done = []
        for experiment in parts:
            # a transfer's runs need the store (its source runs): the runner makes them
            specs = None if experiment.transfer is not None else planned[experiment.name]
            counts = _sweep(experiment, store, executor, overrides, args, specs)
            sweeps.append(counts)
            workers = 1 if args.executor == "serial" else getattr(executor, "workers", None)
            measuring = time.perf_counter()
            snr = measure_snr(experiment, store, workers=workers)
            snr_wall += time.perf_counter() - measuring
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
    time_split(console, out, executor, sweeps, snr_wall)
    return 0
