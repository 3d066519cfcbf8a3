"""Report figures from a list of ``RunResult``: learning curves, final accuracy,
examples to threshold and linear-probe heat maps.

Each function takes the name of one knob (the x axis, or one subplot per value), draws one
figure per combination of the other knobs that vary (or the ``fixed`` ones), writes PNGs
into ``out_dir`` and returns their paths. A strategy keeps its colour across figures.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import EngFormatter

from e2elab.errors import E2ELabError
from e2elab.run import RunResult
from e2elab.stats import mean_interval

DPI = 120
# Fixed colour slots (tab10) for the shipped strategies; grey (slot 7) is kept for chance.
KNOWN_STRATEGIES = ("e2e", "hinted", "modular", "greedy", "pretrain_finetune", "local", "ensemble")
_TAB10 = list(plt.get_cmap("tab10").colors)
_EXTRA = [_TAB10[8], _TAB10[9], *plt.get_cmap("Dark2").colors, *plt.get_cmap("tab20b").colors]
MARKERS = "osD^vP*Xph<>"
Colors = dict[str, Any]
Key = tuple[tuple[str, Any], ...]


def strategy_colors(strategies: Iterable[str]) -> Colors:
    """A colour per strategy: shipped names get fixed tab10 slots, others (sorted) the rest."""
    names = list(dict.fromkeys(strategies))
    colors: Colors = {s: _TAB10[KNOWN_STRATEGIES.index(s)] for s in names if s in KNOWN_STRATEGIES}
    others = sorted(s for s in names if s not in colors)
    colors.update({s: _EXTRA[i % len(_EXTRA)] for i, s in enumerate(others)})
    return colors


def learning_curves(
    results: Sequence[RunResult],
    knob: str,
    out_dir: Path,
    fixed: dict[str, Any] | None = None,
    colors: Colors | None = None,
) -> list[Path]:
    """Output metric against training examples; one subplot per value of ``knob``.

    Line: mean over seeds; band: min-max over seeds; dashed grey: chance; dotted: threshold.
    """
    colors = colors or strategy_colors(_strategies(results))
    paths = []
    for key, group in _groups(results, knob, fixed):
        values = _values(group, knob)
        fig, axes = _grid(len(values))
        for ax, value in zip(axes, values, strict=False):
            _curve_panel(ax, [r for r in group if _setting(r, knob) == value], colors)
            ax.set_title(f"{knob}={value}", fontsize=10)
        for ax in axes[len(values) :]:
            ax.set_visible(False)
        fig.supxlabel("training examples")
        fig.supylabel(_metric_label(group))
        handles = _strategy_handles(group, colors, line=True)
        handles += [Patch(color="grey", alpha=0.25, label="min-max over seeds")]
        _finish(fig, group, key, f"learning curves by {knob}", handles + _reference_handles())
        paths.append(_save(fig, out_dir / _filename("learning_curves", key)))
    return paths


def accuracy_vs_knob(
    results: Sequence[RunResult],
    knob: str,
    out_dir: Path,
    fixed: dict[str, Any] | None = None,
    colors: Colors | None = None,
) -> list[Path]:
    """Final output metric against ``knob`` per strategy: mean and 95% t-interval over seeds.

    Diverged runs are left out of the mean; their count is written next to the point.
    """
    colors = colors or strategy_colors(_strategies(results))
    paths = []
    for key, group in _groups(results, knob, fixed):
        values = _values(group, knob)
        xs, step = _positions(values)
        fig, ax = plt.subplots(figsize=(7.5, 4.8), layout="constrained")
        strategies = _strategies(group)
        for i, strategy in enumerate(strategies):
            cells = _cells(group, knob, values, strategy)
            stats = [mean_interval([r.output_metric for r in c if r.status == "ok"]) for c in cells]
            mean = np.array([s.mean for s in stats])
            err = np.array([[s.mean - s.lo for s in stats], [s.hi - s.mean for s in stats]])
            x = xs + _dodge(i, len(strategies), step)
            style = _style(strategy, strategies, colors)
            ax.errorbar(x, mean, yerr=err, capsize=3, lw=1.3, ms=6, **style)
            _note_diverged(ax, x, mean, cells, style["color"])
        _reference_lines(ax, group, knob, values, xs)
        _knob_axis(ax, knob, values, xs)
        ax.set_ylabel(f"final {_metric_label(group)}")
        if _is_accuracy(group):
            ax.set_ylim(-0.02, 1.05)
        ax.grid(alpha=0.3)
        handles = _strategy_handles(group, colors, line=True) + _reference_handles()
        what = f"final output accuracy by {knob} (mean, 95% interval over seeds)"
        _finish(fig, group, key, what, handles)
        paths.append(_save(fig, out_dir / _filename(f"accuracy_vs_{knob}", key)))
    return paths


@dataclass(frozen=True)
class ThresholdCell:
    """Examples to threshold of the ok runs of one (strategy, knob value) cell."""

    mean: float  # over the seeds that reached; NaN if none did
    low: float  # min over the seeds that reached
    high: float  # max over the seeds that reached
    reached: int
    runs: int  # ok runs
    diverged: int
    budget: int

    @property
    def missed(self) -> int:
        return self.runs - self.reached


def threshold_cell(runs: Sequence[RunResult]) -> ThresholdCell:
    """Summarise examples-to-threshold over ``runs``; diverged runs are counted apart."""
    ok = [r for r in runs if r.status == "ok"]
    hits = [float(r.examples_to_threshold) for r in ok if r.examples_to_threshold is not None]
    budget = max((int(r.spec["budget"]) for r in runs), default=0)
    if not hits:
        return ThresholdCell(math.nan, math.nan, math.nan, 0, len(ok), len(runs) - len(ok), budget)
    mean = sum(hits) / len(hits)
    return ThresholdCell(
        mean, min(hits), max(hits), len(hits), len(ok), len(runs) - len(ok), budget
    )


def examples_to_threshold_vs_knob(
    results: Sequence[RunResult],
    knob: str,
    out_dir: Path,
    fixed: dict[str, Any] | None = None,
    colors: Colors | None = None,
) -> list[Path]:
    """Examples to threshold against ``knob`` (log y) per strategy.

    Filled marker: mean over the seeds that reached, whiskers min-max. A cell where some or
    all seeds never reached gets an open marker at the budget labelled missed/runs.
    """
    colors = colors or strategy_colors(_strategies(results))
    paths = []
    for key, group in _groups(results, knob, fixed):
        values = _values(group, knob)
        xs, step = _positions(values)
        fig, ax = plt.subplots(figsize=(7.5, 4.8), layout="constrained")
        strategies = _strategies(group)
        for i, strategy in enumerate(strategies):
            cells = [threshold_cell(c) for c in _cells(group, knob, values, strategy)]
            x = xs + _dodge(i, len(strategies), step)
            _threshold_series(ax, x, cells, _style(strategy, strategies, colors), i)
        budgets = [
            threshold_cell([r for r in group if _setting(r, knob) == v]).budget for v in values
        ]
        ax.plot(xs, budgets, color="grey", ls="-.", lw=0.9)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(EngFormatter(sep=""))
        ax.yaxis.set_minor_formatter(EngFormatter(sep=""))
        ax.tick_params(axis="y", which="minor", labelsize=7)
        _knob_axis(ax, knob, values, xs)
        ax.set_ylabel(f"training examples to threshold {_thresholds(group)}")
        ax.grid(alpha=0.3, which="both")
        handles = [*_strategy_handles(group, colors, line=True), *_threshold_handles()]
        what = (
            f"examples to threshold by {knob} (mean over seeds that reached, whiskers min-max;"
            "\nnumbers at the budget: seeds not reached / seeds)"
        )
        _finish(fig, group, key, what, handles)
        paths.append(_save(fig, out_dir / _filename(f"examples_to_threshold_vs_{knob}", key)))
    return paths


_MISSED_LABEL = "not reached (plotted at budget)"


def _threshold_handles() -> list[Any]:
    return [
        Line2D([], [], color="black", marker="o", mfc="none", ls="", label=_MISSED_LABEL),
        Line2D([], [], color="grey", ls="-.", label="budget"),
    ]


def probe_heatmap(
    results: Sequence[RunResult],
    knob: str,
    out_dir: Path,
    strategy: str = "e2e",
    fixed: dict[str, Any] | None = None,
) -> list[Path]:
    """Modules x knob values heat map of linear-probe accuracy for one strategy.

    A cell is the mean over seeds of the mean probe accuracy over the module's ports.
    Returns [] when no run of ``strategy`` carries probes.
    """
    chosen = [r for r in results if r.spec["strategy"] == strategy and _probes(r)]
    if not chosen:
        return []
    paths = []
    for key, group in _groups(chosen, knob, fixed):
        values = _values(group, knob)
        modules = _module_order(group, knob, values)
        matrix = np.array([[_probe_value(group, knob, v, m) for v in values] for m in modules])
        fig = _heatmap(matrix, modules, values, knob)
        _finish(fig, group, key, f"linear probes per module, strategy {strategy}", [])
        name = _filename(f"probe_heatmap_{strategy}", key)
        paths.append(_save(fig, out_dir / name))
    return paths


def all_figures(
    results: Sequence[RunResult],
    knob: str,
    out_dir: Path,
    fixed: dict[str, Any] | None = None,
    probe_strategy: str = "e2e",
) -> list[Path]:
    """Every figure above, with one colour per strategy throughout; returns the PNG paths."""
    if not results:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    colors = strategy_colors(_strategies(results))
    return [
        *learning_curves(results, knob, out_dir, fixed, colors),
        *accuracy_vs_knob(results, knob, out_dir, fixed, colors),
        *examples_to_threshold_vs_knob(results, knob, out_dir, fixed, colors),
        *probe_heatmap(results, knob, out_dir, probe_strategy, fixed),
    ]


# --- grouping ---------------------------------------------------------------------------


def _settings(result: RunResult) -> dict[str, Any]:
    """The task and its knobs: what a figure is split by."""
    return {"task": result.spec.get("task"), **result.spec.get("knobs", {})}


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return json.dumps(value, sort_keys=True, default=str)
    return value


def _setting(result: RunResult, name: str) -> Any:
    return _hashable(_settings(result).get(name))


def _order(value: Any) -> tuple[int, Any]:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return (0, value) if numeric else (1, str(value))


def _groups(
    results: Sequence[RunResult], knob: str, fixed: dict[str, Any] | None
) -> list[tuple[Key, list[RunResult]]]:
    """Results with ``knob``, matching ``fixed``, split by the other settings that vary."""
    fixed = fixed or {}
    chosen = [
        r
        for r in results
        if knob in _settings(r) and all(_setting(r, k) == _hashable(v) for k, v in fixed.items())
    ]
    if results and not chosen:
        known = sorted({k for r in results for k in _settings(r)})
        raise E2ELabError(f"no result has knob {knob!r} matching {fixed}; knobs: {known}")
    names = sorted({k for r in chosen for k in _settings(r)} - {knob})
    varying = [n for n in names if n in fixed or len({_setting(r, n) for r in chosen}) > 1]
    groups: dict[Key, list[RunResult]] = {}
    for r in chosen:
        groups.setdefault(tuple((n, _setting(r, n)) for n in varying), []).append(r)
    return sorted(groups.items(), key=lambda kv: [_order(v) for _, v in kv[0]])


def _values(results: Sequence[RunResult], knob: str) -> list[Any]:
    return sorted({_setting(r, knob) for r in results}, key=_order)


def _strategies(results: Iterable[RunResult]) -> list[str]:
    return list(dict.fromkeys(r.spec["strategy"] for r in results))


def _cells(
    group: Sequence[RunResult], knob: str, values: Sequence[Any], strategy: str
) -> list[list[RunResult]]:
    own = [r for r in group if r.spec["strategy"] == strategy]
    return [[r for r in own if _setting(r, knob) == v] for v in values]


def _filename(prefix: str, key: Key) -> str:
    parts = [prefix, *(f"{k}={v}" for k, v in key)]
    return "_".join(re.sub(r"[^A-Za-z0-9_=.+-]+", "_", p).strip("_") for p in parts) + ".png"


# --- drawing helpers --------------------------------------------------------------------


def _style(strategy: str, strategies: Sequence[str], colors: Colors) -> dict[str, Any]:
    marker = MARKERS[strategies.index(strategy) % len(MARKERS)]
    return {"color": colors.get(strategy, "black"), "marker": marker, "label": strategy}


def _strategy_handles(group: Sequence[RunResult], colors: Colors, line: bool) -> list[Any]:
    strategies = _strategies(group)
    return [
        Line2D([], [], ls="-" if line else "", **_style(s, strategies, colors)) for s in strategies
    ]


def _reference_handles() -> list[Any]:
    return [
        Line2D([], [], color="grey", ls="--", label="chance"),
        Line2D([], [], color="black", ls=":", label="threshold"),
    ]


def _is_accuracy(group: Sequence[RunResult]) -> bool:
    """Class ports have a chance rate in [0, 1]; regression ports a negative variance."""
    return all(r.chance.get(r.output, 0.0) >= 0 for r in group)


def _metric_label(group: Sequence[RunResult]) -> str:
    return "output accuracy" if _is_accuracy(group) else "output metric (higher is better)"


def _thresholds(group: Sequence[RunResult]) -> str:
    return "/".join(f"{t:g}" for t in sorted({float(r.spec["threshold"]) for r in group}))


def _grid(count: int) -> tuple[Figure, list[Axes]]:
    cols = min(count, 3)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(4.3 * cols + 0.6, 3.2 * rows + 1.6),
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    return fig, list(axes.flat)


def _curve(runs: Sequence[RunResult]) -> tuple[np.ndarray, np.ndarray]:
    """x points (union over runs) and a seeds x points matrix of the output metric (NaN gaps)."""
    xs = sorted({int(p["examples"]) for r in runs for p in r.curve})
    index = {x: i for i, x in enumerate(xs)}
    ys = np.full((len(runs), len(xs)), np.nan)
    for row, r in enumerate(runs):
        for p in r.curve:
            value = p["metrics"].get(r.output)
            ys[row, index[int(p["examples"])]] = np.nan if value is None else value
    seen = ~np.all(np.isnan(ys), axis=0)
    return np.array(xs, dtype=float)[seen], ys[:, seen]


def _curve_panel(ax: Axes, runs: Sequence[RunResult], colors: Colors) -> None:
    for strategy in _strategies(runs):
        x, ys = _curve([r for r in runs if r.spec["strategy"] == strategy])
        if not x.size:
            continue
        color = colors.get(strategy, "black")
        ax.plot(x, np.nanmean(ys, axis=0), color=color, lw=1.5, label=strategy)
        if len(ys) > 1:
            ax.fill_between(
                x, np.nanmin(ys, axis=0), np.nanmax(ys, axis=0), color=color, alpha=0.18, lw=0
            )
    ax.axhline(_mean(r.chance.get(r.output, math.nan) for r in runs), color="grey", ls="--", lw=1)
    for threshold in {float(r.spec["threshold"]) for r in runs}:
        ax.axhline(threshold, color="black", ls=":", lw=1)
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    if _is_accuracy(runs):
        ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)


def _mean(values: Iterable[float]) -> float:
    return mean_interval(list(values)).mean


def _positions(values: Sequence[Any]) -> tuple[np.ndarray, float]:
    """x positions: the values themselves if numeric, else 0..k-1; and the smallest step."""
    if all(_order(v)[0] == 0 for v in values):
        xs = np.array(values, dtype=float)
        return xs, float(np.min(np.diff(xs))) if len(xs) > 1 else 1.0
    return np.arange(len(values), dtype=float), 1.0


def _dodge(index: int, count: int, step: float) -> float:
    """A small sideways offset so that strategies' markers at one value do not overlap."""
    return (index - (count - 1) / 2) * step * 0.45 / max(count, 1)


