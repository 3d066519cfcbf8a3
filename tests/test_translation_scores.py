"""Scores of translations: BLEU/chrF by sacrebleu, exact match, and gender accuracy."""

from __future__ import annotations

import pytest
import sacrebleu

from e2elab.data.languages import Grammar
from e2elab.tasks.translation_scores import bleu_chrf, exact, gender_accuracy, quality

GRAMMAR = Grammar(6, 1)
KING, QUEEN = GRAMMAR.noun("C", 0, "m"), GRAMMAR.noun("C", 0, "f")
BOY, GIRL = GRAMMAR.noun("C", 1, "m"), GRAMMAR.noun("C", 1, "f")
DOG = GRAMMAR.noun("C", 6, "n")
SEES_M, SEES_F, SEES_N = (GRAMMAR.verb("C", 0, g) for g in "mfn")
OLD = GRAMMAR.adjective("C", 2)

CASES = [
    (
        [("the", "cat", "sat", "on", "the", "mat"), ("a", "b", "c", "d")],
        [("the", "cat", "sat", "on", "the", "mat"), ("a", "b", "c", "d")],
    ),
    (
        [("the", "cat", "sat", "on", "a", "mat"), ("x", "y"), ()],
        [("the", "cat", "sat", "on", "the", "mat"), ("x", "y", "z"), ("one", "word")],
    ),
    (
        [("bebao", "zokeo"), ("moro", "ru", "kala", "vena", "dipe")],
        [("bebao", "zokea"), ("moro", "ru", "kala", "vena", "dipo")],
    ),
    (
        # words with punctuation: tokenize="none" must keep them whole
        [("hello,", "world!", "it's", "me")],
        [("hello", ",", "world", "!", "it", "'s", "me")],
    ),
]


@pytest.mark.parametrize(("hypotheses", "references"), CASES)
def test_bleu_chrf_match_sacrebleu(hypotheses, references):
    scores = bleu_chrf(hypotheses, references)
    hyp = [" ".join(h) for h in hypotheses]
    ref = [" ".join(r) for r in references]
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyp, [ref], tokenize="none").score)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyp, [ref]).score)
    assert set(scores) == {"bleu", "chrf"}


def test_bleu_chrf_range():
    hypotheses, references = CASES[0]
    assert bleu_chrf(hypotheses, references) == {
        "bleu": pytest.approx(100.0),
        "chrf": pytest.approx(100.0),
    }
    wrong = bleu_chrf([("p", "q", "r", "s")], [("w", "x", "y", "z")])
    assert wrong["bleu"] == pytest.approx(0.0)
    assert wrong["chrf"] == pytest.approx(0.0)
    partial = bleu_chrf(*CASES[1])
    assert 0 < partial["bleu"] < 100 and 0 < partial["chrf"] < 100


def test_bleu_does_not_tokenise():
    # the default 13a tokeniser would split "world!" and score this pair higher
    hypotheses, references = CASES[3]
    hyp, ref = [" ".join(h) for h in hypotheses], [" ".join(r) for r in references]
    tokenised = sacrebleu.corpus_bleu(hyp, [ref]).score
    assert bleu_chrf(hypotheses, references)["bleu"] < tokenised


def test_exact_counts_whole_sentences():
    references = [("a", "b"), ("c",), ("d", "e"), ()]
    assert exact(references, references) == 1.0
    assert exact([("a", "b"), ("c",), ("e", "d"), ()], references) == 0.75
    assert exact([("a",), ("c", "c"), ("d", "e", "f"), ("x",)], references) == 0.0
    assert exact([("a", "b"), ("x",), ("d", "e"), ("y",)], references) == 0.5
    with pytest.raises(ValueError):
        exact([("a", "b")], references)


def test_gender_right_wrong_missing():
    reference = (KING, DOG, SEES_M)  # "the king sees the dog" in C (SOV)
    result = gender_accuracy(GRAMMAR, [reference], [reference])
    assert result == {"accuracy": 1.0, "right": 2, "wrong": 0, "missing": 0}
    # the other gender's forms only: wrong
    flipped = (QUEEN, DOG, SEES_F)
    result = gender_accuracy(GRAMMAR, [flipped], [reference])
    assert result == {"accuracy": 0.0, "right": 0, "wrong": 2, "missing": 0}
    # the noun right, the verb's other form: one each
    result = gender_accuracy(GRAMMAR, [(KING, DOG, SEES_F)], [reference])
    assert result == {"accuracy": 0.5, "right": 1, "wrong": 1, "missing": 0}
    # absent (or the thing's verb form, which carries no gender): missing, not counted
    result = gender_accuracy(GRAMMAR, [(KING, DOG, SEES_N)], [reference])
    assert result == {"accuracy": 1.0, "right": 1, "wrong": 0, "missing": 1}
    result = gender_accuracy(GRAMMAR, [(BOY, DOG)], [reference])
    assert result == {"accuracy": None, "right": 0, "wrong": 0, "missing": 2}


