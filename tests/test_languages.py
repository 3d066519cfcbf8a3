"""The synchronous grammar of e2elab.data.languages: three aligned languages A, B, C."""

from __future__ import annotations

import itertools
import time
from dataclasses import replace

import numpy as np
import pytest

from e2elab.data.languages import (
    EOS,
    LANGUAGES,
    PAD,
    SPECIALS,
    SPLITS,
    Clause,
    Grammar,
    Noun,
    Sentence,
    Tree,
    split_of,
)
from e2elab.errors import E2ELabError

SETTINGS = [(2, 0), (6, 0), (6, 1), (12, 2), (12, 3), (3, 3)]
CONTENT = {"N.m", "N.f", "N.n", "V", "ADJ"}


def _corpus(vocabulary: int, depth: int, count: int = 150, seed: int = 0) -> list[Sentence]:
    grammar = _grammar(vocabulary, depth)
    return grammar.sentences(count, seed)


_GRAMMARS: dict[tuple[int, int], Grammar] = {}


def _grammar(vocabulary: int, depth: int) -> Grammar:
    key = (vocabulary, depth)
    if key not in _GRAMMARS:
        _GRAMMARS[key] = Grammar(vocabulary, depth)
    return _GRAMMARS[key]


def _flip(noun: Noun) -> Noun:
    """The noun phrase with every person's gender swapped (things stay "n")."""
    gender = {"m": "f", "f": "m", "n": "n"}[noun.gender]
    relative = noun.relative
    if relative is not None:
        relative = replace(relative, obj=_flip(relative.obj))
    return replace(noun, gender=gender, relative=relative)


def _flip_tree(tree: Tree) -> Tree:
    return replace(tree, subject=_flip(tree.subject), obj=_flip(tree.obj))


def _full_noun(grammar: Grammar, level: int, lemma: int = 0) -> Noun:
    """The longest noun phrase: an adjective and a relative clause down to the depth."""
    relative = None
    if level < grammar.depth:
        relative = Clause(0, _full_noun(grammar, level + 1, lemma))
    return Noun(lemma, "m", 0, relative)


def _phrases(noun: Noun) -> int:
    return 1 + (_phrases(noun.relative.obj) if noun.relative else 0)


def _full_tree(grammar: Grammar) -> Tree:
    subject, obj = _full_noun(grammar, 0), _full_noun(grammar, 0, lemma=1)
    return Tree(subject, 0, obj, (0,) * (_phrases(subject) + _phrases(obj)))


# ---------------------------------------------------------------------- round trip


@pytest.mark.parametrize(("vocabulary", "depth"), SETTINGS)
def test_parse_and_realise_round_trip(vocabulary, depth):
    grammar = _grammar(vocabulary, depth)
    sentences = _corpus(vocabulary, depth)
    assert len(sentences) >= 100
    for sentence in sentences:
        assert grammar.parse(sentence.a) == sentence.tree
        assert grammar.parse(list(sentence.a)) == sentence.tree
        again = grammar.realise(sentence.tree)
        assert again == sentence
        assert (again.a, again.b, again.c) == (sentence.a, sentence.b, sentence.c)


def test_deep_sentences_occur_at_depth_three():
    sentences = _corpus(12, 3, count=400)
    # some sentence nests three relative clauses in one noun phrase
    assert max(s.a.count("that") for s in sentences) >= 3
    assert all(s.a.count("that") == 0 for s in _corpus(12, 0))


