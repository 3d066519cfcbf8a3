"""Linear probes: did a module learn its concept, whatever code it chose for it?

End-to-end training may learn a digit code that is a permutation (or any linear
re-encoding) of the digit; the port's own metric would call that a failure. A probe fits
a linear read-out from the port's value to the port's target on training data and scores
it on held-out data, so it measures whether the concept is *linearly present*.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from e2elab.system import System
from e2elab.task import Task

PROBE_SEED = 77_777
# Ports with many positions (e.g. 64 patches per image) give many rows per example; a
# probe fits on and scores at most this many rows, drawn at random with a fixed seed.
MAX_PROBE_ROWS = 20_000


@torch.no_grad()
def _port_values(system: System, batch: object) -> dict[str, np.ndarray]:
    system.eval()
    values = system.run_ports(batch)
    system.train()
    return {k: v.detach().float().cpu().numpy() for k, v in values.items()}


def linear_probes(
    task: Task, system: System, train_examples: int = 2000, device: str = "cpu"
) -> dict[str, float]:
    """Held-out balanced accuracy (ports whose kind classifies) or R^2 (regression ports)
    of a linear read-out of each port's value, fitted on ``train_examples`` fresh
    training examples. The port's kind says how its values become rows (``probe_rows``)."""
    generator = torch.Generator().manual_seed(PROBE_SEED)
    train = task.sample(train_examples, generator).to(device)
    test = task.test_set().to(device)
    fit_values, test_values = _port_values(system, train), _port_values(system, test)
    scores: dict[str, float] = {}
    for port, spec in task.ports.items():
        kind = spec.port_kind
        if port not in fit_values or kind.probe is None:
            continue  # e.g. a reward vector is not a concept to read out
        x_fit, y_fit = kind.probe_rows(fit_values[port], train.targets[port].cpu().numpy())
        x_test, y_test = kind.probe_rows(test_values[port], test.targets[port].cpu().numpy())
        if kind.probe == "classify":
            (x_fit, y_fit), (x_test, y_test) = _rows(x_fit, y_fit), _rows(x_test, y_test)
        scores[port] = _fit_and_score(kind.probe == "classify", x_fit, y_fit, x_test, y_test)
    return scores


def _rows(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most MAX_PROBE_ROWS rows of (x, y), a fixed random subset when there are more."""
    if len(x) <= MAX_PROBE_ROWS:
        return x, y
    keep = np.random.default_rng(PROBE_SEED).choice(len(x), MAX_PROBE_ROWS, replace=False)
    return x[keep], y[keep]


def _fit_and_score(classify: bool, x_fit, y_fit, x_test, y_test) -> float:
    """Balanced accuracy (``classify``) or R^2 of a fitted linear read-out.

    Balanced, because on a port dominated by one class (61 of 64 pentomino patches are
    empty) plain accuracy would credit a read-out that only ever says "empty"."""
    if classify and len(np.unique(y_fit)) < 2:
        return float(np.mean(y_test == y_fit[0]))
    readout = LogisticRegression(max_iter=300) if classify else Ridge(alpha=1.0)
    model = make_pipeline(StandardScaler(), readout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # a class the read-out predicts but the test rows lack is fine: it scores 0
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
        model.fit(x_fit, y_fit)
        if classify:
            return float(balanced_accuracy_score(y_test, model.predict(x_test)))
        return float(model.score(x_test, y_test))
