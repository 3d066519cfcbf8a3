"""Replicas: the copies of a system that one training loop advances in lock-step.

A run has one copy per ensemble member. Seed-batched training runs S seeds of the same
spec at once: ``Stacked`` keeps each member's S copies as one set of parameters with a
leading seed dimension and advances them as one vectorised computation
(``torch.func.vmap`` over ``functional_call``). Every seed keeps its own initialisation,
its own data (the loop samples each seed's batch from that seed's generator) and its own
optimiser state: Adam and SGD act element by element, so one optimiser over the stacked
tensors is S independent optimisers. ``Single`` is the plain, unbatched case.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap
from torch.utils.flop_counter import FlopCounterMode

from e2elab.numerics import conv_layout
from e2elab.objective import auxiliary_heads, phase_loss, trainable_modules
from e2elab.strategy import Phase, Strategy
from e2elab.system import Graph, System
from e2elab.task import Batch, Task


def _fused(params: list[Tensor]) -> bool | None:
    """Fused optimiser kernels (one per tensor, not a dozen small ops) on CUDA only.

    torch's fused CPU Adam updates an element with FMA instructions inside the vectorised
    part of a tensor and without them in its scalar tail, so an element's value depends on
    its position in the tensor. A seed's parameters sit at different positions when 1, 2
    or 16 seeds are stacked, and the same spec would end differently (in the last bits,
    then in what it learns). The unfused update is the same at every position; it costs
    about 10% of a digit-chain step."""
    return True if params and all(p.device.type == "cuda" for p in params) else None


# examples per evaluation chunk, whatever the number of seeds: a seed's numbers must not
# depend on how many seeds share its stack
EVAL_CHUNK = 512

OPTIMIZERS: dict[str, Callable[[list[Tensor], float], torch.optim.Optimizer]] = {
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr, fused=_fused(params)),
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr, fused=_fused(params)),
}


class Unit(nn.Module):
    """One member: the system and its auxiliary heads. Its forward returns the loss of
    ``self.phase`` on a batch, or every port's value when no phase is set."""

    def __init__(self, task: Task, graph: Graph, system: System, heads: nn.ModuleDict) -> None:
        super().__init__()
        self.system, self.heads = system, heads
        self._task, self._graph = task, graph
        self.phase: Phase | None = None

    def forward(self, x: dict[str, Tensor], targets: dict[str, Tensor]) -> Any:
        batch = Batch(x, targets)
        if self.phase is None:
            return self.system.run_ports(batch)
        return phase_loss(self._task, self.system, self.heads, self._graph, self.phase, batch)

    def set_phase(self, phase: Phase | None) -> None:
        self.phase = phase

    def clone(self) -> Unit:
        """A deep copy that shares (does not copy) the task and its data."""
        return copy.deepcopy(self, memo={id(self._task): self._task, id(self._graph): self._graph})


def make_units(
    task: Task, strategy: Strategy, graph: Graph, seed: int, device: torch.device
) -> list[Unit]:
    """The members of one seed's run, initialised from torch's RNG seeded with ``seed``."""
    torch.manual_seed(seed)
    units = []
    for _ in range(strategy.members):
        system: System = task.build_system()  # type: ignore[assignment]  # checked by run
        unit = Unit(task, graph, system, auxiliary_heads(task, strategy, graph)).to(device)
        units.append(conv_layout(unit, device))
    return units


