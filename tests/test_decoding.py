"""CTC decoding and the lexicon decoder on hand-made posteriors; error rates."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from e2elab.decoding import (
    BigramLM,
    LexiconDecoder,
    char_error_rate,
    greedy,
    token_error_rate,
    true_posteriors,
    word_error_rate,
)
from e2elab.errors import E2ELabError
from e2elab.ports import CTCKind

LEXICON = {"one": [1, 2, 3], "two": [4, 5], "too": [4, 5], "three": [6, 7, 8], "oh": [1]}
TRANSCRIPTS = [["one", "two"], ["three", "one"], ["two", "three", "one"], ["oh", "one"]]


def decoder(**kwargs: float) -> LexiconDecoder:
    return LexiconDecoder(LEXICON, BigramLM(TRANSCRIPTS, list(LEXICON)), **kwargs)


def test_greedy_merges_repeats_and_drops_blanks() -> None:
    frames = [0, 3, 3, 0, 3, 5, 5, 5, 0, 0, 2]
    logits = torch.nn.functional.one_hot(torch.tensor([frames]), 6).float()
    assert greedy(logits) == [[3, 3, 5, 2]]


def test_the_decoder_reads_true_phonemes_back_into_words() -> None:
    said = [["one", "two"], ["three", "one"], ["two"], ["one", "one"], ["oh", "three"]]
    phonemes = [[p for w in words for p in LEXICON[w]] for words in said]
    assert decoder().decode(true_posteriors(phonemes, 9, 16)) == said


def test_homophones_are_resolved_by_the_language_model() -> None:
    # "too" never occurs in the transcripts: after "one", the LM says "two"
    phonemes = [[1, 2, 3, 4, 5]]
    assert decoder().decode(true_posteriors(phonemes, 9, 12)) == [["one", "two"]]


def test_a_word_no_transcript_holds_stays_reachable() -> None:
    lexicon = {**LEXICON, "four": [2, 7]}
    lm = BigramLM(TRANSCRIPTS, list(lexicon))
    assert np.isfinite(lm.log_prob).all()
    got = LexiconDecoder(lexicon, lm).decode(true_posteriors([[2, 7]], 9, 6))
    assert got == [["four"]]


def _viterbi_score(log_probs: torch.Tensor, labels: list[int]) -> float:
    """The best CTC path's log-probability of ``labels`` (a reference, by loops)."""
    chain = [0]
    for label in labels:
        chain += [label, 0]
    best = [-math.inf] * len(chain)
    best[0], best[1] = float(log_probs[0, 0]), float(log_probs[0, chain[1]])
    for t in range(1, len(log_probs)):
        new = []
        for s, label in enumerate(chain):
            options = [best[s]] + ([best[s - 1]] if s >= 1 else [])
            if s >= 2 and label != 0 and chain[s - 2] != label:
                options.append(best[s - 2])
            new.append(max(options) + float(log_probs[t, label]))
        best = new
    return max(best[-1], best[-2])


def test_the_decoder_finds_the_best_word_sequence_by_brute_force() -> None:
    """On random posteriors, the decoder's words are the best of every sequence of up
    to three words under (best CTC path + LM), by enumeration."""
    lm = BigramLM(TRANSCRIPTS, list(LEXICON))
    dec = LexiconDecoder(LEXICON, lm, lm_weight=0.5)
    generator = torch.Generator().manual_seed(3)
    for _ in range(4):
        log_probs = torch.log_softmax(
            2.0 * torch.randn(10, 9, generator=generator, dtype=torch.float64), -1
        )
        best, best_words = -math.inf, None
        for n in (1, 2, 3):
            for words in itertools.product(LEXICON, repeat=n):
                labels = [p for w in words for p in LEXICON[w]]
                if 2 * len(labels) - 1 > 2 * len(log_probs):
                    continue
                score = _viterbi_score(log_probs, labels) + 0.5 * lm.score(words)
                if score > best:
                    best, best_words = score, list(words)
        got = dec.decode(log_probs.unsqueeze(0))[0]
        labels = [p for w in got for p in LEXICON[w]]
        got_score = _viterbi_score(log_probs, labels) + 0.5 * lm.score(got)
        # the same score (a tie may pick another sequence of equal score)
        assert got_score == pytest.approx(best, abs=1e-9), (got, best_words)


