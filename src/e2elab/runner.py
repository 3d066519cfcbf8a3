"""The pipeline: an experiment's grid -> specs -> an executor -> the store, skipping
runs already stored (resume). ``e2elab run`` is a one-cell experiment and goes the same
way as ``reproduce``."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from e2elab import strategy as strategies
from e2elab.diagnostics.snr import ESTIMATOR, gradient_snr
from e2elab.errors import E2ELabError
from e2elab.executors import Executor, SerialExecutor
from e2elab.experiment import Experiment
from e2elab.records import RunResult, RunSpec, SNRResult
from e2elab.run import first_batch, make_spec
from e2elab.store import Store
from e2elab.system import trace
from e2elab.tasks import SHIPPED, fingerprint, make_task, published, task_class
from e2elab.validate import check_task


@dataclass(frozen=True)
class SweepCounts:
    total: int
    skipped: int
    trained: int
    rescored: int = 0


def experiment_specs(
    experiment: Experiment, overrides: dict[str, Any] | None = None
) -> list[RunSpec]:
    """The runs of ``experiment``: grid points x strategies x seeds. Each run's settings
    are the task's defaults, then the experiment's, then ``overrides`` (the command
    line's, e.g. ``device``), validated once. Every grid point's task is built, traced
    and checked here, before anything trains."""
    specs: dict[str, RunSpec] = {}
    layers = {**experiment.overrides(), **{k: v for k, v in (overrides or {}).items()}}
    for knobs in experiment.grid_points():
        task = make_task(experiment.task, knobs)
        system = task.build_system()
        batch = first_batch(task)
        graph = trace(system, batch, task.ports)
        check_task(task, system, graph, batch)
        names = [
            s
            for text in experiment.strategies
            for s in strategies.expand(text, list(graph.modules))
        ]
        for text in names:
            strategies.build(text, graph, task.output)  # fail fast on a bad strategy
            for seed in range(experiment.seeds):
                spec = make_spec(experiment.task, text, seed=seed, knobs=knobs, **layers)
                specs.setdefault(spec.id, spec)
    return list(specs.values())


def run_experiment(
    experiment: Experiment,
    store: Store,
    executor: Executor,
    overrides: dict[str, Any] | None = None,
    on_start: Callable[[int, int], None] | None = None,
    on_result: Callable[[RunResult], None] | None = None,
    force: bool = False,
) -> SweepCounts:
    """Train every run of ``experiment`` not yet in ``store``; store each as it finishes.

    ``on_start(total, already_stored)`` is called once before training, ``on_result``
    after each stored run. Each run is written in its own transaction, so an interrupted
    sweep keeps every finished run and a rerun trains only the rest. ``force`` retrains
    stored runs. A stored run judged against another accuracy threshold than this
    experiment's is re-scored from its curve, not retrained.
    """
    specs = experiment_specs(experiment, overrides)
    _check_importable(specs, executor)
    store.put_experiment(experiment.name, experiment.model_dump())
    stored = set() if force else store.ids()
    done = [s for s in specs if s.id in stored]
    todo = [s for s in specs if s.id not in stored]
    rescored = _rescore(store, done)
    store.link(experiment.name, [s.id for s in done])
    if on_start is not None:
        on_start(len(specs), len(done))
    trained = 0
    for result in executor.map(todo):
        store.put(result, experiment.name)
        trained += 1
        if on_result is not None:
            on_result(result)
    return SweepCounts(len(specs), len(done), trained, rescored)


def _rescore(store: Store, specs: list[RunSpec]) -> int:
    """Re-judge stored runs whose threshold differs from their spec's; returns how many."""
    wanted = {s.id: s.settings.threshold for s in specs}
    changed = [
        r.rescored(wanted[r.id])
        for r in store.results_by_id(list(wanted))
        if r.spec.get("threshold") != wanted[r.id]
    ]
    for result in changed:
        store.put(result)
    return len(changed)


def _check_importable(specs: list[RunSpec], executor: Executor) -> None:
    """Workers in other processes find a task by name (shipped, published) or by
    ``module:Class``; a task defined in ``__main__`` or registered only in this process
    cannot reach them."""
    if isinstance(executor, SerialExecutor):
        return
    for spec in specs:
        if spec.source is None and task_class(spec.task) not in SHIPPED:
            if spec.task in published():
                continue
            raise E2ELabError(
                f"task {spec.task!r} is defined in __main__ or registered only in this "
                "process, so worker processes cannot import it; move it into a module and "
                "name it as module:Class, or use --executor serial"
            )


def measure_snr(
    experiment: Experiment,
    store: Store,
    on_done: Callable[[], None] | None = None,
    force: bool = False,
) -> list[SNRResult]:
    """Gradient SNR at every grid point for the experiment's ``snr`` strategies, measured
    once and kept in the store (a rerun reads them back; ``force`` measures again). The
    key covers the task's code fingerprint, so a changed task is measured anew."""
    if experiment.snr is None:
        return []
    settings = experiment.snr
    stored = {} if force else store.snr(experiment.name)
    out = []
    for knobs in experiment.grid_points():
        task = make_task(experiment.task, knobs)
        code = fingerprint(type(task), type(task.build_system()))
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
                    code,
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