def step_memory(unit: Unit, phase: Phase, batch: Batch, optimizer: str, lr: float) -> dict:
    """Bytes and FLOPs of one training step of ``phase``, measured on a copy of ``unit``
    (which is left untouched): the activations autograd saves for backward, an estimate
    of the whole step's memory (parameters, plus gradients and two Adam moments of what
    trains), and the forward + backward FLOPs per example (torch's FlopCounterMode)."""
    unit = unit.clone()
    unit.set_phase(phase)
    trainable = _select(unit.named_parameters(), phase)
    params = {p.untyped_storage().data_ptr() for p in unit.parameters()}
    saved: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    with FlopCounterMode(display=False) as flops:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = unit(batch.x, batch.targets)
        if trainable:
            loss.backward()
    if trainable:
        OPTIMIZERS[optimizer](trainable, lr).step()
    state = sum(p.numel() * p.element_size() for p in unit.parameters())
    trained = sum(p.numel() * p.element_size() for p in trainable)
    activations = sum(saved.values())
    return {
        "activation_bytes": activations,
        "trained_parameter_bytes": trained,
        "step_bytes_estimate": state + 3 * trained + activations,
        "flops_per_example": flops.get_total_flops() / len(batch),
    }


def _select(named: Iterable[tuple[str, Tensor]], phase: Phase) -> list[Tensor]:
    """Freeze all but the phase's modules (requires_grad off); return what trains.
    ``named`` gives (name, parameter) pairs named as in a Unit: ``system.MODULE.*``."""
    on = trainable_modules(phase)
    trainable = []
    for name, param in named:
        param.grad = None
        keep = ".".join(name.split(".")[:2]) in on
        param.requires_grad_(keep)
        if keep:
            trainable.append(param)
    return trainable


class Replicas(ABC):
    """``members`` copies of the system for each of ``seeds``, advanced together."""

    def __init__(self, seeds: list[int], members: int) -> None:
        self.seeds, self.members = seeds, members

    @abstractmethod
    def begin_phase(self, phase: Phase, optimizer: str, lr: float) -> None:
        """Freeze all but the phase's modules and give what trains a fresh optimiser."""

    @abstractmethod
    def draw(
        self, task: Task, size: int, rngs: list[torch.Generator], device: torch.device
    ) -> Batch:
        """A training batch for every seed, seed s's from ``rngs[s]``, on ``device``."""

    @abstractmethod
    def first(self, batch: Batch) -> Batch:
        """The first seed's part of a batch from ``draw``."""

    @abstractmethod
    def step(self, member: int, batch: Batch) -> Tensor:
        """One optimiser step of ``member`` in every seed on a batch from ``draw``.
        Returns the losses before the step, shape (seeds,), without synchronising."""

    @abstractmethod
    def ports(self, member: int, batch: Batch) -> list[dict[str, Tensor]]:
        """Every port's value on ``batch`` (one batch for all seeds), per seed, in eval mode."""

    @abstractmethod
    def systems(self) -> list[list[System]]:
        """Per seed, per member: the trained systems as ordinary modules."""

    @abstractmethod
    def unit(self, seed_index: int, member: int) -> Unit:
        """One seed's member as an ordinary module (a copy for stacked replicas)."""


class Single(Replicas):
    """One seed: the plain training step on ordinary modules."""

    def __init__(self, units: list[Unit], seed: int) -> None:
        super().__init__([seed], len(units))
        self.units = units
        self.optimizers: list[torch.optim.Optimizer | None] = []

    def begin_phase(self, phase: Phase, optimizer: str, lr: float) -> None:
        self.optimizers = []
        for unit in self.units:
            unit.set_phase(phase)
            unit.train()
            trainable = _select(unit.named_parameters(), phase)
            self.optimizers.append(OPTIMIZERS[optimizer](trainable, lr) if trainable else None)

    def draw(
        self, task: Task, size: int, rngs: list[torch.Generator], device: torch.device
    ) -> Batch:
        return task.sample(size, rngs[0]).to(device)

    def first(self, batch: Batch) -> Batch:
        return batch

    def step(self, member: int, batch: Batch) -> Tensor:
        unit, optimizer = self.units[member], self.optimizers[member]
        loss = unit(batch.x, batch.targets)
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return loss.detach().reshape(1)

    @torch.no_grad()
    def ports(self, member: int, batch: Batch) -> list[dict[str, Tensor]]:
        unit = self.units[member]
        phase, unit.phase = unit.phase, None
        unit.eval()
        try:
            return [unit(batch.x, batch.targets)]
        finally:
            unit.train()
            unit.phase = phase

    def systems(self) -> list[list[System]]:
        return [[unit.system for unit in self.units]]

    def unit(self, seed_index: int, member: int) -> Unit:
        return self.units[member]