def test_a_repeated_phoneme_across_a_word_boundary_needs_a_blank() -> None:
    """CTC merges a run of one label: frames 1,2,2,3 read 1 2 3, so with a=[1,2],
    b=[2,3] and c=[3] they are "a c", not "a b" (which needs a blank between the 2s)."""
    lexicon = {"a": [1, 2], "b": [2, 3], "c": [3]}
    lm = BigramLM([["a", "b"], ["a", "c"]], list(lexicon))
    frames = torch.tensor([[1, 2, 2, 3]])
    log_probs = torch.log_softmax(8.0 * torch.nn.functional.one_hot(frames, 4).double(), -1)
    assert LexiconDecoder(lexicon, lm).decode(log_probs) == [["a", "c"]]
    apart = torch.tensor([[1, 2, 0, 2, 3]])  # with a blank between, it is "a b"
    log_probs = torch.log_softmax(8.0 * torch.nn.functional.one_hot(apart, 4).double(), -1)
    assert LexiconDecoder(lexicon, lm).decode(log_probs) == [["a", "b"]]


def test_true_posteriors_place_each_phoneme_at_its_onset() -> None:
    perfect = true_posteriors([[3, 3, 1]], 4, 10, onsets=[[1, 2, 7]])
    assert perfect[0].argmax(-1).tolist() == [0, 3, 0, 3, 0, 0, 0, 1, 0, 0]  # 3, 3 kept apart
    with pytest.raises(E2ELabError, match="do not fit"):
        true_posteriors([[1, 2]], 3, 3, onsets=[[1, 2]])


def test_missed_words_counts_the_occurrences_not_written_in_place() -> None:
    from e2elab.decoding import missed_words

    assert missed_words(["a b c", "c d"], ["a x c", "d"], ["c"]) == pytest.approx(0.5)
    assert missed_words(["a b"], ["a b"], ["z"]) is None


def test_a_word_missing_from_the_lexicon_is_one_line() -> None:
    lm = BigramLM(TRANSCRIPTS, [*LEXICON, "nine"])
    with pytest.raises(E2ELabError, match="no pronunciation of 'nine'"):
        LexiconDecoder(LEXICON, lm)


def test_error_rates_against_hand_counts() -> None:
    # one substitution and one deletion over 5 reference words
    assert word_error_rate(["a b c", "d e"], ["a x c", "d"]) == pytest.approx(2 / 5)
    assert char_error_rate(["abcd"], ["abd"]) == pytest.approx(1 / 4)
    assert token_error_rate([[1, 2, 3, 4]], [[1, 3, 4, 4]]) == pytest.approx(2 / 4)


def test_the_ctc_kind_scores_and_trains() -> None:
    kind = CTCKind()
    target = torch.tensor([[3, 1, 0], [2, 0, 0]])
    frames = torch.tensor([[0, 3, 3, 0, 1, 0], [2, 0, 0, 0, 0, 0]])
    value = 10.0 * torch.nn.functional.one_hot(frames, 4).float()
    assert kind.metrics(value, target)[""] == pytest.approx(1.0)
    loss = kind.loss(value.requires_grad_(), target, 4)
    loss.backward()
    assert loss.item() < 0.01 and value.grad is not None
    kind.check_target("p", target, value, 4)
    with pytest.raises(E2ELabError, match="ctc port"):
        kind.check_target("p", target[0], value, 4)
    with pytest.raises(E2ELabError, match="teacher-forced"):
        kind.forced(target, value, 4)
