"""Tasks make data: inputs plus a target for every port, and they build the system.

A task knows nothing of strategies. It declares, per port, how to score it (loss and
metric), what chance is, and how a target is written in the port's own representation
(so a strategy can teacher-force that port).
"""

from __future__ import annotations

import math
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from e2elab.errors import E2ELabError, choices
from e2elab.ports import PortKind, port_kind
from e2elab.records import Settings, TrainingDefaults  # noqa: F401  (re-exported for tasks)


@dataclass(frozen=True)
class PortSpec:
    """How one port is scored.

    Parameters
    ----------
    kind:
        A port kind (see ``e2elab.ports``), by name or as an object: ``"class"`` (logits
        over ``size`` classes, target a class index), ``"binary"`` (one +-1 score),
        ``"regression"`` (``size`` real values; metric minus the MSE), ``"reward"``
        (logits over ``size`` choices, target a reward vector), ``"sequence"`` (logits
        over a vocabulary of ``size`` tokens at each position, target token ids with
        padding; ``SequenceKind(pad=...)`` for another padding id).
    size:
        Number of classes, choices, tokens or real outputs (1 for binary).
    chance:
        The metric a learner that ignores its input would get.
    weight:
        How much this port's loss counts wherever a strategy trains on it (default 1).
        Weigh a port down when its loss is on another scale than the others', e.g. a
        regression target of scale 10 beside a class port.
    """

    kind: PortKind | str
    size: int
    chance: float
    weight: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", port_kind(self.kind))
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise E2ELabError(f"PortSpec size must be a positive integer, got {self.size!r}")
        if not self.weight >= 0:
            raise E2ELabError(f"PortSpec weight must be zero or more, got {self.weight!r}")

    @property
    def port_kind(self) -> PortKind:
        return self.kind  # type: ignore[return-value]  # made an object in __post_init__

    @property
    def accuracy_like(self) -> bool:
        """Whether the metric is a success rate (so chance can be tested binomially)."""
        return self.port_kind.success_rate

    def loss(self, value: Tensor, target: Tensor) -> Tensor:
        return self.port_kind.loss(value, target, self.size)

    def metric(self, value: Tensor, target: Tensor) -> float:
        return self.port_kind.metrics(value, target)[""]

    def metrics(self, value: Tensor, target: Tensor) -> dict[str, float]:
        """The metric under ``""`` and any others the kind reports (e.g. ``exact``)."""
        return self.port_kind.metrics(value, target)

    def forced(self, target: Tensor, like: Tensor) -> Tensor:
        """The target written as a value of this port (used for teacher forcing)."""
        return self.port_kind.forced(target, like, self.size)

    def average(self, values: list[Tensor]) -> Tensor:
        """Combine ensemble members' values: mean probability for classes, mean value else."""
        return self.port_kind.average(values)

    def check_target(self, port: str, target: Tensor, value: Tensor) -> None:
        self.port_kind.check_target(port, target, value, self.size)


@dataclass(frozen=True)
class Population:
    """A finite training distribution: ``size`` examples, delivered by ``chunks(n)`` as
    (batch of at most n examples, their probabilities); the probabilities of all chunks
    sum to 1. It must match the training distribution in the first and second moments
    of every example's gradient (an exact enumeration does; see ``Stocks.population``
    for a design that matches random targets the loss is linear in)."""

    size: int
    chunks: Callable[[int], Iterator[tuple[Batch, Tensor]]]


def moved(tensor: Tensor, device: torch.device | str) -> Tensor:
    """``tensor`` on ``device``. A copy to CUDA does not make the host wait
    (``non_blocking``); to other devices it does: MPS can read a temporary host tensor
    after it is freed (pytorch/pytorch#139550)."""
    return tensor.to(device, non_blocking=torch.device(device).type == "cuda")


def _normalised(device: torch.device) -> torch.device:
    """``cuda`` as ``cuda:N`` (the current device), so that tensors compare equal to it."""
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return device


