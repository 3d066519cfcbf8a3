"""A grid point prepared once: its system built and checked, its graph traced, the task's
ports and targets checked, and each strategy built and checked against them.

Every path that needs a grid point's structure (making specs, estimating the time,
training, ``e2elab run``'s defaults) asks ``prepare``; a process traces a grid point
once, however many strategies, seeds and commands use it. The structure depends on the
task's class and knobs only (loaded weights do not change it), so that is the key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from e2elab import strategy as strategies
from e2elab.errors import E2ELabError
from e2elab.learners import learner_for
from e2elab.oracle import check_oracle
from e2elab.strategy import Strategy
from e2elab.system import Graph, System, trace
from e2elab.task import Batch, Task
from e2elab.validate import check_task

__all__ = ["Prepared", "first_batch", "prepare"]


@dataclass
class Prepared:
    """One grid point's checked structure; ``strategy`` builds and checks on first use."""

    graph: Graph
    output: str
    _strategies: dict[str, Strategy] = field(default_factory=dict)

    def strategy(self, text: str, task: Task, oracle: str = "") -> Strategy:
        """``text`` built on this graph and checked against ``task`` (and ``oracle``'s
        port sets, for a strategy that trains the system)."""
        built = self._strategies.get(text)
        if built is None:
            built = strategies.build(text, self.graph, self.output)
            learner_for(built).check(task)
            _check_forceable(text, built, task)
            self._strategies[text] = built
        if oracle and learner_for(built).has_system:
            check_oracle(oracle, task, built, self.graph)
        return built


def _check_forceable(text: str, built: Strategy, task: Task) -> None:
    """A strategy that teacher-forces a port whose target cannot stand in for its value
    (a ctc port's labels have no value per frame) is refused before anything trains."""
    for phase in built.phases:
        for port in sorted(phase.teacher_forced):
            spec = task.ports.get(port)
            if spec is not None and not spec.port_kind.forceable:
                raise E2ELabError(
                    f"{text} teacher-forces port {port!r}, a {spec.port_kind.name} port whose "
                    f"target has no value to force, so it does not apply to task {task.name}; "
                    "choose a strategy that forces no port (e.g. greedy, e2e, hinted)"
                )


_PREPARED: dict[tuple[type, str], Prepared] = {}
# a sweep touches tens of grid points; a long-lived process (a notebook) many more
_MAX_PREPARED = 512


def prepare(task: Task) -> Prepared:
    """The grid point of ``task`` (its class and knobs), prepared once per process."""
    key = (type(task), json.dumps(task.knobs, sort_keys=True, default=str))
    found = _PREPARED.get(key)
    if found is None:
        system = checked_system(task)
        sample = first_batch(task)
        graph = trace(system, sample, task.ports)
        check_task(task, system, graph, sample)
        found = Prepared(graph, task.output)
        if len(_PREPARED) >= _MAX_PREPARED:
            _PREPARED.pop(next(iter(_PREPARED)))
        _PREPARED[key] = found
    return found


def checked_system(task: Task) -> System:
    """``task.build_system()``, refused in one line if it is not a System."""
    system = task.build_system()
    if not isinstance(system, System):
        raise E2ELabError(
            f"task {task.name}: build_system returned {type(system).__name__}; "
            "it must return an e2elab.System subclass"
        )
    return system


def first_batch(task: Task) -> Batch:
    """A tiny batch of held-out data, e.g. to trace a system's graph."""
    return task.test_set().slice(0, 2)
