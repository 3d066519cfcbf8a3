"""Report figures from a list of ``RunResult``: learning curves, final accuracy,
examples to threshold and linear-probe heat maps.

Each function takes the name of one knob (the x axis, or one subplot per value), draws one
figure per combination of the other knobs that vary (or the ``fixed`` ones), writes PNGs
into ``out_dir`` and returns their paths. A strategy keeps its colour across figures.
"""

from __future__ import annotations

import math
import re
from collections import Counter
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
from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter

from e2elab import query
from e2elab.errors import E2ELabError
from e2elab.records import RunResult
from e2elab.stats import mean_interval, metric_interval
from e2elab.summary import port_names

DPI = 120
# Fixed colour slots (tab10) for the shipped strategies; grey (slot 7) is kept for chance.
KNOWN_STRATEGIES = ("e2e", "hinted", "modular", "greedy", "pretrain_finetune", "local", "ensemble")
_TAB10 = list(plt.get_cmap("tab10").colors)
_EXTRA = [
    _TAB10[8],  # olive
    _TAB10[9],  # cyan
    "#e6ab02",  # gold
    "#393b79",  # navy
    "#7b4173",  # plum
    "#1b9e77",  # teal
    "#000000",
    *plt.get_cmap("tab20b").colors[1::2],
]
MARKERS = "osD^vP*Xph<>d8H"
Styles = dict[str, dict[str, Any]]
Key = tuple[tuple[str, Any], ...]


def strategy_styles(strategies: Iterable[str]) -> Styles:
    """Colour and marker per strategy, in first-seen order. Shipped names get fixed tab10
    colours and markers; the others (e.g. ``frozen_others:module=M``), sorted, the rest."""
    names = list(dict.fromkeys(strategies))
    others = sorted(s for s in names if s not in KNOWN_STRATEGIES)
    styles: Styles = {}
    for name in names:
        if name in KNOWN_STRATEGIES:
            i = KNOWN_STRATEGIES.index(name)
            styles[name] = {"color": _TAB10[i], "marker": MARKERS[i]}
        else:
            j = others.index(name)
            marker = MARKERS[(len(KNOWN_STRATEGIES) + j) % len(MARKERS)]
            styles[name] = {"color": _EXTRA[j % len(_EXTRA)], "marker": marker}
    return styles


def strategy_colors(strategies: Iterable[str]) -> dict[str, Any]:
    """The colour of each strategy (see ``strategy_styles``)."""
    return {name: style["color"] for name, style in strategy_styles(strategies).items()}


def learning_curves(
    results: Sequence[RunResult],
    knob: str,
    out_dir: Path,
    fixed: dict[str, Any] | None = None,
    styles: Styles | None = None,
) -> list[Path]:
    """Output metric against training examples; one subplot per value of ``knob``.

    Line: mean over seeds; band: min-max over seeds; dashed grey: chance; dotted: threshold.
    """
    styles = styles or strategy_styles(_strategies(results))
    paths = []
    for key, group in _groups(results, knob, fixed):
        values = _values(group, knob)
        fig, axes = _grid(len(values))
        for ax, value in zip(axes, values, strict=False):
            _curve_panel(ax, [r for r in group if _setting(r, knob) == value], styles)
            ax.set_title(f"{knob}={value}", fontsize=10)
            ax.set_xlabel("training examples")
        for ax in axes[len(values) :]:
            ax.set_visible(False)
        for ax in axes[:: min(len(values), 3)]:
            ax.set_ylabel(_metric_label(group))
        band = Patch(color="grey", alpha=0.25, label="min-max over seeds")
        handles = [*_strategy_handles(group, styles, marker=False), band, *_reference_handles()]
        what = f"learning curves by {knob} (line: mean over seeds)"
        _finish(fig, group, key, what, handles)
        paths.append(_save(fig, out_dir / _filename("learning_curves", key)))
    return paths


