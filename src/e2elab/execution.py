"""A run: (task, knobs, strategy, seed, settings) -> result. The records (RunSpec,
RunResult) live in ``records``; this module makes specs from tasks and trains them."""

from __future__ import annotations

import hashlib
import json
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from e2elab import checkpoints
from e2elab import strategy as strategies
from e2elab.diagnostics.probes import stack_probes
from e2elab.errors import E2ELabError, choices
from e2elab.learners import Learner, learner_for, trains_system
from e2elab.numerics import conv_layout, describe, fixed_numerics
from e2elab.oracle import evaluate_oracles
from e2elab.prepare import first_batch as first_batch  # its home before prepare
from e2elab.prepare import prepare
from e2elab.records import (
    SPEC_VERSION,
    RunResult,
    RunSpec,
    Settings,
    examples_to_threshold,
    phase_end,
)
from e2elab.system import Graph, System
from e2elab.task import PortSpec, Task
from e2elab.tasks import fingerprint, make_task, reference, task_class
from e2elab.train import Outcome

__all__ = [
    "SPEC_VERSION",
    "RunResult",
    "RunSpec",
    "Settings",
    "at_chance",
    "chance_level",
    "examples_to_threshold",
    "execute",
    "execute_seeds",
    "make_spec",
    "run",
]

# A final metric is "indistinguishable from chance" when a one-sided binomial test
# against the chance rate cannot reject it at this level, given the test-set size.
BREAKDOWN_ALPHA = 0.01


def make_spec(
    task: str | Task,
    strategy: str,
    seed: int = 0,
    knobs: dict[str, Any] | None = None,
    settings: Settings | None = None,
    **overrides: Any,
) -> RunSpec:
    """A checked spec: the task's default settings (or ``settings``) with ``overrides``
    (``budget``, ``lr``, ...; None leaves a default) laid over them, validated once."""
    if isinstance(task, Task) and knobs:
        raise E2ELabError("pass knobs either to the Task or to make_spec, not both")
    instance = task if isinstance(task, Task) else make_task(task, knobs)
    cls = type(instance)
    base = settings if settings is not None else cls.defaults
    chosen = base.override(**overrides).validate()
    chosen = chosen.override(device=resolve_device(chosen.device))
    if chosen.load_from and not chosen.load:
        chosen = chosen.override(
            load=checkpoints.resolve(chosen.load_from, instance.build_system())[0]
        )
    if chosen.load and not chosen.load_from:
        raise E2ELabError("load names weights but not where to read them; give load_from")
    _check_saved(chosen.save_modules, instance)
    name, params = strategies.parse_strategy(strategy)
    if chosen.load and not trains_system(strategy):
        raise E2ELabError(
            "blackbox trains no module of the system, so it loads none; drop the load"
        )
    source = reference(cls) if isinstance(task, Task) or ":" not in task else task
    return RunSpec(
        task=instance.name,
        knobs=dict(instance.knobs),
        strategy=strategies.format_strategy(name, params),
        seed=int(seed),
        settings=chosen,
        code=fingerprint(cls, _system_class(instance)),
        source=source,
    )


def _check_saved(names: str, task: Task) -> None:
    """``save_modules`` lists modules of the system (or is ``*``)."""
    if not names or names.strip() == "*":
        return
    modules = [n for n, _ in task.build_system().named_children()]
    for name in (n.strip() for n in names.split(",")):
        if name not in modules:
            raise choices("module to save (save_modules)", name, modules, "or * for every module")


