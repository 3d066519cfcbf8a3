"""The speech task: its test sets, a short run of every strategy, the claims over its
artifacts, its figures, and its one-line errors (no long training)."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("espeakng_loader")

from synthetic import result

from e2elab.claims import FAIL, PASS, artifact_beats
from e2elab.cli import main
from e2elab.execution import execute, make_spec
from e2elab.tasks import make_task
from e2elab.tasks.speech import spell, unspell

TINY = {"hours": 0.005, "test_size": 20, "width": 8, "vocabulary": 12, "unseen": 2}


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    # one synthesis cache for the module's tests, not the user's
    monkeypatch.setenv("E2ELAB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_test_sets_hold_held_out_voices_and_the_unseen_words():
    task = make_task("speech", TINY)
    sets = task._sets
    train_voices = {s.utterance.voice for s in sets["train"]}
    for name in ("test", "unseen", "noisy"):
        assert not train_voices & {s.utterance.voice for s in sets[name]}
    heard = {w for s in sets["train"] for w in s.utterance.words}
    assert heard <= set(task.heard_words) and not heard & set(task.unseen_words)
    assert task.unseen_words == ("nine", "no")  # the last words made of heard phonemes
    phonemes = {p for w in task.heard_words for p in task.lexicon[w]}
    assert all(set(task.lexicon[w]) <= phonemes for w in task.unseen_words)
    assert len(sets["unseen"]) == 20  # drawn until full
    assert all(set(s.utterance.words) & set(task.unseen_words) for s in sets["unseen"])
    assert {s.utterance.words for s in sets["noisy"]} == {s.utterance.words for s in sets["test"]}
    seconds = sum(s.seconds for s in sets["train"])
    assert 0.005 * 3600 <= seconds < 0.005 * 3600 + 5  # until the hours are reached
    batch = task.test_set()
    assert batch.x["features"].shape[1] == task.frames and task.frames % 2 == 0
    assert unspell(spell("left  right")) == "left right"


def test_the_decoder_reads_the_true_phonemes_of_the_test_set():
    from e2elab.decoding import true_posteriors, word_error_rate

    task = make_task("speech", TINY)
    spoken = task._sets["unseen"]
    truth = [row[row > 0].tolist() for row in task._batch(spoken).targets["phonemes"]]
    onsets = [[o // 2 for o in s.onsets] for s in spoken]  # at the acoustic frame rate
    assert all(len(o) == len(t) for o, t in zip(onsets, truth, strict=True))
    frames = task.frames // 2
    perfect = true_posteriors(truth, len(task.inventory) + 1, frames, onsets)
    said = task.decoder.decode(perfect)
    references = [s.utterance.text for s in spoken]
    assert word_error_rate(references, [" ".join(w) for w in said]) < 0.05


@pytest.mark.parametrize("strategy", ["greedy", "e2e", "hinted", "pretrain_finetune"])
def test_a_short_run_of_every_strategy_keeps_both_transcripts(strategy):
    spec = make_spec("speech", strategy, knobs=TINY, budget=256, evaluations=2)
    run = execute(spec)
    assert run.status == "ok", run.error
    assert {"text", "text:wer", "text:cer", "phonemes", "phonemes:ter"} <= set(run.final)
    art = run.artifacts
    for name in ("test", "unseen", "noisy"):
        wer = art[name]["wer"]
        assert set(wer) == {"speller", "pipeline", "true_phonemes"}
        split = art[name]["errors"]
        assert split["decoder"] + split["acoustic"] == pytest.approx(wer["pipeline"])
    assert len(art["gallery"]["reference"]) == 6
    assert set(art["gallery"]) == {"reference", "speller", "pipeline", "true_phonemes"}


def _wer_runs(pipeline: float, speller: float, seeds: int = 3):
    out = []
    for seed in range(seeds):
        for strategy in ("greedy", "e2e"):
            r = result(strategy, 1, seed, 0.5, None)
            wer = {"speller": speller + 0.01 * seed, "pipeline": pipeline + 0.01 * seed}
            if strategy == "e2e":
                wer = {"speller": speller + 0.02 * seed, "pipeline": 1.2}
            art = {"test": {"wer": wer}}
            out.append(
                dataclasses.replace(r, spec=r.spec.changed(knobs={"hours": 0.1}), artifacts=art)
            )
    return out


def test_artifact_beats_compares_one_strategys_number_with_anothers():
    runs = _wer_runs(pipeline=0.2, speller=0.5)
    args = {"knob": "hours", "loser_metric": "test.wer.speller"}
    beats = artifact_beats(runs, "greedy", "e2e", "test.wer.pipeline", **args)
    assert beats.verdict == PASS and "test.wer.speller e2e" in beats.details
    # read at the same path, e2e's (meaningless) pipeline would lose by more
    same = artifact_beats(runs, "greedy", "e2e", "test.wer.pipeline", "hours")
    assert same.verdict == PASS and "vs e2e 1.2" in same.details
    close = _wer_runs(pipeline=0.2, speller=0.21)
    margin = {"knob": "hours", "loser_metric": "test.wer.pipeline", "margin": 0.05}
    matches = artifact_beats(close, "e2e", "greedy", "test.wer.speller", **margin)
    assert matches.verdict == PASS
    strict = {**margin, "margin": 0.0}
    refused = artifact_beats(close, "e2e", "greedy", "test.wer.speller", **strict)
    assert refused.verdict == FAIL and "not above 0" in refused.details


def test_speech_figures_draw_from_the_artifacts(tmp_path):
    from e2elab.report.speech import speech_figures

    runs = []
    for hours in (0.01, 0.1):
        for strategy, base in (("greedy", 0.2), ("e2e", 0.6)):
            for seed in range(2):
                r = result(strategy, 1, seed, 0.5, None)
                per_set = {
                    "wer": {"speller": base, "pipeline": base / 2, "true_phonemes": 0.01},
                    "per": 0.2,
                    "errors": {"decoder": 0.01, "acoustic": base / 2 - 0.01},
                }
                gallery = {
                    "reference": ["one two", "three"],
                    "speller": ["one too", "three"],
                    "pipeline": ["one two", "tree"],
                    "true_phonemes": ["one two", "three"],
                }
                art = {"test": per_set, "noisy": per_set, "gallery": gallery}
                knobs = {**TINY, "hours": hours}
                runs.append(dataclasses.replace(r, spec=r.spec.changed(knobs=knobs), artifacts=art))
    paths = speech_figures(runs, "hours", tmp_path)
    assert [p.name for p in paths] == ["speech_wer.png", "speech_errors.png", "speech_gallery.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
    assert speech_figures([], "hours", tmp_path) == []


def test_bad_speech_input_is_one_line(tmp_path, capsys, monkeypatch):
    from e2elab.data import speech

    code = main(["run", "--task", "speech", "--knob", "vocabulary=6", "--knob", "unseen=6"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "unseen=6 leaves no word" in err
    for knobs, said in (
        (["words=one,two,x1!", "vocabulary=3", "unseen=0"], "espeak cannot speak the word 'x1!'"),
        (["words=one,two", "vocabulary=3"], "vocabulary=3 but the word list has 2 words"),
        (["test_voices=en+Nobody"], "unknown voice 'en+Nobody'"),
        (["vocabulary=8", "unseen=2"], "can be kept unseen with every phoneme heard"),
    ):
        args = [a for k in knobs for a in ("--knob", k)]
        code = main(["run", "--task", "speech", "--out", str(tmp_path / "o"), *args])
        err = capsys.readouterr().err.strip()
        assert code == 2 and "\n" not in err and said in err, err
    assert not (tmp_path / "o").exists()  # refused before anything was stored

    def missing():
        raise speech._missing("cannot import espeakng_loader: No module")

    import e2elab.tasks.speech as task_module

    monkeypatch.setattr(speech, "_loader", missing)
    monkeypatch.setattr(task_module, "_SETS", {})  # no sets built by an earlier test
    speech.voices.cache_clear()
    try:
        code = main(["run", "--task", "speech", "--out", str(tmp_path / "o"), "--seeds", "1"])
        err = capsys.readouterr().err.strip()
    finally:
        speech.voices.cache_clear()
    assert code == 2 and "\n" not in err
    assert "pip install espeakng-loader==0.2.4" in err


def test_a_strategy_that_forces_a_ctc_port_is_refused_before_training(capsys):
    from e2elab.cli.run import _applicable
    from e2elab.prepare import prepare

    flat = [a for k, v in TINY.items() for a in ("--knob", f"{k}={v}")]
    code = main(["run", "--task", "speech", "--strategy", "frozen_others:module=speller", *flat])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "teacher-forces port" in err
    task = make_task("speech", TINY)
    names = _applicable(task, prepare(task))
    assert {"greedy", "e2e", "hinted", "pretrain_finetune"} <= set(names)
    assert not [n for n in names if n.startswith(("frozen_others", "modular"))]
