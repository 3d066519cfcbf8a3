"""The images task (issue 15): subsets by seed, fixed test set, fronts, pipelines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from e2elab.errors import E2ELabError
from e2elab.execution import execute, execute_seeds, make_spec
from e2elab.strategy import parse_strategy
from e2elab.tasks import make_task


def test_a_run_trains_on_its_seeds_subset_only_and_subsets_nest():
    task = make_task("images", {"source": "digits", "train_size": 50})
    subset = set(task.subset(7))
    drawn = task.sample(500, torch.Generator().manual_seed(7))
    pool = task.split
    images = {pool.train_images[i].tobytes() for i in subset}
    assert all(image.numpy().tobytes() in images for image in drawn.x["image"][:, 0])
    larger = make_task("images", {"source": "digits", "train_size": 200})
    assert subset <= set(larger.subset(7))
    assert set(task.subset(8)) != subset


def test_test_set_is_fixed_and_disjoint_from_training_and_validation():
    small = make_task("images", {"source": "mnist-sample", "train_size": 10})
    large = make_task("images", {"source": "mnist-sample", "train_size": 3000})
    assert torch.equal(small.test_set().x["image"], large.test_set().x["image"])
    split = small.split
    assert not set(split.test_ids) & (set(split.train_ids) | set(split.val_ids))
    assert len(small.validation_set()) == 300
    with pytest.raises(E2ELabError, match="more than the"):
        make_task("images", {"source": "digits", "train_size": 5000})


@pytest.mark.parametrize("front", ["cnn", "hybrid", "mlp"])
def test_every_front_trains_and_the_hybrid_front_end_stays_fixed(front):
    spec = make_spec(
        "images",
        "e2e",
        knobs={"source": "digits", "train_size": 100, "front": front},
        budget=640,
    )
    result = execute(spec)
    # 640 examples (10 steps) lift every front off chance (0.10): cnn 0.20, mlp 0.46
    assert result.status == "ok" and not result.at_chance
    assert result.output_metric > result.chance[result.output] + 0.05
    system = make_task("images", dict(spec.knobs)).build_system()
    if front == "hybrid":
        assert "bank" in dict(system.net.named_buffers())
        assert all("bank" not in name for name, _ in system.net.named_parameters())


def test_stacked_seeds_give_each_seed_its_own_result():
    knobs = {"source": "digits", "train_size": 30}
    specs = [make_spec("images", "e2e", knobs=knobs, seed=s, budget=320) for s in (0, 1)]
    together = execute_seeds(specs)
    alone = [execute(s) for s in specs]
    assert [r.weights_sha256 for r in together] == [r.weights_sha256 for r in alone]
    assert together[0].weights_sha256 != together[1].weights_sha256


def test_the_classic_pipeline_chooses_its_hyper_parameter_on_validation():
    spec = make_spec(
        "images",
        "blackbox:model=logreg,features=hog",
        knobs={"source": "digits", "train_size": 100},
    )
    result = execute(spec)
    chosen = result.phases[0]["hyper_parameters"]
    assert chosen["C"] in (0.01, 0.1, 1.0, 10.0) and chosen["validation_accuracy"] > 0.5
    assert result.phases[0]["label"] == "blackbox:logreg on hog"
    assert result.output_metric > 0.5
    with pytest.raises(E2ELabError, match="features for blackbox"):
        from e2elab.execution import first_batch
        from e2elab.strategy import build
        from e2elab.system import trace

        task = make_task("images", {"source": "digits"})
        build(
            "blackbox:model=logreg,features=sift",
            trace(task.build_system(), first_batch(task), task.ports),
            task.output,
        )
    assert parse_strategy("blackbox:features=hog,model=logreg")[1] == {
        "features": "hog",
        "model": "logreg",
    }
    assert np.isfinite(result.wall_seconds)


def test_select_validation_reports_the_best_validation_point():
    spec = make_spec(
        "images",
        "e2e",
        knobs={"source": "digits", "train_size": 100},
        budget=3200,
        evaluations=8,
        select="validation",
    )
    result = execute(spec)
    key = "digit@validation"
    points = [p for p in result.curve if p["phase"] == 0]
    best = max(points, key=lambda p: p["metrics"][key])
    assert result.selected_at == best["examples"]
    assert result.final == best["metrics"]
    assert (
        "select" in spec.to_dict()
        and spec.id
        != make_spec(
            "images",
            "e2e",
            knobs={"source": "digits", "train_size": 100},
            budget=3200,
            evaluations=8,
        ).id
    )
    with pytest.raises(E2ELabError, match="needs a validation set"):
        execute(make_spec("stocks", "e2e", budget=200, select="validation"))
    with pytest.raises(E2ELabError, match="select"):
        make_spec("images", "e2e", select="best")


def test_a_suite_skips_full_mnist_in_one_line_when_it_is_missing(monkeypatch, capsys):
    import sys

    from e2elab import experiment
    from e2elab.cli import _available
    from e2elab.tasks.images import Images

    monkeypatch.setitem(sys.modules, "torchvision", None)
    _, parts = experiment.load_all("features")
    kept = _available([p.with_profile("quick") for p in parts])
    assert [p.name for p in kept] == ["features-digits-quick", "features-mnist-quick"]
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "skipping features-mnist-full-quick" in lines[0]
    assert "torchvision" in lines[0]
    assert Images.unavailable({"source": "mnist-sample"}) is None
