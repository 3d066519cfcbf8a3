"""Figures for translation runs (runs whose artifacts hold a test chrF): BLEU,
exact-sentence and gender-agreement accuracy against the direct training pairs per
approach, the cascade's errors against those of its two stages, the direct model's
attention beside the gold alignment, and a gallery of test sentences (source, reference
and each approach's translation with wrong words marked).

A variant's run (``STRATEGY@LABEL``) carries the experiment's base knobs, not its own
(``Experiment.labelled``): its system is read from its artifacts (only the cascade
keeps ``errors.second``), and its route from its artifacts' ``route`` where kept, else
its ``route`` knob or its variant label (``modular@speech``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from e2elab.claims.artifacts import artifact_value
from e2elab.records import RunResult
from e2elab.report.captions import marked
from e2elab.report.figures import save_tight, strategy_styles
from e2elab.stats import mean_interval

# (artifact path, axis label, largest value)
METRICS = (
    ("test.bleu", "BLEU", 100.0),
    ("test.exact", "exact-sentence accuracy", 1.0),
    ("test.agreement", "gender agreement accuracy", 1.0),
)
ROUTES = (("text", "text A → C (pivot B)"), ("speech", "spoken A → C (pivot: transcript)"))
# the stages' errors, as the cascade's bars show them: (artifact path, label, colour)
STAGES = (
    ("errors.first", "stage 1 (source → pivot)", "C0"),
    ("errors.second", "stage 2 alone (true pivot → target)", "C2"),
    ("errors.output", "the cascade", "C3"),
)
GALLERY_SENTENCES = 4
ATTENTION_PANELS = 3  # direct models drawn beside the gold alignment, at most
END = "</s>"


def _translated(results: Sequence[RunResult]) -> list[RunResult]:
    return [r for r in results if r.status == "ok" and "chrf" in r.artifacts.get("test", {})]


def _strategies(runs: list[RunResult]) -> list[str]:
    return list(dict.fromkeys(r.spec.strategy for r in runs))


def _base(strategy: str) -> str:
    """A strategy's name without its variant label (``e2e@direct`` -> ``e2e``)."""
    return strategy.split("@")[0]


def _value(run: RunResult, path: str) -> float:
    """A number the run kept (``artifact_value``), NaN where it has none."""
    value = artifact_value(run, path)
    return float("nan") if value is None else value


def _mean(values: Sequence[float]) -> float:
    kept = [v for v in values if v == v]
    return float(np.mean(kept)) if kept else float("nan")


def is_cascade(run: RunResult) -> bool:
    """Whether a run is of the cascade system: it kept stage 2's error alone."""
    return "second" in run.artifacts.get("errors", {})


def route(run: RunResult) -> str:
    """``speech`` for a run that translates spoken sources, else ``text``: its
    artifacts' ``route`` where kept, else its ``route`` knob, else its variant label
    (a variant's run carries the base knobs)."""
    said = run.artifacts.get("route") or run.spec.knobs.get("route") or ""
    label = run.spec.strategy.partition("@")[2]
    return "speech" if str(said).startswith("speech") or "speech" in label else "text"


def _styles(runs: list[RunResult]) -> dict[str, dict[str, Any]]:
    """Colour and marker per strategy, by its base name (``modular@speech`` is drawn as
    ``modular``); solid for the cascade, dashed for one direct model."""
    bases = strategy_styles(_base(s) for s in _strategies(runs))
    cascades = {r.spec.strategy for r in runs if is_cascade(r)}
    return {
        s: {**bases[_base(s)], "linestyle": "-" if s in cascades else "--"}
        for s in _strategies(runs)
    }


def _ticks(ax: Any, runs: list[RunResult], knob: str) -> None:
    ax.set_xscale("log")
    values = sorted({r.spec.knobs[knob] for r in runs})
    ax.set_xticks(values, [f"{v:g}" for v in values])
    ax.minorticks_off()
    ax.set_xlabel(knob)


