"""sequence-copy: read a row of 1..n handwritten digits and write it back reversed.

A small task for the ``sequence`` port kind, and a miniature of captioning: a shared
``recognizer`` reads each 8x8 digit image (scikit-learn's bundled digits, split by image)
into a digit code (a ``class`` port per position, ``digits``), and a GRU ``decoder``
writes the token sequence "d_L ... d_1 <end>" followed by padding (a ``sequence`` port,
``tokens``). Rows have 1 to n digits, so the padding varies.

The decoder is teacher-forced with the reference tokens while it trains and decodes
greedily, feeding back its own tokens, in evaluation (``System.training``).
"""

from __future__ import annotations

from functools import cached_property

import torch
from torch import Tensor, nn

from e2elab.data.digits import CLASSES, IMAGE_PIXELS, digit_pools
from e2elab.modules import mlp
from e2elab.ops import softmax
from e2elab.ports import SequenceKind
from e2elab.system import System
from e2elab.task import Batch, Knob, PortSpec, Task, TrainingDefaults

END = CLASSES  # token 10: end of sequence
PAD = CLASSES + 1  # token 11: after the end
VOCAB = CLASSES + 2
TEST_SEED = 40_000


class SequenceCopySystem(System):
    """recognizer (shared, per image) -> digits; decoder (GRU) -> tokens."""

    def __init__(self, n: int, width: int) -> None:
        super().__init__(
            recognizer=mlp(IMAGE_PIXELS, width, CLASSES),
            decoder=_Decoder(n, width),
        )
        self.n = n

    def forward(self, batch: Batch) -> Tensor:
        images, present = batch.x["images"], batch.x["present"]  # (B, n, 64), (B, n)
        size = images.shape[0]
        codes = self.recognizer(images.reshape(size * self.n, IMAGE_PIXELS))
        digits = self.port("digits", codes.reshape(size, self.n, CLASSES))  # (B, n, 10)
        soft = softmax(digits) * present.unsqueeze(-1).to(digits.dtype)  # absent -> 0
        reference = batch.targets.get("tokens") if self.training else None
        return self.port("tokens", self.decoder(soft, present, reference))  # (B, n+1, 12)


class _Decoder(nn.Module):
    """Soft digit codes of every position -> initial state; then one token per step,
    from the previous token (the reference while training, its own arg-max otherwise)."""

    def __init__(self, n: int, width: int) -> None:
        super().__init__()
        self.n = n
        self.start = nn.Linear(n * (CLASSES + 1), width)
        self.embed = nn.Embedding(VOCAB + 1, width)  # + a start token
        self.cell = nn.GRUCell(width, width)
        self.read = nn.Linear(width, VOCAB)

    def forward(self, soft: Tensor, present: Tensor, reference: Tensor | None) -> Tensor:
        size = soft.shape[0]
        flat = torch.cat([soft, present.unsqueeze(-1).to(soft.dtype)], -1).reshape(size, -1)
        state = torch.tanh(self.start(flat))  # (B, width)
        token = torch.full((size,), VOCAB, dtype=torch.long, device=soft.device)  # start
        steps = []
        for t in range(self.n + 1):
            state = self.cell(self.embed(token), state)
            logits = self.read(state)  # (B, VOCAB)
            steps.append(logits)
            token = reference[:, t] if reference is not None else logits.argmax(-1)
        return torch.stack(steps, dim=1)  # (B, n+1, VOCAB)


class SequenceCopy(Task):
    name = "sequence-copy"
    description = "write a row of 1..n handwritten digits back reversed (sequence port)"
    knobs = {
        "n": Knob(3, "most digits in a row", minimum=1, maximum=32),
        "width": Knob(64, "hidden width of recognizer and decoder", minimum=1),
        "test_size": Knob(2000, "number of held-out rows", minimum=100),
    }
    defaults = TrainingDefaults(
        budget=60_000, batch_size=64, lr=3e-3, threshold=0.9, evaluations=20
    )

    @property
    def n(self) -> int:
        return self.knobs["n"]

    @cached_property
    def ports(self) -> dict[str, PortSpec]:
        return {
            "digits": PortSpec("class", CLASSES, 1.0 / CLASSES),
            # chance: the test set's most common token (see SequenceKind.chance_level)
            "tokens": PortSpec(SequenceKind(pad=PAD), VOCAB, 1.0 / CLASSES),
        }

    @property
    def output(self) -> str:
        return "tokens"

    def build_system(self) -> SequenceCopySystem:
        return SequenceCopySystem(self.n, self.knobs["width"])

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        pools = digit_pools()
        return self._rows(pools.train_images, pools.train_labels, batch_size, generator)

    @cached_property
    def _test(self) -> Batch:
        pools = digit_pools()
        generator = torch.Generator().manual_seed(TEST_SEED)
        size = self.knobs["test_size"]
        return self._rows(pools.test_images, pools.test_labels, size, generator)

    def test_set(self) -> Batch:
        return self._test

    def _rows(self, images: Tensor, labels: Tensor, size: int, generator: torch.Generator) -> Batch:
        n = self.n
        index = torch.randint(len(labels), (size, n), generator=generator)
        lengths = torch.randint(1, n + 1, (size,), generator=generator)  # (B,)
        present = torch.arange(n).unsqueeze(0) < lengths.unsqueeze(1)  # (B, n)
        digits = labels[index]  # (B, n)
        tokens = torch.full((size, n + 1), PAD, dtype=torch.long)
        position = lengths.unsqueeze(1) - 1 - torch.arange(n).unsqueeze(0)  # reversed index
        valid = position >= 0
        tokens[:, :n] = torch.where(valid, digits.gather(1, position.clamp_min(0)), PAD)
        tokens[torch.arange(size), lengths] = END
        # absent positions keep real images (and digit targets); only the decoder skips them
        x = {"images": images[index], "present": present.float()}
        return Batch(x, {"digits": digits, "tokens": tokens})
