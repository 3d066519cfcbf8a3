"""Linear read-outs fitted in torch for a stack of seeds (diagnostics.readout) against
scikit-learn's LogisticRegression and Ridge after a StandardScaler, which they replace:
on hand-made data, and on every shipped task's ports."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from e2elab.diagnostics import probes, readout
from e2elab.tasks import SHIPPED, make_task


def _sklearn(classify: bool, x_fit, y_fit, x_test, y_test) -> float:
    """The read-out the probes used to fit, solved to convergence (float64, enough
    iterations: at 300 it stops early on some ports, e.g. captioning's caption)."""
    if classify and len(np.unique(y_fit)) < 2:
        return float(np.mean(y_test == y_fit[0]))
    head = LogisticRegression(max_iter=5000) if classify else Ridge(alpha=1.0)
    model = make_pipeline(StandardScaler(), head)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x_fit.astype(np.float64), y_fit)
        if classify:
            return float(balanced_accuracy_score(y_test, model.predict(x_test)))
        return float(model.score(x_test.astype(np.float64), y_test))


def _ours(classify: bool, x_fit, y_fit, x_test, y_test) -> list[float]:
    return probes._scores(
        classify,
        list(zip(x_fit, [y_fit] * len(x_fit), strict=True)),
        list(zip(x_test, [y_test] * len(x_test), strict=True)),
        "cpu",
    )


@pytest.mark.parametrize("classes", [2, 3, 10])
def test_logistic_read_outs_match_scikit_learn_per_seed(classes):
    rng = np.random.default_rng(classes)
    centres = rng.normal(size=(classes, 6)) * 1.5
    labels = rng.integers(0, classes, 2600)
    seeds = [rng.normal(size=(2600, 6)) + centres[labels] * s for s in (0.3, 1.0, 2.0)]
    seeds[0][:, 5] = 4.0  # a constant feature: only centred, as StandardScaler does
    fit, test = slice(0, 2000), slice(2000, None)
    x_fit = np.stack([x[fit] for x in seeds])
    x_test = np.stack([x[test] for x in seeds])
    ours = _ours(True, x_fit, labels[fit] + 3, x_test, labels[test] + 3)  # labels 3..
    for index, x in enumerate(seeds):
        reference = _sklearn(True, x[fit], labels[fit] + 3, x[test], labels[test] + 3)
        assert ours[index] == pytest.approx(reference, abs=0.01)
    assert ours[0] < ours[1] < ours[2]  # the more separated, the better read out


def test_a_seed_reads_out_the_same_alone_or_in_its_stack():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 1000)
    x = np.stack([rng.normal(size=(1000, 5)) + labels[:, None] * s for s in (0.2, 0.5, 1.0)])
    together = _ours(True, x[:, :800], labels[:800], x[:, 800:], labels[800:])
    for index in range(3):
        alone = _ours(
            True, x[index : index + 1, :800], labels[:800], x[index : index + 1, 800:], labels[800:]
        )
        assert alone == [together[index]]


def test_ridge_read_outs_match_scikit_learn_and_a_constant_target():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 1500, 3))
    y = x[0] @ np.array([1.0, -2.0, 0.5]) + rng.normal(size=1500)
    ours = _ours(False, x[:, :1000], y[:1000], x[:, 1000:], y[1000:])
    for index in range(2):
        reference = _sklearn(False, x[index, :1000], y[:1000], x[index, 1000:], y[1000:])
        assert ours[index] == pytest.approx(reference, abs=1e-9)
    assert ours[0] > 0.7 and abs(ours[1]) < 0.05  # seed 1's values carry no signal
    flat = _ours(False, x[:, :1000], np.ones(1000), x[:, 1000:], np.ones(500))
    assert flat == [1.0, 1.0]  # a constant target predicted exactly: r2_score says 1


def test_one_class_to_learn_scores_the_share_of_that_class():
    x = np.zeros((2, 10, 3))
    assert _ours(True, x, np.zeros(10, int), x, np.array([0] * 7 + [1] * 3)) == [0.7, 0.7]


def test_the_newton_fit_stops_at_scikit_learns_optimum():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 800)
    x = rng.normal(size=(800, 4)) + labels[:, None]
    scaled = StandardScaler().fit_transform(x)
    reference = LogisticRegression(max_iter=5000, tol=1e-10).fit(scaled, labels)
    weights = readout.fit_logistic(torch.as_tensor(scaled)[None], torch.as_tensor(labels), 3)
    logits = torch.as_tensor(np.c_[scaled, np.ones(800)]) @ weights[0]
    theirs = scaled @ reference.coef_.T + reference.intercept_
    # softmax logits are defined up to a shift per row: compare the differences
    ours_d = (logits - logits.mean(-1, keepdim=True)).numpy()
    theirs_d = theirs - theirs.mean(-1, keepdims=True)
    assert np.abs(ours_d - theirs_d).max() < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("name", [cls.name for cls in SHIPPED])
def test_every_shipped_ports_probes_match_scikit_learn(name):
    task = make_task(name, {})
    systems = []
    for seed in (0, 1) if name != "captioning" else (1,):  # captioning's: 40 s a seed
        torch.manual_seed(seed)
        systems.append(task.build_system())
    ours = probes.stack_probes(task, systems)
    if all(spec.port_kind.probe is None for spec in task.ports.values()):
        assert ours == [{} for _ in systems]  # nothing to read out (speech: CTC ports only)
        return
    generator = torch.Generator().manual_seed(probes.PROBE_SEED)
    train, test = task.sample(2000, generator), task.test_set()
    checked = 0
    for index, system in enumerate(systems):
        fit_values = probes._port_values(system, train)
        test_values = probes._port_values(system, test)
        for port, spec in task.ports.items():
            kind = spec.port_kind
            if port not in fit_values or kind.probe is None:
                continue
            x_fit, y_fit = kind.probe_rows(
                probes._numpy(fit_values[port]), train.targets[port].numpy()
            )
            x_test, y_test = kind.probe_rows(
                probes._numpy(test_values[port]), test.targets[port].numpy()
            )
            if kind.probe == "classify":
                (x_fit, y_fit), (x_test, y_test) = (
                    probes._rows(x_fit, y_fit),
                    probes._rows(x_test, y_test),
                )
            reference = _sklearn(kind.probe == "classify", x_fit, y_fit, x_test, y_test)
            assert ours[index][port] == pytest.approx(reference, abs=0.01), (port, index)
            checked += 1
    assert checked >= 2