def quality_figure(runs: list[RunResult], knob: str, path: Path) -> Path:
    """BLEU, exact-sentence accuracy and gender-agreement accuracy against ``knob``, per
    approach (mean, 95% band over seeds); a row per route (text, speech)."""
    routes = [(name, title) for name, title in ROUTES if any(route(r) == name for r in runs)]
    # gender agreement where some run's translations said a gendered word at all
    metrics = [
        m
        for m in METRICS
        if m[0] != "test.agreement" or any(artifact_value(r, m[0]) is not None for r in runs)
    ]
    styles = _styles(runs)
    fig, axes = plt.subplots(
        len(routes),
        len(metrics),
        figsize=(4.6 * len(metrics) + 2, 3.8 * len(routes)),
        squeeze=False,
    )
    for row, (name, title) in zip(axes, routes, strict=True):
        mine = [r for r in runs if route(r) == name]
        for ax, (metric, label, top) in zip(row, metrics, strict=True):
            for strategy in _strategies(mine):
                by: dict[Any, list[float]] = {}
                for r in mine:
                    if r.spec.strategy == strategy:
                        by.setdefault(r.spec.knobs[knob], []).append(_value(r, metric))
                xs = sorted(by)
                cis = [mean_interval(by[x], lower=0.0, upper=top) for x in xs]
                means = np.array([c.mean for c in cis])
                low = np.array([c.lo if c.lo == c.lo else c.mean for c in cis])
                high = np.array([c.hi if c.hi == c.hi else c.mean for c in cis])
                style = styles[strategy]
                ax.plot(
                    xs,
                    means,
                    style["linestyle"],
                    marker=style["marker"],
                    color=style["color"],
                    label=strategy,
                )
                ax.fill_between(xs, low, high, alpha=0.15, color=style["color"])
            if metric == "test.agreement":  # a translator that cannot know the gender
                ax.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="a guess")
            _ticks(ax, mine, knob)
            ax.set_ylim(0, top * 1.02)
            ax.set_ylabel(label)
            ax.set_title(f"{title}: {label}", fontsize=9)
            ax.grid(alpha=0.3)
        row[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(
        "Translation quality on held-out sentences (mean and 95% band over seeds; "
        "solid: the cascade, dashed: one direct model)",
        fontsize=10,
    )
    return save_tight(fig, path)


def stages_figure(runs: list[RunResult], knob: str, path: Path) -> Path:
    """Per cascade strategy and value of ``knob``: the sentence error rate of stage 1
    (its pivot), of stage 2 fed the true pivot, and of the whole cascade, with the
    cascade's error were its stages' errors independent (a marker), means over seeds."""
    cascades = [r for r in runs if is_cascade(r)]
    strategies = _strategies(cascades)
    columns = min(3, len(strategies))
    rows = math.ceil(len(strategies) / columns)
    values = sorted({r.spec.knobs[knob] for r in cascades})
    width = max(4.5, 1.1 * len(values) + 1.5)
    # room for the legend beside the last panel and for the title over one panel
    fig, axes = plt.subplots(
        rows, columns, figsize=(width * columns + 3.5, 3.6 * rows), squeeze=False, sharey=True
    )
    step = 0.8 / len(STAGES)
    x = np.arange(len(values))
    for ax, strategy in zip(axes.flat, strategies, strict=False):
        mine = [r for r in cascades if r.spec.strategy == strategy]
        at = {v: [r for r in mine if r.spec.knobs[knob] == v] for v in values}
        for i, (metric, label, colour) in enumerate(STAGES):
            heights = [_mean([_value(r, metric) for r in at[v]]) for v in values]
            ax.bar(x + (i - 1) * step, heights, step, color=colour, label=label)
        independent = [_mean([_value(r, "errors.independent") for r in at[v]]) for v in values]
        ax.plot(
            x + step,
            independent,
            linestyle="none",
            marker="_",
            markersize=14,
            markeredgewidth=2.5,
            color="black",
            label="the cascade, were its stages' errors independent",
        )
        ax.set_xticks(x, [f"{v:g}" for v in values])
        ax.set_xlabel(knob)
        ax.set_ylim(0, 1.05)
        note = " (pivot untrained: the split means little)" if _base(strategy) == "e2e" else ""
        ax.set_title(f"{strategy}{note}", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    for ax in axes[:, 0]:
        ax.set_ylabel("sentence error rate")
    for ax in list(axes.flat)[len(strategies) :]:
        ax.set_visible(False)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(
        "The cascade's errors against its stages'\n(1 - exact-sentence accuracy, mean over seeds)",
        fontsize=10,
    )
    return save_tight(fig, path)


def gold_matrix(attention: dict[str, Any]) -> np.ndarray:
    """The gold alignment as a 0/1 matrix: a row per reference word, a column per source
    word and one for the end position (as the attention's), 1 at the source word each
    reference word translates (none for words no source word gives)."""
    source, gold = attention["source"], attention["gold"]
    matrix = np.zeros((len(gold), len(source) + 1))
    for i, j in enumerate(gold):
        if 0 <= j < len(source):
            matrix[i, j] = 1.0
    return matrix


def _top_runs(runs: list[RunResult], knob: str) -> tuple[Any, dict[str, RunResult]]:
    """The largest value of ``knob`` and, at it, each strategy's run of the first seed."""
    top = max(r.spec.knobs[knob] for r in runs)
    first: dict[str, RunResult] = {}
    for r in sorted((r for r in runs if r.spec.knobs[knob] == top), key=lambda r: r.spec.seed):
        first.setdefault(r.spec.strategy, r)
    return top, first


def attention_figure(runs: list[RunResult], knob: str, path: Path) -> Path:
    """At the largest ``knob``: the cross-attention of each direct model (first seed;
    plain end to end first) while it translates one test sentence, beside the gold
    alignment of its reference."""
    top, first = _top_runs([r for r in runs if r.artifacts.get("attention")], knob)
    chosen = sorted(first.items(), key=lambda item: _base(item[0]) != "e2e")
    chosen = chosen[:ATTENTION_PANELS]
    attention = chosen[0][1].artifacts["attention"]
    source = [*attention["source"], END]
    panels = [(s, r.artifacts["attention"]) for s, r in chosen]
    heights = [len(a["weights"]) for _, a in panels] + [len(attention["reference"])]
    wide = max(3.5, 0.32 * len(source) + 1.8)
    tall = max(3.0, 0.3 * max(heights) + 1.8)
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(wide * (len(panels) + 1), tall))
    for ax, (strategy, seen) in zip(axes, panels, strict=False):
        weights = np.array(seen["weights"], dtype=float)
        if weights.ndim != 2 or not weights.size:
            ax.axis("off")
            ax.set_title(f"{strategy}: no attention kept", fontsize=9)
            continue
        said = [*seen["output"], END][: weights.shape[0]]
        picture = ax.imshow(weights, cmap="viridis", vmin=0.0, aspect="auto")
        fig.colorbar(picture, ax=ax, fraction=0.046, pad=0.02)
        # the gold alignment over the map, where the model said the reference's word
        gold = seen["gold"]
        hits = [
            (gold[i], i)
            for i, word in enumerate(seen["output"][: weights.shape[0]])
            if i < len(seen["reference"]) and word == seen["reference"][i] and gold[i] >= 0
        ]
        if hits:
            xs, ys = zip(*hits, strict=True)
            ax.plot(xs, ys, "s", markerfacecolor="none", markeredgecolor="white", markersize=9)
        _label_words(ax, [*seen["source"], END][: weights.shape[1]], said)
        ax.set_title(f"{strategy}: attention (last layer, mean over heads)", fontsize=9)
        ax.set_ylabel("output words")
    gold_ax = axes[-1]
    gold_ax.imshow(gold_matrix(attention), cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
    _label_words(gold_ax, source, attention["reference"])
    gold_ax.set_title("gold alignment (reference words)", fontsize=9)
    gold_ax.set_ylabel("reference words")
    fig.suptitle(
        f"Where the direct model looks ({knob}={top}, seed {chosen[0][1].spec.seed}, one "
        "test sentence); open squares: the gold source word of each output word that is "
        "the reference's",
        fontsize=9,
    )
    return save_tight(fig, path)


def _label_words(ax: Any, columns: list[str], rows: list[str]) -> None:
    ax.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xlabel("source words")


def gallery_figure(runs: list[RunResult], knob: str, path: Path) -> Path:
    """Test sentences at the largest ``knob``: source, reference, and each approach's
    translation (first seed); wrong words in capitals, wrong translations in red. Runs
    whose gallery holds other sentences (other knobs) are drawn in a block of their own."""
    top, first = _top_runs(runs, knob)
    blocks: dict[tuple[tuple[str, str], ...], list[tuple[str, RunResult]]] = {}
    for strategy, run in first.items():
        shown = run.artifacts["gallery"][:GALLERY_SENTENCES]
        key = tuple((g["source"], g["reference"]) for g in shown)
        blocks.setdefault(key, []).append((strategy, run))
    name = max(len("reference"), *(len(s) for s in first))
    lines = sum(len(key) * (len(members) + 3) for key, members in blocks.items())
    fig, ax = plt.subplots(figsize=(14, 0.19 * lines + 0.6))
    ax.axis("off")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, lines)
    mono = {"fontsize": 8, "va": "center", "family": "monospace"}
    y = lines - 0.5
    for key, members in blocks.items():
        for index, (source, reference) in enumerate(key):
            ax.text(0, y, f"{'source':>{name}}: {source}", color="dimgray", **mono)
            ax.text(0, y - 1, f"{'reference':>{name}}: {reference}", fontweight="bold", **mono)
            y -= 2
            for strategy, run in members:
                text, right = marked(run.artifacts["gallery"][index]["output"], reference)
                colour = "darkgreen" if right else "firebrick"
                ax.text(0, y, f"{strategy:>{name}}: {text}", color=colour, **mono)
                y -= 1
            y -= 1
    seeds = sorted({r.spec.seed for r in first.values()})
    fig.suptitle(
        f"Held-out sentences ({knob}={top}) and each approach's translation (seed "
        f"{seeds[0]}): wrong words in capitals, wrong translations in red",
        fontsize=10,
    )
    return save_tight(fig, path)


def translation_figures(results: Sequence[RunResult], knob: str, folder: Path) -> list[Path]:
    """The translation figures, where the results hold translation scores; else none.
    The stages figure needs cascade runs, the attention figure a run that kept its
    attention, the gallery every run's gallery."""
    runs = _translated(results)
    if not runs or knob not in runs[0].spec.knobs:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    out = [quality_figure(runs, knob, folder / "translation_quality.png")]
    if any(is_cascade(r) for r in runs):
        out.append(stages_figure(runs, knob, folder / "translation_stages.png"))
    if any(r.artifacts.get("attention") for r in runs):
        out.append(attention_figure(runs, knob, folder / "translation_attention.png"))
    if all(r.artifacts.get("gallery") for r in runs):
        out.append(gallery_figure(runs, knob, folder / "translation_gallery.png"))
    if any(r.memory.get("drawn") and r.artifacts.get("corpora") for r in runs):
        out.append(data_figure(runs, knob, folder / "translation_data.png"))
    return out


def data_figure(runs: list[RunResult], knob: str, path: Path) -> Path:
    """What each approach trained on, at the smallest and largest value of ``knob``: the
    examples it drew from each corpus (mean over seeds; the budget is the same for all),
    each segment labelled with the distinct pairs that corpus holds."""
    kept = [r for r in runs if r.memory.get("drawn") and r.artifacts.get("corpora")]
    values = sorted({r.spec.knobs[knob] for r in kept})
    ends = [values[0], values[-1]] if len(values) > 1 else values
    strategies = _strategies(kept)
    corpora = list(dict.fromkeys(c for r in kept for c in r.memory["drawn"]))
    colours = {c: f"C{i % 10}" for i, c in enumerate(corpora)}
    fig, axes = plt.subplots(
        1, len(ends), figsize=(6.5 * len(ends), 0.55 * len(strategies) + 1.8), squeeze=False
    )
    for ax, value in zip(axes[0], ends, strict=True):
        for row, strategy in enumerate(strategies):
            mine = [r for r in kept if r.spec.strategy == strategy and r.spec.knobs[knob] == value]
            if not mine:
                continue
            left = 0.0
            for corpus in corpora:
                drawn = _mean([float(r.memory["drawn"].get(corpus, 0)) for r in mine])
                if not drawn:
                    continue
                pairs = mine[0].artifacts["corpora"].get(corpus)
                ax.barh(row, drawn, left=left, color=colours[corpus], edgecolor="white")
                ax.text(
                    left + drawn / 2,
                    row,
                    f"{corpus}\n{pairs:,} pairs",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white",
                )
                left += drawn
        ax.set_yticks(range(len(strategies)), strategies, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("training examples drawn (sentence pairs, with repeats)")
        ax.set_title(f"{knob}={value:g}", fontsize=9)
    fig.suptitle(
        "What each approach trained on: examples drawn per corpus (equal budgets), and the "
        "distinct pairs each corpus holds",
        fontsize=10,
    )
    return save_tight(fig, path)
