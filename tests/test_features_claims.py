"""Claims and figures of the features experiment: accuracy_beats, crossover, approach
figures (synthetic results, no training)."""

from __future__ import annotations

import dataclasses

import pytest
from synthetic import result

from e2elab.claims import FAIL, INCONCLUSIVE, PASS, accuracy_beats, crossover
from e2elab.report.approaches import approach_figures, series

SIZES = (100, 200, 400, 800)


def _runs(pipeline, cnn, seeds=4, front="cnn"):
    """Runs of the pipeline and e2e at each size; accuracies per size, small seed noise."""
    out = []
    for strategy, accuracies in (("blackbox:features=hog,model=logreg", pipeline), ("e2e", cnn)):
        for size, accuracy in zip(SIZES, accuracies, strict=True):
            for seed in range(seeds):
                r = result(strategy, 1, seed, accuracy + 0.002 * (seed - 1.5), None)
                knobs = {"train_size": size, "front": front, "source": "digits"}
                out.append(
                    dataclasses.replace(
                        r, spec=r.spec.changed(knobs=knobs), wall_seconds=1.0 + size / 100
                    )
                )
    return out


def test_accuracy_beats_is_paired_by_seed_and_needs_an_interval_above_zero():
    runs = _runs([0.85, 0.88, 0.90, 0.92], [0.80, 0.87, 0.93, 0.96])
    small = accuracy_beats(runs, "blackbox:features=hog,model=logreg", "e2e", "train_size")
    assert small.verdict == PASS and "train_size=100" in small.details
    large = accuracy_beats(
        runs, "e2e", "blackbox:features=hog,model=logreg", "train_size", at="largest"
    )
    assert large.verdict == PASS and "train_size=800" in large.details
    wrong = accuracy_beats(runs, "e2e", "blackbox:features=hog,model=logreg", "train_size")
    assert wrong.verdict == FAIL
    one = [r for r in runs if r.spec.seed == 0]
    assert (
        accuracy_beats(one, "e2e", "blackbox:features=hog,model=logreg", "train_size").verdict
        == INCONCLUSIVE
    )


def test_crossover_is_interpolated_on_a_log_scale_with_a_bootstrap_interval():
    runs = _runs([0.85, 0.88, 0.90, 0.92], [0.80, 0.86, 0.92, 0.96])
    verdict = crossover(runs, "blackbox:features=hog,model=logreg", "e2e", "train_size")
    assert verdict.verdict == PASS
    point = verdict.numbers["crossover"]
    # the difference goes from -0.02 at 200 to +0.02 at 400: halfway on a log scale
    assert point == pytest.approx((200 * 400) ** 0.5, rel=1e-6)
    lo, hi = verdict.numbers["interval"]
    assert 200 <= lo <= point <= hi <= 400
    never = _runs([0.85, 0.88, 0.90, 0.92], [0.80, 0.82, 0.84, 0.86])
    assert (
        "no crossover in the range"
        in crossover(never, "blackbox:features=hog,model=logreg", "e2e", "train_size").details
    )
    always = _runs([0.85, 0.88, 0.90, 0.92], [0.90, 0.92, 0.94, 0.96])
    assert (
        crossover(always, "blackbox:features=hog,model=logreg", "e2e", "train_size").verdict == FAIL
    )


def test_approach_figures_draw_each_approach_once(tmp_path):
    runs = _runs([0.85, 0.88, 0.90, 0.92], [0.80, 0.86, 0.92, 0.96])
    runs += _runs([0.85, 0.88, 0.90, 0.92], [0.82, 0.88, 0.93, 0.95], front="hybrid")
    data = series(runs, "train_size", "accuracy")
    # the pipeline ignores `front`: drawn once; e2e once per front
    assert set(data) == {"features=hog,model=logreg", "e2e (front=cnn)", "e2e (front=hybrid)"}
    assert len(data["features=hog,model=logreg"][100]) == 4
    paths = approach_figures(runs, "train_size", tmp_path, "test")
    names = sorted(p.name for p in paths)
    assert names == [
        "accuracy_by_approach_vs_train_size.png",
        "seconds_by_approach_vs_train_size.png",
    ]
    assert all(p.stat().st_size > 10_000 for p in paths)  # no gallery: no stored filters


def test_gallery_shows_features_beside_stored_filters(tmp_path):
    import numpy as np

    from e2elab.report.approaches import gallery_figure

    runs = _runs([0.85, 0.88, 0.90, 0.92], [0.80, 0.86, 0.92, 0.96])
    filters = np.random.default_rng(0).normal(size=(16, 3, 3)).tolist()
    runs = [
        dataclasses.replace(r, artifacts={"first_layer": filters})
        if r.spec.strategy == "e2e"
        else r
        for r in runs
    ]
    path = gallery_figure(runs, "digits", tmp_path / "gallery.png")
    assert path is not None and path.stat().st_size > 10_000
    assert gallery_figure(runs[:4], "digits", tmp_path / "none.png") is None
