"""Figures for captioning runs (runs whose artifacts hold a caption ``gallery``): the
caption metrics against the sweep knob, where the errors come from, and a gallery of
test scenes with the caption each strategy wrote, wrong words marked. Torch-free: the
gallery redraws the test scenes from the knobs (``e2elab.data.scenes``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from e2elab.data import scenes
from e2elab.records import RunResult
from e2elab.report.figures import save_tight
from e2elab.stats import mean_interval

METRICS = (("", "exact-caption accuracy"), ("tokens", "token accuracy"), ("bleu", "BLEU"))


def _captioned(results: Sequence[RunResult]) -> list[RunResult]:
    return [
        r
        for r in results
        if r.status == "ok" and "gallery" in r.artifacts and "attribute_accuracy" in r.artifacts
    ]


def _strategies(runs: list[RunResult]) -> list[str]:
    return list(dict.fromkeys(r.spec.strategy for r in runs))


def metrics_figure(runs: list[RunResult], knob: str, path: Path) -> Path:
    """Exact-caption accuracy, token accuracy and BLEU against ``knob``, per strategy."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, (key, label) in zip(axes, METRICS, strict=True):
        for strategy in _strategies(runs):
            by: dict[Any, list[float]] = {}
            for r in runs:
                if r.spec.strategy == strategy:
                    name = f"{r.output}:{key}" if key else r.output
                    by.setdefault(r.spec.knobs[knob], []).append(r.final.get(name, np.nan))
            xs = sorted(by)
            cis = [mean_interval(by[x]) for x in xs]
            means = [c.mean for c in cis]
            low = [max(0.0, c.mean - c.lo) if c.lo == c.lo else 0.0 for c in cis]
            high = [max(0.0, c.hi - c.mean) if c.hi == c.hi else 0.0 for c in cis]
            ax.errorbar(xs, means, yerr=[low, high], marker="o", capsize=3, label=strategy)
        ax.set_xlabel(knob)
        ax.set_ylabel(label)
        ax.set_xticks(sorted({r.spec.knobs[knob] for r in runs}))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Caption metrics on held-out scenes (mean and 95% interval over seeds)")
    return save_tight(fig, path)


HEAD_TRAINED = 0.5  # mean attribute-head accuracy from which the error split is drawn


def _mean(values: list[Any]) -> float:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else float("nan")


def errors_figure(runs: list[RunResult], knob: str, path: Path) -> Path:
    """At the largest value of ``knob``: captions that fail to parse or miss objects,
    each attribute's accuracy in those that parse with the right count, and the wrong
    attribute words split against the encoder's attribute head (drawn only for
    strategies whose head is trained: mean head accuracy >= HEAD_TRAINED)."""
    top = max(r.spec.knobs[knob] for r in runs)
    chosen = [r for r in runs if r.spec.knobs[knob] == top]
    names = _strategies(chosen)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    step = 0.8 / len(names)
    untrained = []
    for i, strategy in enumerate(names):
        arts = [r.artifacts for r in chosen if r.spec.strategy == strategy]
        shares = [_mean([a.get(k) for a in arts]) for k in ("malformed", "wrong_count")]
        axes[0].bar(np.arange(2) + i * step, shares, step, label=strategy)
        accuracy = [
            _mean([a["attribute_accuracy"].get(k) for a in arts])
            for k in ("size", "colour", "shape")
        ]
        axes[1].bar(np.arange(3) + i * step, accuracy, step, label=strategy)
        head = _mean([_mean(list(a.get("head_accuracy", {}).values())) for a in arts])
        if not head >= HEAD_TRAINED:
            untrained.append(strategy)
            continue
        blame = [_mean([a["attribute_errors"][k] for a in arts]) for k in ("encoder", "decoder")]
        axes[2].bar(np.arange(2) + i * step, blame, step, label=strategy)
    centre = 0.4 - step / 2
    axes[0].set_xticks(np.arange(2) + centre, ["malformed", "wrong object count"])
    axes[0].set_ylabel("share of test captions")
    axes[1].set_xticks(np.arange(3) + centre, ["size", "colour", "shape"])
    axes[1].set_ylabel("attribute accuracy\n(captions that parse, right count)")
    axes[1].set_ylim(0, 1.02)
    axes[2].set_xticks(
        np.arange(2) + centre, ["head wrong too\n(encoder's)", "head right\n(decoder's)"]
    )
    axes[2].set_ylabel("wrong attribute words per run")
    if untrained:
        axes[2].set_title(f"not drawn, head untrained: {', '.join(untrained)}", fontsize=8)
    axes[0].legend(fontsize=8)
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        f"Where caption errors come from ({knob}={top}, means over seeds); a wrong word "
        "is split by whether the encoder's attribute head had that attribute right",
        fontsize=9,
    )
    return save_tight(fig, path)


