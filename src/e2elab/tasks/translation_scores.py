"""What every translation run keeps after training (``Translation.artifacts``, which
passes itself as ``task``; this module imports nothing of it, so no import circle): BLEU,
chrF and exact-sentence accuracy of its translations, the accuracy of the gender that
C marks and the pivot B does not, each stage's error alone and the cascade's, the
direct model's attention over its source beside the gold alignment, and a gallery."""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch import Tensor

from e2elab.data.languages import Grammar, Sentence

GALLERY = 6


def decoded(grammar: Grammar, language: str, logits: Tensor) -> list[tuple[str, ...]]:
    """Each row's arg-max tokens as words, up to the end."""
    return [grammar.decode(language, row) for row in logits.argmax(-1).cpu().numpy()]


def exact(hypotheses: list[tuple[str, ...]], references: list[tuple[str, ...]]) -> float:
    return sum(h == r for h, r in zip(hypotheses, references, strict=True)) / len(references)


def bleu_chrf(hypotheses: list[tuple[str, ...]], references: list[tuple[str, ...]]) -> dict:
    """Corpus BLEU (words as given, no tokenisation) and chrF, 0-100, by sacrebleu."""
    import sacrebleu

    hyp = [" ".join(h) for h in hypotheses]
    ref = [" ".join(r) for r in references]
    return {
        "bleu": sacrebleu.corpus_bleu(hyp, [ref], tokenize="none").score,
        "chrf": sacrebleu.corpus_chrf(hyp, [ref]).score,
    }


def gender_accuracy(
    grammar: Grammar, hypotheses: list[tuple[str, ...]], references: list[tuple[str, ...]]
) -> dict[str, Any]:
    """How often a translation gives a person's gender right, where it says the word at
    all: per reference word that carries a gender (a person noun, or a verb agreeing
    with one), the hypothesis holds that form (right), or only the other gender's form
    of the same word (wrong), or neither (missing: not counted). The accuracy is right
    / (right + wrong); a translator that cannot know the gender guesses, about 0.5."""
    other = grammar.counterpart
    right = wrong = missing = 0
    for hyp, ref in zip(hypotheses, references, strict=True):
        have = Counter(hyp)
        want = Counter(w for w in ref if w in other)
        hits = {w: min(c, have[w]) for w, c in want.items()}
        for word, hit in hits.items():  # a word said once is right once, never also wrong
            have[word] -= hit
        for word, count in want.items():
            hit = hits[word]
            miss = min(count - hit, have[other[word]])
            have[other[word]] -= miss
            right, wrong, missing = right + hit, wrong + miss, missing + count - hit - miss
    said = right + wrong
    return {
        "accuracy": right / said if said else None,
        "right": right,
        "wrong": wrong,
        "missing": missing,
    }


def quality(
    grammar: Grammar, hypotheses: list[tuple[str, ...]], references: list[tuple[str, ...]]
) -> dict[str, Any]:
    gender = gender_accuracy(grammar, hypotheses, references)
    return {
        "exact": exact(hypotheses, references),
        **bleu_chrf(hypotheses, references),
        "agreement": gender["accuracy"],
        "gender": gender,
    }


def translation_artifacts(task: Any, system: torch.nn.Module) -> dict[str, Any]:
    grammar, sentences = task.grammar, task.test_sentences()
    _, pivot_language, target_language = task.languages
    device = next(system.parameters()).device
    test = task.test_set().to(device)
    was = system.training
    system.eval()
    try:
        with torch.no_grad():
            ports = system.run_ports(test)  # type: ignore[operator]
            alone = None
            cascade = task.knobs["system"] == "cascade"
            if cascade:  # the second stage fed the true pivot

                def forcer(name: str, value: Tensor) -> Tensor:
                    return task.ports[name].forced(test.targets[name], value)

                alone = system.run_ports(test, forced=frozenset({"pivot"}), forcer=forcer)
            attention = None if cascade else _attention(task, system, sentences[0])
    finally:
        system.train(was)
    references = [s.words(target_language) for s in sentences]
    pivots = [s.words(pivot_language) for s in sentences]
    output = decoded(grammar, target_language, ports["target"])
    pivot = decoded(grammar, pivot_language, ports["pivot"])
    out: dict[str, Any] = {"route": task.knobs["route"], "system": task.knobs["system"]}
    # how many distinct sentence pairs each training corpus holds (what a run drew from
    # each is in its memory's ``drawn``)
    sizes = {"direct": task.knobs["pairs"], "annotated": task.knobs["pairs"]}
    sizes["first"] = sizes["second"] = task.knobs["pivot_pairs"]
    out["corpora"] = {name: sizes[role] for role, name in task.corpora.items()}
    out["test"] = quality(grammar, output, references)
    out["pivot"] = {"exact": exact(pivot, pivots), **bleu_chrf(pivot, pivots)}
    cascade_error = 1.0 - out["test"]["exact"]
    first_error = 1.0 - out["pivot"]["exact"]
    errors: dict[str, Any] = {"output": cascade_error, "first": first_error}
    if alone is not None:
        second = decoded(grammar, target_language, alone["target"])
        out["second_alone"] = quality(grammar, second, references)
        second_error = 1.0 - out["second_alone"]["exact"]
        errors["second"] = second_error
        # what the cascade's error would be if its stages erred independently
        errors["independent"] = 1.0 - (1.0 - first_error) * (1.0 - second_error)
        errors["worst_stage"] = max(first_error, second_error)
        errors["excess"] = cascade_error - errors["worst_stage"]
    out["errors"] = errors
    if attention is not None:
        out["attention"] = attention
    out["gallery"] = [
        {
            "source": " ".join(s.a),
            "reference": " ".join(references[i]),
            "output": " ".join(output[i]),
            "pivot": " ".join(pivot[i]),
        }
        for i, s in enumerate(sentences[:GALLERY])
    ]
    return out


def _attention(task: Any, system: torch.nn.Module, sentence: Sentence) -> dict | None:
    """The direct model's last decoder layer's cross-attention (mean over heads) while it
    decodes one test sentence, output words x source words, beside the gold alignment
    (each reference word's source position). Text sources only."""
    if task.spoken:
        return None
    one = task.test_set().slice(0, 1).to(next(system.parameters()).device)
    layer = system.decoder.layers.layers[-1].multihead_attn  # type: ignore[union-attr]
    seen: dict[str, Any] = {}

    def keep(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        seen["args"], seen["kwargs"] = args, kwargs

    handle = layer.register_forward_pre_hook(keep, with_kwargs=True)
    try:
        ports = system.run_ports(one)  # type: ignore[operator]
    finally:
        handle.remove()
    kwargs = {**seen["kwargs"], "need_weights": True, "average_attn_weights": True}
    _, weights = layer(*seen["args"], **kwargs)  # (1, steps, source)
    words = task.grammar.decode("C", ports["target"].argmax(-1)[0].cpu().numpy())
    rows = min(len(words) + 1, weights.shape[1])  # the output words and the end token
    return {
        "weights": [
            [round(float(w), 4) for w in row[: len(sentence.a) + 1]] for row in weights[0, :rows]
        ],
        "source": list(sentence.a),
        "output": list(words),
        "reference": list(sentence.c),
        "gold": list(sentence.c_source),
    }
