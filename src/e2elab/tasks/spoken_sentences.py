"""Sentences of language A spoken by espeak-ng, as padded log-mel frames (the speech
route of ``translation``). Training sets are spoken by the training voices, the test and
validation sets by held-out voices (``speech.speaker_split``), each utterance at a rate
and pitch drawn per set; white noise as in the speech task."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from e2elab.data.languages import Sentence

RATES, PITCHES = (140, 175, 210), (35, 50, 65)
HELD_OUT = ("test", "validation")
SEEDS = {"direct": 1, "pivot1": 2, "pivot2": 3, "test": 4, "validation": 5}
# each utterance's log-mel frames, kept for the process: the sets of a sweep over the
# direct pairs share their pivot, test and validation utterances, and the smaller direct
# sets are prefixes of the larger
_FEATURES: dict[tuple, np.ndarray] = {}


def spoken_sets(sets: dict[str, list[Sentence]], noise: float) -> dict[str, tuple[Tensor, Tensor]]:
    """Per named set: frames (N, T, mels) float32, padded with zeros to one T over all
    sets, and the padding mask (N, T), True on padded frames."""
    from e2elab.data import speech

    train_voices, test_voices = speech.speaker_split()
    features: dict[str, list[np.ndarray]] = {}
    for name, chosen in sets.items():
        voices = test_voices if name in HELD_OUT else train_voices
        rng = np.random.default_rng([SEEDS.get(name, 9), 31])
        rows = []
        for i, sentence in enumerate(chosen):  # a set's i-th utterance is fixed by i
            voice = voices[rng.integers(len(voices))]
            rate = int(RATES[rng.integers(len(RATES))])
            pitch = int(PITCHES[rng.integers(len(PITCHES))])
            key = (name, i, sentence.a, voice, rate, pitch, noise)
            if key not in _FEATURES:
                utterance = speech.Utterance(sentence.a, voice, rate, pitch)
                spoken = speech.speak(utterance, noise=noise, noise_seed=SEEDS.get(name, 9))
                _FEATURES[key] = spoken.features
            rows.append(_FEATURES[key])
        features[name] = rows
    longest = max(len(f) for rows in features.values() for f in rows)
    longest += -longest % 4  # whole steps of the encoder's two stride-2 convolutions
    out = {}
    for name, rows in features.items():
        frames = np.zeros((len(rows), longest, rows[0].shape[1]), dtype=np.float32)
        padding = np.ones((len(rows), longest), dtype=bool)
        for i, row in enumerate(rows):
            frames[i, : len(row)] = row
            padding[i, : len(row)] = False
        out[name] = (torch.from_numpy(frames), torch.from_numpy(padding))
    return out
