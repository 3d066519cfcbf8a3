"""Figures an experiment declares (``figures:`` in its YAML), beside the standard ones.

``against``: the output metric against a number, one line per series, each mapping x
values to strategies (accuracy against ensemble size M at a fixed n). ``bars``: the
output metric per strategy, with the linear probe of a port beside it (how well a
transferred module's output still separates its concept). Means over seeds with 95%
intervals; each seed's value is drawn as a dot. Torch-free, like the rest of the report.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from e2elab.experiment import Experiment, Figure
from e2elab.records import RunResult
from e2elab.report.figures import save_tight
from e2elab.stats import mean_interval


def _at(result: RunResult, at: dict[str, Any]) -> bool:
    knobs = result.spec.knobs
    return all(str(knobs.get(k)).lower() == str(v).lower() for k, v in at.items())


def _values(
    results: list[RunResult], strategy: str, at: dict[str, Any], port: str = ""
) -> list[float]:
    """One number per finished seed: the output metric, or the probe of ``port``."""
    out = []
    for r in results:
        if r.status != "ok" or r.spec.strategy != strategy or not _at(r, at):
            continue
        value = r.probes.get(port) if port else r.output_metric
        if value is not None and value == value:
            out.append(float(value))
    return out


def _finite(value: float) -> float:
    """An interval's half-width, 0 where one seed gives none."""
    return value if value == value and abs(value) != float("inf") else 0.0


def figure_file(folder: Path, title: str) -> Path:
    """Where a declared figure with this title is drawn."""
    slug = re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")[:60] or "figure"
    return folder / f"{slug}.png"


def _metric_name(results: list[RunResult]) -> str:
    for r in results:
        name = r.metric_names.get(r.output)
        if name:
            return name
    return "output metric"


def _against(figure: Figure, results: list[RunResult], path: Path) -> Path | None:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    drawn = False
    for name, points in figure.series.items():
        xs, means, los, his, dots = [], [], [], [], []
        for x, strategy in sorted(points.items(), key=lambda kv: float(kv[0])):
            values = _values(results, strategy, figure.at)
            if not values:
                continue
            ci = mean_interval(values)
            xs.append(float(x))
            means.append(ci.mean)
            los.append(_finite(ci.mean - ci.lo))
            his.append(_finite(ci.hi - ci.mean))
            dots += [(float(x), v) for v in values]
        if xs:
            line = ax.errorbar(xs, means, yerr=[los, his], marker="o", capsize=3, label=name)
            color = line.lines[0].get_color()
            ax.scatter(*zip(*dots, strict=True), s=8, alpha=0.35, color=color)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    chance = [r.chance.get(r.output) for r in results if r.status == "ok" and _at(r, figure.at)]
    if chance and chance[0] is not None:
        ax.axhline(chance[0], color="grey", linestyle=":", label="chance")
    ax.set_xscale("log")
    xticks = sorted({float(x) for points in figure.series.values() for x in points})
    ax.set_xticks(xticks, [f"{x:g}" for x in xticks])
    ax.set_xlabel(figure.x or "x")
    ax.set_ylabel(f"test {_metric_name(results)}")
    at = ", ".join(f"{k}={v}" for k, v in figure.at.items())
    ax.set_title(figure.title + (f" ({at})" if at else ""), fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_tight(fig, path)


def _bars(figure: Figure, results: list[RunResult], path: Path) -> Path | None:
    panels = [("", f"test {_metric_name(results)}")]
    if figure.probe:
        panels.append((figure.probe, f"linear probe of {figure.probe}"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    drawn = False
    for ax, (port, label) in zip(axes[0], panels, strict=True):
        names = []
        for i, strategy in enumerate(figure.strategies):
            values = _values(results, strategy, figure.at, port)
            names.append(strategy)
            if not values:
                continue
            ci = mean_interval(values)
            spread = [[_finite(ci.mean - ci.lo)], [_finite(ci.hi - ci.mean)]]
            ax.bar(i, ci.mean, yerr=spread, capsize=3, alpha=0.7)
            ax.scatter([i] * len(values), values, s=8, color="black", zorder=3)
            drawn = True
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
        ax.set_ylabel(label)
        ax.set_ylim(0, 1.02)
        ax.grid(axis="y", alpha=0.3)
    if not drawn:
        plt.close(fig)
        return None
    at = ", ".join(f"{k}={v}" for k, v in figure.at.items())
    fig.suptitle(figure.title + (f" ({at})" if at else ""), fontsize=10)
    return save_tight(fig, path)


def declared_figures(experiment: Experiment, results: list[RunResult], folder: Path) -> list[Path]:
    """Draw every figure ``experiment`` declares that has data; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for figure in experiment.figures:
        draw = _against if figure.kind == "against" else _bars
        path = draw(figure, results, figure_file(folder, figure.title))
        if path is not None:
            out.append(path)
    return out