def accuracy_vs_knob(
    results: Sequence[RunResult],
    knob: str,
    out_dir: Path,
    fixed: dict[str, Any] | None = None,
    styles: Styles | None = None,
    prefix: str | None = None,
) -> list[Path]:
    """Final output metric against ``knob`` per strategy: mean and 95% t-interval over seeds.

    Diverged runs are left out of the mean; their count is written next to the point.
    """
    styles = styles or strategy_styles(_strategies(results))
    paths = []
    for key, group in _groups(results, knob, fixed):
        values = _values(group, knob)
        xs, step = _positions(values)
        fig, ax = plt.subplots(figsize=(9, 5.4), layout="constrained")
        strategies = _ordered(group, styles)
        for i, strategy in enumerate(strategies):
            cells = _cells(group, knob, values, strategy)
            stats = [
                metric_interval([r.output_metric for r in c if r.status == "ok"]) for c in cells
            ]
            mean = np.array([s.mean for s in stats])
            err = np.array([[s.mean - s.lo for s in stats], [s.hi - s.mean for s in stats]])
            x = xs + _dodge(i, len(strategies), step, 0.5)
            style = _style(strategy, styles)
            ax.errorbar(x, mean, yerr=err, capsize=3, lw=1.3, ms=6, **style)
            _note_diverged(ax, x, mean, cells, style["color"])
        _reference_lines(ax, group, knob, values, xs)
        _knob_axis(ax, knob, values, xs)
        ax.set_ylabel(f"final {_metric_label(group)}")
        if _is_accuracy(group):
            ax.set_ylim(-0.02, 1.05)
        ax.grid(alpha=0.3)
        handles = _strategy_handles(group, styles) + _reference_handles()
        what = f"final output accuracy by {knob} (mean, 95% interval over seeds)"
        _finish(fig, group, key, what, handles)
        name = prefix or f"accuracy_vs_{knob}"
        paths.append(_save(fig, out_dir / _filename(name, key)))
    return paths


FAINT = {"color": "#b8b8b8", "alpha": 0.45}


def claim_figure(
    claim: str,
    named: Sequence[str],
    results: Sequence[RunResult],
    knob: str,
    out_dir: Path,
) -> list[Path]:
    """The accuracy-by-knob figure of one claim: the strategies it names in their
    colours, every other strategy faint grey behind them. Drawn where an experiment has
    more strategies than a claim names (glasmachers: 15 in one panel otherwise)."""
    strategies = _strategies(results)
    focus = [s for s in strategies if s in named]
    if not focus or len(focus) == len(strategies):
        return []
    knob = _axis(results, knob)
    base = strategy_styles(strategies)
    # faint ones first, so the claim's strategies are drawn on top of them
    styles = {s: {**base[s], **FAINT} for s in strategies if s not in focus}
    styles |= {s: base[s] for s in focus}
    slug = re.sub(r"[^\w.+-]", "_", claim)
    return accuracy_vs_knob(results, knob, out_dir, None, styles, f"claim_{slug}")


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
    budget = max((int(r.spec.settings.budget) for r in runs), default=0)
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
    styles: Styles | None = None,
) -> list[Path]:
    """Examples to threshold against ``knob`` (log y) per strategy.

    Filled marker: mean over the seeds that reached, whiskers min-max. A cell where some or
    all seeds never reached gets an open marker at the budget labelled missed/runs.
    """
    styles = styles or strategy_styles(_strategies(results))
    paths = []
    for key, group in _groups(results, knob, fixed):
        values = _values(group, knob)
        xs, step = _positions(values)
        fig, ax = plt.subplots(figsize=(9, 5.4), layout="constrained")
        strategies = _ordered(group, styles)
        for i, strategy in enumerate(strategies):
            cells = [threshold_cell(c) for c in _cells(group, knob, values, strategy)]
            x = xs + _dodge(i, len(strategies), step, 0.75)
            _threshold_series(ax, x, cells, _style(strategy, styles))
        budgets = [
            threshold_cell([r for r in group if _setting(r, knob) == v]).budget for v in values
        ]
        ax.plot(xs, budgets, color="grey", ls="-.", lw=0.9)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(EngFormatter(sep=""))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(top=max(budgets) * 2.2)
        _knob_axis(ax, knob, values, xs)
        ax.set_ylabel(f"training examples to threshold {_thresholds(group)}")
        ax.grid(alpha=0.3, which="both")
        handles = [*_strategy_handles(group, styles), *_threshold_handles()]
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


