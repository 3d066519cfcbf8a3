"""stocks: pick the one of k choices that pays, from rewards alone or from labels
(Shalev-Shwartz et al. 2017, section 3.2).

Input: x one-hot in d dimensions (x uniform over the d values). Each x has a hidden
correct choice y(x) in 0..k-1, a fixed random table drawn from ``table_seed``. The
reward vector z in {-1, +1}^k has z_y = +1 and its other entries independently +-1 with
probability 1/2, fresh for every example.

One module, ``policy``: linear, d -> k logits. Ports: ``choice`` (the logits; class,
target y) and ``reward`` (the same logits passed on; reward, target z, metric the mean
reward of the arg-max choice, chance 1/k: the expected reward of a uniformly random
choice). ``reward`` is computed from ``choice``, so with every port cut it has no
producer module: ``e2e`` maximises the expected reward z . softmax(logits), and training
``policy`` on ``choice`` alone is the paper's decomposition (multiclass learning of y).

Train/test disjointness: the x values are shared between training and test by design
(there are only d of them and a linear policy cannot generalise to an unseen one-hot
input; the paper holds out no inputs). What is tested is whether the policy learned y(x).
Test examples are (x, z) pairs from their own fixed generator; a training pair whose
hash equals the hash of a test pair (same x and same z) is redrawn, vectorised, so no
training pair equals a test pair. So that this rejection never starves an x of training
pairs, the test set may hold at most a quarter of the d * 2^(k-1) possible pairs.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property

import torch
from scipy.linalg import hadamard
from torch import Tensor, nn

from e2elab.errors import E2ELabError
from e2elab.system import System
from e2elab.task import Batch, Knob, Population, PortSpec, Task, TrainingDefaults

TEST_SEED = 40_000
HASH_SEED = 40_001


class StocksSystem(System):
    """policy: one-hot x -> k logits, emitted as ``choice`` and passed on as ``reward``."""

    def __init__(self, d: int, k: int):
        super().__init__(policy=nn.Linear(d, k))

    def forward(self, batch: Batch) -> Tensor:
        logits = self.port("choice", self.policy(batch.x["x"]))  # (B, k)
        return self.port("reward", logits)


class Stocks(Task):
    name = "stocks"
    description = "choose the paying one of k options: from rewards or from labels (2017)"
    knobs = {
        "d": Knob(1000, "number of distinct inputs (one-hot dimension)", minimum=1, maximum=10**6),
        "k": Knob(10, "number of choices (paper: 10, 1000, 2000)", minimum=4, maximum=10**5),
        "table_seed": Knob(0, "seed of the hidden table of correct choices y(x)", minimum=0),
        "test_size": Knob(2000, "number of held-out (x, z) pairs", minimum=100),
    }
    # k = 10: every strategy reaches 1.0 within 10k examples; k = 1000: e2e reaches 0.83 at
    # 10k and 0.98 at 20k examples, training on `choice` 1.0 at 10k
    defaults = TrainingDefaults(budget=50_000, batch_size=100, lr=0.1, threshold=0.9)

    def __init__(self, **knobs) -> None:
        super().__init__(**knobs)
        s = self.knobs
        pairs = s["d"] * 2 ** (s["k"] - 1)
        if 4 * s["test_size"] > pairs:
            raise E2ELabError(
                f"task stocks: test_size {s['test_size']} is more than a quarter of the "
                f"{pairs} possible (x, z) pairs; lower test_size or raise d or k"
            )

    @property
    def d(self) -> int:
        return self.knobs["d"]

    @property
    def k(self) -> int:
        return self.knobs["k"]

    @cached_property
    def table(self) -> Tensor:
        """y(x) for each of the d inputs: (d,) long in 0..k-1."""
        generator = torch.Generator().manual_seed(self.knobs["table_seed"])
        return torch.randint(0, self.k, (self.d,), generator=generator)

    @cached_property
    def ports(self) -> dict[str, PortSpec]:
        return {
            "choice": PortSpec("class", self.k, 1.0 / self.k),
            "reward": PortSpec("reward", self.k, 1.0 / self.k),
        }

    @property
    def output(self) -> str:
        return "reward"

    def build_system(self) -> StocksSystem:
        return StocksSystem(self.d, self.k)

    @cached_property
    def _hash_weights(self) -> tuple[Tensor, Tensor]:
        # integers below 2**53 / (k + 1): a sum of k + 1 of them is exact in float64
        generator = torch.Generator().manual_seed(HASH_SEED)
        top = 2**53 // (self.k + 1)
        by_x = torch.randint(0, top, (self.d,), generator=generator, dtype=torch.float64)
        by_z = torch.randint(0, top, (self.k,), generator=generator, dtype=torch.float64)
        return by_x, by_z

    def pair_hash(self, x: Tensor, z: Tensor) -> Tensor:
        """An int64 hash of each (x index, reward vector) pair; equal pairs hash equally."""
        by_x, by_z = self._hash_weights
        return (by_x[x] + (z > 0).to(torch.float64) @ by_z).to(torch.int64)

    def draw(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """n pairs: x indices (n,) long and reward vectors z (n, k) of +-1 floats."""
        x = torch.randint(0, self.d, (n,), generator=generator)
        z = torch.randint(0, 2, (n, self.k), generator=generator).float() * 2 - 1
        z[torch.arange(n), self.table[x]] = 1.0
        return x, z

    def _draw_avoiding(
        self, n: int, generator: torch.Generator, banned: Tensor
    ) -> tuple[Tensor, Tensor]:
        x, z = self.draw(n, generator)
        clash = torch.isin(self.pair_hash(x, z), banned)
        while clash.any():
            index = clash.nonzero().squeeze(1)
            x[index], z[index] = self.draw(len(index), generator)
            clash = torch.zeros_like(clash)
            clash[index] = torch.isin(self.pair_hash(x[index], z[index]), banned)
        return x, z

    def _batch(self, x: Tensor, z: Tensor) -> Batch:
        one_hot = nn.functional.one_hot(x, self.d).float()
        return Batch({"x": one_hot}, {"choice": self.table[x], "reward": z})

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        return self._batch(*self._draw_avoiding(batch_size, generator, self._test_hashes))

    @cached_property
    def _test_pairs(self) -> tuple[Tensor, Tensor]:
        generator = torch.Generator().manual_seed(TEST_SEED)
        return self.draw(self.knobs["test_size"], generator)

    @cached_property
    def _test_hashes(self) -> Tensor:
        return torch.unique(self.pair_hash(*self._test_pairs))

    @cached_property
    def _test(self) -> Batch:
        return self._batch(*self._test_pairs)

    def test_set(self) -> Batch:
        return self._test

    def population(self) -> Population:
        """Each of the d inputs with N reward vectors, N = 2^ceil(log2 k): z_y = +1 and the
        other k - 1 entries from k - 1 columns of a Sylvester-Hadamard matrix of order N
        (not its all-ones column). Those columns have mean 0 and are orthogonal, so over
        the N rows the entries have mean 0, variance 1 and no correlation: the first two
        moments of independent fair +-1 entries. Every loss here is linear in z (the
        expected reward z . softmax) or ignores it (``choice``), so each example's
        gradient is linear in z, and its mean and variance over this population are
        exactly those over the task's distribution (up to the few pairs that equal a test
        pair, which training redraws: at most test_size of the d 2^(k-1) pairs)."""
        rows = 1 << max(0, (self.k - 1).bit_length())
        design = torch.from_numpy(hadamard(rows)).float()[:, 1 : self.k]  # (N, k-1)
        padded = torch.cat([torch.ones(rows, 1), design], 1)  # column 0: the +1 at y

        def chunks(size: int) -> Iterator[tuple[Batch, Tensor]]:
            per = max(1, size // rows)
            for start in range(0, self.d, per):
                x = torch.arange(start, min(start + per, self.d)).repeat_interleave(rows)
                n = len(x)
                # column j of z: design column j (j < y) or j - 1 (j > y); +1 at j = y
                z = torch.cat([padded[:, self._pick(int(y))] for y in self.table[x[::rows]]])
                yield self._batch(x, z), torch.full((n,), 1.0 / (self.d * rows))

        return Population(self.d * rows, chunks)

    def _pick(self, y: int) -> Tensor:
        """Columns of [1 | design] that make a reward vector with its +1 at ``y``."""
        column = torch.arange(self.k)
        return torch.where(column == y, 0, column + (column < y))
