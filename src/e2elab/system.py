"""System: an nn.Module made of named modules whose forward emits named ports.

The wiring is plain Python in ``forward``. Each value that flows between modules passes
through ``self.port(name, value)``, which records the module's raw output (for losses)
and returns what downstream modules see: the value itself, its detached copy when the
port is cut, or the port's target when the port is teacher-forced.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from e2elab.errors import E2ELabError

Forcer = Callable[[str, Tensor], Tensor]


@dataclass
class Wiring:
    """What the running strategy asks of the ports during one forward pass."""

    cut: frozenset[str] = frozenset()
    forced: frozenset[str] = frozenset()
    forcer: Forcer | None = None
    recorded: dict[str, Tensor] = field(default_factory=dict)


class System(nn.Module):
    """Base class for composite networks. Pass the named modules to ``__init__``.

    Examples
    --------
    >>> class Pair(System):
    ...     def __init__(self):
    ...         super().__init__(first=nn.Linear(2, 3), second=nn.Linear(3, 1))
    ...     def forward(self, batch):
    ...         h = self.port("hidden", self.first(batch.x["x"]))
    ...         return self.port("y", self.second(h))
    """

    def __init__(self, **modules: nn.Module) -> None:
        super().__init__()
        for name, module in modules.items():
            self.add_module(name, module)
        self._wiring: Wiring | None = None

    def port(self, name: str, value: Tensor) -> Tensor:
        """Record ``value`` as port ``name`` and return what flows downstream."""
        wiring = self._wiring
        if wiring is None:
            return value
        if name in wiring.recorded:
            raise E2ELabError(
                f"port {name!r} was emitted twice in one forward pass; give each port a unique name"
            )
        wiring.recorded[name] = value
        if name in wiring.forced:
            assert wiring.forcer is not None
            return wiring.forcer(name, value)
        if name in wiring.cut:
            return value.detach()
        return value

    @contextmanager
    def wired(self, wiring: Wiring) -> Iterator[Wiring]:
        """Run forward passes under ``wiring``; the recorded ports land in ``wiring.recorded``."""
        previous, self._wiring = self._wiring, wiring
        try:
            yield wiring
        finally:
            self._wiring = previous

    def run_ports(
        self,
        batch: object,
        cut: frozenset[str] = frozenset(),
        forced: frozenset[str] = frozenset(),
        forcer: Forcer | None = None,
    ) -> dict[str, Tensor]:
        """One forward pass; returns every port's raw value (before cutting or forcing)."""
        with self.wired(Wiring(cut=cut, forced=forced, forcer=forcer)) as wiring:
            self(batch)
        return wiring.recorded

    def module_names(self) -> list[str]:
        """Named top-level modules that hold trainable parameters."""
        return [name for name, m in self.named_children() if any(True for _ in m.parameters())]


@dataclass(frozen=True)
class Graph:
    """The structure of a system, found by tracing one forward pass.

    ``modules`` and ``ports`` are in data-flow order (order of first emission);
    ``producers[port]`` is the set of modules whose parameters the port depends on
    when every other port is cut.
    """

    modules: tuple[str, ...]
    ports: tuple[str, ...]
    producers: Mapping[str, frozenset[str]]
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # per example
    # per port: the modules it depends on when only ports with targets are cut, i.e.
    # also through values passed as ports without a target (plumbing), which no
    # strategy can teacher-force
    reaches: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def unforceable(self, module: str) -> frozenset[str]:
        """Modules whose outputs reach ``module``'s ports through plumbing only."""
        found: set[str] = set()
        for port in self.ports_of(module):
            found |= self.reaches.get(port, frozenset()) - self.producers[port]
        return frozenset(found)

    def width(self, ports: tuple[str, ...]) -> int:
        """Features per example when ``ports`` are flattened and concatenated."""
        return sum(math.prod(self.shapes[p]) for p in ports)

    def ports_of(self, module: str) -> tuple[str, ...]:
        """The ports that ``module`` produces, in data-flow order."""
        return tuple(p for p in self.ports if module in self.producers[p])

    def producer_of(self, port: str) -> frozenset[str]:
        return self.producers[port]


def trace(system: System, batch: object, targeted: Mapping[str, object]) -> Graph:
    """Find which module produces which port by cutting every port and asking autograd.

    Only ports listed in ``targeted`` (the task's ports) are kept; other recorded values
    are plumbing. A module that produces no targeted port is placed by its first use.
    """
    names = system.module_names()
    params = {name: list(getattr(system, name).parameters()) for name in names}
    producers = _producers(system, batch, targeted, names, params, _Everything())
    reaches = _producers(system, batch, targeted, names, params, frozenset(targeted))
    recorded = producers.pop("")  # type: ignore[assignment]
    reaches.pop("")
    ports = tuple(p for p in recorded if p in targeted)
    order: list[str] = []
    for port in ports:
        for name in names:
            if name in producers[port] and name not in order:
                order.append(name)
    order += [name for name in names if name not in order]
    return Graph(
        modules=tuple(order),
        ports=ports,
        producers={p: producers[p] for p in ports},
        shapes={p: tuple(recorded[p].shape[1:]) for p in ports},
        reaches={p: reaches.get(p, frozenset()) for p in ports},
    )


def _producers(
    system: System,
    batch: object,
    targeted: Mapping[str, object],
    names: list[str],
    params: dict[str, list[Tensor]],
    cut: frozenset[str],
) -> dict:
    """Port -> the modules whose parameters it depends on with ``cut`` ports cut; under
    the key "" the recorded values themselves."""
    with torch.enable_grad():
        with system.wired(Wiring(cut=cut)) as wiring:
            system(batch)
        recorded = wiring.recorded
        producers: dict = {}
        for port, value in recorded.items():
            if port not in targeted or not value.requires_grad:
                producers[port] = frozenset()
                continue
            flat = [p for name in names for p in params[name]]
            grads = torch.autograd.grad(value.sum(), flat, retain_graph=True, allow_unused=True)
            touched: set[str] = set()
            i = 0
            for name in names:
                k = len(params[name])
                if any(g is not None for g in grads[i : i + k]):
                    touched.add(name)
                i += k
            producers[port] = frozenset(touched)
    producers[""] = recorded
    return producers


class _Everything(frozenset):
    """A set that contains every port name (used to cut all ports while tracing)."""

    def __contains__(self, item: object) -> bool:
        return True
