"""Decoding CTC outputs: greedy best paths, and words from phoneme posteriors through a
pronunciation lexicon and a bigram language model.

CTC's label 0 is the blank; labels 1..C are the tokens. ``greedy`` reads the best label
per frame, merges repeats and drops blanks.

``LexiconDecoder`` is the classic recogniser's second stage. Its search graph has one
CTC chain per lexicon word: a blank before, between and after its phonemes. Inside a
word the CTC rules apply: stay, step to the next state, or skip a blank between two
different phonemes. From a word's last phoneme or its trailing blank the search enters
any word's first blank or first phoneme. That costs the bigram's log-probability times
``lm_weight``, plus ``insertion`` per word. A Viterbi pass over the frames, vectorised
over utterances and states, gives each utterance its best word sequence.

The same decoder reads the *true* phonemes, given as near one-hot posteriors
(``true_posteriors``). Its errors there are its own, because the acoustic stage was
perfect. A pipeline's word errors beyond those are caused by its acoustic model. This
is the split the driving experiment makes between perception and control.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from e2elab.errors import E2ELabError

BLANK = 0
# the true phonemes as posteriors: this much on the spoken label, the rest spread
TRUE_MASS = 0.9


def greedy(logits: Tensor) -> list[list[int]]:
    """Per sequence of (B, T, C) scores: the best label per frame, repeats merged,
    blanks dropped (labels stay 1-based)."""
    best = logits.argmax(-1).cpu().numpy()
    out = []
    for row in best:
        keep = np.concatenate([[True], row[1:] != row[:-1]]) & (row != BLANK)
        out.append(row[keep].tolist())
    return out


class BigramLM:
    """Word bigrams from training transcripts, interpolated (0.7 : 0.3) with a uniform
    distribution over the whole lexicon and ``</s>``: a word no transcript holds is as
    likely there as any other, so the lexicon reaches it at a price the acoustic evidence
    can pay. (Add-one unigrams made it hundreds of times less likely than a heard word
    at 0.3 hours of transcripts: the decoder, given the true phonemes, then had a WER of
    0.29 on utterances with unseen words, writing heard sound-alikes.) ``<s>`` and
    ``</s>`` mark an utterance's ends."""

    def __init__(self, transcripts: Iterable[Sequence[str]], words: Sequence[str]) -> None:
        self.words = tuple(words)
        index = {w: i for i, w in enumerate(self.words)}
        size = len(self.words)
        start, end = size, size  # row <s> (last row), column </s> (last column)
        counts = np.zeros((size + 1, size + 1))
        for sentence in transcripts:
            ids = [index[w] for w in sentence]
            for prev, word in zip([start, *ids], [*ids, end], strict=True):
                counts[prev, word] += 1
        uniform = np.full(size + 1, 1.0 / (size + 1))
        rows = counts.sum(1, keepdims=True)
        bigram = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
        weight = np.where(rows > 0, 0.7, 0.0)  # a word never seen before: uniform
        self.log_prob = np.log(weight * bigram + (1 - weight) * uniform)  # (V+1, V+1)

    def score(self, sentence: Sequence[str]) -> float:
        index = {w: i for i, w in enumerate(self.words)}
        ids = [index[w] for w in sentence]
        size = len(self.words)
        pairs = zip([size, *ids], [*ids, size], strict=True)
        return float(sum(self.log_prob[a, b] for a, b in pairs))


@dataclass(frozen=True)
class _Graph:
    labels: np.ndarray  # (S,) the label each state emits (0 = blank)
    word_of: np.ndarray  # (S,) the word each state belongs to
    first: np.ndarray  # (V,) each word's first state (its leading blank)
    last: np.ndarray  # (V,) each word's last state (its trailing blank)
    skip: np.ndarray  # (S,) bool: may be entered from two states back


