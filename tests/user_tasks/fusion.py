"""Two encoders in parallel feed a fusion module that emits a class port and a regression
port: a DAG with its own ports and targets, defined outside e2elab."""

from __future__ import annotations

import torch
from torch import nn

from e2elab import Batch, Knob, PortSpec, Settings, System, Task


class FusionSystem(System):
    def __init__(self, width: int) -> None:
        super().__init__(
            left=nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 2)),
            right=nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 2)),
            fusion=nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 3)),
        )

    def forward(self, batch: Batch) -> torch.Tensor:
        a = self.port("side_left", self.left(batch.x["left"]))  # (B, 2) logits
        b = self.port("side_right", self.right(batch.x["right"]))  # (B, 2)
        fused = self.fusion(torch.cat([a.softmax(-1), b.softmax(-1)], -1))  # (B, 3)
        self.port("distance", fused[:, 2:])  # (B, 1) regression
        return self.port("both", fused[:, :2])  # (B, 2) logits: both on the positive side


class Fusion(Task):
    name = "fusion"
    description = "two encoders in parallel, a fusion module with a class and a regression port"
    knobs = {"width": Knob(16, "hidden width", minimum=1), "scale": Knob(1.0, "distance scale")}
    defaults = Settings(budget=4000, batch_size=64, lr=3e-3, threshold=0.9, evaluations=4)

    @property
    def ports(self) -> dict[str, PortSpec]:
        return {
            "side_left": PortSpec("class", 2, 0.5),
            "side_right": PortSpec("class", 2, 0.5),
            "distance": PortSpec("regression", 1, 0.0, weight=0.1),
            "both": PortSpec("class", 2, 0.5),
        }

    @property
    def output(self) -> str:
        return "both"

    def build_system(self) -> FusionSystem:
        return FusionSystem(self.knobs["width"])

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        return self._draw(batch_size, generator, test=False)

    def test_set(self) -> Batch:
        return self._draw(500, torch.Generator().manual_seed(1), test=True)

    def _draw(self, size: int, generator: torch.Generator, test: bool) -> Batch:
        left, right = (torch.randn(size, 4, generator=generator) for _ in range(2))
        # disjoint by construction: training points have left[:, 3] > 0, test points < 0
        left[:, 3] = left[:, 3].abs() * (-1 if test else 1)
        side_left, side_right = (left[:, 0] > 0).long(), (right[:, 0] > 0).long()
        distance = self.knobs["scale"] * (left[:, :1] - right[:, :1])  # (B, 1)
        targets = {
            "side_left": side_left,
            "side_right": side_right,
            "distance": distance,
            "both": side_left & side_right,
        }
        return Batch({"left": left, "right": right}, targets)
