"""Check a task and its system where they enter, before anything trains.

Each problem is one line that names the port and the fix: a declared port the system
never emits (with the emitted names that are close), a missing target, a class target
that is not an integer or out of range, a target whose shape differs from the port's
value. Training would otherwise stop deep inside
torch (``KeyError``, ``IndexError: Target 12 is out of bounds``) or, worse, broadcast a
(B,) target against a (B, 1) value and train on nonsense without a word.
"""

from __future__ import annotations

import difflib

import torch

from e2elab.errors import E2ELabError
from e2elab.strategy import AUX_PREFIX, Strategy
from e2elab.system import Graph, System
from e2elab.task import Batch, Task

# how many examples of the test set and of a training batch are checked
CHECKED_EXAMPLES = 64
CHECK_SEED = 12_345


def check_task(task: Task, system: System, graph: Graph, batch: Batch) -> None:
    """Validate ``task``'s ports against one traced forward pass of ``system`` on
    ``batch`` (a few held-out examples)."""
    name = task.name
    if task.output not in task.ports:
        raise E2ELabError(
            f"task {name}: output {task.output!r} is not one of its ports "
            f"({', '.join(task.ports)}); set output to a declared port"
        )
    missing = [p for p in task.ports if p not in graph.ports]
    for port in missing:
        emitted = _emitted(system, batch)
        close = difflib.get_close_matches(port, emitted, n=3, cutoff=0.6)
        hint = f"; close emitted names: {', '.join(close)}" if close else ""
        raise E2ELabError(
            f"task {name}: port {port!r} is declared but the system never emits it "
            f"(emitted: {', '.join(emitted) or 'none'}){hint}; emit it with "
            f"self.port({port!r}, value) or rename it in the task's ports"
        )
    # the test set's first examples and a training batch: a fault may sit in either
    train = task.sample(CHECKED_EXAMPLES, torch.Generator().manual_seed(CHECK_SEED))
    test = task.test_set().slice(0, CHECKED_EXAMPLES)
    for where, part in (("the test set", test), ("a training batch", train)):
        values = _values(system, part)
        for port, spec in task.ports.items():
            if port not in part.targets:
                raise E2ELabError(
                    f"task {name}: {where} has no target for port {port!r} "
                    f"(targets: {', '.join(part.targets) or 'none'}); add it to Batch.targets"
                )
            try:
                spec.check_target(port, part.targets[port], values[port])
            except E2ELabError as error:
                raise E2ELabError(f"task {name}, {where}: {error}") from None


def _emitted(system: System, batch: Batch) -> list[str]:
    return list(_values(system, batch))


def _values(system: System, batch: Batch) -> dict[str, torch.Tensor]:
    was_training = system.training
    system.eval()
    try:
        with torch.no_grad():
            return system.run_ports(batch)
    finally:
        system.train(was_training)


def check_strategy(task: Task, strategy: Strategy) -> None:
    """Refuse a strategy the task's output cannot serve: the auxiliary heads of ``local``
    predict one label per example, which a sequence output (or a class output with
    positions) is not. (A learner checks what it needs itself: ``learners``.)"""
    if any(key.startswith(AUX_PREFIX) for phase in strategy.phases for key in phase.losses):
        check_one_label(task, strategy.name)


def check_one_label(task: Task, strategy: str) -> None:
    """Refuse, for a learner that predicts one label per example, an output that is not
    one label per example."""
    output = task.ports[task.output]
    if not output.port_kind.one_label:
        raise E2ELabError(
            f"strategy {strategy} predicts one label per example, but task "
            f"{task.name}'s output {task.output!r} is a {output.port_kind.name} port; "
            "choose another strategy"
        )