def test_realise_hand_built_tree():
    grammar = Grammar(6, 1)
    # "the old king that sees a dog chases a queen"
    tree = Tree(
        subject=Noun(0, "m", 2, Clause(0, Noun(6, "n", None, None))),
        verb=2,
        obj=Noun(0, "f", None, None),
        articles=(0, 1, 1),
    )
    sentence = grammar.realise(tree)
    assert sentence.a == ("the", "old", "king", "that", "sees", "a", "dog", "chases", "a", "queen")
    assert sentence.tags == ("DET", "ADJ", "N.m", "REL", "V", "DET", "N.n", "V", "DET", "N.f")
    b_king = grammar.noun("B", 0, "m")
    assert sentence.b == (
        grammar.verb("B", 2, "n"),
        b_king,
        grammar.adjective("B", 2),
        "ki",
        grammar.verb("B", 0, "n"),
        grammar.noun("B", 6, "n"),
        grammar.noun("B", 0, "f"),
    )
    assert grammar.noun("B", 0, "f") == b_king  # king and queen are one word in B
    assert sentence.c == (
        grammar.noun("C", 6, "n"),
        grammar.verb("C", 0, "m"),
        "ru",
        grammar.noun("C", 0, "m"),
        grammar.adjective("C", 2),
        grammar.noun("C", 0, "f"),
        grammar.verb("C", 2, "m"),
    )
    assert sentence.b_source == (7, 2, 1, -1, 4, 6, 9)
    assert sentence.c_source == (6, 4, -1, 2, 1, 9, 7)
    assert grammar.parse(sentence.a) == tree


# ---------------------------------------------------------------------- alignment


@pytest.mark.parametrize(("vocabulary", "depth"), SETTINGS)
def test_languages_align(vocabulary, depth):
    for s in _corpus(vocabulary, depth):
        assert len(s.tags) == len(s.a)
        assert len(s.b_source) == len(s.b)
        assert len(s.c_source) == len(s.c)
        for words, sources, marker in ((s.b, s.b_source, "ki"), (s.c, s.c_source, "ru")):
            for word, source in zip(words, sources):
                if word == marker:
                    assert source == -1
                    continue
                assert 0 <= source < len(s.a), (word, source)
                assert s.tags[source] in CONTENT
            # nouns to nouns, verbs to verbs, adjectives to adjectives
            grammar = _grammar(vocabulary, depth)
            for word, source in zip(words, sources):
                if source == -1:
                    continue
                tag = s.tags[source]
                language = "B" if marker == "ki" else "C"
                if tag.startswith("N."):
                    expected = {
                        grammar.noun(language, n, g)
                        for n in range(2 * vocabulary)
                        for g in ("m", "f", "n")
                        if (g == "n") == (n >= vocabulary)
                    }
                elif tag == "V":
                    expected = {
                        grammar.verb(language, v, g) for v in range(vocabulary) for g in "mfn"
                    }
                else:
                    assert tag == "ADJ"
                    expected = {grammar.adjective(language, a) for a in range(vocabulary)}
                assert word in expected, (word, tag)
            # each content word of A is the source of exactly one word; others of none
            used = [src for src in sources if src != -1]
            content = [i for i, tag in enumerate(s.tags) if tag in CONTENT]
            assert sorted(used) == content
        assert s.b.count("ki") == s.a.count("that") == s.c.count("ru")


def test_alignment_translates_consistently():
    """An A word always aligns to the same B word, and to the same C stem."""
    to_b: dict[str, set[str]] = {}
    to_c: dict[str, set[str]] = {}
    for s in _corpus(6, 2, count=300):
        for word, source in zip(s.b, s.b_source):
            if source != -1:
                to_b.setdefault(s.a[source], set()).add(word)
        for word, source in zip(s.c, s.c_source):
            if source != -1:
                # a C verb's suffix agrees with its subject; its stem is the translation
                stem = word[:-1] if s.tags[source] == "V" else word
                to_c.setdefault(s.a[source], set()).add(stem)
    assert to_b and to_c
    assert all(len(v) == 1 for v in to_b.values()), to_b
    assert all(len(v) == 1 for v in to_c.values()), to_c
    # B: king and queen share a word; C: they do not
    if "king" in to_b and "queen" in to_b:
        assert to_b["king"] == to_b["queen"]
        assert to_c["king"] != to_c["queen"]


# ---------------------------------------------------------------------- gender


