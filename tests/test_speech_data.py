"""Synthesized speech (e2elab.data.speech): espeak-ng through ctypes, log-mel, disk cache."""

from __future__ import annotations

from importlib import metadata

import numpy as np
import pytest

pytest.importorskip("espeakng_loader")

from e2elab.data import speech
from e2elab.errors import E2ELabError

SR = speech.SAMPLE_RATE
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
VOWELS = {"i:", "E", "@", "aI", "u:"}  # the vowels of "three seven nine two"


def energy_bounds(audio: np.ndarray, share: float = 0.02) -> tuple[int, int]:
    """First and last sample whose magnitude reaches ``share`` of the peak."""
    loud = np.nonzero(np.abs(audio) >= share * np.abs(audio).max())[0]
    return int(loud[0]), int(loud[-1])


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0


def one_line_error(excinfo: pytest.ExceptionInfo[E2ELabError], *needles: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message


def test_synthesis_is_deterministic_per_voice_and_differs_between_voices():
    # en+Annie uses espeak's pitch flutter, whose C state survives between calls in one
    # process: without the fresh fork per request the second call would differ
    first = speech.synthesize("seven two", "en+Annie", rate=210, pitch=65)
    speech.synthesize("hello there", "en+whisper", rate=140, pitch=35)  # disturb any state
    again = speech.synthesize("seven two", "en+Annie", rate=210, pitch=65)
    assert first.audio.dtype == np.float32 and first.audio.ndim == 1
    assert np.array_equal(first.audio, again.audio)
    assert (first.phonemes, first.starts) == (again.phonemes, again.starts)
    other = speech.synthesize("seven two", "en+Andy", rate=210, pitch=65)
    assert other.phonemes == first.phonemes
    assert len(other.audio) != len(first.audio) or not np.array_equal(other.audio, first.audio)


def test_synthesis_is_the_same_in_a_fresh_helper_process():
    before = speech.synthesize("nine", "en+klatt")
    speech._helper.close()
    after = speech.synthesize("nine", "en+klatt")
    assert np.array_equal(before.audio, after.audio)


def test_phoneme_starts_line_up_with_the_audio():
    spoken = speech.synthesize("three seven nine two", "en+Andy")
    audio, starts = spoken.audio, np.array(spoken.starts)
    assert 0.9 < len(audio) / SR < 1.6  # about 1.24 s at 175 words per minute
    assert float(np.abs(audio).max()) <= 1.0
    assert len(starts) == len(spoken.phonemes) == 13
    assert (np.diff(starts) > 0).all() and starts[0] >= 0 and starts[-1] < len(audio)
    onset, offset = energy_bounds(audio)
    # first phoneme (a quiet "T") starts within 30 ms of the sound
    assert abs(starts[0] - onset) < 0.03 * SR
    # the last phoneme ("u:") starts late in the audio and the sound stops within 0.4 s of
    # it; starts in milliseconds (not samples) would sit in the first twentieth instead
    assert starts[-1] > 0.6 * len(audio)
    assert 0 < offset - starts[-1] < 0.4 * SR
    assert np.abs(audio[starts[-1] + int(0.4 * SR) :]).max(initial=0.0) < 0.02
    # every vowel is loud in its first 40 ms
    loudest = rms(audio[onset : offset + 1])
    for name, start in zip(spoken.phonemes, starts):
        if name in VOWELS:
            assert rms(audio[start : start + int(0.04 * SR)]) > 0.3 * loudest, name


def test_a_single_spoken_word_has_its_dictionary_phonemes():
    # equal for single words (the spoken stress, e.g. "'0" in "one" where the dictionary
    # has ",0", is removed on both sides); across words espeak adds linking sounds
    lexicon = speech.lexicon(DIGITS)
    for word in DIGITS:
        assert (
            speech.synthesize(word, "en+Andy").phonemes == lexicon[word] == speech.pronounce(word)
        )
    assert lexicon["three"] == ("T", "r", "i:")
    linked = speech.synthesize("four eight", "en+Andy").phonemes
    assert linked == (*lexicon["four"], "r-", *lexicon["eight"])  # British linking r


def test_speakers_split_disjoint_and_cover_every_voice():
    every = speech.voices()
    assert len(every) > 50 and every == tuple(sorted(every))
    assert all(v.startswith("en+") for v in every) and "en+Andy" in every
    train, test = speech.speaker_split()
    assert set(train).isdisjoint(test) and set(train) | set(test) == set(every)
    assert len(test) == round(0.25 * len(every))
    assert speech.speaker_split() == (train, test)
    assert speech.speaker_split(seed=1) != (train, test)
    assert len(speech.speaker_split(0.001)[1]) == 1
    with pytest.raises(E2ELabError):
        speech.speaker_split(1.0)


def test_log_mel_frames_every_10_ms_and_finds_a_tone_in_its_band():
    seconds = 1.0
    time = np.arange(int(seconds * SR)) / SR
    tone = (0.5 * np.sin(2 * np.pi * 1000.0 * time)).astype(np.float32)
    features = speech.log_mel(tone)
    assert features.dtype == np.float32 and np.isfinite(features).all()
    assert features.shape == (1 + len(tone) // speech.hop_samples(), speech.MELS)
    assert abs(features.shape[0] - seconds / speech.HOP_SECONDS) <= 2
    centres = speech.mel_to_hz(
        np.linspace(0, speech.hz_to_mel(SR / 2), speech.MELS + 2)[1:-1]
    )  # HTK scale: 1000 Hz is 1000 mel
    assert abs(float(speech.hz_to_mel(1000.0)) - 1000.0) < 0.1
    band = int(np.argmax(features[50]))
    assert band == int(np.argmin(np.abs(centres - 1000.0)))
    spoken = speech.synthesize("go", "en+Andy")
    assert speech.log_mel(spoken.audio, mels=20).shape == (1 + len(spoken.audio) // 220, 20)


def test_speak_caches_on_disk_and_rebuilds_a_corrupt_file(tmp_path, monkeypatch):
    utterance = speech.Utterance(("six", "up"), "en+f1", 175, 50)
    calls = []
    real = speech.synthesize

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(speech, "synthesize", counting)
    first = speech.speak(utterance, cache=tmp_path)
    (path,) = tmp_path.glob("*.npz")
    assert len(calls) == 1 and first.phonemes == ("s", "I", "k", "s", "V", "p")
    assert first.features.shape[1] == speech.MELS
    assert abs(first.features.shape[0] - first.seconds / speech.HOP_SECONDS) <= 2

    def refuse(*args, **kwargs):
        raise AssertionError("the cache file should have been read")

    monkeypatch.setattr(speech, "synthesize", refuse)
    second = speech.speak(utterance, cache=tmp_path)
    assert np.array_equal(first.features, second.features)

    monkeypatch.setattr(speech, "synthesize", counting)
    path.write_bytes(b"not an npz file")
    rebuilt = speech.speak(utterance, cache=tmp_path)
    assert len(calls) == 2 and np.array_equal(first.features, rebuilt.features)
    speech.speak(utterance, cache=tmp_path)
    assert len(calls) == 2  # the rebuilt file is valid again
    assert not list(tmp_path.glob("*.tmp"))

    monkeypatch.setenv("E2ELAB_CACHE", str(tmp_path / "env"))
    speech.speak(utterance)
    assert len(list((tmp_path / "env" / "speech").glob("*.npz"))) == 1


def test_noise_is_deterministic_per_seed_and_scaled_to_the_audio(tmp_path):
    utterance = speech.Utterance(("yes",), "en+Andy", 140, 35)
    clean = speech.speak(utterance, cache=tmp_path)
    noisy = speech.speak(utterance, noise=0.5, noise_seed=1, cache=tmp_path)
    assert np.array_equal(noisy.features, speech.speak(utterance, 0.5, 1, cache=tmp_path).features)
    assert not np.array_equal(
        noisy.features, speech.speak(utterance, 0.5, 2, cache=tmp_path).features
    )
    assert noisy.features.shape == clean.features.shape and noisy.seconds == clean.seconds
    assert noisy.features.min() > clean.features.min() + 3  # noise fills the silences
    audio = speech.synthesize("yes", "en+Andy", 140, 35).audio
    added = speech.add_noise(audio, 0.5, np.random.default_rng(0)) - audio
    assert abs(rms(added) / rms(audio) - 0.5) < 0.02


def test_utterances_are_deterministic_and_drawn_from_the_given_parts():
    vocabulary = ("left", "right", "stop", "go")
    voices = speech.voices()[:3]
    drawn = speech.utterances(vocabulary, 50, voices, seed=3, max_words=3)
    assert drawn == speech.utterances(vocabulary, 50, voices, seed=3, max_words=3)
    assert drawn != speech.utterances(vocabulary, 50, voices, seed=4, max_words=3)
    assert {len(u.words) for u in drawn} == {1, 2, 3}
    assert {w for u in drawn for w in u.words} == set(vocabulary)
    assert {u.voice for u in drawn} == set(voices)
    assert {u.rate for u in drawn} == {140, 175, 210} and {u.pitch for u in drawn} == {35, 50, 65}
    assert drawn[0].text == " ".join(drawn[0].words)


def test_errors_are_one_line(monkeypatch):
    with pytest.raises(E2ELabError) as excinfo:
        speech.synthesize("one", "en+Nobody")
    one_line_error(excinfo, "'en+Nobody'", "voices()")
    for word in ("x1!", "", "Hello", "'"):
        with pytest.raises(E2ELabError) as excinfo:
            speech.pronounce(word)
        one_line_error(excinfo, repr(word))
    with pytest.raises(E2ELabError) as excinfo:
        speech.utterances(("go", "x1!"), 3, ("en+Andy",), seed=0)
    one_line_error(excinfo, "'x1!'")
    with pytest.raises(E2ELabError) as excinfo:
        speech.synthesize("one", "en+Andy", rate=1000)
    one_line_error(excinfo, "rate")
    with pytest.raises(E2ELabError):
        speech.synthesize("  ", "en+Andy")

    def absent(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    speech.loader_version.cache_clear()
    monkeypatch.setattr(speech.metadata, "version", absent)
    try:
        with pytest.raises(E2ELabError) as excinfo:
            speech.cache_key(speech.Utterance(("go",), "en+Andy", 175, 50))
        one_line_error(excinfo, "pip install espeakng-loader==0.2.4")
    finally:
        speech.loader_version.cache_clear()
