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
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from e2elab.system import System
from e2elab.task import Task

PROBE_SEED = 77_777


@torch.no_grad()
def _port_values(system: System, batch: object) -> dict[str, np.ndarray]:
    system.eval()
    values = system.run_ports(batch)
    system.train()
    return {k: v.detach().float().cpu().numpy() for k, v in values.items()}


def linear_probes(
    task: Task, system: System, train_examples: int = 2000, device: str = "cpu"
) -> dict[str, float]:
    """Held-out accuracy (class ports) or R^2 (regression ports) of a linear read-out of
    each port's value, fitted on ``train_examples`` fresh training examples."""
    generator = torch.Generator().manual_seed(PROBE_SEED)
    train = task.sample(train_examples, generator).to(device)
    test = task.test_set().to(device)
    fit_values, test_values = _port_values(system, train), _port_values(system, test)
    scores: dict[str, float] = {}
    for port, spec in task.ports.items():
        if port not in fit_values or spec.kind == "reward":
            continue  # a reward vector is not a concept to read out
        x_fit, x_test = fit_values[port], test_values[port]
        y_fit = train.targets[port].cpu().numpy()
        y_test = test.targets[port].cpu().numpy()
        if spec.kind == "class":  # (B, ..., C) codes, (B, ...) targets: one row per position
            x_fit, x_test = x_fit.reshape(-1, x_fit.shape[-1]), x_test.reshape(-1, x_test.shape[-1])
            y_fit, y_test = y_fit.reshape(-1), y_test.reshape(-1)
        else:
            x_fit, x_test = x_fit.reshape(len(x_fit), -1), x_test.reshape(len(x_test), -1)
            y_fit, y_test = y_fit.reshape(len(y_fit), -1), y_test.reshape(len(y_test), -1)
            if spec.kind == "binary":
                y_fit, y_test = y_fit.ravel(), y_test.ravel()
        scores[port] = _fit_and_score(spec.kind, x_fit, y_fit, x_test, y_test)
    return scores


def _fit_and_score(kind: str, x_fit, y_fit, x_test, y_test) -> float:
    if kind in ("class", "binary"):
        if len(np.unique(y_fit)) < 2:
            return float(np.mean(y_test == y_fit[0]))
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300))
    else:
        model = make_pipeline(StandardScaler(), Ridge(alpha=1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_fit, y_fit)
    return float(model.score(x_test, y_test))
