"""Learners: what trains a run. Two kinds, one protocol: ``SystemLearner`` trains the
task's system under a strategy (the training loop, seeds stacked where they can be);
``ModelLearner`` fits a scikit-learn model on the task's raw inputs or on hand-crafted
features (a black box, ``blackbox:model=...``). Each returns one ``Outcome`` per seed,
and ``execution`` assembles every RunResult from an Outcome the same way. Whether a run
has a system (whose modules can be probed, hashed, saved, loaded and forced at
evaluation) is the learner's ``has_system``: nothing outside this module asks which
strategy trained it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from e2elab import strategy as strategies
from e2elab.records import Settings
from e2elab.strategy import Strategy
from e2elab.system import Graph
from e2elab.task import Task
from e2elab.train import Outcome, train_seeds
from e2elab.validate import check_one_label, check_strategy

Progress = Callable[[int], None] | None


class Learner(Protocol):
    """Trains the runs of one spec's seeds; one Outcome per seed, in order."""

    name: str  # "system" or "model", stored with each result (RunResult.learner)
    has_system: bool

    def check(self, task: Task) -> None:
        """Refuse, in one line, a task this learner cannot train."""

    def fit(
        self,
        task: Task,
        graph: Graph,
        settings: Settings,
        seeds: list[int],
        on_progress: Progress = None,
        batch: bool | None = None,
    ) -> list[Outcome]: ...


class SystemLearner:
    """The task's system trained under ``strategy`` (``train.train_seeds``)."""

    name, has_system = "system", True

    def __init__(self, strategy: Strategy) -> None:
        self.strategy = strategy

    def check(self, task: Task) -> None:
        check_strategy(task, self.strategy)

    def fit(
        self,
        task: Task,
        graph: Graph,
        settings: Settings,
        seeds: list[int],
        on_progress: Progress = None,
        batch: bool | None = None,
    ) -> list[Outcome]:
        return train_seeds(task, self.strategy, graph, settings, seeds, on_progress, batch=batch)


class ModelLearner:
    """A scikit-learn ``model`` fitted on ``settings.budget`` raw training examples (or on
    their hand-crafted ``family`` features), each seed on its own draw."""

    name, has_system = "model", False

    def __init__(self, model: str, family: str | None = None, label: str = "blackbox") -> None:
        self.model, self.family, self.label = model, family, label

    def check(self, task: Task) -> None:
        check_one_label(task, self.label)  # a classifier: one label per example

    def fit(
        self,
        task: Task,
        graph: Graph,
        settings: Settings,
        seeds: list[int],
        on_progress: Progress = None,
        batch: bool | None = None,
    ) -> list[Outcome]:
        output = task.output
        test = task.test_set()
        spec = task.ports[output]
        chance = spec.port_kind.chance_level(spec.chance, test.targets[output])
        # scikit-learn loads here, not where a worker starts: most runs fit no black box
        from e2elab.baselines import fit_blackbox

        outcomes = []
        for seed in seeds:
            began = time.perf_counter()
            fit = fit_blackbox(task, self.model, settings.budget, seed, feature_family=self.family)
            metric = fit["test_accuracy"]
            label = f"blackbox:{self.model}" + (f" on {self.family}" if self.family else "")
            outcomes.append(
                Outcome(
                    curve=[
                        {"examples": 0, "phase": -1, "metrics": {output: chance}},
                        {"examples": fit["examples_used"], "phase": 0, "metrics": {output: metric}},
                    ],
                    final={output: metric},
                    examples=fit["examples_used"],
                    phase_records=[
                        {
                            "label": label,
                            "share": 1.0,
                            "train": [],
                            "seconds": fit["seconds"],
                            "evaluation_seconds": fit["seconds"] - fit["fit_seconds"],
                            "train_accuracy": fit["train_accuracy"],
                            "hyper_parameters": fit["hyper_parameters"],
                            "implementation": fit["implementation"],
                        }
                    ],
                    seconds=time.perf_counter() - began,
                )
            )
        return outcomes


def learner_for(strategy: Strategy) -> Learner:
    """The learner that trains runs of ``strategy``."""
    if strategy.blackbox is not None:
        return ModelLearner(strategy.blackbox, strategy.params.get("features"), strategy.name)
    return SystemLearner(strategy)


def trains_system(strategy_text: str) -> bool:
    """Whether runs of a strategy (given as text) train the task's system."""
    return strategies.parse_strategy(strategy_text)[0] != "blackbox"
