"""e2elab: train a modular network end-to-end or step by step, on equal budgets, and measure.

The names below load on first use (PEP 562), so ``import e2elab.store`` or the ``report``
and ``export`` commands do not pull in torch and the training code.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "E2ELabError": "e2elab.errors",
    "RunResult": "e2elab.records",
    "RunSpec": "e2elab.records",
    "Settings": "e2elab.records",
    "TrainingDefaults": "e2elab.records",
    "execute": "e2elab.execution",
    "execute_seeds": "e2elab.execution",
    "make_spec": "e2elab.execution",
    "run": "e2elab.execution",
    "STRATEGIES": "e2elab.strategy",
    "Phase": "e2elab.strategy",
    "Strategy": "e2elab.strategy",
    "Graph": "e2elab.system",
    "System": "e2elab.system",
    "trace": "e2elab.system",
    "Batch": "e2elab.task",
    "Knob": "e2elab.task",
    "PortSpec": "e2elab.task",
    "Task": "e2elab.task",
    "PortKind": "e2elab.ports",
    "SequenceKind": "e2elab.ports",
    "TASKS": "e2elab.tasks",
    "make_task": "e2elab.tasks",
    "register": "e2elab.tasks",
    "load_frame": "e2elab.query",
    "load_curves": "e2elab.query",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'e2elab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
