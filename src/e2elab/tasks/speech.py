"""speech: audio -> text, through phonemes, a lexicon and a language model, or directly.

The audio is synthesized offline by espeak-ng (``e2elab.data.speech``): utterances of 1
to ``max_words`` words from a small vocabulary, spoken by many voices at several rates
and pitches, with white noise. Training and test voices are disjoint. The features are
log-mel frames (10 ms), padded to one length; a system forces the CTC blank on padded
frames.

The system:

- ``acoustic``: a 1-D convolutional network (Wav2Letter-like; frames subsampled by 2),
  log-mel -> hidden features, and a phoneme head: the ``phonemes`` port, CTC over
  espeak's phonemes as they were spoken (no alignments);
- ``speller``: convolutions over the acoustic network's hidden features (the
  ``features`` port, without a target) -> the ``text`` port, CTC over characters.

End to end (``e2e``) trains both on characters alone: the direct recogniser, no
lexicon, no phonemes, no alignments. The classic pipeline is the acoustic model trained
on phonemes (``greedy``'s first phase), whose posteriors a lexicon decoder turns into
words: espeak's own pronunciation of every vocabulary word, and a bigram language model
of the training transcripts (``e2elab.decoding``). The pipeline's transcript is kept
beside the speller's in every run's artifacts, with the phoneme error rate and the
decoder's word error rate when fed the true phonemes, so that the pipeline's errors
split between its stages. ``hinted`` trains characters with the phonemes as an
auxiliary loss; ``pretrain_finetune`` the phonemes first, then the characters jointly.

Supervision each approach consumes: e2e, transcripts only; the pipeline, phoneme
transcripts (espeak's, no alignments) for the acoustic model, the lexicon and the
training transcripts for the language model; hinted and pretrain_finetune, transcripts
and phoneme transcripts.

Test sets, all from held-out voices: ``test`` (words heard in training, the training
noise), ``unseen`` (every utterance holds a vocabulary word that no training transcript
holds: the lexicon knows it, the speller never heard it) and ``noisy`` (the test
utterances under ``test_noise``, a noise level never seen in training).
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from e2elab.decoding import (
    BigramLM,
    LexiconDecoder,
    char_error_rate,
    greedy,
    missed_words,
    token_error_rate,
    true_posteriors,
    word_error_rate,
)
from e2elab.errors import E2ELabError
from e2elab.ports import CTCKind
from e2elab.system import System
from e2elab.task import Batch, Knob, PortSpec, Task, TrainingDefaults

# digits, then the words of the Speech Commands dataset, in a fixed order: the
# ``vocabulary`` knob takes the first so many
WORDS = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "yes",
    "no",
    "up",
    "down",
    "left",
    "right",
    "on",
    "off",
    "stop",
    "go",
    "forward",
    "backward",
    "follow",
    "learn",
    "bed",
    "bird",
    "cat",
    "dog",
    "happy",
    "house",
    "tree",
    "wow",
    "visual",
    "marvin",
    "sheila",
)
CHARACTERS = " 'abcdefghijklmnopqrstuvwxyz"  # CTC label k + 1 is CHARACTERS[k]
TRAIN_SEED, TEST_SEED, UNSEEN_SEED = 0, 90_000, 91_000
STRIDE = 2  # the acoustic network's subsampling of the 10 ms frames
GALLERY = 6  # test utterances whose transcripts every run keeps
SETS_KEPT = 3  # data knob settings whose spoken sets a process keeps (Speech._sets)
_SETS: dict[str, dict[str, list]] = {}
LM_WEIGHT = 1.0
INSERTION = 0.0


def _padded(rows: list[np.ndarray], length: int) -> np.ndarray:
    out = np.zeros((len(rows), length, *rows[0].shape[1:]), dtype=rows[0].dtype)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def spell(text: str) -> list[int]:
    return [CHARACTERS.index(c) + 1 for c in text]


def unspell(labels: list[int]) -> str:
    return " ".join("".join(CHARACTERS[k - 1] for k in labels).split())


class TextKind(CTCKind):
    """CTC over characters; the metric is 1 - the word error rate of the greedy best
    path (jiwer), with ``wer`` and ``cer`` beside it."""

    name = "text"
    metric_name = "1 - WER"

    def metrics(self, value: Tensor, target: Tensor) -> dict[str, float]:
        truth = [unspell(row[row > 0].tolist()) for row in target.cpu()]
        said = [unspell(labels) for labels in greedy(value)]
        wer = word_error_rate(truth, said)
        return {"": 1.0 - wer, "wer": wer, "cer": char_error_rate(truth, said)}


def _unseen_choice(
    vocabulary: tuple[str, ...], lexicon: dict[str, tuple[str, ...]], count: int
) -> tuple[str, ...]:
    """``count`` words to keep out of the training transcripts, from the end of the
    vocabulary, each made only of phonemes the heard words hold (else its phonemes would
    never be trained, and no lexicon could help)."""
    chosen: list[str] = []
    for word in reversed(vocabulary):
        if len(chosen) == count:
            break
        trial = [*chosen, word]
        heard = {p for w in vocabulary if w not in trial for p in lexicon[w]}
        if all(set(lexicon[w]) <= heard for w in trial):
            chosen = trial
    if len(chosen) < count:
        raise E2ELabError(
            f"only {len(chosen)} words of the vocabulary can be kept unseen with every phoneme "
            f"heard in the others, not {count}; lower unseen or raise vocabulary"
        )
    return tuple(reversed(chosen))


def _blank_after(logits: Tensor, frames: Tensor) -> Tensor:
    """Scores with every frame at or after ``frames`` (per utterance) forced to blank."""
    steps = torch.arange(logits.shape[1], device=logits.device)
    padded = (steps.unsqueeze(0) >= frames.unsqueeze(1)).unsqueeze(-1)  # (B, T, 1)
    labels = torch.arange(logits.shape[-1], device=logits.device)
    blank = torch.where(labels == 0, 1e4, -1e4).to(logits.dtype)
    return torch.where(padded, blank, logits)


class Acoustic(nn.Module):
    def __init__(self, mels: int, width: int, phonemes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(mels, width, 5, stride=STRIDE, padding=2),
            nn.ReLU(),
            nn.Conv1d(width, width, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(width, width, 5, padding=2),
            nn.ReLU(),
        )
        self.head = nn.Conv1d(width, phonemes, 1)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        hidden = self.net(features.transpose(1, 2))  # (B, W, T')
        return hidden.transpose(1, 2), self.head(hidden).transpose(1, 2)


class Speller(nn.Module):
    def __init__(self, width: int, characters: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(width, width, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(width, width, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(width, characters, 1),
        )

    def forward(self, hidden: Tensor) -> Tensor:
        return self.net(hidden.transpose(1, 2)).transpose(1, 2)


class SpeechSystem(System):
    def __init__(self, mels: int, width: int, phonemes: int) -> None:
        super().__init__(
            acoustic=Acoustic(mels, width, phonemes),
            speller=Speller(width, len(CHARACTERS) + 1),
        )

    def forward(self, batch: Batch) -> Tensor:
        frames = (batch.x["frames"] + STRIDE - 1) // STRIDE
        hidden, phonemes = self.acoustic(batch.x["features"])
        self.port("phonemes", _blank_after(phonemes, frames))
        hidden = self.port("features", hidden)  # plumbing: no target
        return self.port("text", _blank_after(self.speller(hidden), frames))


class Speech(Task):
    name = "speech"
    description = "audio -> text: acoustic model + lexicon + LM, or CTC straight to characters"
    knobs = {
        "hours": Knob(0.1, "hours of transcribed training audio", minimum=0.001, maximum=10.0),
        "words": Knob(
            "",
            "the word list, comma-separated (default: the digits, then Speech Commands "
            "words); vocabulary takes the first so many",
        ),
        "vocabulary": Knob(20, "words in the vocabulary (the first of words)", minimum=2),
        "test_voices": Knob(
            "",
            "espeak voices kept for the test sets, comma-separated (default: a fixed quarter"
            " of them); every other voice speaks the training audio",
        ),
        "unseen": Knob(
            3,
            "vocabulary words kept out of the training transcripts (the lexicon has them)",
            minimum=0,
            maximum=10,
        ),
        "max_words": Knob(3, "most words per utterance", minimum=1, maximum=6),
        "noise": Knob(
            0.05, "training noise (standard deviation, times the audio's RMS)", minimum=0.0
        ),
        "test_noise": Knob(
            0.4, "the noise of the noisy test set (never heard in training)", minimum=0.0
        ),
        "width": Knob(96, "channels of the convolutions", minimum=4),
        "test_size": Knob(200, "utterances in each test set", minimum=20, maximum=5000),
    }
    defaults = TrainingDefaults(
        budget=20_000, batch_size=32, lr=2e-3, threshold=0.5, evaluations=10
    )

    @classmethod
    def unavailable(cls, knobs: dict[str, Any]) -> str | None:
        try:
            from e2elab.data import speech

            speech.voices()
        except (E2ELabError, ImportError, OSError) as error:
            return str(error).splitlines()[0]
        return None

    # --- the data -----------------------------------------------------------------
    @cached_property
    def _speech(self) -> Any:
        from e2elab.data import speech

        return speech

    @cached_property
    def word_list(self) -> tuple[str, ...]:
        given = [w.strip().lower() for w in self.knobs["words"].split(",") if w.strip()]
        if not given:
            return tuple(WORDS)
        repeated = sorted({w for w in given if given.count(w) > 1})
        if repeated:
            raise E2ELabError(f"words lists {repeated[0]!r} twice; list each word once")
        return tuple(given)

    @cached_property
    def vocabulary(self) -> tuple[str, ...]:
        size, listed = self.knobs["vocabulary"], self.word_list
        if size > len(listed):
            raise E2ELabError(
                f"vocabulary={size} but the word list has {len(listed)} words; lower "
                "vocabulary or list more words (knob words)"
            )
        return listed[:size]

    @cached_property
    def unseen_words(self) -> tuple[str, ...]:
        unseen = self.knobs["unseen"]
        if unseen >= len(self.vocabulary):
            raise E2ELabError(
                f"unseen={unseen} leaves no word of a vocabulary of "
                f"{len(self.vocabulary)} to train on; lower unseen or raise vocabulary"
            )
        return _unseen_choice(self.vocabulary, self.lexicon, unseen)

    @cached_property
    def heard_words(self) -> tuple[str, ...]:
        return tuple(w for w in self.vocabulary if w not in self.unseen_words)

    @cached_property
    def voices(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(training voices, test voices), disjoint."""
        named = [v.strip() for v in self.knobs["test_voices"].split(",") if v.strip()]
        if not named:
            return self._speech.speaker_split()
        every = self._speech.voices()
        for voice in named:
            self._speech.check_voice(voice)
        train = tuple(v for v in every if v not in named)
        if not train:
            raise E2ELabError("test_voices names every voice; leave some to train on")
        return train, tuple(sorted(set(named)))

    def _utterances(self, words: tuple[str, ...], count: int, seed: int, test: bool) -> list:
        voices = self.voices[1 if test else 0]
        return self._speech.utterances(words, count, voices, seed, self.knobs["max_words"])

    def _spoken(self, utterances: list, noise: float, seed: int) -> list:
        return [self._speech.speak(u, noise=noise, noise_seed=seed) for u in utterances]

    @cached_property
    def _train_spoken(self) -> list:
        """Training utterances until their clean audio adds up to ``hours``."""
        target = self.knobs["hours"] * 3600.0
        spoken: list = []
        total, seed = 0.0, TRAIN_SEED
        while total < target:
            batch = self._utterances(self.heard_words, 64, seed, test=False)
            for said in self._spoken(batch, self.knobs["noise"], seed):
                spoken.append(said)
                total += said.seconds
                if total >= target:
                    break
            seed += 1
        return spoken

    @cached_property
    def _test_utterances(self) -> list:
        return self._utterances(self.heard_words, self.knobs["test_size"], TEST_SEED, True)

    @cached_property
    def _unseen_utterances(self) -> list:
        """``test_size`` test utterances that each hold at least one unseen word."""
        if not self.unseen_words:
            return []
        wanted, kept, seed = self.knobs["test_size"], [], UNSEEN_SEED
        while len(kept) < wanted:
            drawn = self._utterances(self.vocabulary, 4 * wanted, seed, True)
            kept += [u for u in drawn if set(u.words) & set(self.unseen_words)]
            seed += 1
        return kept[:wanted]

    @cached_property
    def _sets(self) -> dict[str, list]:
        """The spoken sets, built once per process for the same data knobs: a sweep makes
        a task per run (and the command line several while it prepares), and an hour of
        audio takes tens of seconds to read back from the cache and turn into log-mel."""
        key = json.dumps({k: v for k, v in self.knobs.items() if k != "width"}, sort_keys=True)
        if key not in _SETS:
            _SETS[key] = self._build_sets()
            while len(_SETS) > SETS_KEPT:
                _SETS.pop(next(iter(_SETS)))
        return _SETS[key]

    def _build_sets(self) -> dict[str, list]:
        s = self.knobs
        _ = self.lexicon  # a word espeak cannot speak fails here, before any synthesis
        sets = {
            "train": self._train_spoken,
            "test": self._spoken(self._test_utterances, s["noise"], TEST_SEED),
            "noisy": self._spoken(self._test_utterances, s["test_noise"], TEST_SEED + 1),
        }
        if self._unseen_utterances:
            sets["unseen"] = self._spoken(self._unseen_utterances, s["noise"], UNSEEN_SEED)
        return sets

    @cached_property
    def inventory(self) -> tuple[str, ...]:
        """Every phoneme of the lexicon and of the audio, sorted: label k + 1 is the k-th."""
        found = {p for said in self._sets.values() for s in said for p in s.phonemes}
        found |= {p for pron in self.lexicon.values() for p in pron}
        return tuple(sorted(found))

    @cached_property
    def lexicon(self) -> dict[str, tuple[str, ...]]:
        return self._speech.lexicon(self.vocabulary)

    @cached_property
    def frames(self) -> int:
        """Frames every utterance is padded to (a multiple of the subsampling)."""
        longest = max(len(s.features) for said in self._sets.values() for s in said)
        return -(-longest // STRIDE) * STRIDE

    def _batch(self, spoken: list) -> Batch:
        index = {p: k + 1 for k, p in enumerate(self.inventory)}
        phonemes = [np.array([index[p] for p in s.phonemes]) for s in spoken]
        chars = [np.array(spell(s.utterance.text)) for s in spoken]
        return Batch(
            {
                "features": torch.from_numpy(_padded([s.features for s in spoken], self.frames)),
                "frames": torch.tensor([len(s.features) for s in spoken]),
            },
            {
                "phonemes": torch.from_numpy(
                    _padded(phonemes, max(map(len, phonemes))).astype(np.int64)
                ),
                "text": torch.from_numpy(_padded(chars, max(map(len, chars))).astype(np.int64)),
            },
        )

    @cached_property
    def _train(self) -> Batch:
        return self._batch(self._sets["train"])

    def train_set(self) -> Batch:
        return self._train

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        pool = self._train
        index = torch.randint(len(pool), (batch_size,), generator=generator)
        return pool.take(index)

    @cached_property
    def _test(self) -> Batch:
        return self._batch(self._sets["test"])

    def test_set(self) -> Batch:
        return self._test

    def gallery_features(self, count: int) -> list[np.ndarray]:
        """The log-mel of the first ``count`` test utterances (for the report's gallery)."""
        spoken = self._spoken(self._test_utterances[:count], self.knobs["noise"], TEST_SEED)
        return [s.features for s in spoken]

    # --- the system -----------------------------------------------------------------
    @cached_property
    def ports(self) -> dict[str, PortSpec]:
        return {
            "phonemes": PortSpec(CTCKind(), len(self.inventory) + 1, 0.0),
            "text": PortSpec(TextKind(), len(CHARACTERS) + 1, 0.0),
        }

    @property
    def output(self) -> str:
        return "text"

    def build_system(self) -> SpeechSystem:
        return SpeechSystem(self._speech.MELS, self.knobs["width"], len(self.inventory) + 1)

    # --- after training ------------------------------------------------------------
    @cached_property
    def decoder(self) -> LexiconDecoder:
        index = {p: k + 1 for k, p in enumerate(self.inventory)}
        lexicon = {w: [index[p] for p in pron] for w, pron in self.lexicon.items()}
        lm = BigramLM([s.utterance.words for s in self._sets["train"]], self.vocabulary)
        return LexiconDecoder(lexicon, lm, LM_WEIGHT, INSERTION)

    def transcripts(self, system: Any, name: str) -> dict[str, Any]:
        """Each utterance of test set ``name``: its reference, the speller's and the
        pipeline's transcripts, the phonemes heard, and what the decoder makes of the
        true phonemes."""
        spoken = self._sets[name]
        batch = self._batch(spoken).to(next(system.parameters()).device)
        with torch.no_grad():
            ports = system.run_ports(batch)
        phonemes = ports["phonemes"].float()
        heard = greedy(phonemes)
        truth = [row[row > 0].tolist() for row in batch.targets["phonemes"].cpu()]
        logp = torch.log_softmax(phonemes.double(), -1).cpu()
        pipeline = [" ".join(w) for w in self.decoder.decode(logp)]
        classes = len(self.inventory) + 1
        onsets = [[o // STRIDE for o in s.onsets] for s in spoken]
        perfect = true_posteriors(truth, classes, phonemes.shape[1], onsets)
        oracle = self.decoder.decode(perfect)
        return {
            "reference": [s.utterance.text for s in spoken],
            "speller": [unspell(labels) for labels in greedy(ports["text"])],
            "pipeline": pipeline,
            "true_phonemes": [" ".join(w) for w in oracle],
            "per": token_error_rate(truth, heard),
        }

    def scores(self, system: Any, name: str) -> dict[str, Any]:
        said = self.transcripts(system, name)
        ref = said["reference"]
        kinds = ("speller", "pipeline", "true_phonemes")
        wer = {k: word_error_rate(ref, said[k]) for k in kinds}
        return {
            "wer": wer,
            # the share of the unseen words' occurrences not written in place
            "missed_unseen": {k: missed_words(ref, said[k], self.unseen_words) for k in kinds},
            "utterances": len(ref),
            "cer": {k: char_error_rate(ref, said[k]) for k in ("speller", "pipeline")},
            "per": said["per"],
            # the pipeline's word errors split between its stages: the decoder's own (on
            # the true phonemes, placed at their onsets) and the rest, which the acoustic
            # model's errors cause (negative where they happen to undo the decoder's)
            "errors": {
                "decoder": wer["true_phonemes"],
                "acoustic": wer["pipeline"] - wer["true_phonemes"],
            },
            "said": said,
        }

    def artifacts(self, system: torch.nn.Module) -> dict[str, Any]:
        was = system.training
        system.eval()
        try:
            out: dict[str, Any] = {}
            for name in ("test", "unseen", "noisy"):
                if name not in self._sets:
                    continue
                scores = self.scores(system, name)
                said = scores.pop("said")
                out[name] = scores
                if name == "test":
                    out["gallery"] = {k: v[:GALLERY] for k, v in said.items() if k != "per"}
            out["hours"] = sum(s.seconds for s in self._sets["train"]) / 3600.0
            out["utterances"] = len(self._sets["train"])
            return out
        finally:
            system.train(was)
