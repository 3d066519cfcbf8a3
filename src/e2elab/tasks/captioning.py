"""captioning: a CNN encoder feeding a GRU decoder that writes what a scene holds.

Scenes (``e2elab.data.scenes``) hold 1 to N coloured shapes; the caption lists them left
to right, "a small red square left of a large blue circle". The system:

- ``encoder``: a small CNN, image -> a feature vector, with an attribute head whose
  outputs are ports: per object slot (left to right) its shape, colour, size and column
  (``shape_k``, ``colour_k``, ``size_k``, ``column_k``; class 0 = no object there). These
  are the intermediate targets that give a two-phase schedule its first phase.
- ``decoder``: a GRU, feature vector -> caption (a ``caption`` port of token logits),
  teacher-forced with the reference tokens while it trains, decoding greedily (its own
  previous token) in evaluation and stopping at the end token.

The feature vector passes as a port without a target (``features``): the decoder reads
the encoder's features, not its attribute head, so end-to-end training is the usual
captioner, and a schedule that trains the decoder after the encoder (``greedy``: the
encoder on the attributes, frozen, then the decoder on captions from its features) is
the two-phase one.

The output's metric is exact-caption accuracy; token accuracy and BLEU (sacrebleu) are
reported beside it. After training, ``artifacts`` parses every test caption back into
objects, scores each attribute, and splits the errors against the encoder's attribute
head (see ``caption_errors`` for what that split can and cannot say).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from e2elab.data import scenes
from e2elab.modules import conv_stages
from e2elab.ports import SequenceKind
from e2elab.system import System
from e2elab.task import Batch, Knob, PortSpec, Task, TrainingDefaults

VOCAB = len(scenes.WORDS)
GALLERY = 8  # test scenes whose captions every run keeps


class CaptionKind(SequenceKind):
    """A caption: token logits (B, T, V). The metric is exact-caption accuracy (every
    token up to and with the end token right); ``tokens`` is token accuracy and ``bleu``
    corpus BLEU (sacrebleu, 0-100) of the decoded captions against the references."""

    name = "caption"
    metric_name = "exact-caption accuracy"

    def __init__(self) -> None:
        super().__init__(pad=scenes.PAD)

    def metrics(self, value: Tensor, target: Tensor) -> dict[str, float]:
        base = super().metrics(value, target)
        decoded = value.argmax(-1).cpu().numpy()
        references = target.cpu().numpy()
        hypotheses = [scenes.text(row) for row in decoded]
        truth = [scenes.text(row) for row in references]
        import sacrebleu  # loads here, not where a worker imports the tasks

        bleu = sacrebleu.corpus_bleu(hypotheses, [truth], tokenize="none").score
        return {"": base["exact"], "tokens": base[""], "bleu": bleu}

    def chance_level(self, declared: float, targets: Tensor) -> float:
        """What a learner that ignores the image gets right: the share of the most common
        whole caption among the targets (it writes that caption for every scene)."""
        _, counts = torch.unique(targets, dim=0, return_counts=True)
        return max(declared, counts.max().item() / len(targets))


class Encoder(nn.Module):
    """Two conv + pool stages, a feature vector, and the attribute head."""

    def __init__(self, objects: int, width: int, features: int) -> None:
        super().__init__()
        self.objects = objects
        self.convs = nn.Sequential(*conv_stages(3, width))
        cells = (scenes.HEIGHT // 4) * (scenes.WIDTH // 4)
        self.project = nn.Sequential(nn.Linear(2 * width * cells, features), nn.ReLU())
        self.sizes = {name: len(values) + 1 for name, values in scenes.ATTRIBUTES.items()}
        self.head = nn.Linear(features, objects * sum(self.sizes.values()))

    def forward(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        features = self.project(self.convs(images))
        heads = self.head(features).reshape(len(images), self.objects, -1)
        out, start = {}, 0
        for name, size in self.sizes.items():
            out[name] = heads[..., start : start + size]  # (B, N, size)
            start += size
        return features, out


class Decoder(nn.Module):
    """Features -> initial state; one token per step from the previous one (the
    reference while training, its own arg-max in evaluation, PAD after the end)."""

    def __init__(self, features: int, width: int, length: int) -> None:
        super().__init__()
        self.length = length
        self.start = nn.Linear(features, width)
        self.embed = nn.Embedding(VOCAB, width)
        self.cell = nn.GRUCell(width, width)
        self.read = nn.Linear(width, VOCAB)

    def forward(self, features: Tensor, reference: Tensor | None) -> Tensor:
        size = features.shape[0]
        state = torch.tanh(self.start(features))
        token = torch.full((size,), scenes.START, dtype=torch.long, device=features.device)
        ended = torch.zeros(size, dtype=torch.bool, device=features.device)
        # what a decoded caption holds after its end token (built without writing a host
        # scalar into device memory, which would make the host wait for the device)
        vocab = torch.arange(VOCAB, device=features.device)
        after = torch.where(vocab == scenes.PAD, 1e4, -1e4).to(features.dtype)
        steps = []
        for t in range(self.length):
            state = self.cell(self.embed(token), state)
            logits = self.read(state)  # (B, V)
            if reference is None:
                logits = torch.where(ended.unsqueeze(-1), after, logits)
                token = logits.argmax(-1)
                ended = ended | (token == scenes.END)
            else:
                token = reference[:, t]
            steps.append(logits)
        return torch.stack(steps, dim=1)  # (B, T, V)


class CaptioningSystem(System):
    def __init__(self, objects: int, width: int, features: int, decoder_width: int) -> None:
        super().__init__(
            encoder=Encoder(objects, width, features),
            decoder=Decoder(features, decoder_width, scenes.caption_length(objects)),
        )
        self.objects = objects

    def forward(self, batch: Batch) -> Tensor:
        features, heads = self.encoder(batch.x["images"])
        for name, logits in heads.items():
            for k in range(self.objects):
                self.port(f"{name}_{k + 1}", logits[:, k])
        # a port without a target: plumbing between the modules (see the module docstring)
        features = self.port("features", features)
        reference = batch.targets.get("caption") if self.training else None
        return self.port("caption", self.decoder(features, reference))


class Captioning(Task):
    name = "captioning"
    revision = 1  # channels-last convolutions on the CPU (numerics.conv_layout)
    description = "caption scenes of 1..N coloured shapes: a CNN encoder and a GRU decoder"
    knobs = {
        "objects": Knob(
            2, "most objects per scene (complexity)", minimum=1, maximum=scenes.MAX_OBJECTS
        ),
        "width": Knob(16, "channels of the encoder's first conv layer", minimum=1),
        "features": Knob(128, "size of the encoder's feature vector", minimum=1),
        "decoder_width": Knob(128, "hidden width of the GRU decoder", minimum=1),
        "noise": Knob(0.05, "pixel noise (standard deviation)", minimum=0.0, maximum=1.0),
        "test_size": Knob(1000, "number of held-out scenes", minimum=100, maximum=100_000),
    }
    defaults = TrainingDefaults(
        budget=100_000, batch_size=64, lr=2e-3, threshold=0.8, evaluations=20
    )

    @property
    def objects(self) -> int:
        return self.knobs["objects"]

    @cached_property
    def ports(self) -> dict[str, PortSpec]:
        specs = {}
        for name, values in scenes.ATTRIBUTES.items():
            for k in range(1, self.objects + 1):
                specs[f"{name}_{k}"] = PortSpec("class", len(values) + 1, 1.0 / (len(values) + 1))
        specs["caption"] = PortSpec(CaptionKind(), VOCAB, 0.0)
        return specs

    @property
    def output(self) -> str:
        return "caption"

    def build_system(self) -> CaptioningSystem:
        s = self.knobs
        return CaptioningSystem(self.objects, s["width"], s["features"], s["decoder_width"])

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        seed = int(torch.randint(2**62, (1,), generator=generator).item())
        return self._batch(
            scenes.generate(batch_size, self.objects, seed, noise=self.knobs["noise"])
        )

    @cached_property
    def _test(self) -> Batch:
        return self._batch(self.test_scenes())

    def test_scenes(self) -> scenes.Scenes:
        return scenes.test_scenes(self.objects, self.knobs["test_size"], self.knobs["noise"])

    def test_set(self) -> Batch:
        return self._test

    def _batch(self, drawn: scenes.Scenes) -> Batch:
        targets = {
            f"{name}_{k + 1}": torch.from_numpy(drawn.attribute(name)[:, k] + 1)
            for name in scenes.ATTRIBUTES
            for k in range(self.objects)
        }
        targets["caption"] = torch.from_numpy(drawn.captions())
        return Batch({"images": torch.from_numpy(drawn.images)}, targets)

    def artifacts(self, system: torch.nn.Module) -> dict[str, Any]:
        """Every test caption parsed back into objects and scored per attribute; the
        errors traced to the module that made them; the gallery's captions."""
        test = self.test_set().to(next(system.parameters()).device)
        was = system.training
        system.eval()
        with torch.no_grad():
            ports = system.run_ports(test)  # type: ignore[operator]
        system.train(was)
        decoded = ports["caption"].argmax(-1).cpu().numpy()
        heads = {
            name: np.stack(
                [
                    ports[f"{name}_{k + 1}"].argmax(-1).cpu().numpy() - 1
                    for k in range(self.objects)
                ],
                axis=1,
            )
            for name in ("shape", "colour", "size")
        }
        out = caption_errors(self.test_scenes(), decoded, heads)
        out["gallery"] = [scenes.text(row) for row in decoded[:GALLERY]]
        return out


