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

    eval_chunk_divisor: int = 1


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
        self.eval_chunk_divisor = len(seeds)

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
            values = vmap(self._call(m), in_dims=(0, 0, None, None))(
                m.params, m.buffers, batch.x, batch.targets
            )
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
    task: Task, strategy: Strategy, graph: Graph, seeds: list[int], device: torch.device
) -> Replicas:
    """``Single`` for one seed, ``Stacked`` for several."""
    units = [make_units(task, strategy, graph, seed, device) for seed in seeds]
    if len(seeds) == 1:
        return Single(units[0], seeds[0])
    return Stacked(units, seeds)


def batching_pays(
    task: Task,
    strategy: Strategy,
    graph: Graph,
    seeds: list[int],
    optimizer: str,
    lr: float,
    device: torch.device,
) -> bool:
    """Whether to train ``seeds`` stacked rather than one after another.

    A fixed rule, so that a spec gives the same numbers every time: stacking pays for
    small, overhead-bound systems, but not on the CPU for a system with convolutions
    (vmap turns a convolution with per-seed weights into a grouped one, which CPU kernels
    run several times slower: see benchmarks/throughput.py), it is impossible for a
    system vmap cannot batch (data-dependent control flow, ``.item()``, random ops), and
    it is refused where stacking would change a seed's numbers (see ``_stacking_exact``);
    two steps on throwaway copies find out both."""
    probe = task.build_system()
    convolutions = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    if device.type == "cpu" and any(isinstance(m, convolutions) for m in probe.modules()):
        return False
    try:
        return _stacking_exact(task, strategy, graph, seeds[:2], optimizer, lr, device)
    except RuntimeError as error:
        if not _vmap_refused(error):
            raise
        return False


def _stacking_exact(
    task: Task,
    strategy: Strategy,
    graph: Graph,
    seeds: list[int],
    optimizer: str,
    lr: float,
    device: torch.device,
) -> bool:
    """Two training steps of the first seed, alone and stacked beside another, on the
    same data: True when its parameters and port values come out bit for bit the same.

    Kernels can differ with the batch of seeds (e.g. a product with one output column
    goes to a matrix-vector kernel alone and to a batched matrix product stacked), and a
    seed's result must not depend on the seeds trained beside it. On accelerators,
    where results are not promised bit for bit, stacking is taken when vmap works."""
    alone = make_replicas(task, strategy, graph, seeds[:1], device)
    stacked = make_replicas(task, strategy, graph, seeds, device)
    phase = strategy.phases[0]
    for replicas in (alone, stacked):
        replicas.begin_phase(phase, optimizer, lr)
    rngs = [torch.Generator().manual_seed(2**31 - 1 - s) for s in seeds]
    for _ in range(2):
        batch = stacked.draw(task, 8, rngs, device)
        stacked.step(0, batch)
        alone.step(0, stacked.first(batch))
    if device.type != "cpu":
        return True
    mine, theirs = alone.unit(0, 0).state_dict(), stacked.unit(0, 0).state_dict()
    if any(not torch.equal(mine[k], theirs[k]) for k in mine):
        return False
    probe = task.test_set().slice(0, 8).to(device)
    values, stacked_values = alone.ports(0, probe)[0], stacked.ports(0, probe)[0]
    return all(torch.equal(v, stacked_values[k]) for k, v in values.items())


def _vmap_refused(error: RuntimeError) -> bool:
    text = str(error).lower()
    return any(word in text for word in ("vmap", "batching rule", "functorch", "batchedtensor"))
