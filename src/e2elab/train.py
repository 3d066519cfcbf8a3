"""The one training loop: phases in order, a budget of training examples, held-out
evaluation on a schedule, learning curves per port.

It knows no task and no strategy by name: a phase says which modules train, which
losses count, which ports are cut or teacher-forced, and the task says how to score a
port. It trains one seed, or several seeds of the same spec at once (seed-batched, see
``replicas``); every seed gets its own Outcome. Read it top to bottom: ``train_seeds``
-> ``_Loop.run_phase`` -> ``_Loop.check``.

Nothing on the hot path waits for the device: losses are checked for NaN or infinity on
the device, and the host looks at the flags only at evaluation points and phase ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from e2elab.allocator import keep_freed_memory
from e2elab.errors import E2ELabError
from e2elab.numerics import fixed_numerics
from e2elab.objective import auxiliary_heads, phase_loss
from e2elab.records import PLATEAU_DELTA, VALIDATION, Settings
from e2elab.replicas import (
    EVAL_CHUNK,
    OPTIMIZERS,
    Replicas,
    SeedPlan,
    make_replicas,
    plan_seeds,
    step_memory,
)
from e2elab.strategy import Phase, Strategy
from e2elab.system import Graph, System
from e2elab.task import Batch, Task

__all__ = ["OPTIMIZERS", "Outcome", "Settings", "auxiliary_heads", "phase_loss", "train"]


@dataclass
class Outcome:
    """What one training run produced (the raw material of a RunResult)."""

    curve: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)
    status: str = "ok"
    reason: str | None = None
    examples: int = 0
    memory: dict[str, Any] = field(default_factory=dict)
    phase_seconds: list[float] = field(default_factory=list)
    # of each phase's seconds, those spent evaluating on held-out data
    phase_evaluation_seconds: list[float] = field(default_factory=list)
    systems: list[System] = field(default_factory=list)  # the trained members
    selected_at: int | None = None  # Settings.select "validation": the chosen evaluation
    # a learner without phases of the system's (a black box) records its own
    phase_records: list[dict[str, Any]] | None = None
    seconds: float | None = None  # this seed's own time, where the learner took it apart
    # this seed's share of every held-out evaluation (before, during and between phases)
    evaluation_seconds: float = 0.0


Boundary = Callable[[int, list[list[System]]], None]


def train(
    task: Task,
    strategy: Strategy,
    graph: Graph,
    settings: Settings,
    seed: int = 0,
    on_progress: Callable[[int], None] | None = None,
    on_boundary: Callable[[int, list[System]], None] | None = None,
) -> Outcome:
    """Train ``task``'s system under ``strategy`` with ``settings`` (budget, batch size,
    learning rate, optimizer, evaluations, device) from ``seed``.

    The seed fixes parameter initialisation (torch's global RNG) and the order of training
    data (a separate generator), so the same settings give identical results on CPU.
    ``on_progress(examples)`` is called after every step; ``on_boundary(k, systems)``
    before phase k starts and, with k = len(phases), after the last one.
    """
    hook = None if on_boundary is None else (lambda k, systems: on_boundary(k, systems[0]))
    return train_seeds(task, strategy, graph, settings, [seed], on_progress, hook)[0]


@fixed_numerics()
def train_seeds(
    task: Task,
    strategy: Strategy,
    graph: Graph,
    config: Settings,
    seeds: list[int],
    on_progress: Callable[[int], None] | None = None,
    on_boundary: Boundary | None = None,
    batch: bool | None = None,
) -> list[Outcome]:
    """Train with ``config`` once per seed in ``seeds``; one Outcome each, in order.

    With ``batch`` the seeds train at once, as one vectorised computation; without, one
    after another; ``None`` (the default) follows ``replicas.plan_seeds``, which also
    says whether a lone seed trains as a stack of one. Each seed's result matches
    ``train`` with that seed bit for bit (on the CPU), whichever way it trained.
    ``on_progress`` counts the examples of all seeds; ``on_boundary(k, systems)`` gets
    the systems per seed, per member. Trains under ``numerics.fixed_numerics``.
    """
    keep_freed_memory()
    device = _dev(config)
    plan = plan_seeds(task, strategy, graph, config.optimizer, config.lr, config.batch_size, device)
    if config.patience:
        batch = False  # each seed stops at its own plateau, as it would alone
    if batch is None:
        batch = plan.stack
    if len(seeds) > 1 and not batch:
        return [
            train_seeds(task, strategy, graph, config, [seed], on_progress, on_boundary, False)[0]
            for seed in seeds
        ]
    # on an accelerator a task's fixed training pool moves there once; the CPU keeps the
    # host path, where the pools already are
    with nullcontext() if device.type == "cpu" else task.data_on(device):
        outcomes = _train_on_device(
            task, strategy, graph, config, seeds, plan, on_progress, on_boundary
        )
    note = plan.note()
    for outcome in outcomes:
        outcome.memory["stacking"] = plan.describe(len(seeds))
        if note is not None and len(seeds) == 1:
            outcome.memory["stacking_note"] = note
    return outcomes


def _train_on_device(
    task: Task,
    strategy: Strategy,
    graph: Graph,
    config: Settings,
    seeds: list[int],
    plan: SeedPlan,
    on_progress: Callable[[int], None] | None,
    on_boundary: Boundary | None,
) -> list[Outcome]:
    device = _dev(config)
    replicas = make_replicas(task, strategy, graph, seeds, device, plan.lone == "stack")
    if strategy.member_budget == "each":  # every member draws the whole budget
        config = config.override(budget=config.budget * strategy.members)
    boundaries = [round(config.budget * s) for s in _cumulative(strategy.phases)]
    loop = _Loop(task, graph, config, seeds, replicas, boundaries)
    loop.evaluate(-1)
    start = 0
    for index, (phase, stop) in enumerate(zip(strategy.phases, boundaries, strict=True)):
        if on_boundary is not None:
            on_boundary(index, loop.replicas.systems())
        began, evaluated = time.perf_counter(), loop.evaluation_seconds
        loop.run_phase(phase, index, stop - start, on_progress)
        seconds = (time.perf_counter() - began) / len(seeds)
        evaluation = (loop.evaluation_seconds - evaluated) / len(seeds)
        for outcome in loop.outcomes:
            if outcome.status == "ok" or len(outcome.phase_seconds) == index:
                outcome.phase_seconds.append(seconds)
                outcome.phase_evaluation_seconds.append(evaluation)
        start = stop
        if not loop.live() or loop.stopped is not None:
            break
        if loop.curve_end() != loop.examples:
            loop.evaluate(index)
    if on_boundary is not None and loop.live():
        on_boundary(len(strategy.phases), loop.replicas.systems())
    return loop.finish()


def _dev(config: Settings) -> torch.device:
    return torch.device(config.device)


class _Loop:
    """The state of one (possibly seed-batched) training: replicas, data, outcomes."""

    def __init__(
        self,
        task: Task,
        graph: Graph,
        config: Settings,
        seeds: list[int],
        replicas: Replicas,
        boundaries: list[int],
    ) -> None:
        self.task, self.graph, self.config, self.replicas = task, graph, config, replicas
        self.boundaries = boundaries  # cumulative examples at the end of each phase
        self.device = _dev(config)
        self.rngs = [torch.Generator().manual_seed(seed) for seed in seeds]
        self.test = task.test_set().to(self.device)
        self.validation: Batch | None = None
        if config.select == "validation":
            validation = task.validation_set()
            if validation is None:
                raise E2ELabError(
                    f"select: validation needs a validation set, and task {task.name} has "
                    "none (Task.validation_set); use select: last"
                )
            self.validation = validation.to(self.device)
        self.outcomes = [Outcome() for _ in seeds]
        self.schedule = _Schedule(config.budget, config.evaluations)
        self.examples = 0
        self.checked = 0  # examples at the last divergence check
        self.bad = torch.zeros(len(seeds), dtype=torch.bool, device=self.device)
        self.stopped: int | None = None  # examples drawn when a plateau ended the run
        self.evaluation_seconds = 0.0  # spent in evaluate, all seeds together

    def live(self) -> list[int]:
        return [s for s, o in enumerate(self.outcomes) if o.status == "ok"]

    def curve_end(self) -> int:
        return max(o.curve[-1]["examples"] for o in self.outcomes if o.curve)

    def run_phase(
        self, phase: Phase, index: int, examples: int, on_progress: Callable[[int], None] | None
    ) -> None:
        """Spend ``examples`` training examples per seed on one phase (ensemble members
        share them exactly and train in lock-step)."""
        with self.task.drawing_for(phase) as data:
            before = self.examples
            try:
                self._run_phase(phase, index, examples, on_progress)
            finally:
                if data is not None:  # what each kind of training data gave (per seed)
                    for outcome in self.outcomes:
                        drawn = outcome.memory.setdefault("drawn", {})
                        drawn[data] = drawn.get(data, 0) + self.examples - before

    def _run_phase(
        self, phase: Phase, index: int, examples: int, on_progress: Callable[[int], None] | None
    ) -> None:
        config, replicas = self.config, self.replicas
        replicas.begin_phase(phase, config.optimizer, config.lr * phase.lr_scale)
        members = replicas.members
        quota = [examples // members + (i < examples % members) for i in range(members)]
        done = [0] * members
        measured = False
        while done != quota:
            for i in range(members):
                size = min(config.batch_size, quota[i] - done[i])
                if size == 0:
                    continue
                batch = replicas.draw(self.task, size, self.rngs, self.device)
                if not measured:
                    self._measure(phase, index, replicas.first(batch))
                    measured = True
                losses = replicas.step(i, batch)
                self.bad |= ~torch.isfinite(losses)
                done[i] += size
                self.examples += size
                if on_progress is not None:
                    on_progress(size * len(self.rngs))
            if self.schedule.due(self.examples):
                if not self.check(phase, index):
                    return
                self.evaluate(index)
                if index == len(self.boundaries) - 1 and self.plateaued():
                    self.stopped = self.examples
                    return
        self.check(phase, index)

    def plateaued(self) -> bool:
        """Every live seed's output metric has not beaten its best from before the last
        ``patience`` evaluations by more than PLATEAU_DELTA (``Settings.patience``)."""
        patience, port = self.config.patience, self.task.output
        if self.validation is not None:  # never let the test set decide when to stop
            port += VALIDATION
        if not patience:
            return False
        last = len(self.boundaries) - 1
        for s in self.live():
            curve = self.outcomes[s].curve
            values = [p["metrics"].get(port, float("nan")) for p in curve if p["phase"] == last]
            if len(values) <= patience:
                return False
            if max(values[-patience:]) > max(values[:-patience]) + PLATEAU_DELTA:
                return False
        return True

    def check(self, phase: Phase, index: int) -> bool:
        """End every seed whose loss became NaN or infinite since the last check (status
        'diverged'); True while some seed trains on."""
        flags = self.bad.tolist()  # the one host-device synchronisation, per evaluation
        for s, bad in enumerate(flags):
            outcome = self.outcomes[s]
            if bad and outcome.status == "ok":
                outcome.status = "diverged"
                outcome.reason = (
                    f"loss became NaN or infinite between {self.checked} and {self.examples} "
                    f"examples, in phase {index + 1} ({phase.label}); lower the learning rate "
                    "(--lr) or check the inputs"
                )
                outcome.examples = self.examples
        self.checked = self.examples
        return bool(self.live())

    def _measure(self, phase: Phase, index: int, batch: Batch) -> None:
        memory = step_memory(
            self.replicas.unit(0, 0),
            phase,
            batch,
            self.config.optimizer,
            self.config.lr * phase.lr_scale,
        )
        for outcome in self.outcomes:
            outcome.memory.setdefault("phases", []).append({"phase": index, **memory})

    @torch.no_grad()
    def evaluate(self, phase: int) -> None:
        """Metrics of every port on the held-out set, with the composed system (no cuts, no
        forcing), for every seed still training. Ensemble members' values are averaged."""
        began = time.perf_counter()
        try:
            self._evaluate(phase)
        finally:
            self.evaluation_seconds += time.perf_counter() - began

    def _evaluate(self, phase: int) -> None:
        task, test, replicas = self.task, self.test, self.replicas
        chunk = EVAL_CHUNK
        seeds = len(self.outcomes)
        chunks: list[dict[str, list[Tensor]]] = [{} for _ in range(seeds)]
        for start in range(0, len(test), chunk):
            part = test.slice(start, start + chunk)
            per_member = [replicas.ports(i, part) for i in range(replicas.members)]
            for s in range(seeds):
                for port, spec in task.ports.items():
                    values = [m[s][port] for m in per_member if port in m[s]]
                    if values:
                        merged = spec.average(values) if len(values) > 1 else values[0]
                        chunks[s].setdefault(port, []).append(merged)
        held_out = self._validation_scores()
        for s in self.live():
            metrics: dict[str, float] = {}
            for port, values in chunks[s].items():
                scores = task.ports[port].metrics(torch.cat(values), test.targets[port])
                # the port's metric under its name; a kind's others as PORT:NAME
                metrics |= {f"{port}:{k}" if k else port: v for k, v in scores.items()}
            if held_out is not None:
                metrics[task.output + VALIDATION] = held_out[s]
            point = {"examples": self.examples, "phase": phase, "metrics": metrics}
            self.outcomes[s].curve.append(point)
            self.outcomes[s].examples = self.examples

    def _validation_scores(self) -> list[float] | None:
        """The output's metric on the validation set, per seed (None: not selecting)."""
        if self.validation is None:
            return None
        task, replicas, port = self.task, self.replicas, self.task.output
        spec, chunk = task.ports[port], EVAL_CHUNK
        parts: list[list[Tensor]] = [[] for _ in self.outcomes]
        for start in range(0, len(self.validation), chunk):
            part = self.validation.slice(start, start + chunk)
            per_member = [replicas.ports(i, part) for i in range(replicas.members)]
            for s in range(len(self.outcomes)):
                values = [m[s][port] for m in per_member]
                parts[s].append(spec.average(values) if len(values) > 1 else values[0])
        target = self.validation.targets[port]
        return [spec.metric(torch.cat(values), target) for values in parts]

    def _select(self, outcome: Outcome) -> None:
        """Report the last phase's evaluation with the best validation score (the
        earliest of equals) instead of the last one."""
        key = self.task.output + VALIDATION
        last = len(self.boundaries) - 1
        points = [p for p in outcome.curve if p["phase"] == last and key in p["metrics"]]
        if points:
            best = max(points, key=lambda p: p["metrics"][key])  # max keeps the first
            outcome.final = dict(best["metrics"])
            outcome.selected_at = int(best["examples"])

    def _flops(self, outcome: Outcome) -> float:
        """Forward + backward FLOPs of the examples this run trained on, phase by phase."""
        per_example = {p["phase"]: p["flops_per_example"] for p in outcome.memory.get("phases", [])}
        total, start = 0.0, 0
        for phase, stop in enumerate(self.boundaries):
            total += per_example.get(phase, 0.0) * max(0, min(stop, outcome.examples) - start)
            start = stop
        return total

    def finish(self) -> list[Outcome]:
        replicas = self.replicas
        systems = replicas.systems()
        state_bytes = sum(
            p.numel() * p.element_size()
            for m in range(replicas.members)
            for p in replicas.unit(0, m).parameters()
        )
        for s, outcome in enumerate(self.outcomes):
            outcome.evaluation_seconds = self.evaluation_seconds / len(self.outcomes)
            outcome.final = dict(outcome.curve[-1]["metrics"])
            if self.validation is not None:
                self._select(outcome)
            if self.stopped is not None and outcome.status == "ok":
                outcome.reason = (
                    f"stopped at a plateau after {self.stopped:,} examples: the output gained "
                    f"at most {PLATEAU_DELTA} over {self.config.patience} evaluations"
                )
            outcome.systems = systems[s]
            outcome.memory["model_state_bytes"] = state_bytes
            outcome.memory["training_flops"] = self._flops(outcome)
            if len(self.outcomes) > 1:
                outcome.memory["seeds_batched"] = len(self.outcomes)
        return self.outcomes


class _Schedule:
    """Evaluate every budget/evaluations training examples."""

    def __init__(self, budget: int, evaluations: int) -> None:
        self.every = max(1, budget // max(1, evaluations))
        self.next = self.every

    def due(self, examples: int) -> bool:
        if examples < self.next:
            return False
        while self.next <= examples:
            self.next += self.every
        return True


def _cumulative(phases: tuple[Phase, ...]) -> list[float]:
    total, out = 0.0, []
    for p in phases:
        total += p.share
        out.append(total)
    out[-1] = 1.0
    return out