MAX_PORT_COLUMNS = 10


def port_curves(
    results: Sequence[RunResult],
    knob: str,
    out_dir: Path,
    fixed: dict[str, Any] | None = None,
    styles: Styles | None = None,
) -> list[Path]:
    """Every port's learning curve, as small multiples: a row per value of ``knob``, a
    column per port (the output last), a line per strategy (mean over seeds; band:
    min-max). Shows which module learned under which strategy. Returns [] for a system
    whose only port is its output (the learning-curve figure shows that)."""
    styles = styles or strategy_styles(_strategies(results))
    paths = []
    for key, group in _groups(results, knob, fixed):
        ports = port_names(group)[-MAX_PORT_COLUMNS:]
        if len(ports) < 2:
            continue
        values = _values(group, knob)
        fig, grid = plt.subplots(
            len(values),
            len(ports),
            figsize=(2.3 * len(ports) + 0.8, 1.9 * len(values) + 1.4),
            squeeze=False,
            sharex="row",
            layout="constrained",
        )
        for row, value in enumerate(values):
            runs = [r for r in group if _setting(r, knob) == value]
            for col, port in enumerate(ports):
                ax = grid[row][col]
                if not any(port in r.final for r in runs):
                    ax.set_visible(False)
                    continue
                _port_panel(ax, runs, port, styles)
                ax.set_title(f"{port}" + (f"  ({knob}={value})" if col == 0 else ""), fontsize=8)
                ax.tick_params(labelsize=7)
        handles = _strategy_handles(group, styles, marker=False)
        what = f"every port's learning curve, rows by {knob} (dashed: the port's chance level)"
        _finish(fig, group, key, what, handles)
        paths.append(_save(fig, out_dir / _filename("port_curves", key)))
    return paths


def _port_panel(ax: Axes, runs: Sequence[RunResult], port: str, styles: Styles) -> None:
    for strategy in _ordered(runs, styles):
        chosen = [r for r in runs if r.spec.strategy == strategy and r.status == "ok"]
        x, ys = _curve(chosen, port)
        if not x.size:
            continue
        color = _style(strategy, styles)["color"]
        ax.plot(x, np.nanmean(ys, axis=0), color=color, lw=1.2)
        if len(ys) > 1:
            ax.fill_between(
                x, np.nanmin(ys, axis=0), np.nanmax(ys, axis=0), color=color, alpha=0.15, lw=0
            )
    chance = [r.chance.get(port) for r in runs if r.chance.get(port) is not None]
    if chance:
        ax.axhline(_mean(chance), color="grey", ls="--", lw=0.8)
    metric = next((r.metric_names.get(port) for r in runs if r.metric_names.get(port)), "")
    if "accuracy" in metric:  # every strategy on the same 0..1 scale
        ax.set_ylim(-0.02, 1.02)
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.grid(alpha=0.3)


def probe_heatmap(
    results: Sequence[RunResult],
    knob: str,
    out_dir: Path,
    strategy: str = "e2e",
    fixed: dict[str, Any] | None = None,
) -> list[Path]:
    """Modules x knob values heat map of linear-probe accuracy for one strategy.

    A cell is the mean over seeds of the mean probe score over the module's ports. Scores
    of different kinds (balanced accuracy, R^2) are never averaged together: a module
    with ports of both gets one row per kind. Returns [] when no run of ``strategy``
    carries probes.
    """
    chosen = [r for r in results if r.spec.strategy == strategy]
    if not any(_probes(r) for r in chosen):
        return []
    paths = []
    for key, group in _groups(chosen, knob, fixed):
        if not any(_probes(r) for r in group):
            continue
        values = _values(group, knob)  # values without probes stay, as "-" columns
        rows, matrix, init = _probe_matrices(group, knob, values)
        metrics = list(dict.fromkeys(metric for _, metric in rows))
        labels = [m if len(metrics) == 1 else f"{m} [{metric}]" for m, metric in rows]
        fig = _heatmap(matrix, init, labels, values, knob, " / ".join(metrics))
        what = (
            f"linear probes per module, strategy {strategy}"
            "\n(in brackets: the same probe at initialisation; -: no probe data)"
        )
        _finish(fig, group, key, what, [])
        name = _filename(f"probe_heatmap_{strategy}", key)
        paths.append(_save(fig, out_dir / name))
    return paths


