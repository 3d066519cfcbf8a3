"""Figures for driving runs (runs whose artifacts hold ``closed_loop``): closed-loop
metrics per condition and strategy, against the sweep knob; a bird's-eye view of the
first held-out road with each strategy's driven trajectory; a strip of camera frames.
Torch-free: roads and frames are redrawn from the knobs (``e2elab.data.driving``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from e2elab.data import driving as world
from e2elab.records import RunResult
from e2elab.report.figures import save_tight
from e2elab.stats import mean_interval

METRICS = (
    ("mean_abs_offset", "mean |lateral offset| (m)"),
    ("departures_per_km", "lane departures per km"),
    ("distance_to_first_departure", "metres before the first departure (capped)"),
)


def _driven(results: Sequence[RunResult]) -> list[RunResult]:
    return [r for r in results if r.status == "ok" and "closed_loop" in r.artifacts]


def _strategies(runs: list[RunResult]) -> list[str]:
    return list(dict.fromkeys(r.spec.strategy for r in runs))


def _interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and the distances down and up to its 95% interval, which is cut at 0: every
    closed-loop number here is non-negative."""
    ci = mean_interval(values)
    low = ci.mean - ci.lo if ci.lo == ci.lo else 0.0
    high = ci.hi - ci.mean if ci.hi == ci.hi else 0.0
    return ci.mean, min(max(0.0, low), max(0.0, ci.mean)), max(0.0, high)


def _condition_bars(
    ax: Any, chosen: list[RunResult], names: list[str], conditions: list[str], key: str
) -> float:
    """One group of bars per condition, one bar per strategy: ``key``'s mean and 95%
    interval over seeds. Returns the width of a bar."""
    step = 0.8 / len(names)
    for i, strategy in enumerate(names):
        stats = [
            _interval(
                [r.artifacts["closed_loop"][c][key] for r in chosen if r.spec.strategy == strategy]
            )
            for c in conditions
        ]
        ax.bar(
            np.arange(len(conditions)) + i * step,
            [x[0] for x in stats],
            step,
            yerr=[[x[1] for x in stats], [x[2] for x in stats]],
            capsize=2,
            label=strategy,
        )
    return step


def conditions_figure(runs: list[RunResult], knob: str, path: Path) -> Path:
    """Each closed-loop metric per condition (training conditions, darker, noisier,
    sharper curves, noise at the perception ports), per strategy, at the largest value
    of ``knob``; means and 95% intervals over seeds."""
    top = max(r.spec.knobs[knob] for r in runs)
    chosen = [r for r in runs if r.spec.knobs[knob] == top]
    names = _strategies(chosen)
    conditions = list(chosen[0].artifacts["closed_loop"])
    fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 4.2))
    for ax, (key, label) in zip(axes, METRICS, strict=True):
        step = _condition_bars(ax, chosen, names, conditions, key)
        ax.set_xticks(np.arange(len(conditions)) + 0.4 - step / 2, conditions, fontsize=8)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Closed loop on held-out roads, per condition ({knob}={top})", fontsize=10)
    return save_tight(fig, path)


def propagation_figure(runs: list[RunResult], knob: str, path: Path) -> Path:
    """Where the steering error comes from, per condition and strategy (largest value
    of ``knob``): the part the perception's errors cause (steering from the perceived
    pose against steering from the true pose) and the controller's own (its steering
    from the true pose against the expert's). Meaningful where the pose ports are
    trained (not under e2e, whose ports are a free bottleneck)."""
    top = max(r.spec.knobs[knob] for r in runs)
    chosen = [r for r in runs if r.spec.knobs[knob] == top]
    names = _strategies(chosen)
    conditions = list(chosen[0].artifacts["closed_loop"])
    parts = (
        ("perception_steer_mae", "caused by perception"),
        ("controller_steer_mae", "controller's own"),
    )
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.0), sharey=True)
    for ax, (key, label) in zip(axes, parts, strict=True):
        step = _condition_bars(ax, chosen, names, conditions, key)
        ax.set_xticks(np.arange(len(conditions)) + 0.4 - step / 2, conditions, fontsize=8)
        ax.set_title(f"steering error {label} (rad)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"Error propagation in closed loop ({knob}={top}); under e2e the pose ports are "
        "untrained, so its split means little",
        fontsize=9,
    )
    return save_tight(fig, path)


def against_figure(
    runs: list[RunResult], knob: str, path: Path, condition: str = "nominal"
) -> Path:
    """Closed-loop metrics against ``knob`` per strategy, under ``condition``."""
    fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 4.0))
    for ax, (key, label) in zip(axes, METRICS, strict=True):
        for strategy in _strategies(runs):
            by: dict[Any, list[float]] = {}
            for r in runs:
                if r.spec.strategy == strategy:
                    value = r.artifacts["closed_loop"][condition][key]
                    by.setdefault(r.spec.knobs[knob], []).append(value)
            xs = sorted(by)
            stats = [_interval(by[x]) for x in xs]
            ax.errorbar(
                xs,
                [s[0] for s in stats],
                yerr=[[s[1] for s in stats], [s[2] for s in stats]],
                marker="o",
                capsize=3,
                label=strategy,
            )
        if min(r.spec.knobs[knob] for r in runs) > 0:
            ax.set_xscale("log")
        ax.set_xlabel(knob)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Closed loop against {knob} ({condition})", fontsize=10)
    return save_tight(fig, path)


