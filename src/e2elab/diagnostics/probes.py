"""Linear probes: did a module learn its concept, whatever code it chose for it?

End-to-end training may learn a digit code that is a permutation (or any linear
re-encoding) of the digit; the port's own metric would call that a failure. A probe fits
a linear read-out from the port's value to the port's target on training data and scores
it on held-out data, so it measures whether the concept is *linearly present*.

The read-outs are scikit-learn's ``LogisticRegression`` and ``Ridge`` after a
``StandardScaler``, fitted in torch for every seed of a stack at once (``readout``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from e2elab.diagnostics import readout
from e2elab.system import System
from e2elab.task import Task

PROBE_SEED = 77_777
# Ports with many positions (e.g. 64 patches per image) give many rows per example; a
# probe fits on and scores at most this many rows, drawn at random with a fixed seed.
MAX_PROBE_ROWS = 20_000


@torch.no_grad()
def _port_values(system: System, batch: object) -> dict[str, Tensor]:
    system.eval()
    values = system.run_ports(batch)
    system.train()
    return {k: v.detach() for k, v in values.items()}


def linear_probes(
    task: Task, system: System, train_examples: int = 2000, device: str = "cpu"
) -> dict[str, float]:
    """Held-out balanced accuracy (ports whose kind classifies) or R^2 (regression ports)
    of a linear read-out of each port's value, fitted on ``train_examples`` fresh
    training examples. The port's kind says how its values become rows (``probe_rows``)."""
    return stack_probes(task, [system], train_examples, device)[0]


def stack_probes(
    task: Task, systems: list[System], train_examples: int = 2000, device: str = "cpu"
) -> list[dict[str, float]]:
    """``linear_probes`` of every system of a stack (one per seed), fitted together: per
    port, one batched fit over the seeds (``readout``), each seed's the same as alone."""
    if all(spec.port_kind.probe is None for spec in task.ports.values()):
        return [{} for _ in systems]  # nothing to read out: no examples drawn, no forward
    generator = torch.Generator().manual_seed(PROBE_SEED)
    train = task.sample(train_examples, generator).to(device)
    test = task.test_set().to(device)
    fit_values = [_port_values(s, train) for s in systems]
    test_values = [_port_values(s, test) for s in systems]
    scores: list[dict[str, float]] = [{} for _ in systems]
    for port, spec in task.ports.items():
        kind = spec.port_kind
        if port not in fit_values[0] or kind.probe is None:
            continue  # e.g. a reward vector is not a concept to read out
        fit_targets = train.targets[port].cpu().numpy()
        test_targets = test.targets[port].cpu().numpy()
        fits = [kind.probe_rows(_numpy(v[port]), fit_targets) for v in fit_values]
        tests = [kind.probe_rows(_numpy(v[port]), test_targets) for v in test_values]
        if kind.probe == "classify":
            fits, tests = [_rows(*f) for f in fits], [_rows(*t) for t in tests]
        values = _scores(kind.probe == "classify", fits, tests, device)
        for index, value in enumerate(values):
            scores[index][port] = value
    return scores


def _numpy(value: Tensor) -> np.ndarray:
    return value.float().cpu().numpy()


def _rows(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most MAX_PROBE_ROWS rows of (x, y), a fixed random subset when there are more."""
    if len(x) <= MAX_PROBE_ROWS:
        return x, y
    keep = np.random.default_rng(PROBE_SEED).choice(len(x), MAX_PROBE_ROWS, replace=False)
    return x[keep], y[keep]


def _scores(
    classify: bool,
    fits: list[tuple[np.ndarray, np.ndarray]],
    tests: list[tuple[np.ndarray, np.ndarray]],
    device: str,
) -> list[float]:
    """Per seed: balanced accuracy (``classify``) or R^2 of its fitted linear read-out.

    Balanced, because on a port dominated by one class (61 of 64 pentomino patches are
    empty) plain accuracy would credit a read-out that only ever says "empty". The
    targets are the same for every seed (the same examples); the values are each's own."""
    y_fit, y_test = fits[0][1], tests[0][1]
    where = _float64_device(device)
    x_fit = torch.as_tensor(np.stack([f[0] for f in fits]), dtype=torch.float64, device=where)
    x_test = torch.as_tensor(np.stack([t[0] for t in tests]), dtype=torch.float64, device=where)
    x_fit, x_test = readout.standardized(x_fit, x_test)
    if not classify:
        fit_y = torch.as_tensor(y_fit, dtype=torch.float64, device=where)
        test_y = torch.as_tensor(y_test, dtype=torch.float64, device=where)
        return readout.ridge_r2(x_fit, fit_y, x_test, test_y).tolist()
    classes = np.unique(y_fit)
    if len(classes) < 2:  # one class to learn: the read-out can only say it
        return [float(np.mean(y_test == y_fit[0]))] * len(fits)
    labels = torch.as_tensor(np.searchsorted(classes, y_fit), device=where)
    weights = readout.fit_logistic(x_fit, labels, len(classes))
    predicted = torch.as_tensor(classes, device=where)[
        readout.predict_logistic(x_test, weights, len(classes))
    ]
    truth = torch.as_tensor(y_test, device=where)
    return readout.balanced_accuracy(predicted, truth).tolist()


def _float64_device(device: str) -> torch.device:
    """The run's device where it computes in float64 (MPS does not: the CPU there)."""
    where = torch.device(device)
    return torch.device("cpu") if where.type == "mps" else where
