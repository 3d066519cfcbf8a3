"""Gradient signal-to-noise ratio per module (Shalev-Shwartz et al. 2017, section 3.1).

For one initialisation, the mini-batch gradient g of a module's parameters is a random
vector with mean mu and total variance V = E||g - mu||^2. Its SNR is ||mu||^2 / V.

Both are estimated without bias from ``batches`` gradients g_1..g_B through their Gram
matrix: ||mu||^2 by the mean of the products <g_i, g_j> over pairs i != j, and V by the
sample variance. The plug-in estimate ||mean g||^2 / V would be biased upwards by 1/B,
because the mean of B noisy gradients keeps V/B of noise. It could then never show an
SNR below about 1/B, however weak the signal.

A jackknife over the batches gives the standard error of the signal estimate. When the
estimate is less than two standard errors above zero, the SNR is not resolved: we then
record the upper bound (estimate + 2 SE) / V instead. More batches resolve smaller SNRs.

How much smaller depends on how the noise spreads over the parameters, which the share of
V along its top principal direction tells (``noise_top_share``, from the centred Gram
matrix). Noise spread over many directions averages out in the pairwise products; noise
along one direction (a share near 1, e.g. line-parity's convnet at initialisation) leaves
a floor of about 2 sqrt(2) / B on the resolvable SNR.

This is done at each of ``inits`` random initialisations and summarised over them as the
mean and 95% interval of log10 SNR. A low SNR means the loss gives the module almost no
usable direction. Below float32's relative precision (about 1.2e-7) the signal is lost
in rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from e2elab import strategy as strategies
from e2elab.diagnostics.exact_snr import exact_moments
from e2elab.errors import E2ELabError
from e2elab.execution import first_batch
from e2elab.numerics import conv_layout, fixed_numerics
from e2elab.objective import auxiliary_heads, phase_loss
from e2elab.records import Settings, SNRResult
from e2elab.strategy import Phase, Strategy
from e2elab.system import Graph, System, trace
from e2elab.task import Task

# the largest training distribution summed over exactly (stocks k = 2000: 2,048,000)
MAX_POPULATION = 1 << 22
FLOAT32_EPS = float(torch.finfo(torch.float32).eps)
# Part of every stored measurement's key: measurements by an earlier estimator are redone.
ESTIMATOR = "pairwise-unbiased-jackknife-v2-alignment"
EXACT = "population-ghost-norm-v1"


@dataclass(frozen=True)
class Estimate:
    """One SNR estimate from B gradients: signal ||mu||^2, noise E||g - mu||^2, the
    signal's standard error, the share of the noise along its top principal direction,
    and the SNR (an upper bound when not ``resolved``)."""

    signal: float
    noise: float
    signal_se: float
    noise_top_share: float = math.nan

    @property
    def resolved(self) -> bool:
        return self.noise == 0.0 or self.signal > 2.0 * self.signal_se

    @property
    def snr(self) -> float:
        if self.noise == 0.0:
            return math.inf
        if self.resolved:
            return self.signal / self.noise
        return (max(self.signal, 0.0) + 2.0 * self.signal_se) / self.noise


def snr_estimate(gradients: torch.Tensor) -> Estimate:
    """Unbiased signal and noise of the rows of ``gradients`` (B x P, B >= 3), with a
    jackknife standard error of the signal (see the module docstring)."""
    b = gradients.shape[0]
    if b < 3:
        raise ValueError(f"need at least 3 gradients to estimate the SNR, got {b}")
    gram = _gram(gradients)
    total, diag = gram.sum(), gram.diagonal()
    trace = diag.sum()
    signal = float((total - trace) / (b * (b - 1)))
    noise = float((trace - total / b) / (b - 1))
    # leave-one-out signal estimates: drop row and column i of the Gram matrix
    rows = gram.sum(dim=1)
    loo = ((total - 2 * rows + diag) - (trace - diag)) / ((b - 1) * (b - 2))
    se = float(((b - 1) / b * (loo - loo.mean()).pow(2).sum()).sqrt())
    # the centred Gram matrix has the squared singular values of the centred gradients
    centred = gram - rows[:, None] / b - rows[None, :] / b + total / (b * b)
    spread = float(centred.trace())
    top = float(torch.linalg.eigvalsh(centred)[-1]) / spread if spread > 0 else math.nan
    return Estimate(signal, max(noise, 0.0), se, top)


def _gram(vectors: torch.Tensor, chunk: int = 1 << 20) -> torch.Tensor:
    """Gram matrix of the rows in float64, a column chunk at a time."""
    b, p = vectors.shape
    gram = torch.zeros(b, b, dtype=torch.float64)
    for start in range(0, p, chunk):
        part = vectors[:, start : start + chunk].double()
        gram += part @ part.T
    return gram


@fixed_numerics()
def gradient_snr(
    task: Task,
    strategy: str,
    inits: int = 3,
    batches: int = 32,
    batch_size: int | None = None,
    seed: int = 0,
    phase: int = 0,
    pretrain: Settings | None = None,
    exact: bool = False,
    max_population: int = MAX_POPULATION,
) -> SNRResult:
    """SNR of each trainable module's gradient under one phase of ``strategy`` (default:
    its first; negative counts from the end), over ``inits`` random inits, under
    ``numerics.fixed_numerics`` like every run.

    The SNR is taken where the phase starts: at the initialisation for the first phase;
    for a later one, with ``pretrain`` (settings) the phases before it are trained first on
    their share of ``pretrain.budget`` (e.g. frozen_others: the other modules pre-trained,
    the measured one still at its initialisation); without, at the initialisation too.
    With ``exact`` and a task whose training distribution is finite (``Task.population``,
    at most ``max_population`` examples) the SNR is computed over all of it (see
    ``exact_snr``) instead of estimated from ``batches`` sampled batches."""
    size = batch_size or type(task).defaults.batch_size
    population = task.population() if exact else None
    if population is not None and population.size > max_population:
        population = None
    out: SNRResult | None = None
    for init in range(inits):
        torch.manual_seed(seed + init)
        system = conv_layout(task.build_system(), "cpu")  # as a run on the CPU lays it out
        graph = trace(system, first_batch(task), task.ports)
        built = strategies.build(strategy, graph, task.output)
        count = len(built.phases)
        if not -count <= phase < count:
            raise E2ELabError(
                f"SNR: strategy {strategy} has {count} phases; phase must be in "
                f"{-count}..{count - 1}, got {phase}"
            )
        index = phase % count
        chosen = built.phases[index]
        if index > 0 and pretrain is not None:
            system = _trained_before(task, built, graph, index, pretrain, seed + init)
        heads = auxiliary_heads(task, built, graph)
        if out is None:
            method = "exact" if population is not None else "sampled"
            out = SNRResult(
                task.name, dict(task.knobs), strategy, chosen.label, size, batches, method=method
            )
            if population is not None:
                out.batches = population.size
        modules = [m for m in graph.modules if m in chosen.train]
        if population is not None:
            moments = exact_moments(task, system, heads, graph, chosen, population, modules)
            for m in modules:
                out.per_init.setdefault(m, []).append(moments.snr(m, size))
                out.resolved.setdefault(m, []).append(True)
                out.noise_top_share.setdefault(m, []).append(math.nan)
            continue
        params = {m: [p for p in getattr(system, m).parameters()] for m in modules}
        # one preallocated B x P matrix per module: keeping each batch's gradient as its
        # own small tensor pinned the freed activations' memory around it (glibc heap
        # fragmentation: line-parity k = 4 grew by ~15 MB a batch, 15.8 GB at 1000 batches)
        grads = {
            m: torch.empty(batches, sum(p.numel() for p in params[m]), dtype=params[m][0].dtype)
            for m in modules
        }
        # each module's supervised direction: the gradient of the loss on its own ports
        # (none where that is the measured loss itself, e.g. a one-module system)
        own = {
            m: _own_phase(graph, m, chosen)
            for m in modules
            if graph.ports_of(m) and set(graph.ports_of(m)) != set(chosen.losses)
        }
        supervised = {m: torch.empty_like(grads[m]) for m in own}
        generator = torch.Generator().manual_seed(10_000 * (seed + init) + 1)
        for i in range(batches):
            # each phase on the training data it draws (``Task.data_of``): the same batch
            # for all where the task has one training distribution
            with task.drawing_for(chosen):
                batch = task.sample(size, generator)
            loss = phase_loss(task, system, heads, graph, chosen, batch)
            for m, g in _module_gradients(loss, params).items():
                grads[m][i].copy_(g)
            for m, phase_of_m in own.items():
                mine = batch
                if task.data_of(phase_of_m) != task.data_of(chosen):
                    with task.drawing_for(phase_of_m):
                        mine = task.sample(size, generator)
                own_loss = phase_loss(task, system, heads, graph, phase_of_m, mine)
                supervised[m][i].copy_(_module_gradients(own_loss, {m: params[m]})[m])
        for m in modules:
            estimate = snr_estimate(grads[m])
            out.per_init.setdefault(m, []).append(estimate.snr)
            out.resolved.setdefault(m, []).append(estimate.resolved)
            out.noise_top_share.setdefault(m, []).append(estimate.noise_top_share)
            if m in own:
                out.alignment.setdefault(m, []).append(alignment(grads[m], supervised[m]))
    assert out is not None
    return out


def alignment(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine between the mean rows of ``a`` and ``b`` (B x P each, paired batches), from
    unbiased estimates: <mu_a, mu_b> by the products of different batches' rows, the
    squared norms as in ``snr_estimate``. Clipped to [-1, 1]; NaN if a norm is not
    positive."""
    b_count = a.shape[0]
    cross = _gram_pair(a, b)
    dot = float((cross.sum() - cross.trace()) / (b_count * (b_count - 1)))
    norm_a, norm_b = snr_estimate(a).signal, snr_estimate(b).signal
    if norm_a <= 0 or norm_b <= 0:
        return math.nan
    return max(-1.0, min(1.0, dot / math.sqrt(norm_a * norm_b)))


