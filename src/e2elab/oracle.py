"""Oracle evaluation: a trained system scored again with some ports forced to their true
values, as if the modules that emit them were perfect.

It separates two reasons for a short output. With the trained module's ports forced
(``trained``), the output shows the ceiling the rest of the system allows: below the
threshold, the others cannot carry even a perfect module. With every other module's
ports forced (``others``), the module's own port shows what it learned from true inputs.

``Settings.oracle`` names the sets, separated by ``;``: ``trained`` (the ports of the
modules the strategy's last phase trains), ``others`` (the ports of every other module),
or port names and ``fnmatch`` patterns separated by ``,`` (``digit_[2-9]``). The output
is forced only where a set names nothing else (an oracle last module). Each set's
metrics, for every port, are stored with the run under ``RunResult.oracle``: a forced
port is scored on the value its module emitted, except the output, which is scored on
what the system delivers (a forced output is exact).
"""

from __future__ import annotations

from fnmatch import fnmatchcase

import torch
from torch import Tensor

from e2elab.errors import E2ELabError
from e2elab.strategy import Strategy
from e2elab.system import Graph, System
from e2elab.task import Task

KEYWORDS = ("trained", "others")
CHUNK = 512


def oracle_sets(text: str) -> list[str]:
    """The oracle sets a setting names, stripped, in order, without repeats."""
    out: list[str] = []
    for part in text.split(";"):
        part = ",".join(p.strip() for p in part.split(",") if p.strip())
        if part and part not in out:
            out.append(part)
    return out


def oracle_ports(name: str, task: Task, strategy: Strategy, graph: Graph) -> tuple[str, ...]:
    """The ports one oracle set forces, in data-flow order; one line if it names none."""
    output = task.output
    trained = set(strategy.phases[-1].train) if strategy.phases else set()
    if name in KEYWORDS:
        chosen = trained if name == "trained" else set(graph.modules) - trained
        ports = [p for p in graph.ports if graph.producers[p] & chosen and p in task.ports]
        inner = [p for p in ports if p != output]
        if inner or name == "others":
            return tuple(inner)
        return tuple(ports)  # the trained module emits only the output: an oracle last module
    patterns = name.split(",")
    known = [p for p in graph.ports if p in task.ports]
    for pattern in patterns:
        if not any(fnmatchcase(p, pattern) for p in known):
            raise E2ELabError(
                f"oracle {pattern!r} matches no port of {task.name}; its ports are: "
                f"{', '.join(known)} (or use {' or '.join(KEYWORDS)})"
            )
    return tuple(p for p in known if any(fnmatchcase(p, pat) for pat in patterns))


def check_oracle(text: str, task: Task, strategy: Strategy, graph: Graph) -> None:
    """Fail fast, before training, on an oracle set that names no port."""
    for name in oracle_sets(text):
        oracle_ports(name, task, strategy, graph)


@torch.no_grad()
def oracle_metrics(task: Task, members: list[System], ports: tuple[str, ...]) -> dict[str, float]:
    """Every port's metric on the test set with ``ports`` forced to their targets; an
    ensemble's members are averaged as in its own evaluation."""
    if not members:
        return {}
    device = next(members[0].parameters()).device
    test = task.test_set()
    forced = frozenset(ports)
    gathered: dict[str, list[Tensor]] = {}
    for start in range(0, len(test), CHUNK):
        part = test.slice(start, start + CHUNK).to(device)

        delivered: dict[str, Tensor] = {}

        def forcer(name: str, value: Tensor, part=part, delivered=delivered) -> Tensor:
            delivered[name] = task.ports[name].forced(part.targets[name], value)
            return delivered[name]

        values = []
        for system in members:
            was = system.training
            system.eval()
            values.append(system.run_ports(part, forced=forced, forcer=forcer))
            system.train(was)
            if task.output in delivered:  # an oracle last module: the output is exact
                values[-1][task.output] = delivered[task.output]
        for port, spec in task.ports.items():
            got = [v[port] for v in values if port in v]
            if got:
                gathered.setdefault(port, []).append(spec.average(got) if len(got) > 1 else got[0])
    metrics: dict[str, float] = {}
    for port, chunks in gathered.items():
        target = test.targets[port].to(device)
        scores = task.ports[port].metrics(torch.cat(chunks), target)
        metrics |= {f"{port}:{k}" if k else port: v for k, v in scores.items()}
    return metrics


def evaluate_oracles(
    text: str, task: Task, strategy: Strategy, graph: Graph, members: list[System]
) -> dict[str, dict]:
    """``{set: {"ports": [...], "metrics": {...}}}`` for every set ``text`` names."""
    out = {}
    for name in oracle_sets(text):
        ports = oracle_ports(name, task, strategy, graph)
        out[name] = {"ports": list(ports), "metrics": oracle_metrics(task, members, ports)}
    return out