# condition -> factor (kept in step with tasks.driving, which the report must not import)
SHIFTS = {
    "curvature (x training)": {"nominal": 1.0, "sharp_x1.5": 1.5, "sharp": 2.0},
    "sensor noise (x training)": {"nominal": 1.0, "noisy_x2": 2.0, "noisy": 4.0},
}


def shift_figure(runs: list[RunResult], knob: str, path: Path) -> Path | None:
    """Lane departures per km against curvature and against sensor noise (as multiples
    of the training conditions), per strategy, at the largest value of ``knob``."""
    top = max(r.spec.knobs[knob] for r in runs)
    chosen = [r for r in runs if r.spec.knobs[knob] == top]
    have = set(chosen[0].artifacts["closed_loop"])
    if not all(set(steps) <= have for steps in SHIFTS.values()):
        return None  # runs from before these conditions were driven
    fig, axes = plt.subplots(1, len(SHIFTS), figsize=(11, 4.0), sharey=True)
    for ax, (label, steps) in zip(axes, SHIFTS.items(), strict=True):
        for strategy in _strategies(chosen):
            stats = [
                _interval(
                    [
                        r.artifacts["closed_loop"][c]["departures_per_km"]
                        for r in chosen
                        if r.spec.strategy == strategy
                    ]
                )
                for c in steps
            ]
            ax.errorbar(
                list(steps.values()),
                [x[0] for x in stats],
                yerr=[[x[1] for x in stats], [x[2] for x in stats]],
                marker="o",
                capsize=3,
                label=strategy,
            )
        ax.set_xlabel(label)
        ax.set_xticks(list(steps.values()))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("lane departures per km")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Closed loop against curvature and sensor noise ({knob}={top})", fontsize=10)
    return save_tight(fig, path)


def _offsets_along(road: world.Road, path_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance along the road and signed lateral offset of each point of a trajectory."""
    index = np.array([world.BEHIND])
    along, offsets = [], []
    for px, py in path_xy:
        index, offset, _ = world.locate([road], index, np.array([px]), np.array([py]), np.zeros(1))
        along.append((index[0] - world.BEHIND) * world.STEP)
        offsets.append(offset[0])
    return np.array(along), np.array(offsets)


def birds_eye_figure(runs: list[RunResult], knob: str, path: Path) -> Path:
    """The first held-out road from above with each strategy's trajectory (first seed,
    largest value of ``knob``), under the training conditions and on curves twice as
    sharp; below each, the lateral offset along the road against the lane's limits."""
    top = max(r.spec.knobs[knob] for r in runs)
    first: dict[str, RunResult] = {}
    for r in sorted(runs, key=lambda r: r.spec.seed):
        if r.spec.knobs[knob] == top:
            first.setdefault(r.spec.strategy, r)
    knobs = next(iter(first.values())).spec.knobs
    have = next(iter(first.values())).artifacts["closed_loop"]
    conditions = [c for c in ("nominal", "sharp") if c in have]
    fig, axes = plt.subplots(
        2,
        len(conditions),
        figsize=(6 * len(conditions), 9),
        squeeze=False,
        gridspec_kw={"height_ratios": [3, 1]},
    )
    for column, condition in enumerate(conditions):
        bend = knobs["curvature"] * SHIFTS["curvature (x training)"].get(condition, 1.0)
        road = world.road(world.TEST_SEED, bend, knobs["test_length"] + 20.0)
        ax, below = axes[0, column], axes[1, column]
        normal = np.stack([-np.sin(road.heading), np.cos(road.heading)], 1)
        for side in (-1, 1):
            edge = road.points + side * world.HALF_WIDTH * normal
            ax.plot(edge[:, 0], edge[:, 1], color="grey", linewidth=1)
        ax.plot(road.points[:, 0], road.points[:, 1], color="grey", linewidth=0.6, ls="--")
        for strategy, run in first.items():
            path_xy = np.array(run.artifacts["closed_loop"][condition]["trajectory"])
            ax.plot(path_xy[:, 0], path_xy[:, 1], linewidth=1.2, label=strategy)
            along, offsets = _offsets_along(road, path_xy)
            below.plot(along, offsets, linewidth=1.0, label=strategy)
        ax.set_aspect("equal")
        ax.set_title(f"{condition} (curvature {bend:g})", fontsize=9)
        for limit in (-world.DEPARTURE, world.DEPARTURE):
            below.axhline(limit, color="red", linewidth=0.8, linestyle=":")
        below.set_xlabel("metres along the road")
        below.set_ylabel("lateral offset (m)")
        below.grid(alpha=0.3)
    axes[1, 0].legend(fontsize=7, loc="lower left", ncol=2)
    seed = min(r.spec.seed for r in first.values())
    fig.suptitle(
        f"Driven trajectories on held-out road 1 ({knob}={top}, seed {seed}); red: the lane "
        "limit, where a departed car is counted and put back on the centre line",
        fontsize=9,
    )
    return save_tight(fig, path)