@dataclass
class Batch:
    """Inputs by name, and a target for every port that has one. All tensors share dim 0."""

    x: dict[str, Tensor]
    targets: dict[str, Tensor]

    def __len__(self) -> int:
        return next(iter(self.x.values())).shape[0]

    def to(self, device: torch.device | str) -> Batch:
        """On ``device``; copies to a CUDA device do not wait (see ``moved``)."""
        return Batch(
            {k: moved(v, device) for k, v in self.x.items()},
            {k: moved(v, device) for k, v in self.targets.items()},
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
    maximum: int | float | None = None  # where a larger value cannot be meant

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
            if not math.isfinite(value):  # NaN passes every comparison with a bound
                raise E2ELabError(f"knob {name} expects a finite number, got {raw!r}")
        elif kind is str:
            value = str(raw)
        if self.minimum is not None and value < self.minimum:
            raise E2ELabError(f"knob {name} must be at least {self.minimum}, got {value}")
        if self.maximum is not None and value > self.maximum:
            raise E2ELabError(f"knob {name} must be at most {self.maximum}, got {value}")
        if self.choices and value not in self.choices:
            raise choices(f"value for knob {name}", value, [str(c) for c in self.choices])
        return value


class Task(ABC):
    """A family of problems; an instance is one member, fixed by its knobs.

    Subclasses set ``name``, ``knobs`` and ``defaults``, and implement ``ports``,
    ``output``, ``build_system``, ``sample`` and ``test_set``. Train and test data must
    be drawn from disjoint underlying examples.
    """

    name: ClassVar[str]
    # a shipped task whose data or system changed within one e2elab version raises this,
    # so its runs get new ids (``tasks.fingerprint``) and old stored results are not reused
    revision: ClassVar[int] = 0
    description: ClassVar[str] = ""
    knobs: ClassVar[dict[str, Knob]] = {}
    defaults: ClassVar[Settings]
    # where training keeps the training data while it runs (``data_on``); None: on the host
    data_device: torch.device | None = None
    # which of the task's training sets ``sample`` draws from while a phase trains
    # (``drawing_for``); None: the task's one training distribution
    training_data: str | None = None

    def __init__(self, **knobs: Any) -> None:
        # the knobs' values, defaults filled in (the class's ``knobs`` declares them)
        self.knobs: dict[str, Any] = self.resolve_knobs(knobs)  # type: ignore[misc]

    @property
    def settings(self) -> dict[str, Any]:
        """The knobs' values, under the name earlier versions gave them (``knobs``)."""
        return self.knobs

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

    @contextmanager
    def data_on(self, device: torch.device | str) -> Iterator[None]:
        """Within the block, ``sample`` may build its batches on ``device`` (training on an
        accelerator sets this): a task whose training data is a fixed pool keeps the pool
        there, moved once (``on_data_device``), and gathers each batch there; the examples
        drawn do not change, since indices still come from the seed's host generator. The
        device copies are dropped when the outermost block ends."""
        previous, self.data_device = self.data_device, _normalised(torch.device(device))
        try:
            yield
        finally:
            self.data_device = previous
            if previous is None:
                self.__dict__.pop("_device_copies", None)

    def on_data_device(self, tensor: Tensor) -> Tensor:
        """``tensor``, a fixed pool of training data, on ``data_device``: copied there once
        and kept for later calls with the same tensor object (while it lives and the
        ``data_on`` block lasts); unchanged where there is no data device or it is
        already there."""
        device = self.data_device
        if device is None or tensor.device == device:
            return tensor
        copies: dict[int, tuple[weakref.ref, Tensor]] = self.__dict__.setdefault(
            "_device_copies", {}
        )
        key = id(tensor)
        kept = copies.get(key)
        if kept is None or kept[0]() is not tensor:
            copies[key] = (weakref.ref(tensor), tensor.to(device))
            weakref.finalize(tensor, copies.pop, key, None)  # a dead source frees its copy
        return copies[key][1]

    def data_of(self, phase: Any) -> str | None:
        """The name of the training data that ``phase`` (a ``strategy.Phase``) draws, for
        a task whose supervision differs by phase: e.g. a translation cascade, each stage
        trained on its own pair's corpus and end to end on the scarcer direct pairs.
        ``sample`` reads it as ``self.training_data``. None (the default): every phase
        draws from the one training distribution."""
        return None

    @contextmanager
    def drawing_for(self, phase: Any) -> Iterator[str | None]:
        """Within the block, ``sample`` draws ``phase``'s training data (``data_of``);
        yields its name."""
        previous, self.training_data = self.training_data, self.data_of(phase)
        try:
            yield self.training_data
        finally:
            self.training_data = previous

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

    @classmethod
    def unavailable(cls, knobs: dict[str, Any]) -> str | None:
        """Why this member of the family cannot be built here (an optional dataset or
        package that is missing), as one line; None when it can. A suite skips a part
        whose task is unavailable, saying this line, and runs the rest."""
        return None

    def artifacts(self, system: torch.nn.Module) -> dict[str, Any]:
        """Small things to keep from a trained system in its stored result (plain lists
        and numbers, a few kB at most), e.g. first-layer filters for a figure; {} by
        default."""
        return {}

    def train_set_for(self, seed: int) -> Batch | None:
        """The training set of the run with ``seed``, where each run trains on a fixed
        finite set of its own (e.g. a subset drawn by the seed); by default the task's
        ``train_set``. Black-box learners fit on it."""
        return self.train_set()

    def validation_set(self) -> Batch | None:
        """Examples held out from training and test, for choosing hyper-parameters
        (black-box learners choose theirs on it); None where the task has none."""
        return None

    def population(self) -> Population | None:
        """The training distribution as a finite set of weighted examples, where it is one
        (``diagnostics.exact_snr`` then computes the gradient's mean and variance exactly);
        None (the default) where it is not, or is too large to enumerate."""
        return None

    def auxiliary_head(self, in_features: int) -> torch.nn.Module:
        """A small head that predicts the output target from a module's ports (for `local`)."""
        hidden = 64
        return torch.nn.Sequential(
            torch.nn.Linear(in_features, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, self.ports[self.output].size),
        )
