"""Run an experiment's grid into a store, skipping runs already stored (resume)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from e2elab.executors import Executor
from e2elab.experiment import Experiment
from e2elab.run import RunResult
from e2elab.store import Store


@dataclass(frozen=True)
class SweepCounts:
    total: int
    skipped: int
    trained: int


def run_experiment(
    experiment: Experiment,
    store: Store,
    executor: Executor,
    device: str = "cpu",
    on_start: Callable[[int, int], None] | None = None,
    on_result: Callable[[RunResult], None] | None = None,
) -> SweepCounts:
    """Train every run of ``experiment`` not yet in ``store``; store each as it finishes.

    ``on_start(total, already_stored)`` is called once before training, ``on_result``
    after each stored run. Each run is written in its own transaction, so an interrupted
    sweep keeps every finished run and a rerun trains only the rest.
    """
    specs = experiment.specs(device)
    store.put_experiment(experiment.name, experiment.model_dump())
    stored = store.ids()
    done = [s for s in specs if s.id in stored]
    todo = [s for s in specs if s.id not in stored]
    store.link(experiment.name, [s.id for s in done])
    if on_start is not None:
        on_start(len(specs), len(done))
    trained = 0
    for result in executor.map(todo):
        store.put(result, experiment.name)
        trained += 1
        if on_result is not None:
            on_result(result)
    return SweepCounts(total=len(specs), skipped=len(done), trained=trained)