def _knob_axis(ax: Axes, knob: str, values: Sequence[Any], xs: np.ndarray) -> None:
    ax.set_xticks(xs, [str(v) for v in values])
    ax.set_xlabel(knob)
    ax.set_xlim(xs.min() - 0.5 * _positions(values)[1], xs.max() + 0.5 * _positions(values)[1])


def _reference_lines(
    ax: Axes, group: Sequence[RunResult], knob: str, values: Sequence[Any], xs: np.ndarray
) -> None:
    """Chance (dashed grey) and threshold (dotted) at each knob value."""
    cells = [[r for r in group if _setting(r, knob) == v] for v in values]
    chance = [_mean(r.chance.get(r.output, math.nan) for r in c) for c in cells]
    threshold = [_mean(float(r.spec["threshold"]) for r in c) for c in cells]
    ax.plot(xs, chance, color="grey", ls="--", lw=1, marker="_", ms=14)
    ax.plot(xs, threshold, color="black", ls=":", lw=1)


def _note_diverged(
    ax: Axes, x: np.ndarray, y: np.ndarray, cells: Sequence[Sequence[RunResult]], color: Any
) -> None:
    for xi, yi, cell in zip(x, y, cells, strict=True):
        diverged = sum(r.status != "ok" for r in cell)
        if diverged:
            at = yi if yi == yi else 0.0
            ax.annotate(
                f"{diverged} div.",
                (xi, at),
                xytext=(3, -10),
                textcoords="offset points",
                fontsize=7,
                color=color,
            )


