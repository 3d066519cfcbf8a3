"""What the commands share: flags, the executor, the store opened for writing, tables."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from e2elab import experiment as experiments
from e2elab.claims import Verdict
from e2elab.errors import E2ELabError
from e2elab.records import Settings

# when the command started (``cli.main`` sets it): its wall time, for its time split,
# counts from here
STARTED = time.perf_counter()


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2, as argparse does)."""

    def error(self, message: str) -> NoReturn:
        raise E2ELabError(f"{message} (see '{self.prog} --help')")


DEFAULT_OUT = Path("runs")

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


def _full_id(path: Path, prefix: str) -> str:
    """The one stored run id that starts with ``prefix`` (kept whole in a run's spec)."""
    from e2elab.store import Store

    with Store(path, create=False, readonly=True) as store:
        return store.full_id(prefix)


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


def time_split(
    console: Console,
    out: Path,
    executor: Any,
    counts: list[Any],
    snr_wall: float = 0.0,
) -> None:
    """Print where the command's time went (``timesplit``) as one line, and write it to
    ``out/time_split.json``; ``counts``: the sweeps' ``SweepCounts``."""
    from e2elab.timesplit import TimeSplit

    runs: dict[str, float] = {}
    for count in counts:
        for name, seconds in count.run_seconds.items():
            runs[name] = runs.get(name, 0.0) + seconds
    training = sum(count.training_wall for count in counts)
    workers = max(1, int(getattr(executor, "workers", None) or 1))
    wall = time.perf_counter() - STARTED
    split = TimeSplit.of_command(wall, workers, runs, training, snr_wall)
    console.print(split.line(), highlight=False)
    with contextlib.suppress(OSError):  # the split is a note: a full disk loses only it
        (out / "time_split.json").write_text(json.dumps(split.to_dict(), indent=1))