def camera_strip(runs: list[RunResult], path: Path, frames: int = 6) -> Path:
    """Camera frames along the first held-out road, on its centre line, every 10 m."""
    knobs = runs[0].spec.knobs
    road = world.road(world.TEST_SEED, knobs["curvature"], knobs["test_length"] + 20.0)
    index = world.BEHIND + (np.arange(frames) * 10.0 / world.STEP).astype(int)
    x, y, theta = road.points[index, 0], road.points[index, 1], road.heading[index]
    images = world.render(
        [road] * frames,
        index,
        x,
        y,
        theta,
        knobs["lighting"],
        knobs["noise"],
        np.random.default_rng(0),
    )
    fig, axes = plt.subplots(1, frames, figsize=(2.2 * frames, 1.5))
    for k, ax in enumerate(np.atleast_1d(axes)):
        ax.imshow(images[k].transpose(1, 2, 0))
        ax.set_title(f"{10 * k} m", fontsize=8)
        ax.axis("off")
    fig.suptitle("The camera along held-out road 1 (training conditions)", fontsize=9)
    return save_tight(fig, path)


def driving_figures(results: Sequence[RunResult], knob: str, folder: Path) -> list[Path]:
    """The driving figures, where the results drove in closed loop; else none."""
    runs = _driven(results)
    if not runs or knob not in runs[0].spec.knobs:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    drawn = [
        conditions_figure(runs, knob, folder / "closed_loop_conditions.png"),
        propagation_figure(runs, knob, folder / "error_propagation.png"),
        shift_figure(runs, knob, folder / "closed_loop_vs_shift.png"),
        against_figure(runs, knob, folder / f"closed_loop_vs_{knob}.png"),
        birds_eye_figure(runs, knob, folder / "birds_eye.png"),
        camera_strip(runs, folder / "camera_strip.png"),
    ]
    return [p for p in drawn if p is not None]


def _fmt(values: list[float], digits: int, top: float = float("inf")) -> str:
    """Mean [95% interval] of a number in [0, ``top``]: the interval is cut there."""
    mean, low, high = _interval(values)
    lo, hi = max(0.0, mean - low), min(top, mean + high)
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def closed_loop_rows(results: Sequence[RunResult], knob: str) -> list[dict[str, str]]:
    """One row per value of ``knob``, strategy and condition: the closed-loop numbers,
    means and 95% intervals over seeds."""
    return [
        {
            knob: str(value),
            "strategy": strategy,
            "condition": condition,
            "departures per km": _fmt([c["departures_per_km"] for c in cl], 1),
            "mean |offset| (m)": _fmt([c["mean_abs_offset"] for c in cl], 3),
            "m to first departure": _fmt([c["distance_to_first_departure"] for c in cl], 0),
            "roads without departure": _fmt(
                [c.get("roads_without_departure", float("nan")) for c in cl], 2, 1.0
            ),
            "seeds": str(len(cl)),
        }
        for value, strategy, condition, cl in _loop_cells(_driven(results), knob)
    ]


def _loop_cells(
    runs: list[RunResult], knob: str
) -> Iterator[tuple[Any, str, str, list[dict[str, Any]]]]:
    """(value of ``knob``, strategy, condition, each seed's closed-loop numbers there)."""
    if not runs or knob not in runs[0].spec.knobs:
        return
    for value in sorted({r.spec.knobs[knob] for r in runs}):
        at = [r for r in runs if r.spec.knobs[knob] == value]
        for strategy in _strategies(at):
            mine = [r for r in at if r.spec.strategy == strategy]
            for condition in mine[0].artifacts["closed_loop"]:
                yield (
                    value,
                    strategy,
                    condition,
                    [r.artifacts["closed_loop"][condition] for r in mine],
                )


def propagation_rows(results: Sequence[RunResult], knob: str) -> list[dict[str, str]]:
    """Per value of ``knob``, strategy with trained pose ports (not e2e) and condition:
    the perception's errors, the steering error they cause, and the controller's own
    steering error given the true pose; the larger of the two names the module at fault."""
    runs = [r for r in _driven(results) if r.spec.strategy != "e2e"]
    rows: list[dict[str, str]] = []
    for value, strategy, condition, cl in _loop_cells(runs, knob):
        caused = [c["perception_steer_mae"] for c in cl]
        own = [c["controller_steer_mae"] for c in cl]
        fault = "perception" if np.mean(caused) > np.mean(own) else "controller"
        rows.append(
            {
                knob: str(value),
                "strategy": strategy,
                "condition": condition,
                "offset error (m)": _fmt([c["perception_offset_mae"] for c in cl], 3),
                "heading error (rad)": _fmt([c["perception_heading_mae"] for c in cl], 3),
                "steering error caused by perception": _fmt(caused, 4),
                "controller's own steering error": _fmt(own, 4),
                "at fault": fault,
            }
        )
    return rows
