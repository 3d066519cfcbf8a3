"""scikit-learn's bundled handwritten digits (1,797 8x8 images), split by image.

The data ships inside scikit-learn, so nothing is downloaded. The split is stratified
and fixed by ``split_seed``: an image is either in the training pool or in the test
pool, never both, whatever tuples are later built from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

IMAGE_PIXELS = 64
CLASSES = 10


@dataclass(frozen=True)
class DigitPools:
    """Images (N, 64) scaled to [0, 1], labels (N,), and each image's index in the
    original dataset (so tests can prove the pools are disjoint)."""

    train_images: Tensor
    train_labels: Tensor
    train_ids: Tensor
    test_images: Tensor
    test_labels: Tensor
    test_ids: Tensor


@lru_cache(maxsize=8)
def digit_pools(test_fraction: float = 0.3, split_seed: int = 0) -> DigitPools:
    """Load the digits once and split them by image."""
    # scikit-learn loads here, not where a worker imports the tasks (almost 2 s)
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = (data.data / 16.0).astype(np.float32)
    labels = data.target.astype(np.int64)
    ids = np.arange(len(labels))
    train_ids, test_ids = train_test_split(
        ids, test_size=test_fraction, random_state=split_seed, stratify=labels
    )
    train_ids, test_ids = np.sort(train_ids), np.sort(test_ids)
    return DigitPools(
        torch.from_numpy(images[train_ids]),
        torch.from_numpy(labels[train_ids]),
        torch.from_numpy(train_ids),
        torch.from_numpy(images[test_ids]),
        torch.from_numpy(labels[test_ids]),
        torch.from_numpy(test_ids),
    )
