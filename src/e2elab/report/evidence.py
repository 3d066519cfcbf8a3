"""What ties a claim to its evidence on the report page: a one-line reason from its
numbers, the figures that show it, and each figure's caption (what it shows, and what to
look for). Torch-free and drawing-free: it reads names and numbers only."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from e2elab.claims import CHECK_FIGURES

REASON_CHARS = 180

# check -> the figure names (prefixes of the file's stem) that show what it measures

# figure-name prefix -> caption (what it shows; what to look for); first match wins
CAPTIONS: tuple[tuple[str, str], ...] = (
    (
        "learning_curves",
        "Test accuracy of the output while each strategy trains (mean over seeds; one "
        "panel per grid point; dotted verticals in a strategy's colour: where its next "
        "phase starts). Look for curves that stay at the dashed chance line, and for the "
        "step where a later phase starts.",
    ),
    (
        "port_curves",
        "Every port's learning curve under every strategy (mean over seeds; band: min-max; "
        "a row per value of the swept knob, a column per port, the output last; dashed: "
        "the port's chance level). Look for the intermediate ports that learn under one "
        "strategy and stay at chance under another: which module learned, and when.",
    ),
    (
        "accuracy_vs",
        "Final output accuracy over seeds against the swept knob, one line per strategy "
        "(whiskers as the title says). Look for the knob value where a strategy falls to "
        "chance while others still learn.",
    ),
    (
        "examples_to_threshold_vs",
        "Training examples each strategy needed to reach the accuracy threshold, over the "
        "seeds that reached it (whiskers as the title says), against the swept knob; open "
        "markers at the budget count the seeds that never did. Look for how fast the cost "
        "grows, strategy by strategy, and where a strategy stops reaching it.",
    ),
    (
        "probe_heatmap",
        "Linear probes of every module's ports after training (end-to-end; the "
        "'probe_heatmaps' figure has every strategy side by side), against the "
        "swept knob: how well a linear read-out recovers each intermediate concept (the "
        "colour bar gives the scale: dark is low). Look for modules whose concept cannot "
        "be read out (dark cells) where the output fails.",
    ),
    (
        "gradient_snr",
        "Signal-to-noise ratio of each module's gradient at initialisation (log10), "
        "against the swept knob. Look for the SNR falling as the chain grows: below 1 "
        "(log10 below 0), a step's direction is mostly noise.",
    ),
    (
        "accuracy_by_approach",
        "Accuracy of each approach (hand-crafted features or raw pixels, per learner) "
        "against the amount of training data. Look for where the lines cross.",
    ),
    (
        "seconds_by_approach",
        "Training time of each approach against the amount of training data.",
    ),
    (
        "features_and_filters",
        "The hand-crafted features of one image beside the first-layer filters a network "
        "learned from raw pixels.",
    ),
    (
        "caption_metrics",
        "Exact-caption accuracy, token accuracy and BLEU on held-out scenes against objects "
        "per scene (mean and 95% interval over seeds).",
    ),
    (
        "caption_errors",
        "Where caption errors come from: the encoder (its attribute head is wrong too) or "
        "the decoder (the head was right), per strategy.",
    ),
    (
        "caption_gallery",
        "Held-out scenes with each strategy's caption: wrong words in capitals, wrong "
        "captions in red.",
    ),
    (
        "speech_wer",
        "Word error rate on held-out voices against the hours of training audio, per "
        "approach: each strategy's speller (solid) and the lexicon + LM pipeline on its "
        "phoneme posteriors (dashed), on words heard in training, unseen words and unseen "
        "noise. Look for where the lines cross.",
    ),
    (
        "speech_errors",
        "The pipeline's word errors split between its stages: the decoder's own (its WER "
        "on the true phonemes) and those its acoustic model causes, with the phoneme error "
        "rate above each bar.",
    ),
    (
        "speech_gallery",
        "Held-out utterances: log-mel, reference, and each approach's transcript; wrong "
        "words in capitals, wrong transcripts in red.",
    ),
    (
        "translation_quality",
        "BLEU, exact-sentence accuracy and gender-agreement accuracy on held-out sentences "
        "against the direct training pairs, per approach (mean and 95% band over seeds; "
        "solid: the cascade through the pivot, dashed: one direct model; a row per route, "
        "text and speech). Look for where the lines cross, and for gender agreement near "
        "the guess (dotted) where the cascade's pivot B, which does not mark gender, "
        "drops it.",
    ),
    (
        "translation_stages",
        "The cascade's sentence error rate beside its stages': stage 1 (its pivot), stage 2 "
        "fed the true pivot, and the whole cascade, with the cascade's error were its "
        "stages' errors independent (black dash), per strategy and number of direct pairs. "
        "Look for the cascade's bar above the dash: errors that compound.",
    ),
    (
        "translation_attention",
        "The direct model's cross-attention (last decoder layer, mean over heads) while it "
        "translates one test sentence, output words against source words, beside the gold "
        "alignment of the reference. Look for a map that follows the gold alignment, "
        "reordering included.",
    ),
    (
        "translation_gallery",
        "Held-out sentences: source, reference, and each approach's translation; wrong "
        "words in capitals, wrong translations in red.",
    ),
    (
        "translation_data",
        "What each approach trained on: the examples it drew from each corpus (the budget "
        "is equal) and the distinct sentence pairs each corpus holds.",
    ),
    (
        "closed_loop_conditions",
        "Closed-loop driving on held-out roads, per condition (training conditions and "
        "shifts) and strategy: mean |offset|, departures per km, metres to the first "
        "departure. Look for which stack loses most under each shift.",
    ),
    (
        "closed_loop_vs_shift",
        "Lane departures per km against curvature and sensor noise, as multiples of the "
        "training conditions. Look for the stack whose line rises first.",
    ),
    (
        "closed_loop_vs",
        "Closed-loop metrics against the amount of training data, per strategy.",
    ),
    (
        "error_propagation",
        "The steering error the perception's mistakes cause against the controller's own "
        "(its steering from the true pose), per condition. The larger bar is the module at "
        "fault; under e2e the pose ports are untrained, so its split means little.",
    ),
    (
        "birds_eye",
        "One held-out road from above with each stack's driven trajectory, and the lateral "
        "offset along the road against the lane limit (red).",
    ),
    ("camera_strip", "What the camera sees along a held-out road, every 10 m."),
    (
        "accuracy_against",
        "Output accuracy against the figure's x-axis (declared in the experiment), per "
        "series, with a linear probe where one is drawn.",
    ),
)


def caption(path: Path | str, declared: dict[str, str] | None = None) -> str:
    """The caption of a figure file: a declared one (by stem), else by its name."""
    stem = Path(path).stem
    if declared and stem in declared:
        return declared[stem]
    for prefix, text in CAPTIONS:
        if stem.startswith(prefix):
            return text
    return stem.replace("_", " ")


def _tagged(stem: str, tag: str) -> bool:
    """Whether a figure's name carries ``knob=value`` as a whole token (``_m=10`` is
    m=10, not m=1)."""
    return re.search(rf"(?:^|_){re.escape(tag)}(?:$|_)", stem) is not None


def _names_knob(stem: str, knob: str) -> bool:
    """Whether a figure's name says at which value of ``knob`` it is drawn."""
    return re.search(rf"(?:^|_){re.escape(knob)}=", stem) is not None


