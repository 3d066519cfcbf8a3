"""A sweep of one experiment into a store, with its estimate and progress bar."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from e2elab import experiment as experiments
from e2elab.cli.common import (
    _duration,
    _plural,
    _PoolUnlessTiny,
)
from e2elab.errors import E2ELabError


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
            label = f"{experiment.name}: {result.spec.strategy}"
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
