"""What a phase minimises: the weighted losses of its ports, under its cuts and teacher
forcing, plus the auxiliary heads that ``aux:MODULE`` losses read from."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from e2elab.errors import E2ELabError
from e2elab.strategy import AUX_PREFIX, Phase, Strategy
from e2elab.system import Graph, System
from e2elab.task import Batch, Task


def auxiliary_heads(task: Task, strategy: Strategy, graph: Graph) -> nn.ModuleDict:
    """A fresh head for every ``aux:MODULE`` loss in the strategy, reading MODULE's ports."""
    heads = nn.ModuleDict()
    for phase in strategy.phases:
        for key in phase.losses:
            module = key.removeprefix(AUX_PREFIX)
            if key.startswith(AUX_PREFIX) and module not in heads:
                heads[module] = task.auxiliary_head(graph.width(graph.ports_of(module)))
    return heads


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
        # the phase weighs the loss, and so does the port itself (PortSpec.weight)
        total = total + weight * spec.weight * spec.loss(value, batch.targets[target])
    return total


def trainable_modules(phase: Phase) -> frozenset[str]:
    """Names (``system.MODULE`` and ``heads.MODULE``) of what trains in ``phase``."""
    heads = {
        "heads." + k.removeprefix(AUX_PREFIX) for k in phase.losses if k.startswith(AUX_PREFIX)
    }
    return frozenset({"system." + m for m in phase.train} | heads)
