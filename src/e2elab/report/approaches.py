"""Figures for comparing approaches that differ by a knob as well as by strategy (the
features-vs-pixels experiment): every approach on one axis against the size knob.

An approach is a strategy at one value of every other varying knob (``e2e`` at
``front=cnn``, ``front=hybrid``, ...). A black-box strategy ignores the system, so its
runs at the other knobs' values are one computation under several ids: it is drawn
once, from the first value. Torch-free, like the rest of the report.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from e2elab.records import RunResult
from e2elab.report.figures import save_tight
from e2elab.stats import mean_interval


def _label(result: RunResult, others: list[str]) -> str | None:
    strategy = result.spec.strategy
    knobs = result.spec.knobs
    if strategy.startswith("blackbox"):
        return strategy.removeprefix("blackbox:")
    return f"{strategy} ({', '.join(f'{k}={knobs[k]}' for k in others)})" if others else strategy


def _train_seconds(result: RunResult) -> float:
    """Seconds spent training (the phases, less their held-out evaluations; a pipeline's
    feature extraction and fit): the cost side of the argument."""
    seconds = sum(p.get("seconds", 0.0) - p.get("evaluation_seconds", 0.0) for p in result.phases)
    return seconds if seconds > 0 else result.wall_seconds


def series(
    results: Sequence[RunResult], knob: str, value: str
) -> dict[str, dict[Any, list[float]]]:
    """Approach -> knob value -> one number per seed (``value``: "accuracy" for the
    output metric, "seconds" for the run's wall time)."""
    ok = [r for r in results if r.status == "ok"]
    varying = sorted(
        {
            k
            for r in ok
            for k in r.spec.knobs
            if k != knob and len({str(x.spec.knobs.get(k)) for x in ok}) > 1
        }
    )
    first = {k: min(str(r.spec.knobs[k]) for r in ok) for k in varying}
    out: dict[str, dict[Any, list[float]]] = {}
    for r in sorted(ok, key=lambda r: (r.spec.strategy, r.spec.seed)):
        blackbox = r.learner == "model"
        if blackbox and any(str(r.spec.knobs[k]) != first[k] for k in varying):
            continue  # the same computation at the other knobs' values
        label = _label(r, varying)
        number = r.output_metric if value == "accuracy" else _train_seconds(r)
        out.setdefault(label, {}).setdefault(r.spec.knobs[knob], []).append(number)
    return out


def approach_figure(
    results: Sequence[RunResult], knob: str, value: str, path: Path, title: str
) -> Path:
    """One line per approach against ``knob`` (log axis), mean over seeds with a 95%
    band; ``value`` "accuracy" (test accuracy, chance drawn) or "seconds" (log axis)."""
    data = series(results, knob, value)
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    colours = plt.get_cmap("tab10")
    for i, (label, points) in enumerate(sorted(data.items())):
        xs = sorted(points)
        cis = [mean_interval(points[x]) for x in xs]
        style = "--" if not label.startswith("e2e") else "-"
        ax.plot(xs, [c.mean for c in cis], style, marker="o", color=colours(i % 10), label=label)
        ax.fill_between(
            xs, [c.lo for c in cis], [c.hi for c in cis], color=colours(i % 10), alpha=0.15
        )
    ax.set_xscale("log")
    values = sorted({x for points in data.values() for x in points})
    ax.set_xticks(values, [str(v) for v in values])
    ax.minorticks_off()
    ax.set_xlabel(f"{knob} (log scale)")
    if value == "accuracy":
        ax.set_ylabel("test accuracy (mean, 95% band over seeds)")
        chance = [c for r in results for c in r.chance.values()]
        if chance:
            ax.axhline(float(np.mean(chance)), color="grey", lw=1, ls=":", label="chance")
    else:
        ax.set_yscale("log")
        ax.set_ylabel("training seconds per run (no evaluation)")
    ax.grid(alpha=0.3, which="both")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="best")
    return save_tight(fig, path)


def gallery_figure(results: Sequence[RunResult], source: str, path: Path) -> Path | None:
    """Three digits with their hand-crafted features (HOG, Sobel, Canny, one Gabor
    response) beside the first-layer filters: learned by the CNN (the largest training
    set, lowest seed) and the hybrid's fixed Gabor bank. None without stored filters."""
    from scipy.ndimage import convolve
    from skimage.feature import canny, hog
    from skimage.filters import sobel

    from e2elab.data.images import load_images
    from e2elab.features import gabor_bank

    def filters(front: str) -> np.ndarray | None:
        runs = [
            r
            for r in results
            if r.status == "ok"
            and r.spec.knobs.get("front") == front
            and "first_layer" in r.artifacts
        ]
        if not runs:
            return None
        best = max(runs, key=lambda r: (r.spec.knobs.get("train_size", 0), -r.spec.seed))
        return np.asarray(best.artifacts["first_layer"])

    learned, fixed = filters("cnn"), filters("hybrid")
    if learned is None and fixed is None:
        return None
    knobs = results[0].spec.knobs
    root = str(knobs.get("root") or os.environ.get("E2ELAB_MNIST_ROOT", "")) or None
    images, labels = load_images(source, root)
    picks = [int(np.flatnonzero(labels == d)[0]) for d in (0, 4, 7)]
    side = images.shape[-1]
    cell = max(2, side // 4)
    gabor = gabor_bank(side)[1]
    columns = ["image", "HOG", "Sobel", "Canny", "Gabor (1 of 8)"]
    rows = len(picks) + 2
    width = max(len(columns), 8)
    fig, axes = plt.subplots(rows, width, figsize=(1.4 * width, 1.5 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for row, index in enumerate(picks):
        image = images[index]
        _, hog_image = hog(
            image,
            orientations=9,
            pixels_per_cell=(cell, cell),
            cells_per_block=(1, 1),
            visualize=True,
        )
        panels = [
            image,
            hog_image,
            sobel(image),
            canny(image, sigma=1.0 if side > 8 else 0.5),
            np.abs(convolve(image.astype(np.float64), gabor, mode="constant")),
        ]
        for col, (panel, name) in enumerate(zip(panels, columns, strict=True)):
            axes[row, col].imshow(panel, cmap="gray")
            if row == 0:
                axes[row, col].set_title(name, fontsize=8)
    for row, (bank, name) in enumerate(
        ((learned, "CNN first layer (learned)"), (fixed, "hybrid front end (Gabor, fixed)")),
        start=len(picks),
    ):
        if bank is None:
            continue
        for col in range(min(width, len(bank))):
            axes[row, col].imshow(bank[col], cmap="RdBu_r")
        axes[row, 0].set_title(name, fontsize=8, loc="left")
    fig.suptitle(f"{source}: hand-crafted features and first-layer filters", fontsize=10)
    return save_tight(fig, path)


def approach_figures(
    results: Sequence[RunResult], knob: str, folder: Path, name: str
) -> list[Path]:
    """The accuracy and time figures, and the gallery where filters were stored."""
    if not results:
        return []
    out = [
        approach_figure(
            results,
            knob,
            "accuracy",
            folder / f"accuracy_by_approach_vs_{knob}.png",
            f"{name}: test accuracy against {knob}",
        ),
        approach_figure(
            results,
            knob,
            "seconds",
            folder / f"seconds_by_approach_vs_{knob}.png",
            f"{name}: time per run against {knob}",
        ),
    ]
    source = results[0].spec.knobs.get("source")
    if source:
        gallery = gallery_figure(results, str(source), folder / "features_and_filters.png")
        if gallery is not None:
            out.append(gallery)
    return out
