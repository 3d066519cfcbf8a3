"""The offline image data behind the features-vs-pixels experiment (issue 15)."""

from __future__ import annotations

import sys
from itertools import pairwise

import numpy as np
import pytest

from e2elab.data.images import image_split, load_images, nested_subset
from e2elab.errors import E2ELabError


@pytest.mark.parametrize(
    ("source", "side", "count"), [("digits", 8, 1797), ("mnist-sample", 28, 5000)]
)
def test_sources_ship_offline_with_their_shapes(source, side, count):
    images, labels = load_images(source)
    assert images.shape == (count, side, side) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert set(np.unique(labels)) == set(range(10))


def test_split_is_disjoint_stratified_and_fixed():
    split = image_split("mnist-sample")
    parts = [set(split.train_ids), set(split.val_ids), set(split.test_ids)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert len(split.test_ids) == 1000 and len(split.val_ids) == 300
    assert np.bincount(split.test_labels).min() >= 90  # stratified: about 100 per class
    again = image_split.__wrapped__("mnist-sample")  # not the cached object
    assert np.array_equal(again.test_ids, split.test_ids)


def test_nested_subsets_grow_by_adding_images_and_stay_balanced():
    labels = image_split("mnist-sample").train_labels
    sizes = [10, 30, 100, 300, 1000, len(labels)]
    subsets = [set(nested_subset(labels, s, seed=3)) for s in sizes]
    assert [len(s) for s in subsets] == sizes
    assert all(a <= b for a, b in pairwise(subsets))
    assert np.bincount(labels[sorted(subsets[2])]).tolist() == [10] * 10
    assert set(nested_subset(labels, 100, seed=4)) != subsets[2]  # seeds draw other subsets
    with pytest.raises(E2ELabError, match="training-set size"):
        nested_subset(labels, 0, seed=0)


def test_full_mnist_missing_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    with pytest.raises(E2ELabError, match="needs torchvision") as error:
        load_images("mnist", str(tmp_path))
    assert "\n" not in str(error.value)
    with pytest.raises(E2ELabError, match="unknown image source"):
        load_images("cifar")
