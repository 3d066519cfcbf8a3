"""Hand-crafted feature extractors (scikit-image): shapes, determinism, errors."""

from __future__ import annotations

import numpy as np
import pytest

from e2elab.data.images import load_images
from e2elab.errors import E2ELabError
from e2elab.features import FAMILIES, extract, gabor_bank


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize(
    ("source", "sizes"),
    [
        ("digits", {"hog": 144, "edges": 32, "gabor": 128}),
        ("mnist-sample", {"hog": 324, "edges": 32, "gabor": 128}),
    ],
)
def test_features_have_fixed_shapes_and_are_deterministic(family, source, sizes):
    images = load_images(source)[0][:20]
    first = extract(family, images)
    assert first.shape == (20, sizes[family]) and first.dtype == np.float32
    assert np.isfinite(first).all()
    assert np.array_equal(first, extract(family, images.copy()))
    # an example's features do not depend on the other images in the batch (up to the
    # order of float sums in numpy's pooling)
    assert np.allclose(first[3:4], extract(family, images[3:4]), rtol=1e-5, atol=1e-7)


def test_gabor_bank_fits_the_image_and_is_normalised():
    for side, size in ((8, 5), (28, 11)):
        bank = gabor_bank(side)
        assert bank.shape == (8, size, size)
        assert np.allclose(np.linalg.norm(bank.reshape(8, -1), axis=1), 1.0, atol=1e-6)


def test_bad_input_is_one_line():
    with pytest.raises(E2ELabError, match="unknown feature family"):
        extract("sift", np.zeros((1, 8, 8)))
    with pytest.raises(E2ELabError, match=r"shaped \(N, H, W\)"):
        extract("hog", np.zeros((8, 8)))
