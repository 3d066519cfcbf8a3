"""A small driving world: procedural roads, a forward camera, an expert, a simulator.

- Roads: a centreline integrated from a smooth random curvature profile (a sum of three
  sinusoids, scaled so that its largest |curvature| is the ``curvature`` knob, 1/m),
  deterministic per seed; training and test roads come from disjoint seed ranges.
- Camera: a pinhole camera ``CAMERA_HEIGHT`` above flat ground looking along the car's
  heading. Every pixel below the horizon is a ground point; its signed distance from the
  centreline (and distance along it) decides what it shows: asphalt, the solid white
  road edges, the dashed centre line, or grass; above the horizon, sky. ``lighting``
  scales the brightness, ``noise`` adds Gaussian sensor noise. Vectorised over a batch.
- Expert: a Stanley controller on the true lateral offset and heading error,
  steering = -(heading error + atan(GAIN * offset / SPEED)), clipped.
- Simulator: a kinematic bicycle (wheelbase ``WHEELBASE``) at constant ``SPEED``; a
  constant steering angle delta drives a circle of radius WHEELBASE / tan(delta)
  (each step is integrated exactly as an arc).

Numpy only (torch-free): the report redraws roads for its bird's-eye figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

HALF_WIDTH = 2.0  # m: the road is 4 m wide, the car drives on its centre line
DEPARTURE = 1.5  # m: |lateral offset| beyond this is a lane departure
WHEELBASE = 2.5  # m
SPEED = 8.0  # m/s
DT = 0.1  # s
MAX_STEER = 0.5  # rad
GAIN = 1.0  # Stanley's cross-track gain
STEP = 0.5  # m between centreline points
BEHIND, AHEAD = 10, 110  # centreline points the renderer looks at, around the car
COARSE = 4  # the renderer's first search takes every COARSE-th of them
CAMERA_HEIGHT = 1.4  # m
IMAGE_H, IMAGE_W = 24, 48
HORIZON = 8  # image row of the horizon
FOCAL = 36.0  # pixels
DASH = 3.0  # m: the centre line is painted for half of every DASH metres
TEST_SEED = 1_000_000  # test roads: seeds from here on; training roads: below it

SKY = np.array([0.55, 0.7, 0.95])
GRASS = np.array([0.25, 0.5, 0.2])
ASPHALT = np.array([0.35, 0.35, 0.37])
PAINT = np.array([0.95, 0.95, 0.95])


@dataclass(frozen=True)
class Road:
    points: np.ndarray  # (P, 2) centreline, metres
    heading: np.ndarray  # (P,) tangent direction, radians
    curvature: np.ndarray  # (P,) 1/m

    @property
    def length(self) -> float:
        return STEP * (len(self.points) - 1)


@cache
def road(seed: int, curvature: float, length: float = 400.0) -> Road:
    """The road of ``seed``: its largest |curvature| is ``curvature`` (0: straight)."""
    rng = np.random.default_rng(seed)
    n = int(length / STEP) + 1 + AHEAD
    s = np.arange(n) * STEP
    waves = rng.uniform(50.0, 200.0, 3)
    phases = rng.uniform(0, 2 * np.pi, 3)
    weights = rng.uniform(0.3, 1.0, 3)
    profile = sum(
        w * np.sin(2 * np.pi * s / lam + p)
        for w, lam, p in zip(weights, waves, phases, strict=True)
    )
    peak = np.abs(profile).max()
    kappa = profile * (curvature / peak if peak > 0 else 0.0)
    heading = np.concatenate([[0.0], np.cumsum(kappa[:-1]) * STEP]) + rng.uniform(-np.pi, np.pi)
    steps = np.stack([np.cos(heading), np.sin(heading)], axis=1) * STEP
    points = np.concatenate([[np.zeros(2)], np.cumsum(steps[:-1], axis=0)])
    return Road(points, heading, kappa)


def expert(offset: np.ndarray, heading_error: np.ndarray) -> np.ndarray:
    """Stanley steering from the true lateral offset (m, left positive) and heading
    error (rad, car heading minus road heading)."""
    steer = -(heading_error + np.arctan(GAIN * offset / SPEED))
    return np.clip(steer, -MAX_STEER, MAX_STEER)


def bicycle(x: np.ndarray, y: np.ndarray, theta: np.ndarray, steer: np.ndarray):
    """One DT step of the kinematic bicycle at SPEED (steering clipped to MAX_STEER),
    integrated exactly for the step's constant steering: an arc of radius
    WHEELBASE / tan(steer), or a straight line."""
    steer = np.clip(steer, -MAX_STEER, MAX_STEER)
    curvature = np.tan(steer) / WHEELBASE
    turn = SPEED * DT * curvature
    after = theta + turn
    straight = np.abs(curvature) < 1e-9
    safe = np.where(straight, 1.0, curvature)
    x = np.where(
        straight, x + SPEED * DT * np.cos(theta), x + (np.sin(after) - np.sin(theta)) / safe
    )
    y = np.where(
        straight, y + SPEED * DT * np.sin(theta), y - (np.cos(after) - np.cos(theta)) / safe
    )
    return x, y, after


def locate(roads: list[Road], index: np.ndarray, x: np.ndarray, y: np.ndarray, theta: np.ndarray):
    """Each car's nearest centreline point near ``index`` (its previous one), its signed
    lateral offset (left positive) and heading error. Returns (index, offset, error)."""
    out_i, out_e, out_h = [], [], []
    for k, r in enumerate(roads):
        lo = max(0, int(index[k]) - BEHIND)
        hi = min(len(r.points), int(index[k]) + AHEAD)
        d = np.hypot(r.points[lo:hi, 0] - x[k], r.points[lo:hi, 1] - y[k])
        i = lo + int(d.argmin())
        normal = np.array([-np.sin(r.heading[i]), np.cos(r.heading[i])])
        offset = float(np.dot([x[k] - r.points[i, 0], y[k] - r.points[i, 1]], normal))
        error = float(np.angle(np.exp(1j * (theta[k] - r.heading[i]))))
        out_i.append(i)
        out_e.append(offset)
        out_h.append(error)
    return np.array(out_i), np.array(out_e), np.array(out_h)


@cache
def _ground() -> tuple[np.ndarray, np.ndarray]:
    """Car-frame (forward, left) metres of every pixel below the horizon (rows x cols)."""
    rows = np.arange(HORIZON + 1, IMAGE_H) + 0.5
    cols = np.arange(IMAGE_W) + 0.5
    forward = CAMERA_HEIGHT * FOCAL / (rows - HORIZON)  # (R,)
    left = -(cols - IMAGE_W / 2)[None, :] * forward[:, None] / FOCAL  # (R, C)
    return np.broadcast_to(forward[:, None], left.shape).copy(), left


def render(
    roads: list[Road],
    index: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    theta: np.ndarray,
    lighting: float = 1.0,
    noise: float = 0.03,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Camera images (B, 3, IMAGE_H, IMAGE_W) in [0, 1] of cars at (x, y, theta) on
    ``roads[k]`` near centreline point ``index[k]``."""
    forward, left = _ground()
    batch = len(roads)
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    gx = x[:, None, None] + forward * cos - left * sin  # (B, R, C)
    gy = y[:, None, None] + forward * sin + left * cos
    # the nearest centreline point to every ground point: first among every COARSE-th
    # point of the window around the car, then among the points next to that one
    first = np.clip(index - BEHIND, 0, None)  # (B,)
    coarse = first[:, None] + np.arange(0, BEHIND + AHEAD, COARSE)[None, :]  # (B, Wc)
    pts = np.stack(
        [r.points[np.minimum(i, len(r.points) - 1)] for r, i in zip(roads, coarse, strict=True)]
    )
    gx, gy = gx.reshape(batch, -1).astype(np.float32), gy.reshape(batch, -1).astype(np.float32)
    dx = gx[..., None] - pts[:, None, :, 0].astype(np.float32)  # (B, N, Wc)
    dy = gy[..., None] - pts[:, None, :, 1].astype(np.float32)
    best = np.take_along_axis(coarse[:, None, :], (dx * dx + dy * dy).argmin(-1)[..., None], -1)
    fine = best + np.arange(-COARSE, COARSE + 1)[None, None, :]  # (B, N, F)
    fine = np.clip(fine, 0, None)
    lengths = np.array([len(r.points) for r in roads])[:, None, None]
    fine = np.minimum(fine, lengths - 1)
    px = np.stack([r.points[:, 0][f] for r, f in zip(roads, fine, strict=True)])  # (B, N, F)
    py = np.stack([r.points[:, 1][f] for r, f in zip(roads, fine, strict=True)])
    dx, dy = gx[..., None] - px, gy[..., None] - py
    nearest = (dx * dx + dy * dy).argmin(-1)[..., None]  # (B, N, 1)
    take = np.take_along_axis
    at = take(fine, nearest, -1)[..., 0]  # (B, N) index of the nearest point
    h = np.stack([r.heading[a] for r, a in zip(roads, at, strict=True)])
    ndx, ndy = take(dx, nearest, -1)[..., 0], take(dy, nearest, -1)[..., 0]
    lateral = (-ndx * np.sin(h) + ndy * np.cos(h)).reshape(batch, *forward.shape)
    along = (at * STEP + ndx * np.cos(h) + ndy * np.sin(h)).reshape(batch, *forward.shape)
    on_road = np.abs(lateral) < HALF_WIDTH
    edge = np.abs(np.abs(lateral) - HALF_WIDTH + 0.15) < 0.15
    centre = (np.abs(lateral) < 0.12) & ((along % DASH) < DASH / 2)
    colour = np.where(on_road[..., None], ASPHALT, GRASS)
    colour = np.where((edge | centre)[..., None], PAINT, colour)
    image = np.empty((batch, IMAGE_H, IMAGE_W, 3))
    image[:, : HORIZON + 1] = SKY
    image[:, HORIZON + 1 :] = colour
    image = image * lighting
    if noise > 0:
        rng = rng if rng is not None else np.random.default_rng(0)
        image = image + noise * rng.standard_normal(image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32).transpose(0, 3, 1, 2)