def marked(said: str, truth: str) -> tuple[str, bool]:
    """The caption with each word that differs from the reference's at its position in
    capitals (and missing or extra words shown), and whether it is exactly right."""
    a, b = said.split(), truth.split()
    out = [w if i < len(b) and w == b[i] else w.upper() for i, w in enumerate(a)]
    if len(a) < len(b):
        out.append("[...]")
    return " ".join(out) or "[empty]", a == b


def gallery_figure(runs: list[RunResult], knob: str, path: Path) -> Path:
    """Test scenes at the largest value of ``knob`` with the caption of each strategy's
    first seed; wrong words in capitals, wrong captions in red."""
    top = max(r.spec.knobs[knob] for r in runs)
    chosen = [r for r in runs if r.spec.knobs[knob] == top]
    first: dict[str, RunResult] = {}
    for r in sorted(chosen, key=lambda r: r.spec.seed):
        first.setdefault(r.spec.strategy, r)
    knobs = next(iter(first.values())).spec.knobs
    count = len(next(iter(first.values())).artifacts["gallery"])
    drawn = scenes.test_scenes(knobs["objects"], knobs["test_size"], knobs["noise"])
    references = drawn.captions()
    lines = len(first) + 1
    fig, axes = plt.subplots(
        count,
        2,
        figsize=(14, count * (0.2 * lines + 0.25)),
        gridspec_kw={"width_ratios": [1, 5]},
        squeeze=False,
    )
    for index in range(count):
        picture, words = axes[index]
        truth = scenes.text(references[index])
        picture.imshow(drawn.images[index].transpose(1, 2, 0))
        picture.axis("off")
        words.axis("off")
        words.set_xlim(0, 1)
        words.set_ylim(0, lines)
        words.text(
            0, lines - 0.5, f"{'truth':>20}: {truth}", fontsize=8, va="center", family="monospace"
        )
        for j, (strategy, run) in enumerate(first.items()):
            said, right = marked(run.artifacts["gallery"][index], truth)
            words.text(
                0,
                lines - 1.5 - j,
                f"{strategy[:20]:>20}: {said}",
                fontsize=8,
                va="center",
                family="monospace",
                color="darkgreen" if right else "firebrick",
            )
    fig.suptitle(
        f"Held-out scenes ({knob}={top}) and each strategy's caption (seed "
        f"{min(r.spec.seed for r in first.values())}): wrong words in capitals",
        fontsize=10,
    )
    return save_tight(fig, path)


def caption_figures(results: Sequence[RunResult], knob: str, folder: Path) -> list[Path]:
    """The captioning figures, where the results hold captions; else none."""
    runs = _captioned(results)
    if not runs or knob not in runs[0].spec.knobs:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    return [
        metrics_figure(runs, knob, folder / "caption_metrics.png"),
        errors_figure(runs, knob, folder / "caption_errors.png"),
        gallery_figure(runs, knob, folder / "caption_gallery.png"),
    ]
