"""Scenes of coloured shapes, their captions, and the grammar that reads captions back.

A scene holds 1 to N objects in distinct columns of a small RGB canvas (N <= 4). Each
object has a shape (square, circle, triangle), a colour (red, green, blue, yellow), a
size (small, large) and a coarse position (its column). Objects are listed left to
right; the caption says them in that order:

    "a small red square left of a large blue circle"

Generation is vectorised in numpy and deterministic per seed (``numpy.random``). Train
and test scenes are disjoint by construction: the first object's vertical offset is even
in training scenes and odd in test scenes, so no test image is a training image. The
shape masks are drawn with scikit-image. Torch-free: the report redraws test scenes
for its caption gallery.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from skimage.draw import disk, polygon

SHAPES = ("square", "circle", "triangle")
COLOURS = ("red", "green", "blue", "yellow")
SIZES = ("small", "large")
RGB = np.array([(0.9, 0.1, 0.1), (0.1, 0.8, 0.1), (0.15, 0.3, 1.0), (0.95, 0.9, 0.1)])
COLUMNS = 4
MAX_OBJECTS = COLUMNS
STAMP = 7  # pixels: every shape is drawn inside a STAMP x STAMP box
CELL = 9  # pixels per column
HEIGHT, WIDTH = 16, COLUMNS * CELL
TRAIN_DY = (-2, 0, 2)  # the first object's vertical offset (test: odd offsets)
TEST_DY = (-1, 1)
OTHER_DY = (-2, -1, 0, 1, 2)
BACKGROUND = 0.15
TEST_SEED = 50_000

# the vocabulary: padding, start, end, then the words
PAD, START, END = 0, 1, 2
WORDS = ("<pad>", "<start>", "<end>", "a", "left", "of", *SIZES, *COLOURS, *SHAPES)
INDEX = {w: i for i, w in enumerate(WORDS)}
TOKENS_PER_OBJECT = 4  # a SIZE COLOUR SHAPE
# attribute classes: 0 = no object in this slot, then the values
ATTRIBUTES = {"shape": SHAPES, "colour": COLOURS, "size": SIZES, "column": tuple(range(COLUMNS))}


def caption_length(objects: int) -> int:
    """Token positions of the longest caption of ``objects`` objects, with its end."""
    return TOKENS_PER_OBJECT * objects + 2 * (objects - 1) + 1


@dataclass(frozen=True)
class Scenes:
    """A batch of scenes. Attribute arrays are (B, N), slot k = the k-th object from
    the left, value -1 where the scene has fewer than k + 1 objects."""

    images: np.ndarray  # (B, 3, HEIGHT, WIDTH) float32 in [0, 1]
    count: np.ndarray  # (B,)
    shape: np.ndarray
    colour: np.ndarray
    size: np.ndarray
    column: np.ndarray

    def attribute(self, name: str) -> np.ndarray:
        return getattr(self, name)

    def captions(self) -> np.ndarray:
        """(B, caption_length(N)) token ids: the caption, END, then PAD."""
        return encode(self.shape, self.colour, self.size)


@cache
def _stamps() -> np.ndarray:
    """(shape, size) -> a STAMP x STAMP boolean mask (small shapes inset by one pixel)."""
    bank = np.zeros((len(SHAPES), len(SIZES), STAMP, STAMP), dtype=bool)
    for size in range(len(SIZES)):
        lo, hi = (1, STAMP - 2) if size == 0 else (0, STAMP - 1)
        bank[0, size, lo : hi + 1, lo : hi + 1] = True
        centre, radius = (STAMP - 1) / 2, (hi - lo + 1) / 2
        rr, cc = disk((centre, centre), radius, shape=(STAMP, STAMP))
        bank[1, size, rr, cc] = True
        rr, cc = polygon([hi, hi, lo], [lo, hi, (lo + hi) / 2], shape=(STAMP, STAMP))
        bank[2, size, rr, cc] = True
    return bank


def generate(size: int, objects: int, seed: int, test: bool = False, noise: float = 0.05) -> Scenes:
    """``size`` scenes of 1 to ``objects`` objects each, from ``seed``."""
    if not 1 <= objects <= MAX_OBJECTS:
        raise ValueError(f"objects must be in 1..{MAX_OBJECTS}, got {objects}")
    rng = np.random.default_rng(seed)
    n = objects
    count = rng.integers(1, n + 1, size)
    present = np.arange(n)[None, :] < count[:, None]  # (B, n)
    # distinct columns, sorted left to right: the first `count` of a random permutation
    order = np.argsort(rng.random((size, COLUMNS)), axis=1)[:, :n]
    columns = np.sort(np.where(present, order, COLUMNS + np.arange(n)), axis=1)
    shape = rng.integers(0, len(SHAPES), (size, n))
    colour = rng.integers(0, len(COLOURS), (size, n))
    scale = rng.integers(0, len(SIZES), (size, n))
    dx = rng.integers(-1, 2, (size, n))
    dy = rng.choice(OTHER_DY, (size, n))
    dy[:, 0] = rng.choice(TEST_DY if test else TRAIN_DY, size)
    images = np.full((size, HEIGHT, WIDTH, 3), BACKGROUND, dtype=np.float32)
    stamps = _stamps()
    batch = np.arange(size)[:, None, None]
    offsets = np.arange(STAMP)
    for k in range(n):
        on = present[:, k]
        x0 = CELL * np.minimum(columns[:, k], COLUMNS - 1) + 1 + dx[:, k]
        y0 = (HEIGHT - STAMP) // 2 + dy[:, k]
        rows = (y0[:, None] + offsets)[:, :, None]  # (B, S, 1)
        cols = (x0[:, None] + offsets)[:, None, :]  # (B, 1, S)
        mask = stamps[shape[:, k], scale[:, k]] & on[:, None, None]  # (B, S, S)
        region = images[batch, rows, cols]  # (B, S, S, 3)
        tint = RGB[colour[:, k]][:, None, None, :]
        images[batch, rows, cols] = np.where(mask[..., None], tint, region)
    images += noise * rng.standard_normal(images.shape).astype(np.float32)
    images = np.clip(images, 0.0, 1.0).transpose(0, 3, 1, 2)
    gone = ~present

    def masked(values: np.ndarray) -> np.ndarray:
        return np.where(gone, -1, values)

    return Scenes(
        images=np.ascontiguousarray(images),
        count=count,
        shape=masked(shape),
        colour=masked(colour),
        size=masked(scale),
        column=masked(np.minimum(columns, COLUMNS - 1)),
    )


def encode(shape: np.ndarray, colour: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Captions as token ids (B, caption_length(N)): "a SIZE COLOUR SHAPE" per object,
    joined by "left of", then END and PAD."""
    batch, n = shape.shape
    out = np.full((batch, caption_length(n)), PAD, dtype=np.int64)
    lengths = np.zeros(batch, dtype=np.int64)
    rows = np.arange(batch)
    for k in range(n):
        on = shape[:, k] >= 0
        if k > 0:
            for word in ("left", "of"):
                out[rows[on], lengths[on]] = INDEX[word]
                lengths[on] += 1
        words = (
            np.full(batch, INDEX["a"]),
            INDEX[SIZES[0]] + size[:, k],
            INDEX[COLOURS[0]] + colour[:, k],
            INDEX[SHAPES[0]] + shape[:, k],
        )
        for word in words:
            out[rows[on], lengths[on]] = word[on]
            lengths[on] += 1
    out[rows, lengths] = END
    return out


