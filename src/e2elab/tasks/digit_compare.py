"""digit-compare: is the first of two handwritten digits the larger? (module reuse)

The target system of ``e2elab reproduce reuse``: the recognizer of digit-chain (the
same MLP, so a recognizer trained there loads here) read by a new ``comparator``.
Input: two images from scikit-learn's digits. Target: 1 if d1 > d2, else 0.
Ports: ``digit_1``, ``digit_2`` (10 classes) and the output ``greater`` (2 classes).
"""

from __future__ import annotations

from functools import cached_property

import torch
from torch import Tensor

from e2elab.data.digits import CLASSES, IMAGE_PIXELS, digit_pools
from e2elab.modules import mlp
from e2elab.ops import softmax
from e2elab.system import System
from e2elab.task import Batch, Knob, PortSpec, Task, TrainingDefaults, moved

TEST_SEED = 20_000


class DigitCompareSystem(System):
    """recognizer (shared by both images) -> comparator on the two digit codes."""

    def __init__(self, recognizer_width: int, comparator_width: int):
        super().__init__(
            recognizer=mlp(IMAGE_PIXELS, recognizer_width, CLASSES),
            comparator=mlp(2 * CLASSES, comparator_width, 2),
        )

    def forward(self, batch: Batch) -> Tensor:
        images = batch.x["images"]  # (B, 2, 64)
        size = images.shape[0]
        codes = self.recognizer(images.reshape(size * 2, IMAGE_PIXELS)).reshape(size, 2, CLASSES)
        first = self.port("digit_1", codes[:, 0])
        second = self.port("digit_2", codes[:, 1])
        pair = torch.cat([softmax(first), softmax(second)], dim=-1)
        return self.port("greater", self.comparator(pair))


class DigitCompare(Task):
    name = "digit-compare"
    description = "is d1 > d2, for two real handwritten digits (sklearn digits)"
    knobs = {
        "recognizer_width": Knob(64, "hidden width of the recognizer MLP", minimum=1),
        "comparator_width": Knob(64, "hidden width of the comparator MLP", minimum=1),
        "test_size": Knob(2000, "number of held-out pairs", minimum=100, maximum=1_000_000),
        "split_seed": Knob(0, "seed of the train/test split of the images", minimum=0),
    }
    defaults = TrainingDefaults(
        budget=20_000, batch_size=64, lr=3e-3, threshold=0.9, evaluations=20
    )

    @cached_property
    def ports(self) -> dict[str, PortSpec]:
        return {
            "digit_1": PortSpec("class", CLASSES, 1.0 / CLASSES),
            "digit_2": PortSpec("class", CLASSES, 1.0 / CLASSES),
            "greater": PortSpec("class", 2, 0.5),
        }

    @property
    def output(self) -> str:
        return "greater"

    def build_system(self) -> DigitCompareSystem:
        s = self.knobs
        return DigitCompareSystem(s["recognizer_width"], s["comparator_width"])

    @property
    def _pools(self):
        return digit_pools(split_seed=self.knobs["split_seed"])

    def _train_pool(self) -> tuple[Tensor, Tensor]:
        """Training images and labels, on the data device while training keeps them there."""
        pools = self._pools
        return self.on_data_device(pools.train_images), self.on_data_device(pools.train_labels)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        images, labels = self._train_pool()
        index = torch.randint(len(labels), (batch_size, 2), generator=generator)
        return self._pairs(images, labels, moved(index, labels.device))

    def sample_seeds(self, batch_size: int, generators: list[torch.Generator]) -> Batch:
        images, labels = self._train_pool()
        index = [torch.randint(len(labels), (batch_size, 2), generator=g) for g in generators]
        return self._pairs(images, labels, moved(torch.stack(index), labels.device))

    @cached_property
    def _test(self) -> Batch:
        pools = self._pools
        generator = torch.Generator().manual_seed(TEST_SEED + self.knobs["split_seed"])
        index = torch.randint(
            len(pools.test_labels), (self.knobs["test_size"], 2), generator=generator
        )
        return self._pairs(pools.test_images, pools.test_labels, index)

    def test_set(self) -> Batch:
        return self._test

    @staticmethod
    def _pairs(images: Tensor, labels: Tensor, index: Tensor) -> Batch:
        digits = labels[index]  # (..., B, 2)
        targets = {
            "digit_1": digits[..., 0],
            "digit_2": digits[..., 1],
            "greater": (digits[..., 0] > digits[..., 1]).long(),
        }
        return Batch({"images": images[index]}, targets)