def test_b_does_not_mark_gender_but_a_and_c_do():
    grammar = _grammar(6, 2)
    checked = 0
    for s in _corpus(6, 2, count=200):
        people = sum(tag in ("N.m", "N.f") for tag in s.tags)
        flipped = grammar.realise(_flip_tree(s.tree))
        assert flipped.b == s.b
        assert flipped.b_source == s.b_source
        assert flipped.tags == tuple({"N.m": "N.f", "N.f": "N.m"}.get(tag, tag) for tag in s.tags)
        if people:
            assert flipped.a != s.a
            assert flipped.c != s.c
            checked += 1
        else:
            assert (flipped.a, flipped.c) == (s.a, s.c)
        # flipping the tree flips exactly the gendered words of C
        assert flipped.c == tuple(grammar.counterpart.get(w, w) for w in s.c)
    assert checked > 50


def test_b_hand_built_gender_pair():
    grammar = Grammar(4, 0)
    king = Tree(Noun(0, "m", None, None), 1, Noun(5, "n", None, None), (0, 0))
    queen = replace(king, subject=replace(king.subject, gender="f"))
    k, q = grammar.realise(king), grammar.realise(queen)
    assert k.a == ("the", "king", "likes", "the", "cat")
    assert q.a == ("the", "queen", "likes", "the", "cat")
    assert k.b == q.b
    assert k.c != q.c
    assert k.c[0] != q.c[0] and k.c[-1] != q.c[-1]  # the noun and the agreeing verb


@pytest.mark.parametrize(("vocabulary", "depth"), [(6, 0), (6, 2), (12, 3)])
def test_c_verbs_agree_with_their_subject(vocabulary, depth):
    grammar = _grammar(vocabulary, depth)
    suffix = {"m": "o", "f": "a", "n": "e"}
    seen, relatives = set(), 0
    for s in _corpus(vocabulary, depth):
        gender = s.tree.subject.gender
        main = s.c[-1]
        assert s.tags[s.c_source[-1]] == "V"
        assert main == grammar.verb("C", s.tree.verb, gender)
        assert main.endswith(suffix[gender])
        seen.add(gender)
        # a relative clause's verb agrees with the noun it follows in A ("N that V")
        for word, source in zip(s.c, s.c_source):
            if source > 0 and s.tags[source] == "V" and s.tags[source - 1] == "REL":
                head = s.tags[source - 2]
                assert head.startswith("N.")
                assert word.endswith(suffix[head[2:]])
                relatives += 1
    assert seen == {"m", "f", "n"}
    assert (relatives > 0) == (depth > 0)


def test_c_verb_suffixes_by_gender():
    grammar = Grammar(3, 0)
    for v in range(3):
        forms = {g: grammar.verb("C", v, g) for g in "mfn"}
        assert forms["m"].endswith("o") and forms["f"].endswith("a") and forms["n"].endswith("e")
        assert forms["m"][:-1] == forms["f"][:-1] == forms["n"][:-1]
        assert grammar.verb("A", v, "m") == grammar.verb("A", v, "f") == grammar.verb("A", v, "n")
        assert grammar.verb("B", v, "m") == grammar.verb("B", v, "f")


@pytest.mark.parametrize(("vocabulary", "depth"), [(2, 0), (6, 1), (12, 3)])
def test_gendered_positions(vocabulary, depth):
    grammar = _grammar(vocabulary, depth)
    for s in _corpus(vocabulary, depth):
        expected = tuple(i for i, w in enumerate(s.c) if w in grammar.gendered_words)
        assert s.gendered == expected
        # independently: person nouns, and verbs whose suffix is a person's
        independent = tuple(
            i
            for i, (w, src) in enumerate(zip(s.c, s.c_source))
            if src != -1
            and (s.tags[src] in ("N.m", "N.f") or (s.tags[src] == "V" and w[-1] in "oa"))
        )
        assert s.gendered == independent


