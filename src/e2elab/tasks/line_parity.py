"""line-parity: the product of k line-orientation labels (Shalev-Shwartz et al. 2017, 3.1).

Input: k binary 28x28 images, each holding one straight segment. A segment has an angle
uniform in [0, pi) (counter-clockwise from the image's horizontal axis, rows growing
downwards), a length uniform in [5, 23] pixels and a centre uniform in [0, 27]^2 (pixel
coordinates). Its image label is +1 if the angle is below pi/2 (the segment rises to the
right) and -1 otherwise. Target: the product of the k labels.

Modules: a ``scorer`` shared across the k images (two 5x5x16 convolutions with ReLU and
2x2 max-pooling, then FC 50, FC 100, one score) and a ``combiner`` (FC 100 on the k
sigmoids of the scores, one score). Ports: ``score_i`` (binary, the label of image i)
and ``parity`` (binary, the output).

Some images are ambiguous: a short or clipped segment close to horizontal or vertical
rasterises to the same pixels whichever side of 0 or pi/2 its angle lies. Among 4M drawn
images, predicting each distinct image's majority label is right 97.5% of the time (an
optimistic bound); trained scorers reach about 96.5%, so the k = 3 product about 0.90.

Train/test disjointness: the test set is drawn from its own fixed generator, and every
training image whose hash equals the hash of a test image is redrawn (vectorised
rejection), so no training image equals any test image pixel for pixel. A hash collision
between two different images only causes an unneeded redraw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor, nn

from e2elab.modules import mlp
from e2elab.system import System
from e2elab.task import Batch, Knob, PortSpec, Task, TrainingDefaults

TEST_SEED = 20_000
HASH_SEED = 20_001
SIZE = 28
PIXELS = SIZE * SIZE
MIN_LENGTH, MAX_LENGTH = 5.0, 23.0
# points sampled along a segment: consecutive points are at most 0.5 px apart
POINTS = 2 * int(MAX_LENGTH) + 1
# integer weights below 2**43: a sum of 784 of them is below 2**53, exact in float64
_HASH_WEIGHTS = torch.randint(
    0, 2**43, (PIXELS,), generator=torch.Generator().manual_seed(HASH_SEED), dtype=torch.float64
)


@dataclass(frozen=True)
class Segments:
    """Parameters of n segments: angle in [0, pi), length, centre as (column, row)."""

    angle: Tensor  # (n,)
    length: Tensor  # (n,)
    centre: Tensor  # (n, 2)

    def __len__(self) -> int:
        return self.angle.shape[0]

    @property
    def labels(self) -> Tensor:
        """+1 where the angle is below pi/2, else -1 (long)."""
        return torch.where(self.angle < math.pi / 2, 1, -1)


def draw_segments(n: int, generator: torch.Generator) -> Segments:
    """n independent segments from the task's distribution."""
    u = torch.rand(n, 4, generator=generator)
    return Segments(
        angle=u[:, 0] * math.pi,
        length=MIN_LENGTH + (MAX_LENGTH - MIN_LENGTH) * u[:, 1],
        centre=u[:, 2:] * (SIZE - 1),
    )


def rasterise(segments: Segments) -> Tensor:
    """(n, 28, 28) binary float images: points along each segment, rounded to pixels,
    those outside the image dropped."""
    n = len(segments)
    t = torch.linspace(-0.5, 0.5, POINTS)  # (P,)
    offset = segments.length[:, None] * t  # (n, P)
    cols = (segments.centre[:, :1] + offset * segments.angle.cos()[:, None]).round().long()
    rows = (segments.centre[:, 1:] - offset * segments.angle.sin()[:, None]).round().long()
    inside = (cols >= 0) & (cols < SIZE) & (rows >= 0) & (rows < SIZE)
    flat = torch.arange(n)[:, None] * PIXELS + rows * SIZE + cols
    flat = torch.where(inside, flat, n * PIXELS)  # outside points land in a spare cell
    canvas = torch.zeros(n * PIXELS + 1)
    canvas[flat.reshape(-1)] = 1.0
    return canvas[:-1].reshape(n, SIZE, SIZE)


def image_hash(images: Tensor) -> Tensor:
    """An int64 hash of each binary (..., 28, 28) image; equal images hash equally."""
    bits = images.reshape(*images.shape[:-2], PIXELS).to(torch.float64)
    return (bits @ _HASH_WEIGHTS).to(torch.int64)