def _gram_pair(a: torch.Tensor, b: torch.Tensor, chunk: int = 1 << 20) -> torch.Tensor:
    out = torch.zeros(a.shape[0], b.shape[0], dtype=torch.float64)
    for start in range(0, a.shape[1], chunk):
        out += a[:, start : start + chunk].double() @ b[:, start : start + chunk].double().T
    return out


def _own_phase(graph: Graph, module: str, like: Phase) -> Phase:
    """``module`` trained on its own ports' targets, under ``like``'s wiring."""
    losses = {p: 1.0 for p in graph.ports_of(module)}
    return replace(like, train=frozenset({module}), losses=losses, label=f"own:{module}")


def _trained_before(
    task: Task, built: Strategy, graph: Graph, index: int, settings: Settings, seed: int
) -> System:
    """A system trained through phases 0..index-1 of ``built`` on their share of the
    budget, from ``seed``: where phase ``index`` would start in a run."""
    from e2elab.train import train

    before = built.phases[:index]
    share = sum(p.share for p in before)
    head = Strategy(built.name, tuple(replace(p, share=p.share / share) for p in before))
    config = settings.override(budget=max(1, round(settings.budget * share)), evaluations=1)
    outcome = train(task, head, graph, config, seed)
    if outcome.status != "ok":
        raise E2ELabError(
            f"SNR: pre-training the phases before {index + 1} failed: {outcome.reason}"
        )
    system = outcome.systems[0].train()
    for parameter in system.parameters():  # training left the frozen modules frozen
        parameter.requires_grad_(True)
    return system


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
