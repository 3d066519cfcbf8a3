"""The registry of task families: name -> Task class."""

from __future__ import annotations

from typing import Any

from e2elab.errors import choices
from e2elab.task import Task
from e2elab.tasks.digit_chain import DigitChain
from e2elab.tasks.line_parity import LineParity
from e2elab.tasks.parity import Parity
from e2elab.tasks.pentomino import Pentomino
from e2elab.tasks.stocks import Stocks

TASKS: dict[str, type[Task]] = {}


def register(task: type[Task]) -> type[Task]:
    """Make a Task class available by its ``name`` (to the CLI and to experiments)."""
    TASKS[task.name] = task
    return task


def task_class(name: str) -> type[Task]:
    if name not in TASKS:
        raise choices("task", name, list(TASKS))
    return TASKS[name]


def make_task(name: str, knobs: dict[str, Any] | None = None) -> Task:
    """Instantiate a registered task with checked knobs."""
    return task_class(name)(**(knobs or {}))


register(DigitChain)
register(LineParity)
register(Parity)
register(Pentomino)
register(Stocks)
