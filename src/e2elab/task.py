"""Tasks make data: inputs plus a target for every port, and they build the system.

A task knows nothing of strategies. It declares, per port, how to score it (loss and
metric), what chance is, and how a target is written in the port's own representation
(so a strategy can teacher-force that port).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from e2elab.errors import E2ELabError, choices
from e2elab.ops import log_softmax, softmax

PortKind = Literal["class", "binary", "regression", "reward"]

# Teacher forcing a class port writes the target as the log of a near one-hot
# distribution: a valid logit vector whose softmax puts 1 - 1e-5 on the target.
_FORCED_FLOOR = 1e-6
# Teacher forcing a binary (+1/-1) score port writes the target times this margin,
# so that sigmoid(score) is within 0.25% of 0 or 1.
_FORCED_MARGIN = 6.0


def _class_loss(value: Tensor, target: Tensor) -> Tensor:
    # any leading shape: (B, C) or (B, P, C) logits with (B,) or (B, P) targets
    return F.nll_loss(log_softmax(value.reshape(-1, value.shape[-1])), target.reshape(-1))


def _hinge(value: Tensor, target: Tensor) -> Tensor:
    return F.relu(1 - value.reshape(target.shape) * target.to(value.dtype)).mean()


def _reward_loss(value: Tensor, target: Tensor) -> Tensor:
    # expected reward of the softmax policy, negated: -z . p
    return -(softmax(value) * target.to(value.dtype)).sum(-1).mean()


@dataclass(frozen=True)
class PortSpec:
    """How one port is scored.

    Parameters
    ----------
    kind:
        ``"class"``: logits over ``size`` classes (any leading shape), target a class
        index; cross-entropy loss, accuracy metric.
        ``"binary"``: one score per example, target +1 or -1; hinge loss, accuracy of
        the score's sign.
        ``"regression"``: ``size`` real values; MSE loss, metric the negative MSE (so that
        higher is better everywhere).
        ``"reward"``: logits over ``size`` choices, target a reward vector z; loss
        -z . softmax(logits), metric the mean reward of the arg-max choice.
    size:
        Number of classes, choices or real outputs (1 for binary).
    chance:
        The metric a learner that ignores its input would get.
    """

    kind: PortKind
    size: int
    chance: float

    @property
    def accuracy_like(self) -> bool:
        """Whether the metric is a success rate (so chance can be tested binomially)."""
        return self.kind in ("class", "binary")

    def loss(self, value: Tensor, target: Tensor) -> Tensor:
        if self.kind == "class":
            return _class_loss(value, target)
        if self.kind == "binary":
            return _hinge(value, target)
        if self.kind == "reward":
            return _reward_loss(value, target)
        return F.mse_loss(value, target)

    def metric(self, value: Tensor, target: Tensor) -> float:
        if self.kind == "class":
            return (value.argmax(-1) == target).float().mean().item()
        if self.kind == "binary":
            sign = torch.where(value.reshape(target.shape) > 0, 1, -1)
            return (sign == target.to(sign.dtype)).float().mean().item()
        if self.kind == "reward":
            return target.gather(-1, value.argmax(-1, keepdim=True)).float().mean().item()
        return -F.mse_loss(value, target).item()

    def forced(self, target: Tensor, like: Tensor) -> Tensor:
        """The target written as a value of this port (used for teacher forcing)."""
        if self.kind == "class":
            one_hot = F.one_hot(target, self.size).to(like.dtype)
            return one_hot.clamp_min(_FORCED_FLOOR).log()
        if self.kind == "binary":
            return (target.to(like.dtype) * _FORCED_MARGIN).reshape(like.shape)
        if self.kind == "reward":
            return like  # a reward vector is no value of the port: forcing leaves it as is
        return target.to(like.dtype)

    def average(self, values: list[Tensor]) -> Tensor:
        """Combine ensemble members' values: mean probability for classes, mean value else."""
        if self.kind in ("class", "reward"):
            return torch.stack([softmax(v) for v in values]).mean(0).clamp_min(1e-12).log()
        return torch.stack(values).mean(0)


@dataclass
class Batch:
    """Inputs by name, and a target for every port that has one. All tensors share dim 0."""

    x: dict[str, Tensor]
    targets: dict[str, Tensor]

    def __len__(self) -> int:
        return next(iter(self.x.values())).shape[0]

    def to(self, device: torch.device | str) -> Batch:
        """On ``device``; copies to an accelerator do not wait (``non_blocking``)."""
        return Batch(
            {k: v.to(device, non_blocking=True) for k, v in self.x.items()},
            {k: v.to(device, non_blocking=True) for k, v in self.targets.items()},
        )

    def slice(self, start: int, stop: int) -> Batch:
        return Batch(
            {k: v[start:stop] for k, v in self.x.items()},
            {k: v[start:stop] for k, v in self.targets.items()},
        )

    def part(self, i: int) -> Batch:
        """Batch ``i`` of a stack of batches (tensors shaped (batches, examples, ...))."""
        return Batch(
            {k: v[i] for k, v in self.x.items()}, {k: v[i] for k, v in self.targets.items()}
        )

    def take(self, index: Tensor) -> Batch:
        """The examples at ``index`` (a 1-D tensor of positions)."""
        return Batch(
            {k: v[index] for k, v in self.x.items()},
            {k: v[index] for k, v in self.targets.items()},
        )


