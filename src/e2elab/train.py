"""The one training loop: phases in order, a budget of training examples, held-out
evaluation on a schedule, learning curves per port.

It knows no task and no strategy by name: a phase says which modules train, which
losses count, which ports are cut or teacher-forced, and the task says how to score a
port. Read it top to bottom: ``train`` -> ``_run_phase`` -> ``_step``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from e2elab.errors import E2ELabError
from e2elab.strategy import AUX_PREFIX, Phase, Strategy
from e2elab.system import Graph, System
from e2elab.task import Batch, Task

EVAL_CHUNK = 4096

OPTIMIZERS: dict[str, Callable[[list[Tensor], float], torch.optim.Optimizer]] = {
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr),
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything the loop needs besides the task and the strategy."""

    budget: int
    batch_size: int
    lr: float
    evaluations: int
    seed: int
    optimizer: str = "adam"
    device: str = "cpu"


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
    systems: list[System] = field(default_factory=list)  # the trained members


@dataclass
class _Member:
    """One independently initialised copy of the system (ensembles have several)."""

    system: System
    heads: nn.ModuleDict


class Diverged(Exception):
    """The loss stopped being finite; the run ends with status 'diverged'."""


def train(
    task: Task,
    strategy: Strategy,
    graph: Graph,
    config: TrainConfig,
    on_progress: Callable[[int], None] | None = None,
    on_boundary: Callable[[int, list[System]], None] | None = None,
) -> Outcome:
    """Train ``task``'s system under ``strategy``; see ``TrainConfig`` for the budget.

    The seed fixes parameter initialisation (torch's global RNG) and the order of training
    data (a separate generator), so the same config gives identical results on CPU.
    ``on_progress(examples)`` is called after every step; ``on_boundary(k, systems)``
    before phase k starts and, with k = len(phases), after the last one.
    """
    device = torch.device(config.device)
    torch.manual_seed(config.seed)
    members = [_make_member(task, strategy, graph, device) for _ in range(strategy.members)]
    data_rng = torch.Generator().manual_seed(config.seed)
    test = task.test_set().to(device)
    outcome = Outcome()
    schedule = _Schedule(config.budget, config.evaluations)
    outcome.curve.append(_evaluate(task, members, test, 0, -1))

    boundaries = [round(config.budget * s) for s in _cumulative(strategy.phases)]
    start = 0
    for index, (phase, stop) in enumerate(zip(strategy.phases, boundaries, strict=True)):
        if on_boundary is not None:
            on_boundary(index, [m.system for m in members])
        began = time.perf_counter()
        try:
            _run_phase(
                task,
                members,
                graph,
                phase,
                index,
                stop - start,
                config,
                data_rng,
                test,
                schedule,
                outcome,
                on_progress,
                device,
            )
        except Diverged as why:
            outcome.status, outcome.reason = "diverged", str(why)
            break
        finally:
            outcome.phase_seconds.append(time.perf_counter() - began)
        start = stop
        if outcome.curve[-1]["examples"] != outcome.examples:
            outcome.curve.append(_evaluate(task, members, test, outcome.examples, index))
    if on_boundary is not None and outcome.status == "ok":
        on_boundary(len(strategy.phases), [m.system for m in members])
    outcome.final = dict(outcome.curve[-1]["metrics"])
    outcome.systems = [m.system for m in members]
    outcome.memory["model_state_bytes"] = _state_bytes(members)
    return outcome


def _make_member(task: Task, strategy: Strategy, graph: Graph, device: torch.device) -> _Member:
    system: System = task.build_system()  # type: ignore[assignment]  # checked by run.execute
    return _Member(system.to(device), auxiliary_heads(task, strategy, graph).to(device))


def auxiliary_heads(task: Task, strategy: Strategy, graph: Graph) -> nn.ModuleDict:
    """A fresh head for every ``aux:MODULE`` loss in the strategy, reading MODULE's ports."""
    heads = nn.ModuleDict()
    for phase in strategy.phases:
        for key in phase.losses:
            module = key.removeprefix(AUX_PREFIX)
            if key.startswith(AUX_PREFIX) and module not in heads:
                heads[module] = task.auxiliary_head(graph.width(graph.ports_of(module)))
    return heads


