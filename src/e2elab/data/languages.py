"""Three generated languages that say the same things: a synchronous grammar.

Every sentence is one derivation (a tree), realised in three languages at once, so that
every stage of a translation system has an exact reference:

- **A**, English-like: subject-verb-object, adjectives before the noun, relative clauses
  after it ("the old king that sees the dog chases a cat"). Its nouns for people come
  in natural-gender pairs (king/queen, boy/girl, ...). A is real English words, so that
  it can be spoken (``e2elab.data.speech``).
- **B**, the pivot: verb first (verb-subject-object), adjectives after the noun, a
  relative clause after it behind the marker ``ki``. B has **one** noun for each pair of
  A (king and queen are both ``rega``): B does not mark gender.
- **C**, the target: subject-object-verb, adjectives after the noun, relative clauses
  before it closed by ``ru``. C marks gender: a gendered noun of A has a masculine and a
  feminine form (``moro``/``mora``), and every verb agrees with its subject in gender
  (suffix ``-o`` masculine, ``-a`` feminine, ``-e`` for a thing). What C needs and B
  lacks (the gender of a person) can only come from A: a cascade through B must guess
  it.

The derivation is kept with each sentence: a category tag per A word, and for each B
and C word the position of the A word it translates (the gold alignment; -1 for a word
with no source, such as ``ki`` and ``ru``).

Sentences are split by a hash of their C text: 1 in 20 is a test sentence, 1 in 20 a
validation sentence, the rest train. C fixes the derivation and every gender (A adds
only its articles), so no test sentence is a training one in any language but B: B says
a king and a queen alike, so a test sentence's B can occur in training, with another
gender in A and C. The words and constructions of test sentences all occur in
training; their combinations are new (compositions are not held out). Torch-free and
deterministic per seed (numpy).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache, cached_property

import numpy as np

from e2elab.errors import E2ELabError, choices

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<s>", "</s>")
LANGUAGES = ("A", "B", "C")

# natural-gender pairs of A (masculine, feminine): B has one word for both
PEOPLE = (
    ("king", "queen"),
    ("boy", "girl"),
    ("man", "woman"),
    ("father", "mother"),
    ("brother", "sister"),
    ("prince", "princess"),
    ("uncle", "aunt"),
    ("son", "daughter"),
    ("actor", "actress"),
    ("waiter", "waitress"),
    ("husband", "wife"),
    ("nephew", "niece"),
)
THINGS = (
    "dog",
    "cat",
    "bird",
    "horse",
    "tree",
    "house",
    "car",
    "book",
    "fish",
    "ship",
    "stone",
    "road",
)
VERBS = (
    "sees",
    "likes",
    "chases",
    "finds",
    "helps",
    "calls",
    "follows",
    "hears",
    "meets",
    "pushes",
    "paints",
    "knows",
)
ADJECTIVES = (
    "big",
    "small",
    "old",
    "young",
    "red",
    "happy",
    "tall",
    "quiet",
    "green",
    "brave",
    "slow",
    "kind",
)
DETERMINERS = ("the", "a")  # A only: B and C have no articles
RELATIVE = {"A": "that", "B": "ki", "C": "ru"}
MAX_VOCABULARY = len(PEOPLE)
MIN_VOCABULARY = 2  # a person pair and a thing, two verbs, two adjectives
MAX_DEPTH = 3
RELATIVE_RATE = 0.5  # chance that a noun phrase below the depth limit takes a relative clause
ADJECTIVE_RATE = 0.5
TEST_SHARE = VALIDATION_SHARE = 1 / 20
GIVE_UP = 20_000  # draws in a row without a new sentence: the split holds no more

_ONSETS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


_SYLLABLES = [o + v for o in _ONSETS for v in _VOWELS]
_CLASSES = {"noun": 0, "verb": 1, "adjective": 2}


@cache
def _pseudo(language: str, word_class: str, index: int) -> str:
    """A made-up two-syllable stem of B or C: distinct for every (class, index) within
    a language, the languages' stems in different orders."""
    stems = np.random.default_rng([LANGUAGES.index(language)]).permutation(len(_SYLLABLES) ** 2)
    stem = int(stems[_CLASSES[word_class] * 2 * MAX_VOCABULARY + index])
    return _SYLLABLES[stem // len(_SYLLABLES)] + _SYLLABLES[stem % len(_SYLLABLES)]


@dataclass(frozen=True)
class Noun:
    lemma: int  # index among the grammar's nouns (people first, then things)
    gender: str  # "m" or "f" for a person, "n" for a thing
    adjective: int | None
    relative: Clause | None


@dataclass(frozen=True)
class Clause:
    """A relative clause on a noun: the noun is its subject; ``verb`` ``obj``."""

    verb: int
    obj: Noun


@dataclass(frozen=True)
class Tree:
    """One sentence's derivation: subject, verb, object (plus the articles of A)."""

    subject: Noun
    verb: int
    obj: Noun
    articles: tuple[int, ...]  # A's determiner per noun phrase, in A's order


@dataclass(frozen=True)
class Sentence:
    """One derivation realised in A, B and C, with its tags and alignments."""

    tree: Tree
    a: tuple[str, ...]
    b: tuple[str, ...]
    c: tuple[str, ...]
    tags: tuple[str, ...]  # per A word: DET, ADJ, N.m, N.f, N.n, V, REL
    b_source: tuple[int, ...]  # per B word: the position of its A word, -1 for none
    c_source: tuple[int, ...]  # per C word: likewise (the gold alignment A -> C)
    gendered: tuple[int, ...]  # positions in C of words that carry a person's gender

    def words(self, language: str) -> tuple[str, ...]:
        return {"A": self.a, "B": self.b, "C": self.c}[language]


class Grammar:
    """The languages for ``vocabulary`` lemmas of each open class (person pairs, things,
    verbs, adjectives) and relative clauses nested at most ``depth`` deep."""

    def __init__(self, vocabulary: int = 6, depth: int = 1) -> None:
        if not MIN_VOCABULARY <= vocabulary <= MAX_VOCABULARY:
            raise E2ELabError(
                f"vocabulary {vocabulary} does not fit the grammar: it needs "
                f"{MIN_VOCABULARY} to {MAX_VOCABULARY} lemmas per word class (a pair of "
                "people and a thing to tell gender from, two verbs, two adjectives); "
                f"set --knob vocabulary={max(MIN_VOCABULARY, min(vocabulary, MAX_VOCABULARY))}"
            )
        if not 0 <= depth <= MAX_DEPTH:
            raise E2ELabError(f"depth must be 0 to {MAX_DEPTH}, got {depth}")
        self.size, self.depth = vocabulary, depth
        self.people = PEOPLE[:vocabulary]
        self.things = THINGS[:vocabulary]
        self.verbs = VERBS[:vocabulary]
        self.adjectives = ADJECTIVES[:vocabulary]

    # ------------------------------------------------------------------ the lexicon

    def noun(self, language: str, lemma: int, gender: str) -> str:
        people = len(self.people)
        if language == "A":
            if lemma < people:
                return self.people[lemma][gender == "f"]
            return self.things[lemma - people]
        if language == "B":
            return _pseudo("B", "noun", lemma)
        stem = _pseudo("C", "noun", lemma)
        return stem + ("a" if gender == "f" else "o") if lemma < people else stem + "i"

    def verb(self, language: str, verb: int, gender: str) -> str:
        if language == "A":
            return self.verbs[verb]
        if language == "B":
            return _pseudo("B", "verb", verb)
        return _pseudo("C", "verb", verb) + {"m": "o", "f": "a", "n": "e"}[gender]

    def adjective(self, language: str, adjective: int) -> str:
        if language == "A":
            return self.adjectives[adjective]
        return _pseudo(language, "adjective", adjective)

    @cached_property
    def vocabularies(self) -> dict[str, tuple[str, ...]]:
        """Every language's words, the token id of a word being its index."""
        nouns = range(len(self.people) + len(self.things))
        out = {}
        for language in LANGUAGES:
            words: list[str] = []
            if language == "A":
                words += DETERMINERS
            words.append(RELATIVE[language])
            for lemma in nouns:
                for gender in ("m", "f") if lemma < len(self.people) else ("n",):
                    words.append(self.noun(language, lemma, gender))
            for v in range(len(self.verbs)):
                for gender in ("m", "f", "n"):
                    words.append(self.verb(language, v, gender))
            words += [self.adjective(language, a) for a in range(len(self.adjectives))]
            unique = list(dict.fromkeys(words))
            out[language] = (*SPECIALS, *unique)
        return out

    @cached_property
    def gendered_words(self) -> frozenset[str]:
        """The words of C that carry a person's gender: the person nouns' forms, and the
        verbs' masculine and feminine forms (a verb agrees with a person subject)."""
        nouns = {self.noun("C", p, g) for p in range(len(self.people)) for g in "mf"}
        return frozenset(
            nouns | {self.verb("C", v, g) for v in range(len(self.verbs)) for g in "mf"}
        )

    @cached_property
    def counterpart(self) -> dict[str, str]:
        """Each gendered word of C -> its form of the other gender."""
        out = {}
        for p in range(len(self.people)):
            m, f = self.noun("C", p, "m"), self.noun("C", p, "f")
            out[m], out[f] = f, m
        for v in range(len(self.verbs)):
            m, f = self.verb("C", v, "m"), self.verb("C", v, "f")
            out[m], out[f] = f, m
        return out

    @cached_property
    def index(self) -> dict[str, dict[str, int]]:
        return {lang: {w: i for i, w in enumerate(v)} for lang, v in self.vocabularies.items()}

    def max_length(self, language: str) -> int:
        """Token positions of the longest sentence, with its end token."""
        # a noun phrase at depth d: [DET] [ADJ] N, and a relative clause REL V NP(d + 1)
        per_np = 3 if language == "A" else 2
        phrase = per_np + self.depth * (2 + per_np)
        return 2 * phrase + 1 + 1

    # ------------------------------------------------------------------ generation

    def _noun(self, rng: np.random.Generator, level: int) -> Noun:
        people = len(self.people)
        lemma = int(rng.integers(people + len(self.things)))
        gender = ("m", "f")[int(rng.integers(2))] if lemma < people else "n"
        adjective = (
            int(rng.integers(len(self.adjectives))) if rng.random() < ADJECTIVE_RATE else None
        )
        relative = None
        if level < self.depth and rng.random() < RELATIVE_RATE:
            relative = Clause(int(rng.integers(len(self.verbs))), self._noun(rng, level + 1))
        return Noun(lemma, gender, adjective, relative)

    def tree(self, rng: np.random.Generator) -> Tree:
        subject = self._noun(rng, 0)
        verb = int(rng.integers(len(self.verbs)))
        obj = self._noun(rng, 0)
        phrases = _count_phrases(subject) + _count_phrases(obj)
        articles = tuple(int(a) for a in rng.integers(len(DETERMINERS), size=phrases))
        return Tree(subject, verb, obj, articles)

    def sentences(self, count: int, seed: int, split: str = "train") -> list[Sentence]:
        """``count`` distinct sentences of ``split`` (train, validation or test),
        deterministic per seed; fewer where the split holds fewer distinct sentences
        than asked (then every one found before GIVE_UP draws in a row brought no new one)."""
        if split not in SPLITS:
            raise choices("split", split, list(SPLITS))
        rng = np.random.default_rng([seed, SPLITS.index(split), self.size, self.depth])
        found: dict[tuple[str, ...], Sentence] = {}
        since = 0  # draws since the last new sentence
        while len(found) < count and since < GIVE_UP:
            since += 1
            tree = self.tree(rng)
            words = self._a_words(tree)
            if words not in found:
                sentence = self.realise(tree)
                if split_of(sentence.c) == split:
                    found[words] = sentence
                    since = 0
        return list(found.values())

    # ------------------------------------------------------------------ realisation

    def realise(self, tree: Tree) -> Sentence:
        """The tree in all three languages, with tags and alignments."""
        a: list[tuple[str, str]] = []  # (word, tag)
        articles = iter(tree.articles)
        subject_at = self._a_phrase(tree.subject, a, articles)
        verb_at = len(a)
        a.append((self.verb("A", tree.verb, tree.subject.gender), "V"))
        object_at = self._a_phrase(tree.obj, a, articles)
        b: list[tuple[str, int]] = [(self.verb("B", tree.verb, "n"), verb_at)]
        self._b_phrase(tree.subject, subject_at, b)
        self._b_phrase(tree.obj, object_at, b)
        c: list[tuple[str, int]] = []
        self._c_phrase(tree.subject, subject_at, c)
        self._c_phrase(tree.obj, object_at, c)
        c.append((self.verb("C", tree.verb, tree.subject.gender), verb_at))
        people = self.gendered_words
        return Sentence(
            tree=tree,
            a=tuple(w for w, _ in a),
            b=tuple(w for w, _ in b),
            c=tuple(w for w, _ in c),
            tags=tuple(t for _, t in a),
            b_source=tuple(s for _, s in b),
            c_source=tuple(s for _, s in c),
            gendered=tuple(i for i, (w, _) in enumerate(c) if w in people),
        )

    def _a_words(self, tree: Tree) -> tuple[str, ...]:
        out: list[tuple[str, str]] = []
        articles = iter(tree.articles)
        self._a_phrase(tree.subject, out, articles)
        out.append((self.verb("A", tree.verb, "n"), "V"))
        self._a_phrase(tree.obj, out, articles)
        return tuple(w for w, _ in out)

    def _a_phrase(self, noun: Noun, out: list, articles) -> dict[str, int]:
        """Append the noun phrase in A; return where its parts went (for alignment)."""
        at: dict[str, int] = {}
        out.append((DETERMINERS[next(articles)], "DET"))
        if noun.adjective is not None:
            at["adjective"] = len(out)
            out.append((self.adjective("A", noun.adjective), "ADJ"))
        at["noun"] = len(out)
        out.append((self.noun("A", noun.lemma, noun.gender), f"N.{noun.gender}"))
        if noun.relative is not None:
            out.append((RELATIVE["A"], "REL"))
            at["verb"] = len(out)
            out.append((self.verb("A", noun.relative.verb, noun.gender), "V"))
            at["object"] = self._a_phrase(noun.relative.obj, out, articles)  # type: ignore[assignment]
        return at

    def _b_phrase(self, noun: Noun, at: dict, out: list) -> None:
        out.append((self.noun("B", noun.lemma, noun.gender), at["noun"]))
        if noun.adjective is not None:
            out.append((self.adjective("B", noun.adjective), at["adjective"]))
        if noun.relative is not None:
            out.append((RELATIVE["B"], -1))
            out.append((self.verb("B", noun.relative.verb, "n"), at["verb"]))
            self._b_phrase(noun.relative.obj, at["object"], out)

    def _c_phrase(self, noun: Noun, at: dict, out: list) -> None:
        if noun.relative is not None:
            self._c_phrase(noun.relative.obj, at["object"], out)
            out.append((self.verb("C", noun.relative.verb, noun.gender), at["verb"]))
            out.append((RELATIVE["C"], -1))
        out.append((self.noun("C", noun.lemma, noun.gender), at["noun"]))
        if noun.adjective is not None:
            out.append((self.adjective("C", noun.adjective), at["adjective"]))

    # ------------------------------------------------------------------ reading A back

    def parse(self, words: tuple[str, ...] | list[str]) -> Tree | None:
        """The derivation of an A sentence, or None where it is not one."""
        lexicon = self._a_lexicon
        pos = 0
        articles: list[int] = []

        def phrase(level: int) -> Noun | None:
            nonlocal pos
            if pos >= len(words) or words[pos] not in DETERMINERS:
                return None
            articles.append(DETERMINERS.index(words[pos]))
            pos += 1
            adjective = None
            if pos < len(words) and lexicon.get(words[pos], ("",))[0] == "ADJ":
                adjective = lexicon[words[pos]][1]
                pos += 1
            if pos >= len(words) or lexicon.get(words[pos], ("",))[0] != "N":
                return None
            _, lemma, gender = lexicon[words[pos]]
            pos += 1
            relative = None
            if pos < len(words) and words[pos] == RELATIVE["A"] and level < self.depth:
                pos += 1
                if pos >= len(words) or lexicon.get(words[pos], ("",))[0] != "V":
                    return None
                verb = lexicon[words[pos]][1]
                pos += 1
                obj = phrase(level + 1)
                if obj is None:
                    return None
                relative = Clause(verb, obj)
            return Noun(lemma, gender, adjective, relative)

        subject = phrase(0)
        if subject is None or pos >= len(words) or lexicon.get(words[pos], ("",))[0] != "V":
            return None
        verb = lexicon[words[pos]][1]
        pos += 1
        obj = phrase(0)
        if obj is None or pos != len(words):
            return None
        return Tree(subject, verb, obj, tuple(articles))

    @cached_property
    def _a_lexicon(self) -> dict[str, tuple]:
        out: dict[str, tuple] = {}
        for i, (m, f) in enumerate(self.people):
            out[m], out[f] = ("N", i, "m"), ("N", i, "f")
        for i, thing in enumerate(self.things):
            out[thing] = ("N", len(self.people) + i, "n")
        for i, verb in enumerate(self.verbs):
            out[verb] = ("V", i)
        for i, adjective in enumerate(self.adjectives):
            out[adjective] = ("ADJ", i)
        return out

    # ------------------------------------------------------------------ token ids

    def encode(
        self, language: str, sentences: list[tuple[str, ...]], length: int = 0
    ) -> np.ndarray:
        """Token ids (int64), each sentence then EOS, padded with PAD to ``length``
        (default: the language's longest sentence)."""
        index = self.index[check_language(language)]
        length = length or self.max_length(language)
        out = np.full((len(sentences), length), PAD, dtype=np.int64)
        for i, words in enumerate(sentences):
            ids = [index[w] for w in words] + [EOS]
            out[i, : len(ids)] = ids[:length]
        return out

    def decode(self, language: str, ids: np.ndarray | list[int]) -> tuple[str, ...]:
        """The words of one row of token ids, up to its first EOS or PAD."""
        vocabulary = self.vocabularies[check_language(language)]
        words = []
        for token in np.asarray(ids).tolist():
            if token in (EOS, PAD):
                break
            words.append(vocabulary[token] if 0 <= token < len(vocabulary) else "<unk>")
        return tuple(words)


SPLITS = ("train", "validation", "test")


def split_of(words: tuple[str, ...]) -> str:
    """Which split a sentence belongs to, fixed by a hash of its C words (``Grammar``
    passes C: it fixes the derivation and every gender, and only A's articles can vary
    around it, so sentences that differ in their articles alone share a split)."""
    digest = (
        int.from_bytes(hashlib.blake2b(" ".join(words).encode(), digest_size=4).digest()) / 2**32
    )
    if digest < TEST_SHARE:
        return "test"
    if digest < TEST_SHARE + VALIDATION_SHARE:
        return "validation"
    return "train"


def check_language(language: str) -> str:
    if language not in LANGUAGES:
        raise choices("language", language, list(LANGUAGES))
    return language


def _count_phrases(noun: Noun) -> int:
    return 1 + (_count_phrases(noun.relative.obj) if noun.relative is not None else 0)
