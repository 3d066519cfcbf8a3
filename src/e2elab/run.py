"""A run: (task, knobs, strategy, seed, budget) -> result. Its id is a hash of the spec."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from scipy.stats import binom

from e2elab import strategy as strategies
from e2elab.baselines import fit_blackbox
from e2elab.diagnostics.probes import linear_probes
from e2elab.errors import E2ELabError, choices
from e2elab.numerics import describe, fixed_numerics
from e2elab.replicas import OPTIMIZERS
from e2elab.system import Graph, System, trace
from e2elab.task import Batch, PortSpec, Task
from e2elab.tasks import make_task
from e2elab.train import Outcome, TrainConfig, train_seeds

# Bump when a change to the code changes what a stored spec would produce.
SPEC_VERSION = 3
# 3: every run trains under numerics.fixed_numerics (one thread, fixed backend flags) and
#    with position-independent Adam/SGD kernels on the CPU, so a spec gives one result
#    whichever command trains it and whichever seeds share its batch.
# A final metric is "indistinguishable from chance" when a one-sided binomial test
# against the chance rate cannot reject it at this level, given the test-set size.
BREAKDOWN_ALPHA = 0.01


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines a run's result. Build with ``RunSpec.create``."""

    task: str
    knobs: dict[str, Any]
    strategy: str
    seed: int
    budget: int
    batch_size: int
    lr: float
    evaluations: int
    threshold: float
    optimizer: str = "adam"
    device: str = "cpu"

    @classmethod
    def create(
        cls,
        task: str | Task,
        strategy: str,
        seed: int = 0,
        knobs: dict[str, Any] | None = None,
        budget: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        evaluations: int | None = None,
        threshold: float | None = None,
        optimizer: str | None = None,
        device: str = "cpu",
    ) -> RunSpec:
        """Fill every unset field from the task's defaults and check the values."""
        instance = task if isinstance(task, Task) else make_task(task, knobs)
        if isinstance(task, Task) and knobs:
            raise E2ELabError("pass knobs either to the Task or to RunSpec.create, not both")
        name, params = strategies.parse_strategy(strategy)
        d = type(instance).defaults
        spec = cls(
            task=instance.name,
            knobs=dict(instance.settings),
            strategy=strategies.format_strategy(name, params),
            seed=int(seed),
            budget=int(budget if budget is not None else d.budget),
            batch_size=int(batch_size if batch_size is not None else d.batch_size),
            lr=float(lr if lr is not None else d.lr),
            evaluations=int(evaluations if evaluations is not None else d.evaluations),
            threshold=float(threshold if threshold is not None else d.threshold),
            optimizer=optimizer if optimizer is not None else d.optimizer,
            device=device,
        )
        spec.check()
        return spec

    def check(self) -> None:
        for name in ("budget", "batch_size", "evaluations"):
            if getattr(self, name) < 1:
                raise E2ELabError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not self.lr > 0:
            raise E2ELabError(f"lr must be positive, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise choices("optimizer", self.optimizer, list(OPTIMIZERS))

    @property
    def id(self) -> str:
        """A hash of every field that changes the result (the device does not)."""
        fields = dataclasses.asdict(self)
        fields.pop("device")
        fields["version"] = SPEC_VERSION
        text = json.dumps(fields, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class RunResult:
    """The outcome of one run, JSON-serialisable."""

    id: str
    spec: dict[str, Any]
    status: str
    reason: str | None
    output: str
    curve: list[dict[str, Any]]
    final: dict[str, float]
    chance: dict[str, float]
    examples_to_threshold: int | None
    breakdown: bool
    breakdown_p_value: float | None
    test_size: int
    wall_seconds: float
    memory: dict[str, Any]
    phases: list[dict[str, Any]] = field(default_factory=list)
    probes: dict[str, float] = field(default_factory=dict)
    probes_at_init: dict[str, float] = field(default_factory=dict)
    modules: dict[str, list[str]] = field(default_factory=dict)
    # what the numbers depend on besides the spec (see numerics.describe); not in the id
    numerics: dict[str, Any] = field(default_factory=dict)
    # SHA-256 of the trained parameters: the same spec gives the same hash, bit for bit
    weights_sha256: str | None = None

    @property
    def output_metric(self) -> float:
        return self.final.get(self.output, float("nan"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        return cls(**data)

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.id}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=True))
        tmp.replace(path)
        return path


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
    if any(seed_group(s) != seed_group(first) for s in specs):
        raise E2ELabError("execute_seeds: the specs must differ only by seed")
    began = time.perf_counter()
    instance = task if task is not None else make_task(first.task, first.knobs)
    torch.manual_seed(first.seed)
    graph = trace(_checked_system(instance), first_batch(instance), instance.ports)
    strategy = strategies.build(first.strategy, graph, instance.output)
    if strategy.blackbox is not None:
        return [
            _execute_blackbox(s, instance, strategy.blackbox, time.perf_counter()) for s in specs
        ]
    config = TrainConfig(
        budget=first.budget,
        batch_size=first.batch_size,
        lr=first.lr,
        evaluations=first.evaluations,
        seed=first.seed,
        optimizer=first.optimizer,
        device=first.device,
    )
    seeds = [s.seed for s in specs]
    outcomes = train_seeds(instance, strategy, graph, config, seeds, on_progress, batch=batch)
    seconds = (time.perf_counter() - began) / len(specs)
    return [
        _result(spec, instance, graph, strategy, outcome, seconds)
        for spec, outcome in zip(specs, outcomes, strict=True)
    ]


def seed_group(spec: RunSpec) -> str:
    """Specs with the same key differ only by seed and can be trained together."""
    fields = spec.to_dict()
    fields.pop("seed")
    return json.dumps(fields, sort_keys=True, default=str)


def _result(
    spec: RunSpec,
    instance: Task,
    graph: Graph,
    strategy: strategies.Strategy,
    outcome: Outcome,
    train_seconds: float,
) -> RunResult:
    began = time.perf_counter()
    test = instance.test_set()
    chance = {p: chance_level(s, test.targets[p]) for p, s in instance.ports.items()}
    output = instance.output
    final_metric = outcome.final.get(output, float("nan"))
    broken, p_value = at_chance(instance.ports[output], final_metric, chance[output], len(test))
    outcome.memory["max_rss_bytes"] = _max_rss_bytes()
    probes = (
        linear_probes(instance, outcome.systems[0], device=spec.device)
        if outcome.status == "ok"
        else {}
    )
    probes_at_init = _probes_at_init(instance, spec) if probes else {}
    return RunResult(
        id=spec.id,
        spec=spec.to_dict(),
        status=outcome.status,
        reason=outcome.reason,
        output=output,
        curve=outcome.curve,
        final=outcome.final,
        chance=chance,
        examples_to_threshold=examples_to_threshold(outcome.curve, output, spec.threshold),
        breakdown=broken,
        breakdown_p_value=p_value,
        test_size=len(test),
        wall_seconds=train_seconds + time.perf_counter() - began,
        memory=outcome.memory,
        phases=[
            {"label": p.label, "share": p.share, "train": sorted(p.train), "seconds": s}
            for p, s in zip(strategy.phases, outcome.phase_seconds, strict=False)
        ],
        probes=probes,
        probes_at_init=probes_at_init,
        modules={m: list(graph.ports_of(m)) for m in graph.modules},
        numerics=describe(spec.device),
        weights_sha256=weights_hash(outcome.systems),
    )


def weights_hash(systems: list[System]) -> str:
    """SHA-256 over every member's parameters and buffers, by name, in float32 bytes."""
    digest = hashlib.sha256()
    for member, system in enumerate(systems):
        for name, tensor in sorted(system.state_dict().items()):
            digest.update(f"{member}.{name}{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _execute_blackbox(spec: RunSpec, task: Task, model: str, began: float) -> RunResult:
    """A baseline run: fit a scikit-learn learner on ``spec.budget`` raw examples."""
    fit = fit_blackbox(task, model, spec.budget, spec.seed)
    test = task.test_set()
    output = task.output
    chance = chance_level(task.ports[output], test.targets[output])
    metric = fit["test_accuracy"]
    broken, p_value = at_chance(task.ports[output], metric, chance, len(test))
    curve = [
        {"examples": 0, "phase": -1, "metrics": {output: chance}},
        {"examples": fit["examples_used"], "phase": 0, "metrics": {output: metric}},
    ]
    return RunResult(
        id=spec.id,
        spec=spec.to_dict(),
        status="ok",
        reason=None,
        output=output,
        curve=curve,
        final={output: metric},
        chance={output: chance},
        examples_to_threshold=examples_to_threshold(curve, output, spec.threshold),
        breakdown=broken,
        breakdown_p_value=p_value,
        test_size=len(test),
        wall_seconds=time.perf_counter() - began,
        memory={"max_rss_bytes": _max_rss_bytes()},
        phases=[
            {
                "label": f"blackbox:{model}",
                "share": 1.0,
                "train": [],
                "seconds": fit["seconds"],
                "train_accuracy": fit["train_accuracy"],
            }
        ],
        numerics=describe(spec.device),
    )


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
    spec = RunSpec.create(task, strategy, seed=seed, knobs=knobs, budget=budget, **overrides)
    return execute(spec, task if isinstance(task, Task) else None)


_INIT_PROBES: dict[str, dict[str, float]] = {}


def _probes_at_init(task: Task, spec: RunSpec) -> dict[str, float]:
    """Probes of the untrained system: the baseline a module must beat to have learned.
    Every strategy starts from the same initialisation for a seed, so this is cached."""
    key = json.dumps([spec.task, spec.knobs, spec.seed, spec.device], sort_keys=True)
    if key not in _INIT_PROBES:
        torch.manual_seed(spec.seed)
        system = task.build_system().to(spec.device)
        _INIT_PROBES[key] = linear_probes(task, system, device=spec.device)
    return _INIT_PROBES[key]


def _checked_system(task: Task) -> System:
    system = task.build_system()
    if not isinstance(system, System):
        raise E2ELabError(
            f"task {task.name}: build_system returned {type(system).__name__}; "
            "it must return an e2elab.System subclass"
        )
    return system


def chance_level(spec: PortSpec, targets: torch.Tensor) -> float:
    """For success rates: the declared chance, or the test set's majority-class rate if
    higher. For regression: minus the targets' variance. Else the declared chance."""
    if spec.kind == "regression":
        return -float(targets.float().var(unbiased=False).item())
    if not spec.accuracy_like:
        return spec.chance
    _, counts = torch.unique(targets.flatten(), return_counts=True)
    return max(spec.chance, counts.max().item() / targets.numel())


def chance_p_value(spec: PortSpec, metric: float, chance: float, n: int) -> float | None:
    """P(a learner that ignores its input scores at least ``metric`` on ``n`` test
    examples), or None where no test applies (regression, or no result).

    Success rates: the exact binomial tail. Rewards: each example's reward lies in
    [-1, 1], so Hoeffding's inequality bounds the tail by exp(-n t^2 / 2), t the excess
    over chance (a conservative p-value)."""
    if metric != metric:  # NaN: no result
        return None
    if spec.accuracy_like:
        correct = round(metric * n)
        return float(binom.sf(correct - 1, n, chance))
    if spec.kind == "reward":
        excess = metric - chance
        return 1.0 if excess <= 0 else float(math.exp(-n * excess * excess / 2))
    return None


def at_chance(spec: PortSpec, metric: float, chance: float, n: int) -> tuple[bool, float | None]:
    """Whether a run's output ended at chance, and the test's p-value. Where no test
    applies, at chance means no better than chance (a NaN result counts as at chance)."""
    p_value = chance_p_value(spec, metric, chance, n)
    if p_value is None:
        return not metric > chance, None
    return p_value >= BREAKDOWN_ALPHA, p_value


def examples_to_threshold(curve: list[dict[str, Any]], port: str, threshold: float) -> int | None:
    """Training examples drawn when ``port`` first reached ``threshold`` (None: never)."""
    for point in curve:
        if point["metrics"].get(port, float("-inf")) >= threshold:
            return int(point["examples"])
    return None


def _max_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def first_batch(task: Task) -> Batch:
    """A tiny batch of held-out data, e.g. to trace a system's graph."""
    return task.test_set().slice(0, 2)