def _probe_matrices(
    group: Sequence[RunResult], knob: str, values: Sequence[Any]
) -> tuple[list[tuple[str, str]], np.ndarray, np.ndarray]:
    """The heat map's rows (module, metric), and its trained and at-initialisation
    matrices (rows x knob values, NaN where no probe was stored)."""
    rows = _probe_rows(group, knob, values)
    matrix, init = (
        np.array([[_probe_value(group, knob, v, row, at) for v in values] for row in rows])
        for at in ("probes", "probes_at_init")
    )
    return rows, matrix, init


def all_figures(
    results: Sequence[RunResult],
    knob: str,
    out_dir: Path,
    fixed: dict[str, Any] | None = None,
    probe_strategy: str = "e2e",
) -> list[Path]:
    """Every figure above, with one colour per strategy throughout; returns the PNG paths.
    Without a ``knob`` (an experiment of one cell) the task's first knob is the x-axis."""
    if not results:
        return []
    knob = _axis(results, knob)
    out_dir.mkdir(parents=True, exist_ok=True)
    styles = strategy_styles(_strategies(results))
    return [
        *learning_curves(results, knob, out_dir, fixed, styles),
        *port_curves(results, knob, out_dir, fixed, styles),
        *accuracy_vs_knob(results, knob, out_dir, fixed, styles),
        *examples_to_threshold_vs_knob(results, knob, out_dir, fixed, styles),
        *probe_heatmap(results, knob, out_dir, probe_strategy, fixed),
        *probe_heatmaps(results, knob, out_dir, fixed, probe_strategy),
    ]


# --- grouping ---------------------------------------------------------------------------


def _axis(results: Sequence[RunResult], knob: str) -> str:
    """The knob on the x-axis: ``knob``, or without one (an experiment of one cell) the
    task's first knob."""
    if not knob or not any(knob in _settings(r) for r in results):
        return knob or next(iter(results[0].spec.knobs), "task")
    return knob


def _settings(result: RunResult) -> dict[str, Any]:
    """The task and its knobs: what a figure is split by."""
    return {"task": result.spec.task, **result.spec.knobs}


def _setting(result: RunResult, name: str) -> Any:
    return query.field(result, name)


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
        if knob in _settings(r)
        and all(_setting(r, k) == query.hashable(v) for k, v in fixed.items())
    ]
    if results and not chosen:
        known = sorted({k for r in results for k in _settings(r)})
        raise E2ELabError(f"no result has knob {knob!r} matching {fixed}; knobs: {known}")
    names = sorted({k for r in chosen for k in _settings(r)} - {knob})
    varying = [n for n in names if n in fixed or len({_setting(r, n) for r in chosen}) > 1]
    cells = query.group(chosen, *varying)
    named = [(tuple(zip(varying, key, strict=True)), runs) for key, runs in cells.items()]
    return sorted(named, key=lambda kv: [_order(v) for _, v in kv[0]])


def _values(results: Sequence[RunResult], knob: str) -> list[Any]:
    return sorted({_setting(r, knob) for r in results}, key=_order)


def _strategies(results: Iterable[RunResult]) -> list[str]:
    return list(dict.fromkeys(r.spec.strategy for r in results))


def _cells(
    group: Sequence[RunResult], knob: str, values: Sequence[Any], strategy: str
) -> list[list[RunResult]]:
    own = [r for r in group if r.spec.strategy == strategy]
    return [[r for r in own if _setting(r, knob) == v] for v in values]


def _filename(prefix: str, key: Key) -> str:
    parts = [prefix, *(f"{k}={v}" for k, v in key)]
    return "_".join(re.sub(r"[^A-Za-z0-9_=.+-]+", "_", p).strip("_") for p in parts) + ".png"


# --- drawing helpers --------------------------------------------------------------------


def _ordered(results: Iterable[RunResult], styles: Styles) -> list[str]:
    """The strategies of ``results`` in the order of ``styles`` (unknown ones last)."""
    present = _strategies(results)
    return [s for s in styles if s in present] + [s for s in present if s not in styles]


