"""Gradient signal-to-noise ratio per module (Shalev-Shwartz et al. 2017, section 3.1).

For one initialisation, the gradient g of a module's parameters is a random vector over
mini-batches. Its SNR is ||E[g]||^2 / E[||g - E[g]||^2]: the squared norm of the mean
gradient over the mean squared deviation from it. It is estimated from ``batches``
mini-batches at each of ``inits`` random initialisations and summarised over them
(mean and 95% interval of log10 SNR). A low SNR means the loss gives the module almost
no usable direction; below float32's relative precision (about 1.2e-7) the signal is
lost in rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from e2elab import strategy as strategies
from e2elab.objective import auxiliary_heads, phase_loss
from e2elab.run import first_batch
from e2elab.stats import mean_interval
from e2elab.system import trace
from e2elab.task import Task

FLOAT32_EPS = float(torch.finfo(torch.float32).eps)


@dataclass
class SNRResult:
    """Per module: SNR at each initialisation, and their log10 summary."""

    task: str
    knobs: dict[str, Any]
    strategy: str
    phase: str
    batch_size: int
    batches: int
    per_init: dict[str, list[float]] = field(default_factory=dict)

    def log10_summary(self, module: str) -> tuple[float, float, float]:
        logs = [math.log10(max(v, 1e-300)) for v in self.per_init[module]]
        ci = mean_interval(logs)
        return ci.mean, ci.lo, ci.hi


def gradient_snr(
    task: Task,
    strategy: str,
    inits: int = 3,
    batches: int = 32,
    batch_size: int | None = None,
    seed: int = 0,
    phase: int = 0,
) -> SNRResult:
    """SNR of each trainable module's gradient under one phase of ``strategy`` (default:
    its first), at the initialisation (no training), over ``inits`` random inits."""
    size = batch_size or type(task).defaults.batch_size
    out: SNRResult | None = None
    for init in range(inits):
        torch.manual_seed(seed + init)
        system = task.build_system()
        graph = trace(system, first_batch(task), task.ports)
        built = strategies.build(strategy, graph, task.output)
        chosen = built.phases[phase]
        heads = auxiliary_heads(task, built, graph)
        if out is None:
            out = SNRResult(task.name, dict(task.settings), strategy, chosen.label, size, batches)
        modules = [m for m in graph.modules if m in chosen.train]
        params = {m: [p for p in getattr(system, m).parameters()] for m in modules}
        sums = {m: None for m in modules}
        squares = {m: 0.0 for m in modules}
        generator = torch.Generator().manual_seed(10_000 * (seed + init) + 1)
        for _ in range(batches):
            batch = task.sample(size, generator)
            loss = phase_loss(task, system, heads, graph, chosen, batch)
            flat = _module_gradients(loss, params)
            for m, g in flat.items():
                sums[m] = g.clone() if sums[m] is None else sums[m] + g
                squares[m] += float(g.double().pow(2).sum())
        for m in modules:
            mean = sums[m].double() / batches
            signal = float(mean.pow(2).sum())
            noise = squares[m] / batches - signal  # E||g||^2 - ||E g||^2
            out.per_init.setdefault(m, []).append(signal / noise if noise > 0 else math.inf)
    assert out is not None
    return out


def _module_gradients(
    loss: torch.Tensor, params: dict[str, list[torch.nn.Parameter]]
) -> dict[str, torch.Tensor]:
    names = list(params)
    flat_params = [p for m in names for p in params[m]]
    grads = torch.autograd.grad(loss, flat_params, allow_unused=True)
    out, i = {}, 0
    for m in names:
        k = len(params[m])
        parts = [
            (g if g is not None else torch.zeros_like(p)).reshape(-1)
            for g, p in zip(grads[i : i + k], params[m], strict=True)
        ]
        out[m] = torch.cat(parts).detach()
        i += k
    return out