@pytest.mark.parametrize("vocabulary", [2, 5, 12])
def test_gendered_words_and_counterpart(vocabulary):
    grammar = Grammar(vocabulary, 1)
    gendered = grammar.gendered_words
    assert len(gendered) == 4 * vocabulary  # person nouns m/f, verbs m/f
    counterpart = grammar.counterpart
    assert set(counterpart) == set(gendered)
    for word, other in counterpart.items():
        assert other != word
        assert counterpart[other] == word  # an involution
    for p in range(vocabulary):
        m, f = grammar.noun("C", p, "m"), grammar.noun("C", p, "f")
        assert counterpart[m] == f and counterpart[f] == m
        assert m.endswith("o") and f.endswith("a")
    for v in range(vocabulary):
        m, f = grammar.verb("C", v, "m"), grammar.verb("C", v, "f")
        assert counterpart[m] == f and counterpart[f] == m
        assert grammar.verb("C", v, "n") not in gendered
    for t in range(vocabulary, 2 * vocabulary):
        assert grammar.noun("C", t, "n") not in gendered
    assert not gendered & set(grammar.vocabularies["A"])


# ---------------------------------------------------------------------- splits


def test_splits_are_disjoint_and_agree_with_split_of():
    grammar = Grammar(6, 1)
    texts, targets = {}, {}
    for split in SPLITS:
        sentences = grammar.sentences(200, 3, split)
        assert len(sentences) == 200
        assert all(split_of(s.c) == split for s in sentences)
        texts[split] = {s.a for s in sentences}
        assert len(texts[split]) == 200
        targets[split] = {s.c for s in sentences}
    for one, two in itertools.combinations(SPLITS, 2):
        assert not texts[one] & texts[two]
        # sentences that differ in A's articles alone share a split: no C crosses
        assert not targets[one] & targets[two]


def test_split_of_shares():
    grammar = Grammar(12, 2)
    rng = np.random.default_rng(0)
    counts = dict.fromkeys(SPLITS, 0)
    for _ in range(4000):
        counts[split_of(grammar.realise(grammar.tree(rng)).c)] += 1
    assert 0.02 < counts["test"] / 4000 < 0.08
    assert 0.02 < counts["validation"] / 4000 < 0.08
    assert counts["train"] / 4000 > 0.85
    assert split_of(("the", "king", "sees", "a", "dog")) == split_of(
        ("the", "king", "sees", "a", "dog")
    )


def test_sentences_deterministic_and_distinct():
    grammar = Grammar(6, 2)
    first = grammar.sentences(120, seed=7)
    assert first == Grammar(6, 2).sentences(120, seed=7)
    assert len({s.a for s in first}) == 120
    other = grammar.sentences(120, seed=8)
    assert [s.a for s in other] != [s.a for s in first]
    # another split or grammar size draws another stream
    assert [s.a for s in grammar.sentences(120, 7, "test")] != [s.a for s in first]
    assert grammar.sentences(0, 7) == []


def test_unknown_split_raises():
    with pytest.raises(E2ELabError, match="split"):
        Grammar(6, 1).sentences(10, 0, "dev")


def _all_depth0_a(grammar: Grammar) -> set:
    nouns = [
        (lemma, gender)
        for lemma in range(2 * grammar.size)
        for gender in (("m", "f") if lemma < grammar.size else ("n",))
    ]
    adjectives = [None, *range(grammar.size)]
    out = set()
    for (sl, sg), sa, v, (ol, og), oa, arts in itertools.product(
        nouns,
        adjectives,
        range(grammar.size),
        nouns,
        adjectives,
        itertools.product((0, 1), repeat=2),
    ):
        tree = Tree(Noun(sl, sg, sa, None), v, Noun(ol, og, oa, None), arts)
        out.add(grammar.realise(tree))
    return out