class LexiconDecoder:
    """Words from CTC phoneme posteriors: Viterbi over the lexicon's chains, joined by
    the bigram language model (see the module docstring).

    ``lexicon`` maps each word to its phoneme labels (1-based, as the posteriors'
    classes)."""

    def __init__(
        self,
        lexicon: Mapping[str, Sequence[int]],
        lm: BigramLM,
        lm_weight: float = 1.0,
        insertion: float = 0.0,
    ) -> None:
        self.words = lm.words
        missing = [w for w in self.words if not lexicon.get(w)]
        if missing:
            raise E2ELabError(f"the lexicon has no pronunciation of {missing[0]!r}; add it")
        labels, word_of, skip, first, last = [], [], [], [], []
        for v, word in enumerate(self.words):
            first.append(len(labels))
            chain = [BLANK]
            for label in lexicon[word]:
                chain += [int(label), BLANK]
            for s, label in enumerate(chain):
                labels.append(label)
                word_of.append(v)
                skip.append(label != BLANK and s >= 3 and chain[s - 2] != label)
            last.append(len(labels) - 1)
        self.graph = _Graph(
            np.array(labels), np.array(word_of), np.array(first), np.array(last), np.array(skip)
        )
        size = len(self.words)
        self.enter = torch.tensor(lm_weight * lm.log_prob[:size, :size] + insertion)  # (V, V)
        self.begin = torch.tensor(lm_weight * lm.log_prob[size, :size] + insertion)  # (V,)
        self.finish = torch.tensor(lm_weight * lm.log_prob[:size, size])  # (V,)

    def decode(self, log_probs: Tensor) -> list[list[str]]:
        """The best word sequence of each utterance from (U, T, C) log-posteriors."""
        g = self.graph
        lp = log_probs.detach().to(torch.float64).cpu()
        count, frames, _ = lp.shape
        size, states = len(self.words), len(g.labels)
        labels = torch.from_numpy(g.labels)
        first, last = torch.from_numpy(g.first), torch.from_numpy(g.last)
        skip = torch.from_numpy(g.skip)
        same_word = torch.from_numpy(np.concatenate([[False], g.word_of[1:] == g.word_of[:-1]]))
        skip = skip & torch.from_numpy(
            np.concatenate([[False, False], g.word_of[2:] == g.word_of[:-2]])
        )
        # CTC merges a repeat: a word ending in phoneme p enters a word beginning with p
        # only through a blank (its own trailing one, or the next word's leading one)
        repeat = labels[last - 1].unsqueeze(1) == labels[first + 1].unsqueeze(0)  # (V, V)
        none = -math.inf
        # entering word w's leading blank (0) or first phoneme (1) from word v's trailing
        # blank (0) or last phoneme (1): (entry, exit, from V, to V)
        allowed = torch.zeros(2, 2, size, size)
        allowed[1, 1] = torch.where(repeat, none, 0.0)
        enter = self.enter + allowed
        entries = torch.stack([first, first + 1])  # (2, V)
        score = torch.full((count, states), none, dtype=torch.float64)
        history = torch.full((count, states), -1, dtype=torch.long)  # token passing
        at_start = lp[:, 0, labels]
        for offset in (0, 1):
            score[:, entries[offset]] = self.begin + at_start[:, entries[offset]]
            # a node id encodes (frame, utterance, word, entry): its word is id // 2 % V
            node = (torch.arange(count).unsqueeze(1) * size + torch.arange(size)) * 2 + offset
            history[:, entries[offset]] = node
        parents = [torch.full((count, size, 2), -1, dtype=torch.long)]
        utterance = torch.arange(count).unsqueeze(1)
        blank_row = torch.full((count, 1), none, dtype=torch.float64)
        for t in range(1, frames):
            step = torch.where(same_word, torch.cat([blank_row, score[:, :-1]], 1), none)
            jump = torch.cat([blank_row, blank_row, score[:, :-2]], 1)
            jump = torch.where(skip, jump, none)
            best, which = torch.stack([score, step, jump]).max(0)
            moved_from = (torch.arange(states) - which).clamp(min=0)
            new_history = history.gather(1, moved_from)
            # leaving word v (trailing blank or last phoneme) for word w's entries
            exits = torch.stack([score[:, last], score[:, last - 1]])  # (exit, U, V)
            exit_history = torch.stack([history[:, last], history[:, last - 1]])
            link = exits.permute(1, 0, 2).unsqueeze(1).unsqueeze(-1) + enter  # (U,2,2,V,V)
            link = link.reshape(count, 2, 2 * size, size)
            entry_score, entry_from = link.max(2)  # (U, entry, to V)
            flat_history = exit_history.permute(1, 0, 2).reshape(count, 2 * size)
            chosen = flat_history.gather(1, entry_from.reshape(count, -1)).reshape(count, 2, size)
            parents.append(chosen.permute(0, 2, 1))  # (U, V, entry)
            for offset in (0, 1):
                target = entries[offset]
                node = ((t * count + utterance) * size + torch.arange(size)) * 2 + offset
                better = entry_score[:, offset] > best[:, target]
                best[:, target] = torch.where(better, entry_score[:, offset], best[:, target])
                new_history[:, target] = torch.where(better, node, new_history[:, target])
            score = best + lp[:, t, labels]
            history = new_history
        ends = torch.stack([score[:, last - 1], score[:, last]]) + self.finish  # (2, U, V)
        final = ends.permute(1, 0, 2).reshape(count, -1)
        pick = final.argmax(1)
        state = torch.where(pick // size == 1, last[pick % size], last[pick % size] - 1)
        node = history[torch.arange(count), state]
        table = torch.stack(parents).reshape(-1)  # node id -> its parent
        out = []
        for u in range(count):
            words, at = [], int(node[u])
            while at >= 0:
                words.append(self.words[at // 2 % size])
                at = int(table[at])
            out.append(words[::-1])
        return out


def true_posteriors(
    sequences: Sequence[Sequence[int]],
    classes: int,
    frames: int,
    onsets: Sequence[Sequence[int]] | None = None,
) -> Tensor:
    """Log-posteriors (U, frames, classes) of a perfect CTC acoustic model: a spike of
    ``TRUE_MASS`` on each phoneme at its onset frame (``onsets``, at the posteriors'
    frame rate: a real utterance's timing and length), the blank on every other frame
    with the same mass. Without onsets, the phonemes sit on every other frame from the
    start. Two spikes are at least two frames apart (a blank between them)."""
    rest = math.log((1 - TRUE_MASS) / (classes - 1))
    out = torch.full((len(sequences), frames, classes), rest, dtype=torch.float64)
    out[:, :, BLANK] = math.log(TRUE_MASS)
    for u, sequence in enumerate(sequences):
        at = -2
        for k, label in enumerate(sequence):
            wanted = onsets[u][k] if onsets is not None else 2 * k
            at = max(int(wanted), at + 2)
            if at >= frames:
                raise E2ELabError(f"{len(sequence)} phonemes do not fit {frames} frames")
            out[u, at, :] = rest
            out[u, at, label] = math.log(TRUE_MASS)
    return out


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """WER over a corpus (jiwer): word edits over reference words."""
    import jiwer

    return float(jiwer.wer(list(references), [h if h else "" for h in hypotheses]))


def char_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    import jiwer

    return float(jiwer.cer(list(references), list(hypotheses)))


def token_error_rate(
    references: Sequence[Sequence[int]], hypotheses: Sequence[Sequence[int]]
) -> float:
    """Edits over reference tokens (e.g. the phoneme error rate), through jiwer's word
    alignment of the tokens written as words."""
    return word_error_rate(
        [" ".join(f"t{x}" for x in r) for r in references],
        [" ".join(f"t{x}" for x in h) for h in hypotheses],
    )


def missed_words(
    references: Sequence[str], hypotheses: Sequence[str], words: Iterable[str]
) -> float | None:
    """The share of the occurrences of ``words`` in the references that the hypotheses
    do not write in place (jiwer's word alignment); None where the references hold none."""
    import jiwer

    wanted = set(words)
    total = sum(w in wanted for r in references for w in r.split())
    if not total:
        return None
    aligned = jiwer.process_words(list(references), [h if h else "" for h in hypotheses])
    found = 0
    for reference, chunks in zip(aligned.references, aligned.alignments, strict=True):
        for chunk in chunks:
            if chunk.type == "equal":
                found += sum(
                    w in wanted for w in reference[chunk.ref_start_idx : chunk.ref_end_idx]
                )
    return 1.0 - found / total