def resolve_device(name: str) -> str:
    """``auto`` picks an accelerator when one is present; an asked-for accelerator that
    is missing is refused here, where the settings enter, not in the training loop."""
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise E2ELabError(f"device {name} asked for, but torch sees no CUDA device; use cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise E2ELabError("device mps asked for, but MPS is not available; use cpu")
    return name


_SYSTEM_CLASSES: dict[tuple[type, str], type] = {}


def _system_class(task: Task) -> type:
    key = (type(task), json.dumps(task.knobs, sort_keys=True, default=str))
    if key not in _SYSTEM_CLASSES:
        _SYSTEM_CLASSES[key] = type(task.build_system())
    return _SYSTEM_CLASSES[key]


def task_for(spec: RunSpec) -> Task:
    """The task a spec names: by ``source`` (module:Class) when it has one."""
    cls = task_class(spec.source) if spec.source else task_class(spec.task)
    return cls(**spec.knobs)


def execute(
    spec: RunSpec,
    task: Task | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> RunResult:
    """Train one run. ``task`` may be passed for tasks not in the registry."""
    return execute_seeds([spec], task, on_progress)[0]


def execute_seeds(
    specs: list[RunSpec],
    task: Task | None = None,
    on_progress: Callable[[int], None] | None = None,
    batch: bool | None = None,
) -> list[RunResult]:
    """Train runs that differ only by seed; one result per spec, in order. The seeds
    train at once (seed-batched) when that is faster, or as ``batch`` says (see
    ``train.train_seeds``). Each result equals ``execute`` of its spec bit for bit on
    the CPU; ``wall_seconds`` divides the group's time evenly.

    Every run trains under ``numerics.fixed_numerics`` (one thread, fixed backend flags),
    so a spec's result does not depend on the caller's torch settings."""
    if not specs:
        return []
    with fixed_numerics():
        return _execute_seeds(specs, task, on_progress, batch)


def _execute_seeds(
    specs: list[RunSpec],
    task: Task | None,
    on_progress: Callable[[int], None] | None,
    batch: bool | None,
) -> list[RunResult]:
    first = specs[0]
    if any(s.seed_group() != first.seed_group() for s in specs):
        raise E2ELabError("execute_seeds: the specs must differ only by seed")
    began = time.perf_counter()
    instance = task if task is not None else task_for(first)
    instance = checkpoints.preload(instance, first.settings.load, first.settings.load_from)
    torch.manual_seed(first.seed)
    point = prepare(instance)  # traced and checked once per process and grid point
    strategy = point.strategy(first.strategy, instance, first.settings.oracle)
    graph = point.graph
    learner = learner_for(strategy)
    try:
        fitting = time.perf_counter()
        outcomes = learner.fit(
            instance, graph, first.settings, [s.seed for s in specs], on_progress, batch
        )
        probing = time.perf_counter()
        seconds = (probing - began) / len(specs)
        probed = _probe_stack(instance, specs, outcomes, learner)
        shares = {
            "set-up": (fitting - began) / len(specs),
            "fit": (probing - fitting) / len(specs),
            "probes": (time.perf_counter() - probing) / len(specs),
        }
        results = []
        for spec, outcome, probes in zip(specs, outcomes, probed, strict=True):
            assembling = time.perf_counter()
            result = _assemble(spec, instance, graph, strategy, learner, outcome, seconds, probes)
            result.timing = _timing(shares, outcome, learner, time.perf_counter() - assembling)
            results.append(result)
        return results
    except (MemoryError, RuntimeError) as error:
        if not _out_of_memory(error):
            raise
        seconds = (time.perf_counter() - began) / len(specs)
        reason = (
            f"out of memory ({' '.join(str(error).split())[:160]}); lower the batch size or "
            "the knobs, or train fewer runs at once (--workers)"
        )
        failed = Outcome(status="failed", reason=reason)
        return [
            _assemble(spec, instance, graph, strategy, learner, failed, seconds) for spec in specs
        ]


def _timing(
    shares: dict[str, float], outcome: Outcome, learner: Learner, assembling: float
) -> dict[str, float]:
    """Where a run's time went (see ``timesplit``), from its share of the stack's set-up,
    fit and probes: a system's fit splits into training steps, held-out evaluation and
    the loop's own set-up; a model's fit is black-box time. Assembling the result (the
    oracle evaluation, the artifacts, the weights' hash) counts as evaluation."""
    if not learner.has_system:
        return {"black boxes": shares["fit"], "set-up": shares["set-up"], "evaluation": assembling}
    evaluation = outcome.evaluation_seconds
    training = max(0.0, sum(outcome.phase_seconds) - sum(outcome.phase_evaluation_seconds))
    loop_set_up = max(0.0, shares["fit"] - training - evaluation)
    return {
        "training": training,
        "evaluation": evaluation + assembling,
        "probes": shares["probes"],
        "set-up": shares["set-up"] + loop_set_up,
    }


def _out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    text = str(error).lower()
    return "out of memory" in text or "can't allocate memory" in text


def seed_group(spec: RunSpec) -> str:
    """Specs with the same key differ only by seed and can be trained together."""
    return spec.seed_group()


def _assemble(
    spec: RunSpec,
    task: Task,
    graph: Graph,
    strategy: strategies.Strategy,
    learner: Learner,
    outcome: Outcome,
    seconds: float,
    probed: tuple[dict[str, float], dict[str, float]] = ({}, {}),
) -> RunResult:
    """The one place a RunResult is made: from a learner's Outcome (a failed one, e.g.
    out of memory, stored with its reason so the sweep goes on and claims count it
    apart). What only a trained system has (probes, fitted for the whole stack by
    ``_probe_stack``, the weights' hash, saved modules, the oracle evaluation) comes
    where the learner has one."""
    began = time.perf_counter()
    output = task.output
    common = {
        "id": spec.id,
        "spec": spec,
        "status": outcome.status,
        "reason": outcome.reason,
        "output": output,
        "learner": learner.name,
        "numerics": describe(spec.settings.device),
    }
    if outcome.status == "failed":
        return RunResult(
            **common,
            curve=[],
            final={},
            chance={},
            examples_to_threshold=None,
            at_chance=False,
            at_chance_p_value=None,
            test_size=0,
            wall_seconds=seconds,
            memory={"max_rss_bytes": _max_rss_bytes()},
        )
    test = task.test_set()
    system, ok = learner.has_system, outcome.status == "ok"
    ports = task.ports if system else {output: task.ports[output]}
    chance = {p: chance_level(s, test.targets[p]) for p, s in ports.items()}
    final_metric = outcome.final.get(output, float("nan"))
    broken, p_value = at_chance(task.ports[output], final_metric, chance[output], len(test))
    memory = {**outcome.memory, "max_rss_bytes": _max_rss_bytes()}
    probes, probes_at_init = probed
    oracle = (
        evaluate_oracles(spec.settings.oracle, task, strategy, graph, outcome.systems)
        if system and ok and spec.settings.oracle
        else {}
    )
    phases = outcome.phase_records
    if phases is None:
        phases = [
            {
                "label": p.label,
                "share": p.share,
                "train": sorted(p.train),
                "seconds": s,
                "evaluation_seconds": e,
                "lr_scale": p.lr_scale,
                **phase_end(outcome.curve, i),
            }
            for i, (p, s, e) in enumerate(
                zip(
                    strategy.phases,
                    outcome.phase_seconds,
                    outcome.phase_evaluation_seconds,
                    strict=False,
                )
            )
        ]
    own = outcome.seconds if outcome.seconds is not None else seconds
    return RunResult(
        **common,
        curve=outcome.curve,
        final=outcome.final,
        chance=chance,
        examples_to_threshold=examples_to_threshold(outcome.curve, output, spec.settings.threshold),
        at_chance=broken,
        at_chance_p_value=p_value,
        test_size=len(test),
        wall_seconds=own + time.perf_counter() - began,
        memory=memory,
        phases=phases,
        probes=probes,
        probes_at_init=probes_at_init,
        modules={m: list(graph.ports_of(m)) for m in graph.modules} if system else {},
        weights_sha256=weights_hash(outcome.systems) if system else None,
        metric_names=_metric_names(task),
        probe_metric=_probe_metrics(task) if system else {},
        selected_at=outcome.selected_at,
        artifacts=_artifacts(task, outcome.systems),
        oracle=oracle,
        checkpoints=(
            checkpoints.saved(
                outcome.systems[0], spec.settings.save_modules, _about(spec, strategy.members)
            )
            if ok and outcome.systems
            else {}
        ),
    )


def _artifacts(task: Task, systems: list[System]) -> dict[str, Any]:
    """What the task keeps of the trained system; of an ensemble, of its first member
    (said under ``member``: the ensemble's own output is in the run's metrics)."""
    if not systems:
        return {}
    kept = task.artifacts(systems[0])
    if kept and len(systems) > 1:
        kept = {**kept, "member": f"0 of {len(systems)}"}
    return kept


def _about(spec: RunSpec, members: int = 1) -> dict[str, Any]:
    """What a saved module's header says of the run it came from (of an ensemble, the
    first member's module is saved)."""
    return {
        "member": f"0 of {members}",
        "run_id": spec.id,
        "task": spec.task,
        "knobs": spec.knobs,
        "strategy": spec.strategy,
        "seed": spec.seed,
        "e2elab_code": spec.code,
    }


def _metric_names(task: Task) -> dict[str, str]:
    return {p: s.port_kind.metric_name for p, s in task.ports.items()}


def _probe_metrics(task: Task) -> dict[str, str]:
    names = {"classify": "balanced accuracy", "regress": "R2"}
    return {p: names[s.port_kind.probe] for p, s in task.ports.items() if s.port_kind.probe}


def weights_hash(systems: list[System]) -> str:
    """SHA-256 over every member's parameters and buffers, by name, in float32 bytes."""
    digest = hashlib.sha256()
    for member, system in enumerate(systems):
        for name, tensor in sorted(system.state_dict().items()):
            digest.update(f"{member}.{name}{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def run(
    task: str | Task,
    strategy: str,
    seed: int = 0,
    budget: int | None = None,
    knobs: dict[str, Any] | None = None,
    **overrides: Any,
) -> RunResult:
    """Train ``task`` under ``strategy`` and return the result.

    Examples
    --------
    >>> result = run("digit-chain", "modular", knobs={"n": 1}, budget=2000)  # doctest: +SKIP
    >>> result.final[result.output] > 0.5  # doctest: +SKIP
    True
    """
    spec = make_spec(task, strategy, seed=seed, knobs=knobs, budget=budget, **overrides)
    return execute(spec, task if isinstance(task, Task) else None)


_INIT_PROBES: dict[str, dict[str, float]] = {}


def _probe_stack(
    task: Task, specs: list[RunSpec], outcomes: list[Outcome], learner: Learner
) -> list[tuple[dict[str, float], dict[str, float]]]:
    """Per run: the linear probes of its trained system and of its untrained one (the
    baseline a module must beat to have learned), for every finished run of a stack at
    once; empty where the learner has no system or the run did not finish."""
    done = [i for i, o in enumerate(outcomes) if learner.has_system and o.status == "ok"]
    out: list[tuple[dict[str, float], dict[str, float]]] = [({}, {}) for _ in specs]
    if not done:
        return out
    device = specs[0].settings.device
    trained = stack_probes(task, [outcomes[i].systems[0] for i in done], device=device)
    untrained = _probes_at_init(task, [specs[i] for i in done])
    for index, final, initial in zip(done, trained, untrained, strict=True):
        out[index] = (final, initial)
    return out


def _probes_at_init(task: Task, specs: list[RunSpec]) -> list[dict[str, float]]:
    """Probes of each spec's untrained system. Every strategy starts from the same
    initialisation for a seed, so they are cached; the ones missing are fitted together."""
    keys = [
        json.dumps(
            [s.task, s.knobs, s.seed, s.settings.device, s.code, s.settings.load], sort_keys=True
        )
        for s in specs
    ]
    missing = [i for i, key in enumerate(keys) if key not in _INIT_PROBES]
    if missing:
        device = specs[0].settings.device
        systems = []
        for i in missing:
            torch.manual_seed(specs[i].seed)
            systems.append(conv_layout(task.build_system().to(device), device))
        for i, scores in zip(missing, stack_probes(task, systems, device=device), strict=True):
            _INIT_PROBES[keys[i]] = scores
    return [_INIT_PROBES[key] for key in keys]


def chance_level(spec: PortSpec, targets: torch.Tensor) -> float:
    """The port's chance level on these test targets (see its kind's ``chance_level``)."""
    return spec.port_kind.chance_level(spec.chance, targets)


def chance_p_value(spec: PortSpec, metric: float, chance: float, n: int) -> float | None:
    """P(a learner that ignores its input scores at least ``metric`` on ``n`` test
    examples), or None where the port's kind has no test (regression, or no result)."""
    return spec.port_kind.chance_p_value(metric, chance, n)


def at_chance(spec: PortSpec, metric: float, chance: float, n: int) -> tuple[bool, float | None]:
    """Whether a run's output ended at chance, and the test's p-value. Where no test
    applies, at chance means no better than chance (a NaN result counts as at chance)."""
    p_value = chance_p_value(spec, metric, chance, n)
    if p_value is None:
        return not metric > chance, None
    return p_value >= BREAKDOWN_ALPHA, p_value


def _max_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)
