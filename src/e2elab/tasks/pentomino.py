"""pentomino: are all three sprites the same shape? (Gulcehre & Bengio, JMLR 2016).

Input: a 64x64 binary image cut into an 8x8 grid of 8x8 patches. Three sprites sit in
three distinct patches (each entirely inside its patch, at a random offset). A sprite is
one of 10 pentomino classes (the chiral pentominoes F, L, N, P, Y and their mirror
images), rotated by a random multiple of 90 degrees and scaled by 1 or 2 (each pixel a
2x2 block). Target: 1 when the three sprites are the same class, else 0. Exactly half
the images are positive; a negative holds one sprite of class A and two of class B != A.

Modules: ``p1nn``, shared across the 64 patches, maps a patch's 64 pixels to 11 logits
(the 10 classes, or 10 = empty); ``p2nn`` maps the 64 x 11 softmax codes to the answer.
Ports: ``patches`` (B, 64, 11) and the output ``same`` (B, 2).

The paper's P1NN had two hidden layers of 1024 units; the default here is 256 so that a
run trains in minutes on a CPU (knob ``p1_width``). The default learning rate is 3e-4:
at Adam's usual 1e-3, almost all of p2nn's first-layer ReLUs die and its output turns
constant, even when it is fed the true hints, so no strategy could learn the answer.
Even at 3e-4, p2nn sits on a plateau at chance for a few hundred thousand examples
before it learns, hence the budget of 1M examples.

Data: a fixed, finite training set (``train_size`` images, 40k in the paper) drawn with
replacement, and a fixed test set. Both are generated once, vectorised, and cached in
memory and on disk (``$E2ELAB_CACHE`` or ``~/.cache/e2elab``). Train and test are
disjoint by construction: a 64-bit hash of an image's pixels puts it on the train side
(top bit 0) or the test side (top bit 1), and each set redraws any image on the wrong
side (with the same label), so no image can be in both, whatever the sizes.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from e2elab.errors import choices
from e2elab.modules import mlp
from e2elab.ops import softmax
from e2elab.system import System
from e2elab.task import Batch, Knob, PortSpec, Task, TrainingDefaults, moved

GRID = 8  # cells per side
CELL = 8  # pixels per cell side
SIDE = GRID * CELL  # 64 pixels per image side
PATCHES = GRID * GRID  # 64
PATCH_PIXELS = CELL * CELL  # 64
SPRITES = 3
SHAPES = 10
EMPTY = SHAPES  # the hint of a patch without a sprite
HINT_CLASSES = SHAPES + 1
ROTATIONS = 4
SCALES = (1, 2)
PACKED_BYTES = SIDE * SIDE // 8  # 512: one image as packed bits

# The five chiral pentominoes; classes 5-9 are their mirror images (rows reversed).
_BASE = {
    "F": (".XX", "XX.", ".X."),
    "L": ("X.", "X.", "X.", "XX"),
    "N": (".X", ".X", "XX", "X."),
    "P": ("XX", "XX", "X."),
    "Y": (".X", "XX", ".X", ".X"),
}
SHAPE_NAMES = (*_BASE, *(name + "'" for name in _BASE))
_ROWS = (*_BASE.values(), *(tuple(row[::-1] for row in rows) for rows in _BASE.values()))

CACHE_VERSION = 1
_SPLITS = ("train", "test")


def shape_bitmap(shape: int) -> np.ndarray:
    """The unrotated, unscaled bitmap of class ``shape`` (uint8, tight bounding box)."""
    return np.array([[c == "X" for c in row] for row in _ROWS[shape]], dtype=np.uint8)


def variant_bitmap(shape: int, rotation: int, scale: int) -> np.ndarray:
    """``shape`` rotated by ``rotation`` quarter turns, each pixel a ``scale`` x ``scale``
    block (tight bounding box)."""
    turned = np.rot90(shape_bitmap(shape), rotation)
    return np.kron(turned, np.ones((scale, scale), dtype=np.uint8))


def variant_index(shape, rotation, scale_index):
    """Index of a (shape, rotation, scale) combination in the variant tables."""
    return (shape * ROTATIONS + rotation) * len(SCALES) + scale_index


def _variant_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the 80 variants: pixel coordinates (80, 20, 2) relative to the top-left of the
    bounding box (padded by repeating the first pixel), heights (80,) and widths (80,)."""
    most = 5 * max(SCALES) ** 2
    coords = np.zeros((SHAPES * ROTATIONS * len(SCALES), most, 2), dtype=np.int64)
    heights = np.zeros(len(coords), dtype=np.int64)
    widths = np.zeros(len(coords), dtype=np.int64)
    for shape in range(SHAPES):
        for rotation in range(ROTATIONS):
            for k, scale in enumerate(SCALES):
                bitmap = variant_bitmap(shape, rotation, scale)
                assert bitmap.shape[0] <= CELL and bitmap.shape[1] <= CELL, "sprite too big"
                v = variant_index(shape, rotation, k)
                pixels = np.argwhere(bitmap)
                coords[v] = pixels[np.arange(most) % len(pixels)]
                heights[v], widths[v] = bitmap.shape
    return coords, heights, widths


