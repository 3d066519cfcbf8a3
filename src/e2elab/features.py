"""Hand-crafted image features from scikit-image: the classic pipeline's front end.

Three families, each a function of a batch of grey images (N, H, W) in [0, 1] that
returns (N, F) float32 features, deterministic (no randomness, no fitting):

- ``hog``: histograms of oriented gradients (``skimage.feature.hog``), 9 orientations,
  cells of a quarter of the side, blocks of 2x2 cells (1x1 on 8x8 images);
- ``edges``: Sobel gradient magnitude (``skimage.filters.sobel``) and Canny edge maps
  (``skimage.feature.canny``), each averaged over a 4x4 grid of cells;
- ``gabor``: responses to a bank of Gabor filters (``skimage.filters.gabor_kernel``,
  4 orientations x 2 frequencies, real part) rectified and averaged over a 4x4 grid.

``gabor_bank`` gives the same filters as fixed convolution weights, for a network whose
first layer is this hand-crafted front end (the hybrid approach).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from skimage.feature import canny, hog
from skimage.filters import gabor_kernel, sobel

from e2elab.errors import E2ELabError

GRID = 4  # features are pooled over a GRID x GRID grid of cells
ORIENTATIONS = 4
FREQUENCIES = (0.15, 0.3)


def _pool(maps: np.ndarray) -> np.ndarray:
    """(N, H, W) -> (N, GRID * GRID): the mean over each cell of a GRID x GRID grid."""
    h, w = maps.shape[1:]
    rows = np.array_split(np.arange(h), GRID)
    cols = np.array_split(np.arange(w), GRID)
    cells = [maps[:, r][:, :, c].mean(axis=(1, 2)) for r in rows for c in cols]
    return np.stack(cells, axis=1)


def hog_features(images: np.ndarray) -> np.ndarray:
    side = images.shape[-1]
    cell = max(2, side // 4)
    block = (1, 1) if side <= 8 else (2, 2)
    rows = [
        hog(im, orientations=9, pixels_per_cell=(cell, cell), cells_per_block=block)
        for im in images
    ]
    return np.asarray(rows, dtype=np.float32)


def edge_features(images: np.ndarray) -> np.ndarray:
    magnitude = np.stack([sobel(im) for im in images])
    sigma = 1.0 if images.shape[-1] > 8 else 0.5
    edges = np.stack([canny(im, sigma=sigma) for im in images]).astype(np.float64)
    return np.concatenate([_pool(magnitude), _pool(edges)], axis=1).astype(np.float32)


def gabor_bank(side: int) -> np.ndarray:
    """The Gabor filters (real parts) as (K, k, k) float32, cropped to at most the
    image side (odd size), each scaled to unit L2 norm."""
    size = min(11 if side > 8 else 5, side - (1 - side % 2))
    kernels = []
    for frequency in FREQUENCIES:
        for i in range(ORIENTATIONS):
            kernel = np.real(gabor_kernel(frequency, theta=np.pi * i / ORIENTATIONS))
            c = kernel.shape[0] // 2
            half = min(c, size // 2)
            kernel = kernel[c - half : c + half + 1, c - half : c + half + 1]
            padded = np.zeros((size, size))
            o = (size - kernel.shape[0]) // 2
            padded[o : o + kernel.shape[0], o : o + kernel.shape[1]] = kernel
            kernels.append(padded / np.linalg.norm(padded))
    return np.asarray(kernels, dtype=np.float32)


def gabor_features(images: np.ndarray) -> np.ndarray:
    from scipy.ndimage import convolve  # loads here, not where a worker imports the tasks

    bank = gabor_bank(images.shape[-1])
    maps = [
        np.abs(np.stack([convolve(im.astype(np.float64), k, mode="constant") for im in images]))
        for k in bank
    ]
    return np.concatenate([_pool(m) for m in maps], axis=1).astype(np.float32)


FAMILIES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "hog": hog_features,
    "edges": edge_features,
    "gabor": gabor_features,
}


def extract(family: str, images: np.ndarray) -> np.ndarray:
    """``family``'s features of ``images`` (N, H, W): (N, F) float32."""
    if family not in FAMILIES:
        raise E2ELabError(
            f"unknown feature family {family!r}; choose one of: {', '.join(FAMILIES)}"
        )
    if images.ndim != 3:
        raise E2ELabError(f"features need images shaped (N, H, W), got {images.shape}")
    return FAMILIES[family](images)