@dataclass
class _StackedMember:
    template: Unit  # gives the structure; its own tensors are never used
    params: dict[str, Tensor]  # (seeds, ...) leaves
    buffers: dict[str, Tensor]
    optimizer: torch.optim.Optimizer | None = None


class Stacked(Replicas):
    """S seeds at once: stacked parameters, one vmapped forward and backward per step."""

    def __init__(self, units_per_seed: list[list[Unit]], seeds: list[int]) -> None:
        super().__init__(seeds, len(units_per_seed[0]))
        self.stack: list[_StackedMember] = []
        for member in range(self.members):
            copies = [units[member] for units in units_per_seed]
            params, buffers = stack_module_state(copies)  # type: ignore[arg-type]
            self.stack.append(_StackedMember(copies[0], params, buffers))

    def begin_phase(self, phase: Phase, optimizer: str, lr: float) -> None:
        for member in self.stack:
            member.template.set_phase(phase)
            member.template.train()
            trainable = _select(member.params.items(), phase)
            member.optimizer = OPTIMIZERS[optimizer](trainable, lr) if trainable else None

    def _call(self, member: _StackedMember) -> Callable[..., Any]:
        def one_seed(params: dict, buffers: dict, x: dict, targets: dict) -> Any:
            return functional_call(member.template, (params, buffers), (x, targets))

        return one_seed

    def draw(
        self, task: Task, size: int, rngs: list[torch.Generator], device: torch.device
    ) -> Batch:
        return task.sample_seeds(size, rngs).to(device)

    def first(self, batch: Batch) -> Batch:
        part = batch.part(0)  # a copy, so memory is measured on this seed's data alone
        return Batch(
            {k: v.clone() for k, v in part.x.items()},
            {k: v.clone() for k, v in part.targets.items()},
        )

    def step(self, member: int, batch: Batch) -> Tensor:
        m = self.stack[member]
        losses = vmap(self._call(m))(m.params, m.buffers, batch.x, batch.targets)
        if m.optimizer is not None:
            m.optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()  # seed s's loss reaches only seed s's slice
            m.optimizer.step()
        return losses.detach()

    @torch.no_grad()
    def ports(self, member: int, batch: Batch) -> list[dict[str, Tensor]]:
        m = self.stack[member]
        phase, m.template.phase = m.template.phase, None
        m.template.eval()
        try:
            # every seed gets the inputs as a slice of its own, as in training: with
            # shared inputs vmap would fold the seeds into one wider product
            seeds = len(self.seeds)
            x, targets = (
                {k: v.expand(seeds, *v.shape) for k, v in d.items()}
                for d in (batch.x, batch.targets)
            )
            values = vmap(self._call(m))(m.params, m.buffers, x, targets)
        finally:
            m.template.train()
            m.template.phase = phase
        return [{k: v[s] for k, v in values.items()} for s in range(len(self.seeds))]

    def unit(self, seed_index: int, member: int) -> Unit:
        m = self.stack[member]
        unit = m.template.clone()
        state = {**m.params, **m.buffers}
        unit.load_state_dict({k: v[seed_index].detach() for k, v in state.items()})
        return unit

    def systems(self) -> list[list[System]]:
        return [
            [self.unit(s, member).system for member in range(self.members)]
            for s in range(len(self.seeds))
        ]