_COORDS, _HEIGHTS, _WIDTHS = _variant_tables()

# One random key per 64-bit word of a packed image, so that equal words at different
# positions hash differently.
_HASH_KEYS = np.random.default_rng(20160101).integers(0, 2**63, PACKED_BYTES // 8, dtype=np.uint64)


def _mix(h: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser (a bijection of uint64 in which every input bit reaches
    every output bit); arithmetic wraps modulo 2**64."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def image_hash(packed: np.ndarray) -> np.ndarray:
    """A 64-bit hash (N,) uint64 of packed images (N, 512); equal images hash equally."""
    words = np.ascontiguousarray(packed, dtype=np.uint8).view("<u8")  # (N, 64)
    return _mix(_mix(words ^ _HASH_KEYS).sum(axis=1, dtype=np.uint64))


def hash_side(packed: np.ndarray) -> np.ndarray:
    """Which split an image may belong to: False = train, True = test (N,) bool."""
    return (image_hash(packed) >> np.uint64(63)).astype(bool)


def pack(images: np.ndarray) -> np.ndarray:
    """(N, 64, 64) 0/1 -> (N, 512) uint8 bits."""
    return np.packbits(images.reshape(len(images), -1).astype(np.uint8), axis=1)


def unpack(packed: np.ndarray) -> np.ndarray:
    """(N, 512) uint8 bits -> (N, 64, 64) uint8 0/1."""
    return np.unpackbits(packed, axis=1).reshape(len(packed), SIDE, SIDE)


# every byte's 8 bits, most significant first (numpy's unpackbits order), as floats
BITS = ((torch.arange(256)[:, None] >> torch.arange(7, -1, -1)) & 1).float()


def unpack_tensor(packed: Tensor, bits: Tensor = BITS) -> Tensor:
    """``unpack`` in torch: (N, 512) uint8 -> (N, 64, 64) float 0/1, with ``bits`` (the
    table ``BITS``) on ``packed``'s device."""
    return bits[packed.long()].reshape(len(packed), SIDE, SIDE)  # (N, 512, 8) bits


@dataclass(frozen=True)
class PentominoSet:
    """A fixed set of images: packed pixels (N, 512) uint8, per-patch hints (N, 64) int64
    (class 0-9, or 10 = empty; patch index = 8 * grid row + grid column), and the answer
    ``same`` (N,) int64 (1 = all three sprites are the same class)."""

    images: np.ndarray
    patches: Tensor
    same: Tensor

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, index: Tensor) -> Batch:
        pixels = torch.from_numpy(unpack(self.images[index.numpy()])).float()  # (B, 64, 64)
        return Batch({"images": pixels}, {"patches": self.patches[index], "same": self.same[index]})

    @cached_property
    def packed(self) -> Tensor:
        """The packed pixels as a tensor (moved to an accelerator once, and unpacked there)."""
        return torch.from_numpy(self.images)


def render(same: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw one image per label in ``same`` (N,): packed pixels (N, 512) and hints (N, 64)."""
    n = len(same)
    first = rng.integers(0, SHAPES, n)
    other = (first + rng.integers(1, SHAPES, n)) % SHAPES  # uniform over the 9 others
    classes = np.stack([first, other, other], axis=1)  # (N, 3): one A, two B
    classes[same.astype(bool)] = first[same.astype(bool), None]
    cells = np.argsort(rng.random((n, PATCHES)), axis=1)[:, :SPRITES]  # (N, 3) distinct
    rotation = rng.integers(0, ROTATIONS, (n, SPRITES))
    scale = rng.integers(0, len(SCALES), (n, SPRITES))
    variant = variant_index(classes, rotation, scale)  # (N, 3)
    # offset inside the cell: 0 .. CELL - height (or width), so the sprite stays inside
    dr = (rng.random((n, SPRITES)) * (CELL + 1 - _HEIGHTS[variant])).astype(np.int64)
    dc = (rng.random((n, SPRITES)) * (CELL + 1 - _WIDTHS[variant])).astype(np.int64)
    top = (cells // GRID) * CELL + dr  # (N, 3) image row of the bounding box
    left = (cells % GRID) * CELL + dc
    rows = top[..., None] + _COORDS[variant, :, 0]  # (N, 3, 20)
    cols = left[..., None] + _COORDS[variant, :, 1]
    images = np.zeros((n, SIDE, SIDE), dtype=np.uint8)
    images[np.arange(n)[:, None, None], rows, cols] = 1
    hints = np.full((n, PATCHES), EMPTY, dtype=np.int8)
    hints[np.arange(n)[:, None], cells] = classes
    return pack(images), hints


def generate(split: str, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``split`` set: packed images (size, 512), hints (size, 64), labels (size,).

    Exactly ``size // 2`` images are positive (plus one when ``size`` is odd). Images
    whose hash falls on the other split's side are redrawn with the same label.
    """
    if split not in _SPLITS:
        raise choices("split", split, list(_SPLITS))
    test_side = split == "test"
    rng = np.random.default_rng([seed, _SPLITS.index(split), CACHE_VERSION])
    same = rng.permutation(np.arange(size) < (size + 1) // 2).astype(np.int8)
    images, hints = render(same, rng)
    wrong = hash_side(images) != test_side
    while wrong.any():
        images[wrong], hints[wrong] = render(same[wrong], rng)
        wrong = hash_side(images) != test_side
    return images, hints, same


def cache_folder() -> Path:
    """``$E2ELAB_CACHE``, or ``~/.cache/e2elab``."""
    return Path(os.environ.get("E2ELAB_CACHE") or Path.home() / ".cache" / "e2elab")


def cache_path(folder: Path, split: str, size: int, seed: int) -> Path:
    return folder / f"pentomino-v{CACHE_VERSION}-{split}-n{size}-seed{seed}.npz"


def _read(path: Path, split: str, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Load a cache file and check it; any problem raises (the caller regenerates)."""
    with np.load(path, allow_pickle=False) as data:
        images, hints, same = data["images"], data["patches"], data["same"]
    ok = (
        images.shape == (size, PACKED_BYTES)
        and images.dtype == np.uint8
        and hints.shape == (size, PATCHES)
        and same.shape == (size,)
        and bool(((hints >= 0) & (hints <= EMPTY)).all())
        and bool(((same == 0) | (same == 1)).all())
        and bool((hash_side(images) == (split == "test")).all())
    )
    if not ok:
        raise ValueError(f"{path} does not hold a valid {split} set of {size} images")
    return images, hints.astype(np.int8), same.astype(np.int8)


def _write(path: Path, images: np.ndarray, hints: np.ndarray, same: np.ndarray) -> None:
    """Write atomically: a temporary file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez_compressed(file, images=images, patches=hints, same=same)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_or_generate(split: str, size: int, seed: int, folder: Path | None) -> PentominoSet:
    """The set from ``folder``'s cache file if it is valid; else generate (and save it)."""
    arrays = None
    path = cache_path(folder, split, size, seed) if folder is not None else None
    if path is not None and path.exists():
        try:
            arrays = _read(path, split, size)
        except Exception:  # corrupt, truncated or foreign: regenerate and overwrite
            arrays = None
    if arrays is None:
        arrays = generate(split, size, seed)
        if path is not None:
            # an unwritable cache only costs regeneration next time
            with contextlib.suppress(OSError):
                _write(path, *arrays)
    images, hints, same = arrays
    return PentominoSet(
        images, torch.from_numpy(hints.astype(np.int64)), torch.from_numpy(same.astype(np.int64))
    )


@lru_cache(maxsize=6)
def pentomino_set(split: str, size: int, seed: int) -> PentominoSet:
    """The ``split`` set, cached in memory and on disk (see ``cache_folder``)."""
    return load_or_generate(split, size, seed, cache_folder())


class PentominoSystem(System):
    """p1nn (shared over the 64 patches) -> 64 x 11 softmax codes -> p2nn -> same?"""

    def __init__(self, p1_width: int, p2_width: int):
        super().__init__(
            p1nn=mlp(PATCH_PIXELS, p1_width, HINT_CLASSES),
            p2nn=mlp(PATCHES * HINT_CLASSES, p2_width, 2),
        )

    def forward(self, batch: Batch) -> Tensor:
        images = batch.x["images"]  # (B, 64, 64)
        size = images.shape[0]
        grid = images.reshape(size, GRID, CELL, GRID, CELL)  # (B, grid row, row, grid col, col)
        grid = grid.permute(0, 1, 3, 2, 4)  # (B, grid row, grid col, row, col)
        patches = grid.reshape(size * PATCHES, PATCH_PIXELS)  # (B*64 patches, 64 pixels)
        codes = self._codes(patches)  # (B*64, 11)
        codes = self.port("patches", codes.reshape(size, PATCHES, HINT_CLASSES))  # (B, 64, 11)
        flat = softmax(codes).reshape(size, PATCHES * HINT_CLASSES)  # (B, 704)
        return self.port("same", self.p2nn(flat))  # (B, 2) logits

    def _codes(self, patches: Tensor) -> Tensor:
        """p1nn of every patch. On the CPU, 61 of an image's 64 patches are empty (all
        zeros), so p1nn runs once on the empty patch and on the occupied ones only: the
        same values and gradients for about a twentieth of the work. On an accelerator,
        where the data-dependent selection would stall the device, it runs densely."""
        if patches.device.type != "cpu":
            return self.p1nn(patches)
        occupied = patches.any(dim=1).nonzero().squeeze(1)
        empty = self.p1nn(patches.new_zeros(1, PATCH_PIXELS))  # (1, 11)
        codes = empty.expand(patches.shape[0], HINT_CLASSES)
        return codes.index_put((occupied,), self.p1nn(patches[occupied]))


class Pentomino(Task):
    name = "pentomino"
    description = (
        "are the 3 pentomino sprites in a 64x64 image the same shape? "
        "(Gulcehre & Bengio 2016; hint: each 8x8 patch's shape)"
    )
    knobs = {
        "train_size": Knob(
            40_000, "images in the fixed training set (paper: 40k, 80k)", minimum=100
        ),
        "test_size": Knob(4_000, "images in the fixed test set", minimum=100),
        "p1_width": Knob(256, "hidden width of the per-patch p1nn (2 layers)", minimum=1),
        "p2_width": Knob(256, "hidden width of p2nn (2 layers)", minimum=1),
        "data_seed": Knob(0, "seed of the generated train and test sets", minimum=0),
    }
    defaults = TrainingDefaults(budget=1_000_000, batch_size=64, lr=3e-4, threshold=0.9)

    @cached_property
    def ports(self) -> dict[str, PortSpec]:
        return {
            # every image has 61 empty patches out of 64: the majority rate
            "patches": PortSpec("class", HINT_CLASSES, (PATCHES - SPRITES) / PATCHES),
            "same": PortSpec("class", 2, 0.5),
        }

    @property
    def output(self) -> str:
        return "same"

    def build_system(self) -> PentominoSystem:
        return PentominoSystem(self.knobs["p1_width"], self.knobs["p2_width"])

    @property
    def _train(self) -> PentominoSet:
        s = self.knobs
        return pentomino_set("train", s["train_size"], s["data_seed"])

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        train = self._train
        index = torch.randint(len(train), (batch_size,), generator=generator)
        if self.data_device is None:
            return train.batch(index)
        # on the data device: the packed set lives there (an eighth of the pixels' bytes)
        packed = self.on_data_device(train.packed)
        index = moved(index, packed.device)
        patches, same = self.on_data_device(train.patches), self.on_data_device(train.same)
        return Batch(
            {"images": unpack_tensor(packed[index], self.on_data_device(BITS))},
            {"patches": patches[index], "same": same[index]},
        )

    def train_set(self) -> Batch:
        train = self._train
        return train.batch(torch.arange(len(train)))

    @cached_property
    def _test(self) -> Batch:
        s = self.knobs
        test = pentomino_set("test", s["test_size"], s["data_seed"])
        return test.batch(torch.arange(len(test)))

    def test_set(self) -> Batch:
        return self._test