def _style(strategy: str, styles: Styles) -> dict[str, Any]:
    return {**styles.get(strategy, {"color": "black", "marker": "o"}), "label": strategy}


def _strategy_handles(group: Sequence[RunResult], styles: Styles, marker: bool = True) -> list[Any]:
    handles = []
    for strategy in _ordered(group, styles):
        style = _style(strategy, styles)
        handles.append(Line2D([], [], **{**style, "marker": style["marker"] if marker else ""}))
    return handles


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
    return "/".join(f"{t:g}" for t in sorted({float(r.spec.settings.threshold) for r in group}))


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


def _curve(runs: Sequence[RunResult], port: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """x points (union over runs) and a seeds x points matrix of a port's metric (the
    output's by default; NaN gaps)."""
    xs = sorted({int(p["examples"]) for r in runs for p in r.curve})
    index = {x: i for i, x in enumerate(xs)}
    ys = np.full((len(runs), len(xs)), np.nan)
    for row, r in enumerate(runs):
        for p in r.curve:
            value = p["metrics"].get(port or r.output)
            ys[row, index[int(p["examples"])]] = np.nan if value is None else value
    seen = ~np.all(np.isnan(ys), axis=0)
    return np.array(xs, dtype=float)[seen], ys[:, seen]


def _curve_panel(ax: Axes, runs: Sequence[RunResult], styles: Styles) -> None:
    """Ok runs only (as in the other figures and the summary); diverged ones are counted."""
    for strategy in _ordered(runs, styles):
        x, ys = _curve([r for r in runs if r.spec.strategy == strategy and r.status == "ok"])
        if not x.size:
            continue
        color = _style(strategy, styles)["color"]
        ax.plot(x, np.nanmean(ys, axis=0), color=color, lw=1.5, label=strategy)
        if len(ys) > 1:
            ax.fill_between(
                x, np.nanmin(ys, axis=0), np.nanmax(ys, axis=0), color=color, alpha=0.18, lw=0
            )
    for strategy in _ordered(runs, styles):  # where each later phase starts
        color = _style(strategy, styles)["color"]
        for x in phase_starts(next(r for r in runs if r.spec.strategy == strategy)):
            ax.axvline(x, color=color, ls=(0, (1, 3)), lw=0.9, alpha=0.8)
    ax.axhline(_mean(r.chance.get(r.output, math.nan) for r in runs), color="grey", ls="--", lw=1)
    for threshold in {float(r.spec.settings.threshold) for r in runs}:
        ax.axhline(threshold, color="black", ls=":", lw=1)
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    if _is_accuracy(runs):
        ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    diverged = Counter(r.spec.strategy for r in runs if r.status != "ok")
    if diverged:
        lines = [f"{s}: {k} diverged (not shown)" for s, k in diverged.items()]
        ax.text(0.98, 0.03, "\n".join(lines), transform=ax.transAxes, ha="right", fontsize=7)


def phase_starts(result: RunResult) -> list[float]:
    """Training examples at which each phase after the first starts (the strategy's
    schedule: shares of the budget), e.g. [10000, 20000] for modular's thirds of 30000."""
    budget = float(result.spec.settings.budget)
    shares = [float(p.get("share", 0.0)) for p in result.phases]
    starts, total = [], 0.0
    for share in shares[:-1]:
        total += share
        starts.append(total * budget)
    return starts


def _mean(values: Iterable[float]) -> float:
    return mean_interval(list(values)).mean


def _positions(values: Sequence[Any]) -> tuple[np.ndarray, float]:
    """x positions: the values themselves if numeric, else 0..k-1; and the smallest step."""
    if all(_order(v)[0] == 0 for v in values):
        xs = np.array(values, dtype=float)
        return xs, float(np.min(np.diff(xs))) if len(xs) > 1 else 1.0
    return np.arange(len(values), dtype=float), 1.0


def _dodge(index: int, count: int, step: float, spread: float) -> float:
    """A sideways offset so that strategies' markers at one value do not overlap; all
    strategies together span ``spread`` of the step between knob values."""
    return (index - (count - 1) / 2) * step * spread / max(count, 1)


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
    threshold = [_mean(float(r.spec.settings.threshold) for r in c) for c in cells]
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
    ax: Axes, x: np.ndarray, cells: Sequence[ThresholdCell], style: dict[str, Any]
) -> None:
    """Filled markers at the mean of the seeds that reached; open ones at the budget."""
    mean = np.array([max(c.mean, 1.0) if c.reached else np.nan for c in cells])
    low = [m - c.low for m, c in zip(mean, cells, strict=True)]
    high = [c.high - m for m, c in zip(mean, cells, strict=True)]
    # the mean is drawn at least at 1 (a log axis): whiskers never cross it, never negative
    err = np.clip(np.nan_to_num(np.array([low, high])), 0.0, None)
    ax.errorbar(x, mean, yerr=err, capsize=3, lw=1.3, ms=6, **style)
    for xi, c in zip(x, cells, strict=True):
        if c.missed or not c.runs:
            ax.plot(
                xi, c.budget, marker=style["marker"], mfc="none", mec=style["color"], ms=8, ls=""
            )
            text = f"{c.missed}/{c.runs}" + (f" +{c.diverged} div." if c.diverged else "")
            ax.annotate(
                text,
                (xi, c.budget),
                xytext=(0, 6),
                textcoords="offset points",
                ha="center",
                va="bottom",
                rotation=90,
                fontsize=7,
                color=style["color"],
            )