def expert_states(roads: list[Road]) -> tuple[np.ndarray, ...]:
    """The states the expert visits: it drives every road from its start (on the centre
    line) to its end, and each step gives (road, centreline index, lateral offset,
    heading error). Stanley has no curvature feed-forward, so on a curve it settles off
    the centre line, towards the outside: these are the states its labels come from."""
    k = len(roads)
    index = np.full(k, BEHIND)
    x = np.array([r.points[BEHIND, 0] for r in roads])
    y = np.array([r.points[BEHIND, 1] for r in roads])
    theta = np.array([r.heading[BEHIND] for r in roads])
    usable = min(len(r.points) for r in roads) - AHEAD
    steps = int((usable - BEHIND) * STEP / (SPEED * DT))
    rows = []
    for _ in range(steps):
        index, offset, error = locate(roads, index, x, y, theta)
        rows.append(np.stack([np.arange(k), index, offset, error], 1))
        x, y, theta = bicycle(x, y, theta, expert(offset, error))
    table = np.concatenate(rows)
    table = table[(table[:, 1] >= BEHIND) & (table[:, 1] < usable)]
    return table[:, 0].astype(int), table[:, 1].astype(int), table[:, 2], table[:, 3]


def poses(
    roads: list[Road], rng: np.random.Generator, spread: float, size: int
) -> tuple[np.ndarray, ...]:
    """``size`` poses around the expert's states (``expert_states``): a state the expert
    visits on one of ``roads``, moved by a random lateral offset and heading error
    (``spread`` scales them: 1 adds offsets of about +-1 m and heading errors of about
    +-0.15 rad; 0 keeps the expert's states). Returns (road, index, x, y, heading,
    offset, heading error)."""
    roads_of, indices, offsets, errors = expert_states(roads)
    pick = rng.integers(0, len(roads_of), size)
    which, index = roads_of[pick], indices[pick]
    offset = np.clip(offsets[pick] + rng.normal(0.0, 0.5 * spread, size), -DEPARTURE, DEPARTURE)
    error = np.clip(errors[pick] + rng.normal(0.0, 0.08 * spread, size), -0.4, 0.4)
    base = np.stack([roads[w].points[i] for w, i in zip(which, index, strict=True)])
    heading = np.array([roads[w].heading[i] for w, i in zip(which, index, strict=True)])
    x = base[:, 0] - offset * np.sin(heading)
    y = base[:, 1] + offset * np.cos(heading)
    return which, index, x, y, heading + error, offset, error
