"""parity: learn a random parity of d bits (Shalev-Shwartz et al. 2017, section 2).

Input: x uniform in {0, 1}^d, given as 0./1. floats. A hidden subset v* of the bits,
fixed by ``subset_seed``, defines the target y = (-1)^<x, v*> (+1 or -1). By default
(``subset_size`` 0) v* is uniform over the non-empty subsets, as in the paper (each bit
in with probability 1/2, redrawn if empty); ``subset_size`` s > 0 picks exactly s bits.

One module, ``net``: one hidden ReLU layer of width 10 d and one score, trained with the
hinge loss and plain SGD. Port ``parity`` (binary) is the output. With a single module
every strategy other than ``e2e`` degenerates to it (or to something close).

Two designs, by the ``online`` knob. Online (the paper's): every training example is a
fresh uniform draw from all 2^d inputs and the test set is another such draw, so the
test accuracy is the accuracy over the input distribution, and what is measured is the
speed of optimisation, as in the paper (for small d, test inputs also occur in
training, by design). Disjoint (the default): no training input is ever a test input,
which measures generalisation to unseen inputs; at d = 8 that leaves about 205 training
inputs, which a width-80 network memorises without learning the parity.

Disjoint train/test: the input space is partitioned by a fixed hash. An input x is a
test input iff frac(phi * (x . w)) < 0.2, with phi the golden ratio and w fixed random
integer weights, so about 20% of all 2^d inputs are test inputs and the rest training
inputs. Both sets are drawn uniformly from their part by vectorised rejection. The test
set has ``test_size`` examples; for small d it repeats inputs (d = 10: 212 distinct
test inputs), and no training input is ever a test input.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import cached_property

import torch
from torch import Tensor

from e2elab.errors import E2ELabError
from e2elab.modules import mlp
from e2elab.system import System
from e2elab.task import Batch, Knob, Population, PortSpec, Task, TrainingDefaults

TEST_SEED = 30_000
HASH_SEED = 30_001
TEST_FRACTION = 0.2
_PHI = (math.sqrt(5) - 1) / 2
MAX_D = 4096
MAX_ENUMERATED_D = 20  # the exact SNR sums over at most 2^20 inputs


class ParitySystem(System):
    """net: bits -> FC 10 d ReLU -> one score."""

    def __init__(self, d: int):
        super().__init__(net=mlp(d, 10 * d, 1, layers=1))

    def forward(self, batch: Batch) -> Tensor:
        return self.port("parity", self.net(batch.x["bits"]))  # (B, 1)


class Parity(Task):
    name = "parity"
    description = "(-1)^<x, v*> for x uniform in {0,1}^d and a hidden subset v* (2017)"
    knobs = {
        "d": Knob(10, "number of input bits", minimum=8),
        "subset_size": Knob(0, "bits in the hidden subset (0: each bit with p = 1/2)", minimum=0),
        "subset_seed": Knob(0, "seed of the hidden subset v*", minimum=0),
        "test_size": Knob(2000, "number of held-out examples", minimum=100),
        "online": Knob(False, "train and test on fresh draws from all 2^d inputs (the paper)"),
    }
    defaults = TrainingDefaults(
        budget=200_000, batch_size=32, lr=0.3, threshold=0.9, optimizer="sgd"
    )

    def __init__(self, **knobs) -> None:
        super().__init__(**knobs)
        d, size = self.knobs["d"], self.knobs["subset_size"]
        if d > MAX_D:
            raise E2ELabError(f"task parity: d must be at most {MAX_D}, got {d}")
        if size > d:
            raise E2ELabError(f"task parity: subset_size must be at most d = {d}, got {size}")

    @property
    def d(self) -> int:
        return self.knobs["d"]

    @cached_property
    def subset(self) -> Tensor:
        """v* as a (d,) 0./1. float vector."""
        generator = torch.Generator().manual_seed(self.knobs["subset_seed"])
        size = self.knobs["subset_size"]
        if size:
            v = torch.zeros(self.d)
            v[torch.randperm(self.d, generator=generator)[:size]] = 1.0
            return v
        v = torch.zeros(self.d)
        while not v.any():  # the empty subset would make y constant
            v = torch.randint(0, 2, (self.d,), generator=generator).float()
        return v

    @cached_property
    def ports(self) -> dict[str, PortSpec]:
        return {"parity": PortSpec("binary", 1, 0.5)}

    @property
    def output(self) -> str:
        return "parity"

    def build_system(self) -> ParitySystem:
        return ParitySystem(self.d)

    @cached_property
    def _hash_weights(self) -> Tensor:
        # integers below 2**24: x . w < d * 2**24 is exact in float64, and frac(phi * h)
        # keeps about 53 - 36 = 17 bits of precision for d <= MAX_D
        generator = torch.Generator().manual_seed(HASH_SEED)
        return torch.randint(0, 2**24, (self.d,), generator=generator, dtype=torch.float64)

    def is_test_input(self, bits: Tensor) -> Tensor:
        """(n,) bool: which of the (n, d) inputs lie in the test part of the input space."""
        h = bits.to(torch.float64) @ self._hash_weights
        return torch.frac(h * _PHI) < TEST_FRACTION

    def target(self, bits: Tensor) -> Tensor:
        """(-1)^<x, v*> as a (n,) long tensor of +-1."""
        odd = (bits @ self.subset).round().long() % 2
        return 1 - 2 * odd

    def _draw(self, n: int, generator: torch.Generator, test: bool) -> Tensor:
        """n inputs uniform over the test (or training) part, by vectorised rejection;
        online, uniform over all inputs."""
        if self.knobs["online"]:
            return torch.randint(0, 2, (n, self.d), generator=generator).float()
        rate = TEST_FRACTION if test else 1 - TEST_FRACTION
        kept: list[Tensor] = []
        have = 0
        while have < n:
            m = int((n - have) / rate * 1.2) + 16
            bits = torch.randint(0, 2, (m, self.d), generator=generator).float()
            bits = bits[self.is_test_input(bits) == test]
            kept.append(bits)
            have += len(bits)
        return torch.cat(kept)[:n]

    def _batch(self, bits: Tensor) -> Batch:
        return Batch({"bits": bits}, {"parity": self.target(bits)})

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        return self._batch(self._draw(batch_size, generator, test=False))

    @cached_property
    def _test(self) -> Batch:
        generator = torch.Generator().manual_seed(TEST_SEED)
        return self._batch(self._draw(self.knobs["test_size"], generator, test=True))

    def test_set(self) -> Batch:
        return self._test

    def population(self) -> Population | None:
        """Every training input with equal probability (online: all 2^d inputs), for
        d <= MAX_ENUMERATED_D."""
        if self.d > MAX_ENUMERATED_D:
            return None
        online = self.knobs["online"]
        count = 2**self.d
        if not online:  # the size of the training part, counted a block at a time
            count = sum(int((~self.is_test_input(bits)).sum()) for bits in self._inputs(1 << 16))

        def chunks(size: int) -> Iterator[tuple[Batch, Tensor]]:
            for bits in self._inputs(size):
                if not online:
                    bits = bits[~self.is_test_input(bits)]
                if len(bits):
                    yield self._batch(bits), torch.full((len(bits),), 1.0 / count)

        return Population(count, chunks)

    def _inputs(self, size: int) -> Iterator[Tensor]:
        """All 2^d inputs as (<= size, d) 0./1. blocks, in order."""
        powers = 2 ** torch.arange(self.d)
        for start in range(0, 2**self.d, size):
            index = torch.arange(start, min(start + size, 2**self.d))
            yield ((index[:, None] // powers) % 2).float()