def _probes(result: RunResult, at: str = "probes") -> dict[str, float]:
    """Linear-probe accuracy per port after training (``probes``) or at ``probes_at_init``."""
    return getattr(result, at, None) or {}


def _modules(result: RunResult) -> dict[str, list[str]]:
    """The run's modules and their ports; each probed port on its own if none are recorded."""
    modules = getattr(result, "modules", None) or {}
    return dict(modules) or {p: [p] for p in _probes(result)}


def _module_order(group: Sequence[RunResult], knob: str, values: Sequence[Any]) -> list[str]:
    ordered = sorted(group, key=lambda r: values.index(_setting(r, knob)))
    return list(dict.fromkeys(m for r in ordered for m in _modules(r)))


def _probe_metric(result: RunResult, port: str) -> str:
    return (getattr(result, "probe_metric", None) or {}).get(port, "balanced accuracy")


def _probe_rows(
    group: Sequence[RunResult], knob: str, values: Sequence[Any]
) -> list[tuple[str, str]]:
    """(module, probe metric) rows: one per kind of score among the module's ports."""
    rows: dict[tuple[str, str], None] = {}
    for module in _module_order(group, knob, values):
        for r in group:
            for port in _modules(r).get(module, []):
                if port in _probes(r):
                    rows[(module, _probe_metric(r, port))] = None
    return list(rows)


def _probe_value(
    group: Sequence[RunResult], knob: str, value: Any, row: tuple[str, str], at: str = "probes"
) -> float:
    """Mean over seeds of the mean probe score over ``module``'s ports of one metric."""
    module, metric = row
    per_run = []
    for r in group:
        if _setting(r, knob) == value and module in _modules(r):
            probes = _probes(r, at)
            ports = [p for p in _modules(r)[module] if _probe_metric(r, p) == metric]
            per_run.append(_mean(probes.get(p, math.nan) for p in ports))
    return _mean(per_run)


def _heatmap(
    matrix: np.ndarray,
    init: np.ndarray,
    modules: Sequence[str],
    values: Sequence[Any],
    knob: str,
    metric: str = "balanced accuracy",
) -> Figure:
    width = 2.6 + 0.95 * len(values) + 0.07 * max(len(m) for m in modules)
    fig, ax = plt.subplots(
        figsize=(max(width, 6.0), 2.1 + 0.5 * len(modules)), layout="constrained"
    )
    low, high = _scale([matrix])
    image = _heatmap_on(ax, matrix, init, modules, values, knob, low, high)
    ax.set_ylabel("module")
    fig.colorbar(image, ax=ax, label=f"linear probe {metric}")
    return fig


def _scale(matrices: Sequence[np.ndarray]) -> tuple[float, float]:
    finite = np.concatenate([m[np.isfinite(m)] for m in matrices])
    low = min(0.0, float(finite.min())) if finite.size else 0.0
    high = max(1.0, float(finite.max())) if finite.size else 1.0
    return low, high


