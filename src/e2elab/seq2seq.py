"""A small encoder-decoder Transformer (``torch.nn.Transformer`` layers) for sequence
to sequence tasks, with greedy decoding on its own output.

- ``TokenEncoder``: token ids (B, L), or a distribution over tokens (B, L, V) whose
  expected embedding it reads (the differentiable interface of a cascade: the next
  stage reads the previous stage's soft tokens while training, its arg-max tokens in
  evaluation), -> memory (B, L, d) and a padding mask.
- ``AudioEncoder``: log-mel frames (B, T, mels) -> two stride-2 convolutions -> memory.
- ``Decoder``: memory -> logits (B, length, V). Given a reference (teacher forcing,
  training only) it runs once under a causal mask; without one it decodes step by step
  on its own output: greedy (arg-max tokens) in evaluation, and in training the
  expected embedding of its own softmax (so that a loss downstream reaches it), PAD
  forced after the end token either way.

Every position after a sequence's end holds PAD's logits (``after``), both when
teacher-forced and when decoding, so that a reader downstream sees the same padding.
Dropout is off: results are deterministic per seed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

PAD, BOS, EOS = 0, 1, 2
FORCED = 1e4  # the logit margin that writes a forced token


def _layers(d: int, heads: int, layers: int, decoder: bool) -> nn.Module:
    kind = nn.TransformerDecoderLayer if decoder else nn.TransformerEncoderLayer
    layer = kind(d, heads, dim_feedforward=2 * d, dropout=0.0, batch_first=True)
    if decoder:
        return nn.TransformerDecoder(layer, layers)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


def _causal(t: int, like: Tensor) -> Tensor:
    """The additive causal mask (t, t): -inf above the diagonal."""
    return torch.triu(torch.full((t, t), float("-inf"), device=like.device, dtype=like.dtype), 1)


class TokenEncoder(nn.Module):
    def __init__(self, vocabulary: int, d: int, heads: int, layers: int, length: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocabulary, d)
        self.positions = nn.Embedding(length, d)
        self.layers = _layers(d, heads, layers, decoder=False)
        self.scale = math.sqrt(d)

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        if tokens.dim() == 3:  # a distribution per position: its expected embedding
            weights = torch.softmax(tokens, -1) if self.training else _one_hot(tokens)
            x = weights @ self.embed.weight
            padding = tokens.argmax(-1) == PAD
        else:
            x = self.embed(tokens)
            padding = tokens == PAD
        # the first position is always read: a row with every key masked (an empty
        # pivot) would make attention NaN in evaluation's fast path
        padding = torch.cat([torch.zeros_like(padding[:, :1]), padding[:, 1:]], 1)
        x = x * self.scale + self.positions.weight[: x.shape[1]]
        return self.layers(x, src_key_padding_mask=padding), padding


class AudioEncoder(nn.Module):
    """Two stride-2 convolutions over log-mel frames, then Transformer layers."""

    def __init__(self, mels: int, d: int, heads: int, layers: int, frames: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv1d(mels, d, 5, stride=2, padding=2),
            nn.GELU(),
            nn.Conv1d(d, d, 5, stride=2, padding=2),
            nn.GELU(),
        )
        self.positions = nn.Embedding(frames // 4 + 2, d)
        self.layers = _layers(d, heads, layers, decoder=False)

    def forward(self, frames: Tensor, padding: Tensor) -> tuple[Tensor, Tensor]:
        x = self.convs(frames.transpose(1, 2)).transpose(1, 2)  # (B, T/4, d)
        kept = padding[:, ::4][:, : x.shape[1]]
        x = x + self.positions.weight[: x.shape[1]]
        return self.layers(x, src_key_padding_mask=kept), kept


def _one_hot(logits: Tensor) -> Tensor:
    return nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)


class Decoder(nn.Module):
    def __init__(self, vocabulary: int, d: int, heads: int, layers: int, length: int) -> None:
        super().__init__()
        self.length, self.vocabulary = length, vocabulary
        self.embed = nn.Embedding(vocabulary, d)
        self.positions = nn.Embedding(length, d)
        self.layers = _layers(d, heads, layers, decoder=True)
        self.read = nn.Linear(d, vocabulary)
        self.scale = math.sqrt(d)

    def _after(self, like: Tensor) -> Tensor:
        """PAD's logits: what every position after the end holds."""
        vocab = torch.arange(self.vocabulary, device=like.device)
        return torch.where(vocab == PAD, FORCED, -FORCED).to(like.dtype)

    def _run(self, inputs: Tensor, memory: Tensor, padding: Tensor) -> Tensor:
        t = inputs.shape[1]
        x = inputs * self.scale + self.positions.weight[:t]
        out = self.layers(
            x,
            memory,
            tgt_mask=_causal(t, x),
            memory_key_padding_mask=padding,
            tgt_is_causal=True,
        )
        return self.read(out)

    def forward(self, memory: Tensor, padding: Tensor, reference: Tensor | None) -> Tensor:
        if reference is not None:  # teacher forcing: one pass
            start = torch.full_like(reference[:, :1], BOS)
            inputs = self.embed(torch.cat([start, reference[:, :-1]], 1))
            logits = self._run(inputs, memory, padding)
            return torch.where((reference == PAD).unsqueeze(-1), self._after(logits), logits)
        # soft tokens only where a gradient can reach this decoder: a frozen one decodes
        # on its arg-max tokens, as at test time
        trains = self.training and any(p.requires_grad for p in self.parameters())
        return self.decode(memory, padding, soft=trains and torch.is_grad_enabled())

    def decode(self, memory: Tensor, padding: Tensor, soft: bool) -> Tensor:
        """Step by step on its own output: arg-max tokens, or (``soft``) the expected
        embedding of each step's softmax; PAD after the end token."""
        size = memory.shape[0]
        start = torch.full((size, 1), BOS, dtype=torch.long, device=memory.device)
        inputs = self.embed(start)
        ended = torch.zeros(size, 1, dtype=torch.bool, device=memory.device)
        steps = []
        after = None
        for _ in range(self.length):
            logits = self._run(inputs, memory, padding)[:, -1:]  # (B, 1, V)
            if after is None:
                after = self._after(logits)
            logits = torch.where(ended.unsqueeze(-1), after, logits)
            steps.append(logits)
            token = logits.argmax(-1)  # (B, 1)
            ended = ended | (token == EOS)
            step = torch.softmax(logits, -1) @ self.embed.weight if soft else self.embed(token)
            inputs = torch.cat([inputs, step], 1)
        return torch.cat(steps, 1)


class Seq2Seq(nn.Module):
    """A token encoder and a decoder: ids or soft tokens (B, L[, V]) -> logits."""

    def __init__(
        self, source: int, target: int, d: int, heads: int, layers: int, lengths: tuple[int, int]
    ) -> None:
        super().__init__()
        self.encoder = TokenEncoder(source, d, heads, layers, lengths[0])
        self.decoder = Decoder(target, d, heads, layers, lengths[1])

    def forward(self, tokens: Tensor, reference: Tensor | None) -> Tensor:
        memory, padding = self.encoder(tokens)
        return self.decoder(memory, padding, reference)


class Listener(nn.Module):
    """An audio encoder and a decoder: log-mel frames -> logits."""

    def __init__(
        self, mels: int, target: int, d: int, heads: int, layers: int, lengths: tuple[int, int]
    ) -> None:
        super().__init__()
        self.encoder = AudioEncoder(mels, d, heads, layers, lengths[0])
        self.decoder = Decoder(target, d, heads, layers, lengths[1])

    def forward(self, frames: Tensor, padding: Tensor, reference: Tensor | None) -> Tensor:
        memory, kept = self.encoder(frames, padding)
        return self.decoder(memory, kept, reference)