def _threshold_series(
    ax: Axes, x: np.ndarray, cells: Sequence[ThresholdCell], style: dict[str, Any], index: int
) -> None:
    """Filled markers at the mean of the seeds that reached; open ones at the budget."""
    mean = np.array([max(c.mean, 1.0) if c.reached else np.nan for c in cells])
    low = [m - c.low for m, c in zip(mean, cells, strict=True)]
    high = [c.high - m for m, c in zip(mean, cells, strict=True)]
    err = np.nan_to_num(np.array([low, high]))
    ax.errorbar(x, mean, yerr=err, capsize=3, lw=1.3, ms=6, **style)
    for xi, c in zip(x, cells, strict=True):
        if c.missed or not c.runs:
            ax.plot(
                xi, c.budget, marker=style["marker"], mfc="none", mec=style["color"], ms=8, ls=""
            )
            dy = 7 if index % 2 == 0 else -13
            text = f"{c.missed}/{c.runs}" + (f" +{c.diverged} div." if c.diverged else "")
            ax.annotate(
                text,
                (xi, c.budget),
                xytext=(0, dy),
                textcoords="offset points",
                ha="center",
                fontsize=7,
                color=style["color"],
            )


def _probes(result: RunResult) -> dict[str, float]:
    return getattr(result, "probes", None) or {}


