"""The pipeline: an experiment's grid -> specs -> an executor -> the store, skipping
runs already stored (resume). ``e2elab run`` is a one-cell experiment and goes the same
way as ``reproduce``."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from e2elab import spill
from e2elab import strategy as strategies
from e2elab.diagnostics.snr import ESTIMATOR, EXACT, gradient_snr
from e2elab.errors import E2ELabError
from e2elab.execution import make_spec, task_for
from e2elab.executors import Executor, SerialExecutor, in_processes
from e2elab.experiment import Experiment, source_runs
from e2elab.learners import learner_for, trains_system
from e2elab.numerics import fixed_numerics
from e2elab.oracle import oracle_sets
from e2elab.prepare import prepare
from e2elab.records import RunResult, RunSpec, SNRResult
from e2elab.store import Store, StoreWriteError
from e2elab.tasks import SHIPPED, fingerprint, make_task, published, reference, task_class
from e2elab.timesplit import run_seconds


@dataclass(frozen=True)
class SweepCounts:
    total: int
    skipped: int
    trained: int
    rescored: int = 0
    recovered: int = 0  # runs a full or read-only disk had spilled, stored now
    # the trained runs' seconds per category (timesplit.run_seconds), and the wall time
    # spent training them
    run_seconds: dict[str, float] = field(default_factory=dict)
    training_wall: float = 0.0


def experiment_specs(
    experiment: Experiment, overrides: dict[str, Any] | None = None, store: Store | None = None
) -> list[RunSpec]:
    """The runs of ``experiment``: grid points x strategies x seeds, its variants' runs,
    and (with ``store``, which holds the source runs) its transfer runs. Each run's
    settings are the task's defaults, then the experiment's, then ``overrides`` (the
    command line's, e.g. ``device``), validated once. Every grid point's task is built,
    traced and checked here, before anything trains."""
    specs: dict[str, RunSpec] = {}
    layers = {
        **experiment.overrides(),
        **{k: v for k, v in (overrides or {}).items() if v is not None},
    }
    cells = [(knobs, experiment.strategies, True, None) for knobs in experiment.grid_points()]
    cells += [(knobs, v.strategies, False, v.budget) for v, knobs in experiment.variant_points()]
    for knobs, texts, base, budget in cells:
        at = {**layers, "budget": budget} if budget is not None else layers
        task = make_task(experiment.task, knobs)
        point = prepare(task)
        graph = point.graph
        names = [s for text in texts for s in strategies.expand(text, list(graph.modules))]
        oracle = layers.get("oracle") or ""
        for text in names:
            point.strategy(text, task, oracle)  # fail fast
            spec = make_spec(experiment.task, text, seed=0, knobs=knobs, **at)
            for seed in range(experiment.seeds):  # seeds differ in the seed alone
                seeded = dataclasses.replace(spec, seed=seed)
                specs.setdefault(seeded.id, seeded)
        for text in experiment.snr.strategies if experiment.snr and base else []:
            count = len(point.strategy(text, task).phases)
            if count and not -count <= experiment.snr.phase < count:
                raise E2ELabError(
                    f"snr.phase {experiment.snr.phase}: strategy {text} has {count} phases; "
                    f"give a phase in {-count}..{count - 1}"
                )
        if experiment.transfer is not None and base:
            for spec in _transfer_specs(experiment, task, graph, knobs, layers, store):
                specs.setdefault(spec.id, spec)
    return list(specs.values())


def _transfer_specs(
    experiment: Experiment,
    task: Any,
    graph: Any,
    knobs: dict[str, Any],
    layers: dict[str, Any],
    store: Store | None,
) -> list[RunSpec]:
    """The transfer runs at one grid point: per source strategy and seed, the source
    run's module loaded and frozen, the rest trained under ``transfer.train``. Without a
    store only the target side is checked (the sources may not have trained yet)."""
    from e2elab.checkpoints import store_source

    transfer = experiment.transfer
    assert transfer is not None
    if transfer.module not in graph.modules:
        raise E2ELabError(
            f"transfer.module {transfer.module!r} is not a module of {experiment.task}; "
            f"its modules are: {', '.join(graph.modules)}"
        )
    name, params = strategies.parse_strategy(transfer.train)
    params["freeze"] = sorted({*params.get("freeze", []), transfer.module})
    text = strategies.format_strategy(name, params)
    prepare(task).strategy(text, task)  # fail fast
    if store is None:
        return []
    runs = source_runs(experiment, store)
    out = []
    for label in transfer.strategies:
        for seed in range(experiment.seeds):
            run_id = runs.get((label, seed))
            if run_id is None:
                have = sorted({lab for lab, _ in runs})
                raise E2ELabError(
                    f"transfer: the source experiment {transfer.source} has no finished run "
                    f"of {label!r} with seed {seed} that saved {transfer.module!r}; it has: "
                    f"{', '.join(have) or '(none)'}. Give the source as many seeds, and "
                    f"save_modules: [{transfer.module}]"
                )
            source = store_source(store.path, run_id)
            load_from = f"{transfer.module}={source}"
            spec = make_spec(
                experiment.task, text, seed=seed, knobs=knobs, load_from=load_from, **layers
            )
            out.append(spec)
    return out


def _unsaved(specs: list[RunSpec], store: Store) -> set[str]:
    """Stored runs that should have kept modules (``save_modules``) but did not: they
    train again (to the same weights). A run that kept none because it has none (a
    black box) or did not finish is not among them."""
    wanted = [s for s in specs if s.settings.save_modules]
    if not wanted:
        return set()
    saved, finished = store.saved_modules(), store.ids("ok")
    modules: dict[str, list[str]] = {}
    out = set()
    for spec in wanted:
        if spec.id not in finished or not trains_system(spec.strategy):
            continue
        names = spec.settings.save_modules
        if names.strip() == "*":
            key = json.dumps([spec.task, spec.knobs, spec.source], sort_keys=True, default=str)
            if key not in modules:
                system = task_for(spec).build_system()
                modules[key] = [n for n, _ in system.named_children()]
            needed = modules[key]
        else:
            needed = [n.strip() for n in names.split(",") if n.strip()]
        if any(n not in saved.get(spec.id, []) for n in needed):
            out.add(spec.id)
    return out


def _unevaluated(specs: list[RunSpec], store: Store) -> set[str]:
    """Stored finished runs without an oracle evaluation their spec asks for: they train
    again (to the same weights) and are evaluated."""
    wanted = {s.id: oracle_sets(s.settings.oracle) for s in specs if s.settings.oracle}
    if not wanted:
        return set()
    finished = store.ids("ok")
    out = set()
    for result in store.results_by_id([i for i in wanted if i in finished]):
        if not trains_system(result.spec.strategy):
            continue
        if any(name not in result.oracle for name in wanted[result.id]):
            out.add(result.id)
    return out


def run_experiment(
    experiment: Experiment,
    store: Store,
    executor: Executor,
    overrides: dict[str, Any] | None = None,
    on_start: Callable[[int, int], None] | None = None,
    on_result: Callable[[RunResult], None] | None = None,
    force: bool = False,
    before_training: Callable[[list[RunSpec]], None] | None = None,
    specs: list[RunSpec] | None = None,
) -> SweepCounts:
    """Train every run of ``experiment`` not yet in ``store``; store each as it finishes.

    ``on_start(total, already_stored)`` is called once before training, ``on_result``
    after each stored run; ``specs``: the experiment's runs if the caller has made them
    already (with the same overrides). Each run is written in its own transaction, so an interrupted
    sweep keeps every finished run and a rerun trains only the rest. ``force`` retrains
    stored runs. A stored run that this experiment judges at another accuracy threshold
    is re-scored from its curve when read, not retrained.
    """
    recovered = recover_spilled(store)
    if specs is None:  # the caller's, made once (``experiment_specs``), or made here
        specs = experiment_specs(experiment, overrides, store)
    _check_importable(specs, executor)
    # a run that failed (e.g. out of memory) says nothing about its spec: it trains again;
    # so does one stored without the modules this experiment saves (the same weights)
    unsaved = _unsaved(specs, store) | _unevaluated(specs, store)
    stored = set() if force else store.ids() - store.ids("failed") - unsaved
    done = [s for s in specs if s.id in stored]
    todo = [s for s in specs if s.id not in stored]
    if before_training is not None:
        before_training(todo)  # e.g. estimate the time and refuse a sweep that is too long
    store.put_experiment(experiment.name, experiment.model_dump())
    rescored = _rescored(store, done)
    store.link(experiment.name, {s.id: s.settings.threshold for s in done})
    if on_start is not None:
        on_start(len(specs), len(done))
    trained = 0
    unwritten: list[RunResult] = []  # finished runs the store refused, kept until it takes them
    error: StoreWriteError | None = None
    seconds = run_seconds([])
    began = time.perf_counter()
    for result in executor.map(todo):
        seconds = {k: v + result.timing.get(k, 0.0) for k, v in seconds.items()}
        unwritten.append(result)
        unwritten, error = _write(store, unwritten, experiment.name)
        trained += 1
        if on_result is not None:
            on_result(result)
    if unwritten:
        kept = spill.spill(store.path, unwritten, experiment.name)
        where = (
            f"they were written to {kept}, and the next run or reproduce against this store "
            "imports them"
            if kept is not None
            else "they could not be written anywhere else either, and will train again"
        )
        raise E2ELabError(
            f"{error}: {len(unwritten)} finished runs could not be stored; {where}. Every "
            "run stored before is kept. Free space (or make the store writable) and rerun"
        )
    wall = time.perf_counter() - began
    return SweepCounts(len(specs), len(done), trained, rescored, recovered, seconds, wall)


def recover_spilled(store: Store) -> int:
    """Store the runs that an earlier sweep spilled (see ``spill``) and remove each spill
    file once all its runs are in; the number stored. Lines that cannot be read are
    left in a file kept beside it as ``.broken``."""
    count = 0
    for path in spill.waiting(store.path):
        runs, broken = spill.read(path)
        for result, experiment in runs:
            store.put(result, experiment)  # a refusal keeps the file for the next time
            count += 1
        if broken:
            path.replace(path.with_name(path.name + ".broken"))
        else:
            path.unlink()
    return count


def _write(
    store: Store, results: list[RunResult], experiment: str
) -> tuple[list[RunResult], StoreWriteError | None]:
    """Store what it takes, in order; return what it refused and why."""
    for index, result in enumerate(results):
        try:
            store.put(result, experiment)
        except StoreWriteError as error:
            return results[index:], error
    return [], None


def _rescored(store: Store, specs: list[RunSpec]) -> int:
    """How many stored runs this experiment judges at another threshold than they were
    trained with. They are re-scored when read (see ``Store.results``), never rewritten:
    another experiment may share the run and judge it at its own threshold."""
    wanted = {s.id: s.settings.threshold for s in specs}
    return sum(r.spec.settings.threshold != wanted[r.id] for r in store.results_by_id(list(wanted)))


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
    workers: int | None = None,
) -> list[SNRResult]:
    """Gradient SNR at every grid point for the experiment's ``snr`` strategies, measured
    once and kept in the store (a rerun reads them back; ``force`` measures again). The
    key covers the task's code fingerprint, so a changed task is measured anew.

    Measurements still to make run in ``workers`` processes (default: the available
    cores), each stored as it ends; a task class that another process cannot import
    (defined in ``__main__``) is measured here, one measurement after another. A
    measurement runs under ``fixed_numerics`` wherever it runs, so it gives the same
    numbers in a worker as here."""
    if experiment.snr is None:
        return []
    settings = experiment.snr
    stored = {} if force else store.snr(experiment.name)
    keys: list[str] = []
    missing: list[tuple[str, tuple[Any, ...]]] = []
    portable = True
    for knobs in experiment.grid_points():
        task = make_task(experiment.task, knobs)
        code = fingerprint(type(task), type(task.build_system()))
        name = reference(type(task)) or experiment.task
        portable &= type(task) in SHIPPED or reference(type(task)) is not None
        config = None  # a later phase: the earlier ones train with the experiment's settings
        if settings.phase != 0:
            layers = {**experiment.overrides(), "device": "cpu"}
            config = type(task).defaults.override(**layers).validate()
        for strategy in settings.strategies:
            exact = settings.is_exact(strategy)
            key = json.dumps(
                [
                    experiment.task,
                    task.knobs,
                    strategy,
                    settings.inits,
                    settings.batches,
                    settings.batch_size,
                    EXACT if exact else ESTIMATOR,
                    code,
                    *([settings.phase, dataclasses.asdict(config)] if config else []),
                ],
                sort_keys=True,
            )
            keys.append(key)
            if key in stored:
                if on_done is not None:
                    on_done()
                continue
            job = (name, dict(task.knobs), strategy, settings.inits, settings.batches)
            missing.append((key, (*job, settings.batch_size, settings.phase, config, exact)))
    workers = workers or len(os.sched_getaffinity(0))
    inits = settings.inits
    if portable and workers > 1 and len(missing) * inits > 1:
        # one job per initialisation (each depends on its own seed alone), so a long
        # measurement spreads over the cores instead of ending on one
        jobs = [(*job[:3], 1, *job[4:], init) for _, job in missing for init in range(inits)]
        owner = [m for m in range(len(missing)) for _ in range(inits)]
        parts: dict[int, dict[int, dict[str, Any]]] = {}
        for index, value in in_processes(snr_job, jobs, workers):
            m = owner[index]
            parts.setdefault(m, {})[jobs[index][-1]] = value
            if len(parts[m]) == inits:
                _keep(store, experiment.name, stored, missing[m][0], merge_inits(parts.pop(m)))
                if on_done is not None:
                    on_done()
    else:
        for key, job in missing:
            _keep(store, experiment.name, stored, key, snr_job(*job))
            if on_done is not None:
                on_done()
    return [SNRResult(**stored[key]) for key in keys]


def _keep(store: Store, experiment: str, stored: dict[str, Any], key: str, value: Any) -> None:
    stored[key] = value
    store.put_snr(experiment, key, value)


def merge_inits(parts: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """One SNR measurement from its initialisations measured apart (``snr_job`` with
    ``inits=1`` and ``seed=init``): the per-init lists joined in init order."""
    ordered = [parts[i] for i in sorted(parts)]
    merged = dict(ordered[0])
    for name in ("per_init", "resolved", "noise_top_share", "alignment"):
        joined: dict[str, list[Any]] = {}
        for part in ordered:
            for module, values in part[name].items():
                joined.setdefault(module, []).extend(values)
        merged[name] = joined
    return merged


def snr_job(
    task: str,
    knobs: dict[str, Any],
    strategy: str,
    inits: int,
    batches: int,
    batch_size: int | None,
    phase: int,
    pretrain: Any,
    exact: bool,
    seed: int = 0,
) -> dict[str, Any]:
    """One SNR measurement (of initialisations ``seed`` .. ``seed + inits - 1``), given in
    what crosses a process boundary; its result as a dict (``SNRResult`` fields)."""
    result = gradient_snr(
        make_task(task, knobs),
        strategy,
        inits,
        batches,
        batch_size,
        seed=seed,
        phase=phase,
        pretrain=pretrain,
        exact=exact,
    )
    return dataclasses.asdict(result)


# on top of the training steps: data drawing and the loop's own work (measured: 10-30%)
_OVERHEAD = 1.3
# a run's set-up, memory probe and linear probes at initialisation and at the end
# (0.2-0.4 s each on 2 cores for the shipped tasks)
_FIXED_SECONDS = 0.8


def estimate_seconds(specs: list[RunSpec]) -> tuple[float, int]:
    """Seconds one process needs to train ``specs``: one training step timed per grid
    point, strategy and batch size (after a warm-up step), times each run's steps. An
    upper estimate: seeds trained stacked go faster. Black-box baselines are not timed:
    returns (seconds, how many runs were left out of the estimate)."""
    from e2elab.replicas import EVAL_CHUNK, make_replicas

    step: dict[str, float] = {}
    evaluation: dict[str, float] = {}
    total, untimed = 0.0, 0
    for spec in specs:
        key = json.dumps([spec.task, spec.knobs, spec.strategy, spec.settings.batch_size])
        if key not in step:
            task = task_for(spec)
            graph = prepare(task).graph
            strategy = prepare(task).strategy(spec.strategy, task)
            if not learner_for(strategy).has_system:  # a model's fit is not timed
                step[key] = 0.0
                untimed += 1
                continue
            device = torch.device(spec.settings.device)
            with fixed_numerics():
                replicas = make_replicas(task, strategy, graph, [0], device)
                replicas.begin_phase(strategy.phases[0], spec.settings.optimizer, spec.settings.lr)
                rng = [torch.Generator().manual_seed(0)]
                times = []
                for _ in range(3):
                    with task.drawing_for(strategy.phases[0]):
                        batch = replicas.draw(task, spec.settings.batch_size, rng, device)
                    began = time.perf_counter()
                    replicas.step(0, batch)
                    times.append(time.perf_counter() - began)
                # one evaluation of the held-out set: one chunk timed, scaled to its size
                test = task.test_set()
                chunk = min(len(test), EVAL_CHUNK)
                began = time.perf_counter()
                replicas.ports(0, test.slice(0, chunk).to(device))
                evaluation[key] = (time.perf_counter() - began) * len(test) / max(chunk, 1)
            step[key] = sorted(times[1:])[0] * strategy.members
        untimed += step[key] == 0.0
        steps = spec.settings.budget / spec.settings.batch_size
        if step[key]:
            # a run's fixed costs, which dominate small runs: its evaluations, and set-up
            # with the linear probes at start and end
            fixed = evaluation[key] * (spec.settings.evaluations + 1) + _FIXED_SECONDS
            total += step[key] * steps * _OVERHEAD + fixed
    return total, untimed
