"""digit-chain: the sum modulo m of n real handwritten digits (Glasmachers 2017).

Input: n images from scikit-learn's digits. Target: (d1 + ... + dn) mod m.
Modules: a ``recognizer`` shared across positions (image -> digit logits) and a chain of
adders (running-sum state, digit code -> next state); ``share_adders`` makes it one adder.
Ports: ``digit_i`` (10 classes) and ``sum_i`` = (d1 + ... + di) mod m; the output is
``sum_n``. m = 2 gives the parity version.
"""

from __future__ import annotations

from functools import cached_property

import torch
import torch.nn.functional as F
from torch import Tensor

from e2elab.data.digits import CLASSES, IMAGE_PIXELS, digit_pools
from e2elab.modules import mlp
from e2elab.ops import softmax
from e2elab.system import System
from e2elab.task import Batch, Knob, PortSpec, Task, TrainingDefaults, moved

TEST_SEED = 10_000


class DigitChainSystem(System):
    """recognizer (shared) -> adder_1 -> ... -> adder_n, running sum carried as a soft code."""

    def __init__(self, n: int, m: int, recognizer_width: int, adder_width: int, share: bool):
        adders = (
            {"adder": mlp(m + CLASSES, adder_width, m)}
            if share
            else {f"adder_{i + 1}": mlp(m + CLASSES, adder_width, m) for i in range(n)}
        )
        super().__init__(recognizer=mlp(IMAGE_PIXELS, recognizer_width, CLASSES), **adders)
        self.n, self.m, self.share = n, m, share

    def adder_at(self, i: int) -> torch.nn.Module:
        return getattr(self, "adder" if self.share else f"adder_{i + 1}")

    def forward(self, batch: Batch) -> Tensor:
        images = batch.x["images"]  # (B, n, 64)
        size = images.shape[0]
        codes = self.recognizer(images.reshape(size * self.n, IMAGE_PIXELS))  # (B*n, 10)
        codes = codes.reshape(size, self.n, CLASSES)
        # the empty sum is 0: the chain starts from a one-hot state on class 0
        state = F.one_hot(torch.zeros(size, dtype=torch.long, device=images.device), self.m)
        state = state.to(images.dtype)  # (B, m)
        total = state
        for i in range(self.n):
            digit = self.port(f"digit_{i + 1}", codes[:, i])  # (B, 10) logits
            adder_in = torch.cat([state, softmax(digit)], dim=-1)  # (B, m + 10)
            total = self.port(f"sum_{i + 1}", self.adder_at(i)(adder_in))  # (B, m) logits
            state = softmax(total)
        return total


class DigitChain(Task):
    name = "digit-chain"
    description = "(d1 + ... + dn) mod m over n real handwritten digits (sklearn digits)"
    knobs = {
        "n": Knob(3, "number of digits (and of adder modules)", minimum=1, maximum=64),
        "m": Knob(10, "modulus of the sum (2 = parity)", minimum=2, maximum=1000),
        "recognizer_width": Knob(64, "hidden width of the recognizer MLP", minimum=1),
        "adder_width": Knob(64, "hidden width of each adder MLP", minimum=1),
        "share_adders": Knob(False, "one adder module shared along the chain"),
        "test_size": Knob(2000, "number of held-out tuples", minimum=100, maximum=1_000_000),
        "split_seed": Knob(0, "seed of the train/test split of the images", minimum=0),
    }
    defaults = TrainingDefaults(
        budget=100_000, batch_size=64, lr=3e-3, threshold=0.8, evaluations=40
    )

    @property
    def n(self) -> int:
        return self.knobs["n"]

    @property
    def m(self) -> int:
        return self.knobs["m"]

    @cached_property
    def ports(self) -> dict[str, PortSpec]:
        specs: dict[str, PortSpec] = {}
        for i in range(1, self.n + 1):
            specs[f"digit_{i}"] = PortSpec("class", CLASSES, 1.0 / CLASSES)
            specs[f"sum_{i}"] = PortSpec("class", self.m, 1.0 / self.m)
        return specs

    @property
    def output(self) -> str:
        return f"sum_{self.n}"

    def build_system(self) -> DigitChainSystem:
        s = self.knobs
        return DigitChainSystem(
            self.n, self.m, s["recognizer_width"], s["adder_width"], s["share_adders"]
        )

    @property
    def _pools(self):
        return digit_pools(split_seed=self.knobs["split_seed"])

    def _train_pool(self) -> tuple[Tensor, Tensor]:
        """Training images and labels, on the data device while training keeps them there."""
        pools = self._pools
        return self.on_data_device(pools.train_images), self.on_data_device(pools.train_labels)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        images, labels = self._train_pool()
        index = torch.randint(len(labels), (batch_size, self.n), generator=generator)
        return self._tuples(images, labels, moved(index, labels.device))

    def sample_seeds(self, batch_size: int, generators: list[torch.Generator]) -> Batch:
        images, labels = self._train_pool()
        shape = (batch_size, self.n)
        index = torch.stack([torch.randint(len(labels), shape, generator=g) for g in generators])
        return self._tuples(images, labels, moved(index, labels.device))

    @cached_property
    def _test(self) -> Batch:
        pools = self._pools
        generator = torch.Generator().manual_seed(TEST_SEED + self.knobs["split_seed"])
        shape = (self.knobs["test_size"], self.n)
        index = torch.randint(len(pools.test_labels), shape, generator=generator)
        return self._tuples(pools.test_images, pools.test_labels, index)

    def test_set(self) -> Batch:
        return self._test

    def _tuples(self, images: Tensor, labels: Tensor, index: Tensor) -> Batch:
        digits = labels[index]  # (..., B, n): index may have leading (seed) dimensions
        partial = digits.cumsum(dim=-1) % self.m  # (..., B, n)
        targets = {f"digit_{i + 1}": digits[..., i] for i in range(self.n)}
        targets |= {f"sum_{i + 1}": partial[..., i] for i in range(self.n)}
        return Batch({"images": images[index]}, targets)  # images: (..., B, n, 64)
