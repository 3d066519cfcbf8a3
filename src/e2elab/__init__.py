"""e2elab: train a modular network end-to-end or step by step, on equal budgets, and measure."""

from e2elab.errors import E2ELabError
from e2elab.run import RunResult, RunSpec, execute, run
from e2elab.strategy import STRATEGIES, Phase, Strategy
from e2elab.system import Graph, System, trace
from e2elab.task import Batch, Knob, PortSpec, Task, TrainingDefaults
from e2elab.tasks import TASKS, make_task, register

__version__ = "0.1.0"

__all__ = [
    "STRATEGIES",
    "TASKS",
    "Batch",
    "E2ELabError",
    "Graph",
    "Knob",
    "Phase",
    "PortSpec",
    "RunResult",
    "RunSpec",
    "Strategy",
    "System",
    "Task",
    "TrainingDefaults",
    "execute",
    "make_task",
    "register",
    "run",
    "trace",
]
