"""driving: a camera image to steering, through perception and control or end to end.

The world is ``e2elab.data.driving``: procedural roads, a forward camera, a Stanley
expert that sees the true pose, and a kinematic bicycle. The system:

- ``perception``: a small CNN, camera image -> the car's lateral offset from the centre
  line (``offset``, metres, left positive) and heading error (``heading``, in units of
  0.1 rad): two regression ports;
- ``controller``: an MLP, (offset, heading) -> steering (``steering``, units of 0.1
  rad), the output, labelled with the expert's steering.

Training frames: ``frames`` camera images per seed (the data size), at poses drawn
around the states the expert visits when it drives ``roads`` training roads (``spread``
scales how far from them they go), with fresh sensor noise in every batch. The open-loop
metric is minus the mean squared steering error on held-out frames of held-out roads.

After training, ``artifacts`` drives the trained system in closed loop over held-out
roads (``closed_loop``) under the training conditions and under shifts (darker light,
more sensor noise, sharper curves, noise injected at the perception ports), and, for
every condition, splits the steering error into the part the perception's errors
cause and the controller's own (its steering from the true pose against the expert's).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from e2elab.data import driving as world
from e2elab.modules import conv_stages
from e2elab.system import System
from e2elab.task import Batch, Knob, PortSpec, Task, TrainingDefaults

HEADING_UNIT = 0.1  # rad per unit of the heading port
STEER_UNIT = 0.1  # rad per unit of the steering port
TEST_FRAMES_SEED = 77_000
# closed-loop conditions: name -> (lighting factor, noise factor, curvature factor,
# perception-port noise in port units)
CONDITIONS = {
    "nominal": (1.0, 1.0, 1.0, 0.0),
    "dark": (0.5, 1.0, 1.0, 0.0),
    "noisy": (1.0, 4.0, 1.0, 0.0),
    "sharp": (1.0, 1.0, 2.0, 0.0),
    "port_noise": (1.0, 1.0, 1.0, 0.3),
    # the steps between, for the figures against curvature and against noise
    "noisy_x2": (1.0, 2.0, 1.0, 0.0),
    "sharp_x1.5": (1.0, 1.0, 1.5, 0.0),
}
# condition -> its factor, for the figures against curvature and against sensor noise
CURVATURE_STEPS = {"nominal": 1.0, "sharp_x1.5": 1.5, "sharp": 2.0}
NOISE_STEPS = {"nominal": 1.0, "noisy_x2": 2.0, "noisy": 4.0}
TRAJECTORY_EVERY = 5  # steps between the kept points of a driven trajectory


class Perception(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        cells = (world.IMAGE_H // 4) * (world.IMAGE_W // 4)
        self.net = nn.Sequential(
            *conv_stages(3, width),
            nn.Linear(2 * width * cells, 64),
            nn.ReLU(),
            nn.Linear(64, 2),
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)


class DrivingSystem(System):
    def __init__(self, width: int, controller_width: int) -> None:
        super().__init__(
            perception=Perception(width),
            controller=nn.Sequential(
                nn.Linear(2, controller_width),
                nn.Tanh(),
                nn.Linear(controller_width, controller_width),
                nn.Tanh(),
                nn.Linear(controller_width, 1),
            ),
        )

    def forward(self, batch: Batch) -> Tensor:
        pose = self.perception(batch.x["images"])
        offset = self.port("offset", pose[:, :1])
        heading = self.port("heading", pose[:, 1:])
        return self.port("steering", self.controller(torch.cat([offset, heading], dim=-1)))


class Driving(Task):
    name = "driving"
    # 1: training poses around the expert's states, the closed loop's counting;
    # 2: channels-last convolutions on the CPU (numerics.conv_layout)
    revision = 2
    description = "camera -> steering: perception + controller, or end to end (closed loop)"
    knobs = {
        "frames": Knob(
            4000, "training camera frames per seed (the data size)", minimum=64, maximum=64_000
        ),
        "roads": Knob(20, "training roads", minimum=1, maximum=10_000),
        "curvature": Knob(
            0.02,
            "largest |curvature| of the roads, 1/m (at most 0.04: the sharp condition doubles"
            " it, and beyond 0.08 the expert itself leaves the lane)",
            minimum=0.0,
            maximum=0.04,
        ),
        "lighting": Knob(1.0, "brightness of the training images", minimum=0.05, maximum=2.0),
        "noise": Knob(0.03, "sensor noise (standard deviation)", minimum=0.0, maximum=1.0),
        "spread": Knob(
            1.0, "how far training poses stray from the expert's states", minimum=0.0, maximum=5.0
        ),
        "width": Knob(8, "channels of the perception CNN's first layer", minimum=1),
        "controller_width": Knob(32, "hidden width of the controller MLP", minimum=1),
        "test_roads": Knob(6, "held-out roads driven in closed loop", minimum=1, maximum=100),
        "test_length": Knob(
            200.0, "metres driven on each held-out road", minimum=10.0, maximum=2000.0
        ),
        "test_size": Knob(1000, "held-out frames (open loop)", minimum=100, maximum=100_000),
    }
    defaults = TrainingDefaults(
        budget=60_000, batch_size=64, lr=2e-3, threshold=-0.05, evaluations=20
    )

    @cached_property
    def ports(self) -> dict[str, PortSpec]:
        return {
            "offset": PortSpec("regression", 1, chance=-0.25),
            "heading": PortSpec("regression", 1, chance=-0.64),
            "steering": PortSpec("regression", 1, chance=-1.0),
        }

    @property
    def output(self) -> str:
        return "steering"

    def build_system(self) -> DrivingSystem:
        return DrivingSystem(self.knobs["width"], self.knobs["controller_width"])

    def _roads(self, test: bool, curvature: float | None = None) -> list[world.Road]:
        s = self.knobs
        base = world.TEST_SEED if test else 0
        count = s["test_roads"] if test else s["roads"]
        bend = s["curvature"] if curvature is None else curvature
        length = s["test_length"] + 20.0 if test else 400.0
        return [world.road(base + i, bend, length) for i in range(count)]

    def _frames(self, size: int, seed: int, test: bool) -> Batch:
        """``size`` clean frames (no sensor noise yet) with their targets."""
        s = self.knobs
        roads = self._roads(test)
        rng = np.random.default_rng(seed)
        which, index, x, y, theta, offset, error = world.poses(roads, rng, s["spread"], size)
        images = []
        for start in range(0, size, 256):
            part = slice(start, start + 256)
            cars = [roads[w] for w in which[part]]
            images.append(
                world.render(cars, index[part], x[part], y[part], theta[part], s["lighting"], 0.0)
            )
        steer = world.expert(offset, error)
        targets = {
            "offset": torch.from_numpy(offset.astype(np.float32)).unsqueeze(-1),
            "heading": torch.from_numpy((error / HEADING_UNIT).astype(np.float32)).unsqueeze(-1),
            "steering": torch.from_numpy((steer / STEER_UNIT).astype(np.float32)).unsqueeze(-1),
        }
        return Batch({"images": torch.from_numpy(np.concatenate(images))}, targets)

    _pools: dict[int, Batch]

    def train_set_for(self, seed: int) -> Batch:
        """The ``frames`` training frames of seed ``seed`` (clean; noise is added per batch)."""
        pools = self.__dict__.setdefault("_pools", {})
        if seed not in pools:
            pools[seed] = self._frames(self.knobs["frames"], seed, test=False)
        return pools[seed]

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        pool = self.train_set_for(generator.initial_seed())
        index = torch.randint(len(pool), (batch_size,), generator=generator)
        batch = pool.take(index)
        noise = self.knobs["noise"] * torch.randn(batch.x["images"].shape, generator=generator)
        images = (batch.x["images"] + noise).clamp(0.0, 1.0)
        return Batch({"images": images}, batch.targets)

    @cached_property
    def _test(self) -> Batch:
        clean = self._frames(self.knobs["test_size"], TEST_FRAMES_SEED, test=True)
        generator = torch.Generator().manual_seed(TEST_FRAMES_SEED)
        noise = self.knobs["noise"] * torch.randn(clean.x["images"].shape, generator=generator)
        return Batch({"images": (clean.x["images"] + noise).clamp(0.0, 1.0)}, clean.targets)

    def test_set(self) -> Batch:
        return self._test

    def artifacts(self, system: torch.nn.Module) -> dict[str, Any]:
        was = system.training
        system.eval()
        try:
            return {"closed_loop": {name: self.closed_loop(system, name) for name in CONDITIONS}}
        finally:
            system.train(was)

    @torch.no_grad()
    def closed_loop(self, system: Any, condition: str) -> dict[str, Any]:
        """Drive ``system`` over the held-out roads under ``condition``; a car that leaves
        its lane (|offset| > DEPARTURE) is counted and put back on the centre line."""
        light, noisier, sharper, port_noise = CONDITIONS[condition]
        s = self.knobs
        roads = self._roads(test=True, curvature=s["curvature"] * sharper)
        k = len(roads)
        device = next(system.parameters()).device
        rng = np.random.default_rng(TEST_FRAMES_SEED + 1)
        noise_rng = torch.Generator().manual_seed(TEST_FRAMES_SEED + 2)
        index = np.full(k, world.BEHIND)
        x = np.array([r.points[world.BEHIND, 0] for r in roads])
        y = np.array([r.points[world.BEHIND, 1] for r in roads])
        theta = np.array([r.heading[world.BEHIND] for r in roads])
        steps = int(s["test_length"] / (world.SPEED * world.DT))
        offsets, departures = [], np.zeros(k, dtype=int)
        first = np.full(k, np.nan)
        perception_error, controller_error, perception_steer = [], [], []
        trajectory: list[list[float]] = []

        def departed(step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            """Locate the cars; count those off the lane (or with a non-finite pose, as
            a policy steering NaN leaves them) as departures at ``step``."""
            nonlocal index
            broken = ~(np.isfinite(x) & np.isfinite(y) & np.isfinite(theta))
            for j in np.flatnonzero(broken):  # nowhere: count it, and find it again
                x[j], y[j] = roads[j].points[index[j]]
                theta[j] = roads[j].heading[index[j]]
            index, offset, error = world.locate(roads, index, x, y, theta)
            gone = broken | (np.abs(offset) > world.DEPARTURE)
            departures[:] += gone
            travelled = step * world.SPEED * world.DT
            first[:] = np.where(gone & np.isnan(first), travelled, first)
            offsets.append(np.where(broken, np.nan, np.abs(offset)))
            return gone, offset, error

        for step in range(steps):
            gone, offset, error = departed(step)
            if gone.any():
                for j in np.flatnonzero(gone):  # back on the centre line, along the road
                    x[j], y[j] = roads[j].points[index[j]]
                    theta[j] = roads[j].heading[index[j]]
                offset, error = np.where(gone, 0.0, offset), np.where(gone, 0.0, error)
            images = world.render(
                roads, index, x, y, theta, s["lighting"] * light, s["noise"] * noisier, rng
            )
            truth = {
                "offset": torch.tensor(offset, dtype=torch.float32).unsqueeze(-1),
                "heading": torch.tensor(error / HEADING_UNIT, dtype=torch.float32).unsqueeze(-1),
            }
            batch = Batch({"images": torch.from_numpy(images)}, truth).to(device)

            def noisy(name: str, value: Tensor) -> Tensor:
                return value + port_noise * torch.randn(value.shape, generator=noise_rng).to(
                    value.device
                )

            forced = frozenset({"offset", "heading"}) if port_noise else frozenset()
            ports = system.run_ports(batch, forced=forced, forcer=noisy)
            steer = ports["steering"][:, 0].cpu().numpy() * STEER_UNIT
            # the controller from the true pose: its own error against the expert's
            targets = batch.targets
            true = system.run_ports(
                batch, forced=frozenset({"offset", "heading"}), forcer=lambda n, v, t=targets: t[n]
            )
            ideal = true["steering"][:, 0].cpu().numpy() * STEER_UNIT
            expert = world.expert(offset, error)
            seen = torch.cat([ports["offset"], ports["heading"] * HEADING_UNIT], -1).cpu().numpy()
            perception_error.append(np.abs(seen - np.stack([offset, error], -1)).mean(0))
            controller_error.append(np.abs(ideal - expert))
            perception_steer.append(np.abs(steer - ideal))
            if step % TRAJECTORY_EVERY == 0:
                trajectory.append([float(x[0]), float(y[0])])
            x, y, theta = world.bicycle(x, y, theta, steer)
        departed(steps)  # where the last step ended
        driven = steps * world.SPEED * world.DT
        errors = np.array(perception_error)
        return {
            # every step's |offset|, the departing ones before the car is put back
            "mean_abs_offset": float(np.nanmean(offsets)) if np.isfinite(offsets).any() else 0.0,
            "departures_per_km": float(departures.sum() / (k * driven / 1000.0)),
            # censored: a road without a departure counts the whole distance driven
            "distance_to_first_departure": float(np.mean(np.where(np.isnan(first), driven, first))),
            "roads_without_departure": float(np.mean(np.isnan(first))),
            "perception_offset_mae": float(errors[:, 0].mean()),
            "perception_heading_mae": float(errors[:, 1].mean()),
            "controller_steer_mae": float(np.mean(controller_error)),
            "perception_steer_mae": float(np.mean(perception_steer)),
            "trajectory": trajectory,
        }
