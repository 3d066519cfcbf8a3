"""Run an experiment's grid into a store, skipping runs already stored (resume)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass

from e2elab.diagnostics.snr import ESTIMATOR, SNRResult, gradient_snr
from e2elab.executors import Executor
from e2elab.experiment import Experiment
from e2elab.run import RunResult
from e2elab.store import Store
from e2elab.tasks import make_task


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


def measure_snr(
    experiment: Experiment, store: Store, on_done: Callable[[], None] | None = None
) -> list[SNRResult]:
    """Gradient SNR at every grid point for the experiment's ``snr`` strategies, measured
    once and kept in the store (a rerun reads them back)."""
    if experiment.snr is None:
        return []
    settings = experiment.snr
    stored = store.snr(experiment.name)
    out = []
    for knobs in experiment.grid_points():
        task = make_task(experiment.task, knobs)
        for strategy in settings.strategies:
            key = json.dumps(
                [
                    experiment.task,
                    task.settings,
                    strategy,
                    settings.inits,
                    settings.batches,
                    settings.batch_size,
                    ESTIMATOR,
                ],
                sort_keys=True,
            )
            if key not in stored:
                result = gradient_snr(
                    task, strategy, settings.inits, settings.batches, settings.batch_size
                )
                stored[key] = dataclasses.asdict(result)
                store.put_snr(experiment.name, key, stored[key])
            out.append(SNRResult(**stored[key]))
            if on_done is not None:
                on_done()
    return out