@dataclass(frozen=True)
class Knob:
    """One setting of a task's family (number of modules, widths, ...)."""

    default: Any
    help: str
    minimum: int | None = None
    choices: tuple[Any, ...] = ()

    @property
    def type(self) -> type:
        return type(self.default)

    def parse(self, name: str, raw: Any) -> Any:
        """Convert ``raw`` (a string from the command line, or a YAML value) and check it."""
        kind = self.type
        value = raw
        if kind is bool:
            if isinstance(raw, str):
                lowered = raw.strip().lower()
                if lowered not in {"true", "false", "1", "0", "yes", "no"}:
                    raise E2ELabError(f"knob {name} expects true or false, got {raw!r}")
                value = lowered in {"true", "1", "yes"}
            elif not isinstance(raw, bool):
                raise E2ELabError(f"knob {name} expects true or false, got {raw!r}")
        elif kind is int:
            if isinstance(raw, bool) or (not isinstance(raw, (int, str))):
                raise E2ELabError(f"knob {name} expects an integer, got {raw!r}")
            try:
                value = int(raw)
            except ValueError:
                raise E2ELabError(f"knob {name} expects an integer, got {raw!r}") from None
        elif kind is float:
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise E2ELabError(f"knob {name} expects a number, got {raw!r}") from None
        elif kind is str:
            value = str(raw)
        if self.minimum is not None and value < self.minimum:
            raise E2ELabError(f"knob {name} must be at least {self.minimum}, got {value}")
        if self.choices and value not in self.choices:
            raise choices(f"value for knob {name}", value, [str(c) for c in self.choices])
        return value


@dataclass(frozen=True)
class TrainingDefaults:
    """What a task suggests for the training loop; a RunSpec may override each."""

    budget: int
    batch_size: int = 64
    lr: float = 1e-3
    threshold: float = 0.9
    evaluations: int = 20
    optimizer: str = "adam"


class Task(ABC):
    """A family of problems; an instance is one member, fixed by its knobs.

    Subclasses set ``name``, ``knobs`` and ``defaults``, and implement ``ports``,
    ``output``, ``build_system``, ``sample`` and ``test_set``. Train and test data must
    be drawn from disjoint underlying examples.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    knobs: ClassVar[dict[str, Knob]] = {}
    defaults: ClassVar[TrainingDefaults]

    def __init__(self, **knobs: Any) -> None:
        self.settings = self.resolve_knobs(knobs)

    @classmethod
    def resolve_knobs(cls, given: dict[str, Any]) -> dict[str, Any]:
        """Fill defaults in and check every given knob; unknown names are errors."""
        for name in given:
            if name not in cls.knobs:
                raise choices(f"knob for task {cls.name}:", name, list(cls.knobs))
        return {
            name: knob.parse(name, given[name]) if name in given else knob.default
            for name, knob in cls.knobs.items()
        }

    @property
    @abstractmethod
    def ports(self) -> dict[str, PortSpec]:
        """Every port with a target, in data-flow order."""

    @property
    @abstractmethod
    def output(self) -> str:
        """The name of the final output port."""

    @abstractmethod
    def build_system(self) -> torch.nn.Module:
        """A fresh, randomly initialised System for these knobs (uses torch's global RNG)."""

    @abstractmethod
    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        """A training batch drawn from the training pool only."""

    def sample_seeds(self, batch_size: int, generators: list[torch.Generator]) -> Batch:
        """One batch per generator, stacked along a new first dimension: the same examples
        as ``self.sample(batch_size, g)`` for each ``g`` (seed-batched training draws its
        data here). Override it to draw all batches in one vectorised pass."""
        batches = [self.sample(batch_size, g) for g in generators]
        return Batch(
            {k: torch.stack([b.x[k] for b in batches]) for k in batches[0].x},
            {k: torch.stack([b.targets[k] for b in batches]) for k in batches[0].targets},
        )

    @abstractmethod
    def test_set(self) -> Batch:
        """The fixed held-out evaluation set, built only from the test pool."""

    def train_set(self) -> Batch | None:
        """The whole training set, for tasks whose training data is a fixed finite set
        (``sample`` then draws from it with replacement); None for generated data."""
        return None

    def auxiliary_head(self, in_features: int) -> torch.nn.Module:
        """A small head that predicts the output target from a module's ports (for `local`)."""
        hidden = 64
        return torch.nn.Sequential(
            torch.nn.Linear(in_features, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, self.ports[self.output].size),
        )