def caption_errors(
    truth: scenes.Scenes, decoded: np.ndarray, heads: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Score decoded captions against their scenes, attribute by attribute, and split
    the errors against the encoder's attribute head (``heads``: per attribute, the
    head's value per scene and slot, -1 for "no object").

    - A caption that is not in the grammar is the decoder's (``malformed``).
    - One with the wrong number of objects (``wrong_count``) is the encoder's where the
      head also counts wrong, else the decoder's.
    - In one that parses with the right count, a wrong attribute word is the encoder's
      where the head also has that attribute of that object wrong (the encoder's
      features did not separate it, as far as its head shows), else the decoder's (the
      head had it: the decoder lost it on the way).

    The split reads the head, so it means something only where the head was trained on
    the attributes and not changed since (``head_accuracy`` says how good it is: under
    e2e it never trains, and fine-tuning moves the features under it)."""
    attributes = {"size": scenes.SIZES, "colour": scenes.COLOURS, "shape": scenes.SHAPES}
    malformed = wrong_count = 0
    right = {name: 0 for name in attributes}
    slots = 0
    blame = {"encoder": 0, "decoder": 0}
    count_blame = {"encoder": 0, "decoder": 0}
    head_count = (heads["shape"] >= 0).sum(axis=1)
    for i, row in enumerate(decoded):
        objects = scenes.parse(scenes.text(row))
        if objects is None:
            malformed += 1
            continue
        actual = int(truth.count[i])
        if len(objects) != actual:
            wrong_count += 1
            count_blame["encoder" if int(head_count[i]) != actual else "decoder"] += 1
            continue
        for k, said in enumerate(objects):
            slots += 1
            for a, (name, values) in enumerate(attributes.items()):
                value = int(truth.attribute(name)[i, k])
                if said[a] == values[value]:
                    right[name] += 1
                    continue
                head_right = int(heads[name][i, k]) == value
                blame["decoder" if head_right else "encoder"] += 1
    total = len(decoded)
    present = truth.shape >= 0
    head_accuracy = {
        name: float((heads[name][present] == truth.attribute(name)[present]).mean())
        for name in attributes
    }
    return {
        "parsed": (total - malformed) / total,
        "malformed": malformed / total,
        "wrong_count": wrong_count / total,
        "wrong_count_blame": count_blame,
        # None where no caption parsed with the right count
        "attribute_accuracy": {
            name: (right[name] / slots if slots else None) for name in attributes
        },
        "attribute_errors": blame,
        "head_accuracy": head_accuracy,
    }