def test_gender_position_does_not_matter():
    reference = (KING, DOG, SEES_M)
    result = gender_accuracy(GRAMMAR, [(SEES_M, OLD, KING)], [reference])
    assert (result["right"], result["wrong"], result["missing"]) == (2, 0, 0)


def test_gender_counts_repeated_words_as_a_multiset():
    reference = (KING, KING, SEES_M)  # "the king sees the king"
    result = gender_accuracy(GRAMMAR, [(KING, SEES_M)], [reference])
    assert (result["right"], result["wrong"], result["missing"]) == (2, 0, 1)
    result = gender_accuracy(GRAMMAR, [(KING, QUEEN, SEES_M)], [reference])
    assert (result["right"], result["wrong"], result["missing"]) == (2, 1, 0)
    result = gender_accuracy(GRAMMAR, [(QUEEN, QUEEN, QUEEN, SEES_M)], [reference])
    assert (result["right"], result["wrong"], result["missing"]) == (1, 2, 0)
    # a word said more often than the reference holds it earns no extra credit
    result = gender_accuracy(GRAMMAR, [(KING, KING, KING, KING, SEES_M)], [reference])
    assert (result["right"], result["wrong"], result["missing"]) == (3, 0, 0)
    assert result["accuracy"] == 1.0


def test_gender_sums_over_sentences():
    references = [(KING, DOG, SEES_M), (DOG, GIRL, SEES_N), (DOG, OLD, DOG, SEES_N)]
    hypotheses = [(KING, DOG, SEES_F), (DOG, BOY, SEES_N), (DOG, DOG, SEES_N)]
    result = gender_accuracy(GRAMMAR, hypotheses, references)
    assert result == {"accuracy": 1 / 3, "right": 1, "wrong": 2, "missing": 0}
    with pytest.raises(ValueError):
        gender_accuracy(GRAMMAR, hypotheses[:2], references)


def test_gender_accuracy_none_when_nothing_is_said():
    references = [(KING, DOG, SEES_M), (QUEEN, SEES_F)]
    result = gender_accuracy(GRAMMAR, [(), ()], references)
    assert result == {"accuracy": None, "right": 0, "wrong": 0, "missing": 4}
    # no gendered word in the references at all
    things = [(DOG, OLD, DOG, SEES_N)]
    assert gender_accuracy(GRAMMAR, things, things) == {
        "accuracy": None,
        "right": 0,
        "wrong": 0,
        "missing": 0,
    }
    assert gender_accuracy(GRAMMAR, [], [])["accuracy"] is None


def test_flipping_every_gendered_word_scores_zero():
    sentences = GRAMMAR.sentences(200, 0, "test")
    other = GRAMMAR.counterpart
    # where a sentence holds both forms of one word, flipping swaps them and still hits
    clean = [s.c for s in sentences if not any(other.get(w) in s.c for w in s.c)]
    assert sum(1 for c in clean for w in c if w in other) > 100
    flipped = [tuple(other.get(w, w) for w in c) for c in clean]
    result = gender_accuracy(GRAMMAR, flipped, clean)
    assert result["accuracy"] == 0.0
    assert result["right"] == result["missing"] == 0
    assert result["wrong"] == sum(len(s.gendered) for s in sentences if s.c in clean)
    # and the references themselves score 1
    assert gender_accuracy(GRAMMAR, clean, clean)["accuracy"] == 1.0


def test_quality_of_a_gender_flipped_translation():
    """Every gendered word swapped: no sentence exact, agreement near 0."""
    references = [s.c for s in GRAMMAR.sentences(50, 1) if s.gendered]
    assert references
    flipped = [tuple(GRAMMAR.counterpart.get(w, w) for w in c) for c in references]
    result = quality(GRAMMAR, flipped, references)
    assert result["exact"] == 0.0
    assert result["agreement"] is not None and result["agreement"] < 0.2


def test_quality_keys():
    references = [(KING, DOG, SEES_M), (DOG, GIRL, SEES_N)]
    hypotheses = [(KING, DOG, SEES_M), (DOG, BOY, SEES_N)]
    result = quality(GRAMMAR, hypotheses, references)
    assert set(result) == {"exact", "bleu", "chrf", "agreement", "gender"}
    assert result["exact"] == 0.5
    assert result["agreement"] == result["gender"]["accuracy"] == 2 / 3
    assert result["gender"] == {"accuracy": 2 / 3, "right": 2, "wrong": 1, "missing": 0}
    assert result["bleu"] == pytest.approx(bleu_chrf(hypotheses, references)["bleu"])
    assert result["chrf"] == pytest.approx(bleu_chrf(hypotheses, references)["chrf"])