def _heatmap_on(
    ax: Axes,
    matrix: np.ndarray,
    init: np.ndarray,
    modules: Sequence[str],
    values: Sequence[Any],
    knob: str,
    low: float,
    high: float,
    fontsize: int = 9,
) -> Any:
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=low, vmax=high, aspect="auto")
    for (row, col), v in np.ndenumerate(matrix):
        text, dark = ("-", False) if v != v else (f"{v:.2f}", (v - low) / (high - low) < 0.6)
        if v == v and init[row, col] == init[row, col]:
            text += f"\n({init[row, col]:.2f})"
        color = "white" if dark else "black"
        ax.text(col, row, text, ha="center", va="center", fontsize=fontsize, color=color)
    ax.set_xticks(range(len(values)), [str(v) for v in values])
    ax.set_yticks(range(len(modules)), list(modules))
    ax.set_xlabel(knob)
    return image


def probe_heatmaps(
    results: Sequence[RunResult],
    knob: str,
    out_dir: Path,
    fixed: dict[str, Any] | None = None,
    first: str = "e2e",
) -> list[Path]:
    """The probe heat map of every strategy that has probes, side by side on one colour
    scale (``first`` leftmost): which modules learned their concept under which
    strategy. Returns [] where fewer than two strategies have probes."""
    paths = []
    for key, group in _groups(results, knob, fixed):
        probed = [
            s for s in _strategies(group) if any(_probes(r) for r in group if r.spec.strategy == s)
        ]
        probed = sorted(probed, key=lambda s: s != first)
        if len(probed) < 2:
            continue
        values = _values(group, knob)
        panels = []
        for strategy in probed:
            chosen = [r for r in group if r.spec.strategy == strategy]
            panels.append((strategy, *_probe_matrices(chosen, knob, values)))
        low, high = _scale([m for _, _, m, _ in panels])
        cols = min(len(panels), 4)
        count = math.ceil(len(panels) / cols)
        height = max(len(rows) for _, rows, _, _ in panels)
        size = (cols * (1.4 + 0.75 * len(values)) + 2.0, count * (1.2 + 0.45 * height) + 1.2)
        fig, axes = plt.subplots(count, cols, figsize=size, squeeze=False, layout="constrained")
        image = None
        for ax, (strategy, rows, matrix, init) in zip(axes.flat, panels, strict=False):
            labels = [m for m, _ in rows]
            image = _heatmap_on(ax, matrix, init, labels, values, knob, low, high, fontsize=7)
            ax.set_title(strategy, fontsize=9)
            ax.tick_params(labelsize=7)
        for ax in list(axes.flat)[len(panels) :]:
            ax.set_visible(False)
        if image is not None:
            fig.colorbar(image, ax=list(axes.flat), label="linear probe score", shrink=0.8)
        what = "linear probes per module, every strategy (in brackets: at initialisation)"
        _finish(fig, group, key, what, [])
        paths.append(_save(fig, out_dir / _filename("probe_heatmaps", key)))
    return paths


def _finish(
    fig: Figure, group: Sequence[RunResult], key: Key, what: str, handles: list[Any]
) -> None:
    """A title naming the task and the fixed settings, and one legend under the axes."""
    tasks = ", ".join(dict.fromkeys(r.spec.task for r in group))
    fixed = ", ".join(f"{k}={v}" for k, v in key if k != "task")
    fig.suptitle(f"{tasks}" + (f" ({fixed})" if fixed else "") + f": {what}", fontsize=11)
    if handles:
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncol=_legend_columns(fig, handles),
            fontsize=8,
            frameon=False,
        )


def _legend_columns(fig: Figure, handles: Sequence[Any]) -> int:
    """As many columns as fit the figure width at the longest label (8 pt text)."""
    longest = max(len(h.get_label()) for h in handles)
    fits = int(fig.get_figwidth() / (0.065 * longest + 0.55))
    return max(1, min(len(handles), fits))


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def save_tight(fig: Figure, path: Path) -> Path:
    """Lay ``fig`` out tightly, write it to ``path`` (its folder made) and close it."""
    fig.tight_layout()
    return _save(fig, path)