def words(tokens: np.ndarray | list[int]) -> list[str]:
    """Token ids up to (not including) END as words; PAD and START are skipped."""
    out = []
    for token in tokens:
        token = int(token)
        if token == END:
            break
        if token in (PAD, START) or not 0 <= token < len(WORDS):
            continue
        out.append(WORDS[token])
    return out


def text(tokens: np.ndarray | list[int]) -> str:
    return " ".join(words(tokens))


def parse(sentence: str) -> list[tuple[str, str, str]] | None:
    """A caption back to its objects, left to right, as (size, colour, shape); None
    where the sentence is not in the grammar (the decoder's error)."""
    tokens = sentence.split()
    objects: list[tuple[str, str, str]] = []
    i = 0
    while True:
        part = tokens[i : i + TOKENS_PER_OBJECT]
        if len(part) < TOKENS_PER_OBJECT or part[0] != "a":
            return None
        size, colour, shape = part[1:]
        if size not in SIZES or colour not in COLOURS or shape not in SHAPES:
            return None
        objects.append((size, colour, shape))
        i += TOKENS_PER_OBJECT
        if i == len(tokens):
            return objects
        if tokens[i : i + 2] != ["left", "of"]:
            return None
        i += 2


def truth(scenes: Scenes, index: int) -> list[tuple[str, str, str]]:
    """Scene ``index``'s objects as (size, colour, shape), left to right."""
    return [
        (
            SIZES[scenes.size[index, k]],
            COLOURS[scenes.colour[index, k]],
            SHAPES[scenes.shape[index, k]],
        )
        for k in range(scenes.shape.shape[1])
        if scenes.shape[index, k] >= 0
    ]


def test_scenes(objects: int, size: int, noise: float) -> Scenes:
    """The held-out scenes of the captioning task with these knobs (the report redraws
    them for its gallery)."""
    return generate(size, objects, TEST_SEED + objects, test=True, noise=noise)