def test_more_sentences_than_exist_returns_fewer():
    grammar = Grammar(2, 0)
    everything = _all_depth0_a(grammar)
    assert len(everything) == 2592  # (2 det x 3 adj x 6 nouns)^2 x 2 verbs
    in_test = {s.a for s in everything if split_of(s.c) == "test"}
    start = time.perf_counter()
    found = grammar.sentences(10**9, 0, "test")
    assert time.perf_counter() - start < 10
    texts = {s.a for s in found}
    assert len(texts) == len(found) < 10**9
    assert texts <= in_test
    assert len(texts) >= 0.9 * len(in_test)


# ---------------------------------------------------------------------- token ids


@pytest.mark.parametrize(("vocabulary", "depth"), SETTINGS)
def test_encode_decode_round_trip(vocabulary, depth):
    grammar = _grammar(vocabulary, depth)
    sentences = _corpus(vocabulary, depth)
    for language in LANGUAGES:
        rows = [s.words(language) for s in sentences]
        ids = grammar.encode(language, rows)
        assert ids.dtype == np.int64
        assert ids.shape == (len(rows), grammar.max_length(language))
        for row, words in zip(ids, rows):
            assert len(words) + 1 <= grammar.max_length(language)
            assert row[len(words)] == EOS
            assert (row[len(words) + 1 :] == PAD).all()
            assert EOS not in row[: len(words)] and PAD not in row[: len(words)]
            assert grammar.decode(language, row) == words
            assert grammar.decode(language, row.tolist()) == words


@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_max_length_is_tight(depth):
    for vocabulary in (2, 12):
        grammar = Grammar(vocabulary, depth)
        longest = grammar.realise(_full_tree(grammar))
        assert grammar.parse(longest.a) == longest.tree
        for language in LANGUAGES:
            assert len(longest.words(language)) + 1 == grammar.max_length(language)
        for s in grammar.sentences(200, 1):
            for language in LANGUAGES:
                assert len(s.words(language)) + 1 <= grammar.max_length(language)


def test_decode_stops_at_eos_and_pad():
    grammar = Grammar(6, 1)
    index = grammar.index["A"]
    words = ("the", "king", "sees", "a", "dog")
    ids = [index[w] for w in words]
    assert grammar.decode("A", [*ids, EOS, index["cat"], index["the"]]) == words
    assert grammar.decode("A", [*ids, PAD, index["cat"]]) == words
    assert grammar.decode("A", [EOS, *ids]) == ()
    assert grammar.decode("A", ids) == words  # no end token: every word
    assert grammar.decode("A", [*ids[:2], 10_000]) == (*words[:2], "<unk>")
    # an explicit length truncates
    short = grammar.encode("A", [words], length=3)
    assert short.shape == (1, 3)
    assert short[0].tolist() == ids[:3]
    long = grammar.encode("A", [words], length=9)
    assert long[0].tolist() == [*ids, EOS, PAD, PAD, PAD]


def test_token_ids_are_vocabulary_indices():
    grammar = Grammar(6, 1)
    for language in LANGUAGES:
        vocabulary = grammar.vocabularies[language]
        assert vocabulary[: len(SPECIALS)] == SPECIALS
        assert vocabulary[PAD] == "<pad>" and vocabulary[EOS] == "</s>"
        for i, word in enumerate(vocabulary):
            assert grammar.index[language][word] == i


def test_unknown_language_raises():
    grammar = Grammar(6, 1)
    with pytest.raises(E2ELabError, match="language"):
        grammar.encode("D", [("the", "king")])
    with pytest.raises(E2ELabError, match="language"):
        grammar.decode("a", [3, 4])


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize("vocabulary", [1, 13, 0, -2])
def test_bad_vocabulary_raises_one_line(vocabulary):
    with pytest.raises(E2ELabError) as caught:
        Grammar(vocabulary=vocabulary)
    message = str(caught.value)
    assert "\n" not in message
    assert f"vocabulary {vocabulary} " in message


@pytest.mark.parametrize("depth", [-1, 4])
def test_bad_depth_raises(depth):
    with pytest.raises(E2ELabError, match="depth"):
        Grammar(6, depth)