def _modules(result: RunResult) -> dict[str, list[str]]:
    """The run's modules and their ports; each probed port on its own if none are recorded."""
    modules = getattr(result, "modules", None) or {}
    return dict(modules) or {p: [p] for p in _probes(result)}


def _module_order(group: Sequence[RunResult], knob: str, values: Sequence[Any]) -> list[str]:
    ordered = sorted(group, key=lambda r: values.index(_setting(r, knob)))
    return list(dict.fromkeys(m for r in ordered for m in _modules(r)))


def _probe_value(group: Sequence[RunResult], knob: str, value: Any, module: str) -> float:
    """Mean over seeds of the mean probe accuracy over ``module``'s ports (NaN: none)."""
    per_run = []
    for r in group:
        if _setting(r, knob) == value and module in _modules(r):
            probes = _probes(r)
            per_run.append(_mean(probes.get(p, math.nan) for p in _modules(r)[module]))
    return _mean(per_run)


def _heatmap(
    matrix: np.ndarray, modules: Sequence[str], values: Sequence[Any], knob: str
) -> Figure:
    width = 2.6 + 0.85 * len(values) + 0.07 * max(len(m) for m in modules)
    fig, ax = plt.subplots(
        figsize=(max(width, 5.5), 1.9 + 0.42 * len(modules)), layout="constrained"
    )
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
    finite = matrix[np.isfinite(matrix)]
    low = min(0.0, float(finite.min())) if finite.size else 0.0
    high = max(1.0, float(finite.max())) if finite.size else 1.0
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=low, vmax=high, aspect="auto")
    for (row, col), v in np.ndenumerate(matrix):
        text, dark = ("-", False) if v != v else (f"{v:.2f}", (v - low) / (high - low) < 0.6)
        ax.text(
            col, row, text, ha="center", va="center", fontsize=9, color="white" if dark else "black"
        )
    ax.set_xticks(range(len(values)), [str(v) for v in values])
    ax.set_yticks(range(len(modules)), list(modules))
    ax.set_xlabel(knob)
    ax.set_ylabel("module")
    fig.colorbar(image, ax=ax, label="linear probe accuracy")
    return fig


def _finish(
    fig: Figure, group: Sequence[RunResult], key: Key, what: str, handles: list[Any]
) -> None:
    """A title naming the task and the fixed settings, and one legend under the axes."""
    tasks = ", ".join(dict.fromkeys(str(r.spec.get("task")) for r in group))
    fixed = ", ".join(f"{k}={v}" for k, v in key if k != "task")
    fig.suptitle(f"{tasks}" + (f" ({fixed})" if fixed else "") + f": {what}", fontsize=11)
    if handles:
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncol=min(len(handles), 4),
            fontsize=8,
            frameon=False,
        )


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
