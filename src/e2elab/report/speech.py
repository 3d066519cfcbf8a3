"""Figures for speech runs (runs whose artifacts hold word error rates per test set):
WER against the hours of training audio per approach, the pipeline's errors split
between its stages, and a gallery of test utterances (log-mel, reference, and each
approach's transcript with wrong words marked)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from e2elab.claims.artifacts import artifact_value
from e2elab.errors import E2ELabError
from e2elab.records import RunResult
from e2elab.report.captions import marked
from e2elab.report.figures import save_tight
from e2elab.stats import mean_interval

SETS = (("test", "words heard in training"), ("unseen", "unseen words"), ("noisy", "unseen noise"))
DIRECT = "e2e"  # its phoneme head never trains: its pipeline transcript means nothing


def _spoken(results: Sequence[RunResult]) -> list[RunResult]:
    return [r for r in results if r.status == "ok" and "wer" in r.artifacts.get("test", {})]


def _strategies(runs: list[RunResult]) -> list[str]:
    return list(dict.fromkeys(r.spec.strategy for r in runs))


def _value(run: RunResult, path: str) -> float:
    """A number the run kept (``artifact_value``), NaN where it has none."""
    value = artifact_value(run, path)
    return float("nan") if value is None else value


def _trains_phonemes(strategy: str) -> bool:
    """Whether a strategy (or its variant, ``e2e@LABEL``) trains the phoneme head."""
    return strategy.split("@")[0] != DIRECT


def approaches(runs: list[RunResult]) -> list[tuple[str, str, str]]:
    """(label, strategy, transcript) of every approach the runs hold: each strategy's
    speller, and the lexicon pipeline of every strategy whose phoneme head trained."""
    out = [(f"{s} (speller)", s, "speller") for s in _strategies(runs)]
    lexicon = [s for s in _strategies(runs) if _trains_phonemes(s)]
    out += [(f"{s} (lexicon + LM)", s, "pipeline") for s in lexicon]
    return out


def wer_figure(runs: list[RunResult], knob: str, path: Path) -> Path:
    """WER against ``knob`` on each test set, per approach (mean, 95% band over seeds)."""
    sets = [(name, label) for name, label in SETS if any(name in r.artifacts for r in runs)]
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 4), squeeze=False)
    for ax, (name, label) in zip(axes[0], sets, strict=True):
        for i, (title, strategy, said) in enumerate(approaches(runs)):
            by: dict[Any, list[float]] = {}
            for r in runs:
                if r.spec.strategy == strategy:
                    by.setdefault(r.spec.knobs[knob], []).append(_value(r, f"{name}.wer.{said}"))
            xs = sorted(by)
            cis = [mean_interval([v for v in by[x] if v == v]) for x in xs]
            means = np.array([c.mean for c in cis])
            low = np.array([c.lo if c.lo == c.lo else c.mean for c in cis])
            high = np.array([c.hi if c.hi == c.hi else c.mean for c in cis])
            style = "-" if said == "speller" else "--"
            line = ax.plot(xs, means, style, marker="o", label=title, color=f"C{i % 10}")
            ax.fill_between(xs, low, high, alpha=0.15, color=line[0].get_color())
        ax.set_xscale("log")
        values = sorted({r.spec.knobs[knob] for r in runs})
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.minorticks_off()
        ax.set_xlabel(knob)
        ax.set_ylabel("word error rate")
        ax.set_title(f"{name}: {label}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle("Word error rate on held-out voices (mean and 95% band over seeds)")
    return save_tight(fig, path)


def errors_figure(runs: list[RunResult], knob: str, path: Path) -> Path:
    """At the largest ``knob``: the pipeline's WER split into the decoder's own errors
    (on the true phonemes) and those its acoustic model causes, per strategy and test
    set, with the phoneme error rate above each bar."""
    top = max(r.spec.knobs[knob] for r in runs)
    chosen = [r for r in runs if r.spec.knobs[knob] == top and _trains_phonemes(r.spec.strategy)]
    strategies = _strategies(chosen)
    sets = [name for name, _ in SETS if any(name in r.artifacts for r in chosen)]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(strategies) * len(sets)), 4))
    labels, x = [], 0
    for name in sets:
        for strategy in strategies:
            mine = [r for r in chosen if r.spec.strategy == strategy]
            decoder = np.nanmean([_value(r, f"{name}.errors.decoder") for r in mine])
            acoustic = np.nanmean([_value(r, f"{name}.errors.acoustic") for r in mine])
            per = np.nanmean([_value(r, f"{name}.per") for r in mine])
            ax.bar(x, decoder, color="C0", label="decoder's own" if x == 0 else None)
            # negative where the acoustic errors happen to undo the decoder's: drawn as 0,
            # the number written beside the PER
            shown = max(acoustic, 0.0)
            ax.bar(x, shown, bottom=decoder, color="C3", label="acoustic" if x == 0 else None)
            if acoustic < 0:
                per_text = f"PER {per:.2f}, acoustic {acoustic:+.2f}"
            else:
                per_text = f"PER {per:.2f}"
            ax.text(x, decoder + shown + 0.01, per_text, ha="center", fontsize=7)
            labels.append(f"{name}\n{strategy}")
            x += 1
        x += 0.5
    ticks = [i + 0.5 * (i // max(1, len(strategies))) for i in range(len(labels))]
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("word error rate of the pipeline")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    ax.set_title(f"Where the pipeline's word errors come from ({knob}={top}, mean over seeds)")
    return save_tight(fig, path)


def gallery_figure(runs: list[RunResult], knob: str, path: Path) -> Path:
    """Test utterances at the largest ``knob``: each one's log-mel, its reference, and
    each approach's transcript (first seed); wrong words in capitals, wrong
    transcripts in red."""
    top = max(r.spec.knobs[knob] for r in runs)
    first: dict[str, RunResult] = {}
    for r in sorted((r for r in runs if r.spec.knobs[knob] == top), key=lambda r: r.spec.seed):
        first.setdefault(r.spec.strategy, r)
    run = next(iter(first.values()))
    # one system's test utterances: a variant with other knobs (e.g. a larger vocabulary)
    # speaks other utterances, so only the runs with the first one's knobs are shown
    first = {s: r for s, r in first.items() if r.spec.knobs == run.spec.knobs}
    gallery = run.artifacts["gallery"]
    references = gallery["reference"]
    images = _log_mels(run, len(references))
    rows = [(title, first[s], said) for title, s, said in approaches(list(first.values()))]
    lines = len(rows) + 1
    fig, axes = plt.subplots(
        len(references),
        2,
        figsize=(14, len(references) * max(1.2, 0.2 * lines + 0.3)),
        gridspec_kw={"width_ratios": [2, 5]},
        squeeze=False,
    )
    for index, truth in enumerate(references):
        picture, words = axes[index]
        if images is not None:
            picture.imshow(images[index].T, origin="lower", aspect="auto", cmap="magma")
        picture.axis("off")
        words.axis("off")
        words.set_xlim(0, 1)
        words.set_ylim(0, lines)
        mono = {"fontsize": 8, "va": "center", "family": "monospace"}
        words.text(0, lines - 0.5, f"{'reference':>30}: {truth}", **mono)
        for j, (title, chosen, said) in enumerate(rows):
            text, right = marked(chosen.artifacts["gallery"][said][index], truth)
            colour = "darkgreen" if right else "firebrick"
            words.text(0, lines - 1.5 - j, f"{title[:30]:>30}: {text}", color=colour, **mono)
    fig.suptitle(
        f"Held-out voices ({knob}={top}): log-mel and each approach's transcript (seed "
        f"{run.spec.seed}); wrong words in capitals",
        fontsize=10,
    )
    return save_tight(fig, path)


def _log_mels(run: RunResult, count: int) -> list[np.ndarray] | None:
    """The log-mel of the first ``count`` test utterances, re-spoken from the run's knobs
    (from the synthesis cache); None where espeak is missing here."""
    try:
        from e2elab.tasks.speech import Speech

        task = Speech(**run.spec.knobs)
        return task.gallery_features(count)
    except (E2ELabError, OSError, ImportError):  # no espeak here: transcripts, no images
        return None


def speech_figures(results: Sequence[RunResult], knob: str, folder: Path) -> list[Path]:
    """The speech figures, where the results hold word error rates; else none."""
    runs = _spoken(results)
    if not runs or knob not in runs[0].spec.knobs:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    out = [wer_figure(runs, knob, folder / "speech_wer.png")]
    if any(_trains_phonemes(r.spec.strategy) for r in runs):
        out.append(errors_figure(runs, knob, folder / "speech_errors.png"))
    if all("gallery" in r.artifacts for r in runs):
        out.append(gallery_figure(runs, knob, folder / "speech_gallery.png"))
    return out