def test_extreme_vocabularies_are_accepted():
    assert Grammar(2, 0).size == 2
    assert Grammar(12, 3).size == 12


def test_parse_rejects_malformed_a():
    grammar = Grammar(6, 1)
    good = ("the", "old", "king", "that", "sees", "a", "dog", "chases", "a", "cat")
    assert grammar.parse(good) is not None
    bad = [
        (),
        ("the", "king", "a", "dog"),  # no verb
        ("the", "king", "sees"),  # no object
        ("the", "king", "sees", "a"),  # object without a noun
        ("king", "sees", "a", "dog"),  # no determiner
        ("the", "king", "sees", "a", "dog", "dog"),  # a trailing word
        ("the", "king", "sees", "a", "dog", "the"),
        (*good, "a", "cat"),
        ("the", "zebra", "sees", "a", "dog"),  # an unknown word
        ("the", "king", "sees", "a", "dog", "<pad>"),
        ("the", "old", "big", "king", "sees", "a", "dog"),  # two adjectives
        ("the", "king", "that", "a", "dog", "sees", "a", "cat"),  # relative without a verb
        ("the", "king", "that", "sees", "chases", "a", "cat"),  # relative without object
        ("the", "king", "sees", "sees", "a", "dog"),
    ]
    for words in bad:
        assert grammar.parse(words) is None, words
    # a word of the full vocabulary beyond this grammar's lemmas
    assert Grammar(2, 1).parse(("the", "man", "sees", "a", "dog")) is None
    assert Grammar(3, 1).parse(("the", "man", "sees", "a", "dog")) is not None


def test_parse_rejects_relative_clauses_deeper_than_depth():
    deep = Grammar(6, 2)
    one = ("the", "king", "that", "sees", "a", "dog", "chases", "a", "cat")
    two = (
        "the",
        "king",
        "that",
        "sees",
        "a",
        "dog",
        "that",
        "likes",
        "a",
        "cat",
        "sees",
        "a",
        "boy",
    )
    assert deep.parse(one) is not None
    assert deep.parse(two) is not None
    assert Grammar(6, 1).parse(one) is not None
    assert Grammar(6, 1).parse(two) is None
    assert Grammar(6, 0).parse(one) is None
    # in the object too
    obj = ("a", "cat", "sees", "the", "king", "that", "sees", "a", "dog")
    assert Grammar(6, 1).parse(obj) is not None
    assert Grammar(6, 0).parse(obj) is None
    # a sentence with three nested clauses in one noun phrase fails below depth 3
    nested = [
        s
        for s in _corpus(12, 3, count=400)
        if max(_phrases(s.tree.subject), _phrases(s.tree.obj)) == 4
    ]
    assert nested
    for s in nested[:20]:
        assert Grammar(12, 3).parse(s.a) == s.tree
        assert Grammar(12, 2).parse(s.a) is None


# ---------------------------------------------------------------------- vocabularies


@pytest.mark.parametrize("vocabulary", [2, 3, 6, 12])
def test_vocabularies_have_no_duplicates(vocabulary):
    grammar = Grammar(vocabulary, 1)
    sizes = {
        # determiners, relative marker, people m/f, things, verbs, adjectives
        "A": 2 + 1 + 2 * vocabulary + vocabulary + vocabulary + vocabulary,
        "B": 1 + vocabulary + vocabulary + vocabulary + vocabulary,
        "C": 1 + 2 * vocabulary + vocabulary + 3 * vocabulary + vocabulary,
    }
    for language in LANGUAGES:
        words = grammar.vocabularies[language]
        assert len(set(words)) == len(words)
        # no two lemmas merged by a clash of made-up words
        assert len(words) == len(SPECIALS) + sizes[language], language
        assert all(w and " " not in w for w in words)


def test_every_generated_word_is_in_its_vocabulary():
    grammar = _grammar(12, 3)
    for s in _corpus(12, 3):
        for language in LANGUAGES:
            assert set(s.words(language)) <= set(grammar.vocabularies[language])