def make_replicas(
    task: Task,
    strategy: Strategy,
    graph: Graph,
    seeds: list[int],
    device: torch.device,
    stacked: bool | None = None,
) -> Replicas:
    """``Stacked`` for several seeds; for one, ``Stacked`` (a stack of one) when
    ``stacked`` says so, else the plain ``Single``. ``None``: stacked for several."""
    units = [make_units(task, strategy, graph, seed, device) for seed in seeds]
    if len(seeds) == 1 and not stacked:
        return Single(units[0], seeds[0])
    return Stacked(units, seeds)


@dataclass(frozen=True)
class SeedPlan:
    """How the seeds of one spec train on this machine, decided once per process.

    ``lone`` is the code one seed trains through: ``"plain"`` (ordinary modules) or
    ``"stack"`` (a stack of one, the same vmapped code as a stack of sixteen). ``stack``
    says whether several seeds train as one stack; ``reason`` says why not, in words.

    The canonical computation of a seed is the stacked one wherever the system stacks:
    a seed's numbers then do not depend on how many seeds share its stack, because every
    stack runs the same operations, one slice per seed. The plain code is faster for a
    lone seed (no vmap overhead), and it is taken only where it is verified to give the
    stacked code's bits on this machine (on some CPUs it does not: MKL computes the
    weight gradient of ``x @ W.T`` as ``G.T @ X`` for plain autograd and ``X.T @ G``
    for the batched product, and those differ in the last bit on AMD CPUs)."""

    stack: bool
    lone: str = "plain"
    reason: str | None = None
    detail: str | None = None  # what differed
    unexpected: bool = False  # a refusal a user would not foresee: worth a note

    def note(self) -> str | None:
        """One line for the user where seeds train one at a time unexpectedly."""
        if not self.unexpected:
            return None
        what = f"{self.reason}: {self.detail}" if self.detail else self.reason
        return f"e2elab: seeds train one at a time (same numbers, slower): {what}"

    def describe(self, seeds: int) -> str:
        """What a result records about how it was trained (``memory.stacking``)."""
        if seeds > 1:
            return f"stacked: {seeds} seeds"
        how = "a stack of one" if self.lone == "stack" else "plain"
        if self.reason is None:
            return f"alone ({how})"
        return f"one at a time ({how}): {self.reason}"


_PLANS: dict[tuple, SeedPlan] = {}


def plan_seeds(
    task: Task,
    strategy: Strategy,
    graph: Graph,
    optimizer: str,
    lr: float,
    batch_size: int,
    device: torch.device,
) -> SeedPlan:
    """How this spec's seeds train here (``SeedPlan``), decided by fixed rules and, on the
    CPU, by a check on throwaway copies; cached per process.

    Rules: on the CPU a system with convolutions trains one seed at a time (vmap turns a
    convolution with per-seed weights into a grouped one, which CPU kernels run several
    times slower: see benchmarks/throughput.py), as does one with attention (torch has
    no batching rule for its fused attention: vmap falls back to a loop), and so does a
    system that vmap cannot batch (data-dependent control flow, ``.item()``, random
    ops). On accelerators, where results are not promised bit for bit, seeds stack
    wherever vmap works.

    The check, on the CPU: three seeds take two training steps at the run's batch size
    as one stack, each alone as a stack of one, and each alone through the plain code,
    and then evaluate a chunk of the test set. The stacked code runs the same operations
    one slice per seed whatever the stack size (evaluation chunks do not depend on it,
    and every seed gets its inputs as a slice of its own), so the stack matches the
    stacks of one unless a kernel itself changes with the number of slices (torch's
    batched product with one output column does: ``tests/test_seed_batching.py``); then
    seeds train one at a time. Where the plain code gives the stacked bits, a lone seed
    takes it (it is faster); where not, a lone seed trains as a stack of one."""
    key = (
        task.name,
        repr(sorted(task.settings.items())),
        f"{type(task).__module__}.{type(task).__qualname__}",
        repr(strategy),
        optimizer,
        lr,
        batch_size,
        str(device),
    )
    if key not in _PLANS:
        _PLANS[key] = _plan(task, strategy, graph, optimizer, lr, batch_size, device)
    return _PLANS[key]