def draw_images(
    n: int, generator: torch.Generator, banned: Tensor | None = None
) -> tuple[Segments, Tensor]:
    """n segments and their images; any image whose hash is in ``banned`` is redrawn."""
    segments = draw_segments(n, generator)
    images = rasterise(segments)
    if banned is None:
        return segments, images
    angle, length, centre = segments.angle, segments.length, segments.centre
    clash = torch.isin(image_hash(images), banned)
    while clash.any():
        index = clash.nonzero().squeeze(1)
        redo = draw_segments(len(index), generator)
        redrawn = rasterise(redo)
        angle[index], length[index], centre[index] = redo.angle, redo.length, redo.centre
        images[index] = redrawn
        clash = torch.zeros_like(clash)
        clash[index] = torch.isin(image_hash(redrawn), banned)
    return Segments(angle, length, centre), images


def scorer() -> nn.Sequential:
    """28x28 image -> one score: conv 5x5x16, pool, conv 5x5x16, pool, FC 50, FC 100, 1.

    Each ReLU comes after its pooling: max-pooling and ReLU commute exactly (values and
    gradients), and the ReLU then touches a quarter of the values."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 5),
        nn.MaxPool2d(2),  # 24 -> 12
        nn.ReLU(inplace=True),
        nn.Conv2d(16, 16, 5),
        nn.MaxPool2d(2),  # 8 -> 4
        nn.ReLU(inplace=True),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 50),
        nn.ReLU(),
        nn.Linear(50, 100),
        nn.ReLU(),
        nn.Linear(100, 1),
    )


class LineParitySystem(System):
    """scorer (shared over the k images) -> k scores -> sigmoids -> combiner -> parity."""

    def __init__(self, k: int):
        super().__init__(scorer=scorer(), combiner=mlp(k, 100, 1, layers=1))
        self.k = k

    def forward(self, batch: Batch) -> Tensor:
        images = batch.x["images"]  # (B, k, 28, 28)
        size = images.shape[0]
        scores = self.scorer(images.reshape(size * self.k, 1, SIZE, SIZE)).reshape(size, self.k)
        ported = [self.port(f"score_{i + 1}", scores[:, i : i + 1]) for i in range(self.k)]
        features = torch.cat(ported, dim=1).sigmoid()  # (B, k)
        return self.port("parity", self.combiner(features))  # (B, 1)


class LineParity(Task):
    name = "line-parity"
    revision = 1  # channels-last convolutions on the CPU (numerics.conv_layout)
    description = "product of the +-1 orientation labels of k line images (Shalev-Shwartz 2017)"
    knobs = {
        "k": Knob(3, "number of line images per example", minimum=1, maximum=32),
        "test_size": Knob(2000, "number of held-out tuples", minimum=100),
    }
    # Measured on 2 idle CPU threads: a step at k = 3, batch 200 (600 images) takes about
    # 47 ms of training plus 2 ms of data, so 400k examples (2000 steps) take about 100 s
    # plus evaluations. k = 3, seed 0: hinted reaches 0.89 at 60k examples and 0.90-0.91
    # from 100k on; e2e stays at chance for all 400k. k = 1: e2e reaches 0.9 at 20k.
    # The threshold is 0.85, not 0.9: single images are right at most ~97% of the time
    # (see the module docstring), so the product of 3 labels tops out near 0.91.
    defaults = TrainingDefaults(budget=400_000, batch_size=200, lr=1e-3, threshold=0.85)

    @property
    def k(self) -> int:
        return self.knobs["k"]

    @cached_property
    def ports(self) -> dict[str, PortSpec]:
        specs = {f"score_{i}": PortSpec("binary", 1, 0.5) for i in range(1, self.k + 1)}
        specs["parity"] = PortSpec("binary", 1, 0.5)
        return specs

    @property
    def output(self) -> str:
        return "parity"

    def build_system(self) -> LineParitySystem:
        return LineParitySystem(self.k)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        segments, images = draw_images(batch_size * self.k, generator, self._test_hashes)
        return self._tuples(segments, images, batch_size)

    @cached_property
    def _test(self) -> Batch:
        generator = torch.Generator().manual_seed(TEST_SEED)
        size = self.knobs["test_size"]
        segments, images = draw_images(size * self.k, generator)
        return self._tuples(segments, images, size)

    @cached_property
    def _test_hashes(self) -> Tensor:
        return torch.unique(image_hash(self._test.x["images"]))

    def test_set(self) -> Batch:
        return self._test

    def _tuples(self, segments: Segments, images: Tensor, size: int) -> Batch:
        labels = segments.labels.reshape(size, self.k)  # (B, k) of +-1
        targets = {f"score_{i + 1}": labels[:, i] for i in range(self.k)}
        targets["parity"] = labels.prod(dim=1)
        return Batch({"images": images.reshape(size, self.k, SIZE, SIZE)}, targets)
