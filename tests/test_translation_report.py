"""The translation figures, drawn from hand-made artifacts (no training): which are
drawn, which are left out where their data is missing, and how a run's system and route
are read."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from synthetic import result

from e2elab.report.evidence import caption
from e2elab.report.translation import gold_matrix, is_cascade, route, translation_figures

PNG = b"\x89PNG\r\n\x1a\n"
KNOBS = {"route": "A-B-C", "system": "cascade", "pairs": 100, "vocabulary": 6}
NAMES = ["translation_quality", "translation_stages", "translation_attention"]
SENTENCES = [
    ("the tall doctor sees a cat", "la doktora alta vida un gato"),
    ("a cat sleeps", "un gato dorma"),
    ("the doctor who sleeps sees the cat", "la doktora ke dorma vida el gato"),
    ("a teacher runs", "un maestro kora"),
    ("the cat runs", "el gato kora"),
    ("a doctor sleeps", "un doktor dorma"),
]


def _attention() -> dict:
    source = SENTENCES[0][0].split()
    reference = SENTENCES[0][1].split()
    output = ["la", "doktoro", "alta", "vida", "un", "gato"]
    rows = len(output) + 1
    weights = np.full((rows, len(source) + 1), 0.05)
    weights[np.arange(rows), np.minimum(np.arange(rows), len(source))] = 0.7
    return {
        "weights": weights.round(4).tolist(),
        "source": source,
        "output": output,
        "reference": reference,
        "gold": [0, 2, 1, 3, 4, 5],
    }


def _artifacts(strategy: str, cascade: bool, pairs: int, seed: int, text: bool) -> dict:
    good = min(0.95, 0.2 + 0.0005 * pairs + 0.02 * seed) * (0.8 if cascade else 1.0)
    test = {
        "exact": good,
        "bleu": 100 * good,
        "chrf": 100 * min(1.0, good + 0.1),
        "agreement": 0.5 if cascade else 0.9,
        "gender": {"right": 9, "wrong": 1, "missing": 2},
    }
    pivot = {"exact": 0.9, "bleu": 90.0, "chrf": 95.0}
    art: dict = {"test": test, "pivot": pivot}
    errors = {"output": 1 - good, "first": 0.1}
    if cascade:
        art["second_alone"] = {"exact": 0.85, "bleu": 85.0, "chrf": 90.0, "agreement": 0.5}
        errors |= {"second": 0.15, "independent": 1 - 0.9 * 0.85}
        errors["excess"] = errors["output"] - 0.15
    art["errors"] = errors
    if text and not cascade:
        art["attention"] = _attention()
    words = {"e2e": "un gato dorma", "modular": "un gata dorma"}
    art["gallery"] = [
        {
            "source": source,
            "reference": reference,
            "output": words.get(strategy.split("@")[0], reference),
            "pivot": "una gata dorma",
        }
        for source, reference in SENTENCES
    ]
    return art


def _runs(strategies=None, seeds: int = 2, pairs=(100, 1000)) -> list:
    """Text cascades, one direct model (text) and speech translation, as a report reads
    them: a variant's run carries the base knobs (``Experiment.labelled``)."""
    strategies = strategies or [
        ("modular", True, True),
        ("pretrain_finetune", True, True),
        ("e2e", True, True),
        ("e2e@direct", False, True),
        ("hinted@direct", False, True),
        ("modular@speech", True, False),
        ("e2e@speech-direct", False, False),
    ]
    out = []
    for n in pairs:
        for strategy, cascade, text in strategies:
            for seed in range(seeds):
                r = result(strategy, 1, seed, 0.5, None)
                made = r.spec.changed(task="translation", knobs={**KNOBS, "pairs": n})
                art = _artifacts(strategy, cascade, n, seed, text)
                out.append(
                    dataclasses.replace(r, id=f"{strategy}-{n}-{seed}", spec=made, artifacts=art)
                )
    return out