def claim_figures(
    check: str, params: dict[str, Any], figures: Sequence[Path], named: Sequence[str] = ()
) -> list[Path]:
    """The figures that show a claim: those it names (stems or their beginnings), else
    those its check reads (``{knob}`` filled in from its params). Where its ``where``
    fixes knobs that figure names carry (e.g. m=10), only the figures drawn at those
    values, and those drawn for every value, are kept."""
    knob = str(params.get("knob", ""))
    wanted = tuple(named) or tuple(
        p.replace("{knob}", knob) if knob else p.replace("_{knob}", "")
        for p in CHECK_FIGURES.get(check, ())
    )
    chosen: list[Path] = []
    for name in wanted:  # a whole file name matches itself only; else a beginning
        exact = [f for f in figures if f.stem == name]
        chosen += [f for f in exact or figures if f.stem.startswith(name) and f not in chosen]
    where = params.get("where") or {}
    tags = [(str(k), f"{k}={v}") for k, v in where.items() if not isinstance(v, dict)]
    carried = [(k, tag) for k, tag in tags if any(_names_knob(f.stem, k) for f in figures)]
    if carried:
        chosen = [
            f
            for f in chosen
            if all(_tagged(f.stem, tag) or not _names_knob(f.stem, k) for k, tag in carried)
        ]
    return chosen


_PATH = re.compile(r"\b[A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*){2,}\b")


def reason(details: str) -> str:
    """One line from a verdict's numbers: the start of its first line and, where the
    numbers end in a conclusion (`` -- ...``), that conclusion; dotted artifact paths
    (three parts or more) cut to their last two; at most REASON_CHARS characters."""
    first = next((line.strip() for line in details.splitlines() if line.strip()), "")
    first = _PATH.sub(lambda m: " ".join(m.group(0).split(".")[-2:]), first)
    head, _, verdict = first.rpartition(" -- ")
    if not head:
        head, verdict = first, ""
    if len(head) + len(verdict) + 5 > REASON_CHARS:
        room = REASON_CHARS - len(verdict) - 5 if verdict else REASON_CHARS - 1
        clause = head.split("; ")[0]
        head = clause if len(clause) <= room else clause[: max(room, 20)].rstrip() + "…"
        if clause != head.rstrip("…") or "; " in first:
            head = head.rstrip("…") + " …"
    text = f"{head} -- {verdict}" if verdict else head
    if len(text) > REASON_CHARS:
        text = text[: REASON_CHARS - 1].rstrip() + "…"
    return text