def _run_phase(
    task: Task,
    members: list[_Member],
    graph: Graph,
    phase: Phase,
    index: int,
    examples: int,
    config: TrainConfig,
    data_rng: torch.Generator,
    test: Batch,
    schedule: _Schedule,
    outcome: Outcome,
    on_progress: Callable[[int], None] | None,
    device: torch.device,
) -> None:
    """Spend ``examples`` training examples on one phase (shared by ensemble members)."""
    optimizers = [_freeze_all_but(m, phase, config) for m in members]
    # ensemble members share the phase's examples exactly, and train in lock-step
    quota = [examples // len(members) + (i < examples % len(members)) for i in range(len(members))]
    done = [0] * len(members)
    measured = False
    while done != quota:
        for i, (member, optimizer) in enumerate(zip(members, optimizers, strict=True)):
            size = min(config.batch_size, quota[i] - done[i])
            if size == 0:
                continue
            batch = task.sample(size, data_rng).to(device)
            if not measured:
                outcome.memory.setdefault("phases", []).append(
                    _measure_step(task, member, graph, phase, batch, optimizer, index)
                )
                measured = True
            else:
                _step(task, member, graph, phase, batch, optimizer, outcome.examples, index)
            done[i] += size
            outcome.examples += size
            if on_progress is not None:
                on_progress(size)
        if schedule.due(outcome.examples):
            outcome.curve.append(_evaluate(task, members, test, outcome.examples, index))


def _freeze_all_but(
    member: _Member, phase: Phase, config: TrainConfig
) -> torch.optim.Optimizer | None:
    """Frozen = requires_grad off and not in the optimizer. Returns the phase's optimizer."""
    trainable: list[Tensor] = []
    for name, module in member.system.named_children():
        on = name in phase.train
        module.requires_grad_(on)
        if on:
            trainable += list(module.parameters())
    for name, head in member.heads.items():
        on = AUX_PREFIX + name in phase.losses
        head.requires_grad_(on)
        if on:
            trainable += list(head.parameters())
    member.system.train()
    return OPTIMIZERS[config.optimizer](trainable, config.lr) if trainable else None


def _step(
    task: Task,
    member: _Member,
    graph: Graph,
    phase: Phase,
    batch: Batch,
    optimizer: torch.optim.Optimizer | None,
    seen: int,
    index: int,
) -> None:
    loss = phase_loss(task, member.system, member.heads, graph, phase, batch)
    if not torch.isfinite(loss):
        raise Diverged(
            f"loss became {loss.item()} after {seen} examples in phase {index + 1} "
            f"({phase.label}); lower the learning rate (--lr) or check the inputs"
        )
    if optimizer is None:
        return
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def phase_loss(
    task: Task,
    system: System,
    heads: nn.ModuleDict,
    graph: Graph,
    phase: Phase,
    batch: Batch,
) -> Tensor:
    """The phase's weighted loss on one batch, with its cuts and teacher forcing applied."""

    def forcer(name: str, value: Tensor) -> Tensor:
        if name not in batch.targets:
            raise E2ELabError(f"port {name!r} is teacher-forced but the batch has no target for it")
        return task.ports[name].forced(batch.targets[name], value)

    ports = system.run_ports(batch, phase.cut, phase.teacher_forced, forcer)
    total = torch.zeros((), device=next(iter(batch.x.values())).device)
    output = task.output
    for key, weight in phase.losses.items():
        if weight == 0:
            continue
        if key.startswith(AUX_PREFIX):
            module = key.removeprefix(AUX_PREFIX)
            size = len(batch)
            features = torch.cat([ports[p].reshape(size, -1) for p in graph.ports_of(module)], -1)
            value, spec, target = heads[module](features), task.ports[output], output
        else:
            if key not in ports:
                raise E2ELabError(f"phase {phase.label}: the system emitted no port {key!r}")
            value, spec, target = ports[key], task.ports[key], key
        total = total + weight * spec.loss(value, batch.targets[target])
    return total


def _measure_step(
    task: Task,
    member: _Member,
    graph: Graph,
    phase: Phase,
    batch: Batch,
    optimizer: torch.optim.Optimizer | None,
    index: int,
) -> dict[str, Any]:
    """Run one step while counting the bytes autograd saves for backward (activations)."""
    params = {p.data_ptr() for p in member.system.parameters()} | {
        p.data_ptr() for p in member.heads.parameters()
    }
    saved: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _step(task, member, graph, phase, batch, optimizer, 0, index)
    trained = sum(
        p.numel() * p.element_size()
        for p in [*member.system.parameters(), *member.heads.parameters()]
        if p.requires_grad
    )
    activations = sum(saved.values())
    return {
        "phase": index,
        "activation_bytes": activations,
        "trained_parameter_bytes": trained,
        # parameters + gradients and two Adam moments of what trains + saved activations
        "step_bytes_estimate": _state_bytes([member]) + 3 * trained + activations,
    }


def _state_bytes(members: list[_Member]) -> int:
    return sum(
        p.numel() * p.element_size()
        for m in members
        for p in [*m.system.parameters(), *m.heads.parameters()]
    )


@torch.no_grad()
def _evaluate(
    task: Task, members: list[_Member], test: Batch, examples: int, phase: int
) -> dict[str, Any]:
    """Metrics of every port on the held-out set, with the composed system (no cuts, no
    forcing). Ensemble members' port values are averaged."""
    for m in members:
        m.system.eval()
    chunks: dict[str, list[Tensor]] = {}
    for start in range(0, len(test), EVAL_CHUNK):
        part = test.slice(start, start + EVAL_CHUNK)
        per_member = [m.system.run_ports(part) for m in members]
        for port, spec in task.ports.items():
            values = [ports[port] for ports in per_member if port in ports]
            if values:
                chunks.setdefault(port, []).append(
                    spec.average(values) if len(values) > 1 else values[0]
                )
    metrics = {
        port: task.ports[port].metric(torch.cat(values), test.targets[port])
        for port, values in chunks.items()
    }
    for m in members:
        m.system.train()
    return {"examples": examples, "phase": phase, "metrics": metrics}


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
