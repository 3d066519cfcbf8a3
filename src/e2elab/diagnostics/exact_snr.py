"""Gradient SNR computed exactly over a finite training distribution, not sampled.

Where a task's training distribution is a finite set of weighted examples
(``Task.population``: parity's 2^d inputs, stocks' d one-hot inputs), the mean
gradient mu and the per-example variance V1 = E||g_i - mu||^2 can be summed over all of
it. A mini-batch of B examples then has signal ||mu||^2 and noise V1 / B, the same two
quantities ``diagnostics.snr`` estimates from sampled batches, with no sampling error:
an SNR of 1e-6 is as resolved as one of 1.

Per-example gradients are never materialised. For a linear layer y = W a + b applied to
an example at positions t (uses, or a sequence axis), that example's gradient is
sum_t delta_t a_t^T (and sum_t delta_t for b), delta_t = dloss/dy_t, so its squared norm
is sum_{t,s} (delta_t . delta_s)(a_t . a_s) + ||sum_t delta_t||^2 (Goodfellow 2015, the
"ghost norm" of differentially private training). One forward and one backward to the
layers' outputs per chunk give every example's squared norm and the weighted mean
gradient. So a measured module must be built of ``nn.Linear`` layers (any activations
between them) whose inputs keep the examples on their first axis; others are refused with
a message, and stay with the sampled estimator.

Sums are in float64: V1 = E||g||^2 - ||mu||^2 cancels when the SNR is large.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from e2elab.errors import E2ELabError
from e2elab.objective import phase_loss
from e2elab.strategy import Phase
from e2elab.system import Graph, System
from e2elab.task import Population, Task

CHUNK = 4096


@dataclass(frozen=True)
class ExactMoments:
    """Per module: ||mu||^2 and the per-example variance V1 over the whole population."""

    signal: dict[str, float]
    variance: dict[str, float]

    def snr(self, module: str, batch_size: int) -> float:
        """The SNR of a mini-batch gradient of ``batch_size`` examples."""
        noise = self.variance[module] / batch_size
        return math.inf if noise <= 0 else self.signal[module] / noise


class _Recorder:
    """Forward hooks on a module's linear layers: each call's input and output."""

    def __init__(self, layers: list[nn.Linear]) -> None:
        self.calls: dict[nn.Linear, list[tuple[Tensor, Tensor]]] = {layer: [] for layer in layers}
        self.handles = [layer.register_forward_hook(self._hook) for layer in layers]

    def _hook(self, layer: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        self.calls[layer].append((inputs[0].detach(), output))  # type: ignore[index]

    def clear(self) -> None:
        for calls in self.calls.values():
            calls.clear()

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def linear_layers(module: nn.Module, name: str) -> list[nn.Linear]:
    """The module's linear layers; refuses a module with any other parameter."""
    layers = [m for m in module.modules() if isinstance(m, nn.Linear)]
    covered = {id(p) for layer in layers for p in layer.parameters()}
    other = [n for n, p in module.named_parameters() if id(p) not in covered]
    if other:
        raise E2ELabError(
            f"exact SNR: module {name!r} has parameters outside nn.Linear layers "
            f"({', '.join(other[:3])}); measure it with sampled batches (snr: exact: false)"
        )
    return layers


@torch.no_grad()
def _accumulate(
    calls: list[tuple[Tensor, Tensor]],
    deltas: list[Tensor],
    weights: Tensor,
    size: int,
    mean: dict[str, Tensor],
    square: Tensor,
    layer: nn.Linear,
) -> None:
    """Add one chunk's weighted gradient of ``layer`` to ``mean`` and its weighted
    per-example squared norms to ``square`` (0-dim float64)."""
    a = torch.cat([_positions(x, size) for x, _ in calls], 1)  # (B, T, in)
    d = torch.cat([_positions(g, size) for g in deltas], 1) * size  # (B, T, out)
    w = weights.to(d.dtype)
    # the weighted mean gradient, sum_b w_b sum_t d_bt a_bt^T, with runs of equal input
    # rows merged first (a population often repeats an input with several targets)
    flat = a.reshape(-1, a.shape[-1])
    rows, inverse = torch.unique_consecutive(flat, dim=0, return_inverse=True)
    weighted = (d * w[:, None, None]).reshape(-1, d.shape[-1])  # (B*T, out)
    merged = torch.zeros(len(rows), d.shape[-1], dtype=d.dtype).index_add_(0, inverse, weighted)
    mean["weight"] += (merged.T @ rows).double()
    # per-example squared norms in float32 (relative error ~1e-7 each), summed in float64
    if a.shape[1] == 1:
        norms = d.pow(2).sum((1, 2)) * a.pow(2).sum((1, 2))  # (B,)
    else:
        norms = (d @ d.transpose(1, 2) * (a @ a.transpose(1, 2))).sum((1, 2))
    if layer.bias is not None:
        summed = d.sum(1)  # (B, out)
        mean["bias"] += (summed.T @ w).double()
        norms = norms + summed.pow(2).sum(1)
    norms = norms.double()
    square += (w.double() * norms).sum()


def _positions(value: Tensor, size: int) -> Tensor:
    if value.shape[0] != size:
        raise E2ELabError(
            f"exact SNR: a linear layer saw {value.shape[0]} rows for a chunk of {size} "
            "examples (the examples are not on its input's first axis); measure this "
            "module with sampled batches (snr: exact: false)"
        )
    return value.reshape(size, -1, value.shape[-1])


def exact_moments(
    task: Task,
    system: System,
    heads: nn.ModuleDict,
    graph: Graph,
    phase: Phase,
    population: Population,
    modules: list[str],
    chunk: int = CHUNK,
) -> ExactMoments:
    """||mu||^2 and V1 of each of ``modules``' gradients under ``phase``'s loss, summed
    over ``population`` (see the module docstring)."""
    layers = {m: linear_layers(getattr(system, m), m) for m in modules}
    recorder = _Recorder([layer for m in modules for layer in layers[m]])
    means = {
        m: [
            {k: torch.zeros_like(p, dtype=torch.float64) for k, p in layer.named_parameters()}
            for layer in layers[m]
        ]
        for m in modules
    }
    squares = {m: torch.zeros((), dtype=torch.float64) for m in modules}
    total = 0.0
    try:
        for batch, weights in population.chunks(chunk):
            recorder.clear()
            loss = phase_loss(task, system, heads, graph, phase, batch)
            outputs = [y for calls in recorder.calls.values() for _, y in calls]
            grads = torch.autograd.grad(loss, outputs, allow_unused=True)
            found = dict(zip(map(id, outputs), grads, strict=True))
            size = len(batch)
            for m in modules:
                for layer, mean in zip(layers[m], means[m], strict=True):
                    calls = recorder.calls[layer]
                    if not calls:
                        continue
                    deltas = [
                        g if (g := found[id(y)]) is not None else torch.zeros_like(y)
                        for _, y in calls
                    ]
                    _accumulate(calls, deltas, weights, size, mean, squares[m], layer)
            total += float(weights.double().sum())
    finally:
        recorder.remove()
    if abs(total - 1.0) > 1e-6:
        raise E2ELabError(
            f"exact SNR: the population's probabilities sum to {total:.9g}, not 1; "
            "fix the task's population()"
        )
    signal, variance = {}, {}
    for m in modules:
        norm = sum(float(t.pow(2).sum()) for mean in means[m] for t in mean.values())
        signal[m] = norm
        variance[m] = max(float(squares[m]) - norm, 0.0)
    return ExactMoments(signal, variance)