def test_every_translation_figure_is_drawn_from_the_artifacts(tmp_path):
    paths = translation_figures(_runs(), "pairs", tmp_path)
    assert [p.stem for p in paths] == [*NAMES, "translation_gallery"]
    assert all(p.read_bytes()[:8] == PNG for p in paths)
    for p in paths:  # each has its own caption, not its name
        assert caption(p) != p.stem.replace("_", " ")


def test_no_translation_runs_draw_nothing(tmp_path):
    assert translation_figures([], "pairs", tmp_path) == []
    other = [result("e2e", 1, 0, 0.5, None)]  # a run without translation scores
    assert translation_figures(other, "pairs", tmp_path) == []
    failed = [dataclasses.replace(r, status="failed") for r in _runs()]
    assert translation_figures(failed, "pairs", tmp_path) == []
    assert translation_figures(_runs(), "hours", tmp_path) == []  # not the sweep knob
    assert not list(tmp_path.iterdir())


def test_figures_without_their_data_are_left_out(tmp_path):
    direct = _runs([("e2e@speech-direct", False, False), ("hinted@direct", False, True)])
    for r in direct:
        del r.artifacts["gallery"]
        r.artifacts.pop("attention", None)
        r.artifacts["test"]["agreement"] = None
    paths = translation_figures(direct, "pairs", tmp_path / "direct")
    assert [p.stem for p in paths] == ["translation_quality"]  # no cascade, attention
    cascades = _runs([("modular", True, True)], seeds=1, pairs=(300,))
    paths = translation_figures(cascades, "pairs", tmp_path / "cascade")
    assert [p.stem for p in paths] == [
        "translation_quality",
        "translation_stages",
        "translation_gallery",
    ]
    assert all(p.read_bytes()[:8] == PNG for p in paths)


def test_a_gallery_of_other_sentences_is_drawn_beside(tmp_path):
    runs = _runs([("modular", True, True), ("e2e@direct", False, True)], seeds=1)
    for r in runs:
        if r.spec.strategy == "e2e@direct":
            r.artifacts["gallery"] = r.artifacts["gallery"][::-1]
    paths = translation_figures(runs, "pairs", tmp_path)
    assert paths[-1].stem == "translation_gallery" and paths[-1].read_bytes()[:8] == PNG


def test_system_and_route_read_from_artifacts_and_labels():
    runs = {r.spec.strategy: r for r in _runs(seeds=1, pairs=(100,))}
    assert [s for s, r in runs.items() if is_cascade(r)] == [
        "modular",
        "pretrain_finetune",
        "e2e",
        "modular@speech",
    ]
    assert {s: route(r) for s, r in runs.items()} == {
        "modular": "text",
        "pretrain_finetune": "text",
        "e2e": "text",
        "e2e@direct": "text",
        "hinted@direct": "text",
        "modular@speech": "speech",
        "e2e@speech-direct": "speech",
    }
    spoken = runs["e2e"].spec.changed(knobs={**KNOBS, "route": "speech-A-C"})
    assert route(dataclasses.replace(runs["e2e"], spec=spoken)) == "speech"


def test_the_gold_alignment_marks_each_reference_words_source():
    attention = {**_attention(), "gold": [0, -1, 1, 5]}
    matrix = gold_matrix(attention)
    assert matrix.shape == (4, len(attention["source"]) + 1)  # with the end position
    assert matrix.sum(axis=1).tolist() == [1.0, 0.0, 1.0, 1.0]
    assert matrix[3, 5] == 1.0 and matrix[0, 0] == 1.0


@pytest.mark.parametrize("strategy", ["e2e@direct", "hinted@direct"])
def test_the_attention_figure_takes_any_direct_model(tmp_path, strategy):
    runs = _runs([(strategy, False, True)], seeds=1)
    paths = translation_figures(runs, "pairs", tmp_path)
    assert "translation_attention" in [p.stem for p in paths]