CHECKED_SEEDS = (0, 1, 2)  # three: the middle one sits inside the stack on both sides


def _plan(
    task: Task,
    strategy: Strategy,
    graph: Graph,
    optimizer: str,
    lr: float,
    batch_size: int,
    device: torch.device,
) -> SeedPlan:
    probe = task.build_system()
    convolutions = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    if device.type == "cpu" and any(isinstance(m, convolutions) for m in probe.modules()):
        return SeedPlan(False, "plain", "a convolutional system on the CPU (stacking is slower)")
    if device.type == "cpu" and any(isinstance(m, nn.MultiheadAttention) for m in probe.modules()):
        # torch has no batching rule for its fused attention kernels: vmap runs them one
        # slice at a time, through a slow fallback
        return SeedPlan(False, "plain", "an attention system on the CPU (stacking is slower)")
    seeds = list(CHECKED_SEEDS)
    steps = _Steps(task, strategy, optimizer, lr, batch_size, device, graph)
    try:
        stacked = steps.run(seeds, True)
    except RuntimeError as error:
        if not _vmap_refused(error):
            raise
        first = str(error).strip().splitlines()[0][:120]
        reason = f"vmap cannot batch this system ({first})"
        return SeedPlan(False, "plain", reason, unexpected=True)
    if device.type != "cpu":
        return SeedPlan(True, "plain")
    ones = [steps.run([s], True)[0] for s in seeds]
    stack_vs_one = _compare(stacked, ones)
    if stack_vs_one is not None:
        capability = torch.backends.cpu.get_cpu_capability()
        reason = f"stacking changes a seed's numbers on this CPU ({capability})"
        return SeedPlan(False, "plain", reason, stack_vs_one, unexpected=True)
    plain_vs_one = _compare([steps.run([s], False)[0] for s in seeds], ones)
    return SeedPlan(True, "plain" if plain_vs_one is None else "stack", detail=plain_vs_one)


@dataclass
class _Steps:
    """Two training steps of the first phase on throwaway replicas, then evaluation."""

    task: Task
    strategy: Strategy
    optimizer: str
    lr: float
    batch_size: int
    device: torch.device
    graph: Graph

    def run(self, seeds: list[int], stacked: bool) -> list[dict[str, Tensor]]:
        """Per seed: its parameters after the steps (batches from a fixed generator per
        seed), and its port values on a chunk of the test set, by name."""
        task, device = self.task, self.device
        replicas = make_replicas(task, self.strategy, self.graph, seeds, device, stacked)
        replicas.begin_phase(self.strategy.phases[0], self.optimizer, self.lr)
        rngs = [torch.Generator().manual_seed(2**31 - 1 - s) for s in seeds]
        with task.drawing_for(self.strategy.phases[0]):
            for _ in range(2):
                replicas.step(0, replicas.draw(task, self.batch_size, rngs, device))
        test = task.test_set()
        values = replicas.ports(0, test.slice(0, min(len(test), EVAL_CHUNK)).to(device))
        return [
            {**replicas.unit(s, 0).state_dict(), **{f"port {k}": v for k, v in values[s].items()}}
            for s in range(len(seeds))
        ]


def _compare(ours: list[dict[str, Tensor]], reference: list[dict[str, Tensor]]) -> str | None:
    """None when every tensor of every seed is bitwise equal; else the first that
    differs, with the largest difference, in words."""
    for seed, (mine, theirs) in enumerate(zip(ours, reference, strict=True)):
        for name, value in mine.items():
            other = theirs[name]
            if not torch.equal(value, other):
                gap = (value.double() - other.double()).abs().max().item()
                return f"{name} of seed {seed} differs by {gap:.1e} after two steps"
    return None


def _vmap_refused(error: RuntimeError) -> bool:
    text = str(error).lower()
    return any(word in text for word in ("vmap", "batching rule", "functorch", "batchedtensor"))
