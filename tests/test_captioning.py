"""Captioning: scenes, the caption grammar, the decoder's teacher forcing and greedy
decoding, and the caption metrics (no long training)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from e2elab.data import scenes
from e2elab.execution import execute, make_spec
from e2elab.tasks import make_task
from e2elab.tasks.captioning import CaptionKind, Decoder, caption_errors


@pytest.mark.parametrize("objects", [1, 2, 3, 4])
def test_every_caption_parses_back_to_its_scene(objects):
    drawn = scenes.generate(500, objects, seed=3)
    captions = drawn.captions()
    assert captions.shape == (500, scenes.caption_length(objects))
    for i in range(500):
        assert scenes.parse(scenes.text(captions[i])) == scenes.truth(drawn, i)
    assert set(np.unique(drawn.count)) == set(range(1, objects + 1))


def test_malformed_sentences_do_not_parse():
    for bad in (
        "",
        "a small red",
        "a small red square left a blue circle",
        "a huge red square",
        "small red square",
        "a small red square left of",
    ):
        assert scenes.parse(bad) is None
    assert scenes.parse("a large blue circle") == [("large", "blue", "circle")]


def test_generation_is_deterministic_and_train_and_test_scenes_are_disjoint():
    a, b = scenes.generate(200, 3, seed=7), scenes.generate(200, 3, seed=7)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.captions(), b.captions())
    assert not np.array_equal(a.images, scenes.generate(200, 3, seed=8).images)
    train = scenes.generate(3000, 2, seed=1, noise=0.0)
    test = scenes.generate(3000, 2, seed=1, test=True, noise=0.0)
    seen = {image.tobytes() for image in train.images}
    assert not any(image.tobytes() in seen for image in test.images)


def test_objects_are_drawn_in_their_colour_and_column():
    drawn = scenes.generate(50, 1, seed=0, noise=0.0)
    for i in range(50):
        column, colour = drawn.column[i, 0], drawn.colour[i, 0]
        cell = drawn.images[i][:, :, column * scenes.CELL : (column + 1) * scenes.CELL]
        lit = np.abs(cell - scenes.BACKGROUND).sum(0) > 0.1
        assert lit.any()
        pixel = cell[:, lit][:, 0]
        assert np.allclose(pixel, scenes.RGB[colour], atol=1e-6)
        rest = np.delete(
            drawn.images[i], np.s_[column * scenes.CELL : (column + 1) * scenes.CELL], axis=2
        )
        assert np.allclose(rest, scenes.BACKGROUND)


def test_the_decoder_is_fed_the_reference_tokens_while_training():
    torch.manual_seed(0)
    decoder = Decoder(features=8, width=16, length=5)
    features = torch.randn(4, 8)
    reference = torch.randint(3, 10, (4, 5))
    seen = []
    decoder.embed.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].clone()))
    decoder(features, reference)
    assert torch.equal(seen[0], torch.full((4,), scenes.START))
    for t in range(1, 5):
        assert torch.equal(seen[t], reference[:, t - 1])  # the reference, not its own guess


def test_greedy_decoding_feeds_back_its_tokens_and_stops_at_the_end_token():
    torch.manual_seed(0)
    decoder = Decoder(features=8, width=16, length=6)
    with torch.no_grad():
        decoder.read.bias.zero_()
        decoder.read.bias[scenes.END] = 5.0  # the first token is END
    out = decoder(torch.randn(3, 8), None).argmax(-1)
    assert (out[:, 0] == scenes.END).all()
    assert (out[:, 1:] == scenes.PAD).all()  # nothing after the end token
    seen = []
    decoder.embed.register_forward_hook(lambda m, inputs, o: seen.append(inputs[0].clone()))
    tokens = decoder(torch.randn(3, 8), None).argmax(-1)
    assert torch.equal(seen[1], tokens[:, 0])  # its own previous token


def test_caption_metrics_exact_tokens_and_bleu():
    kind = CaptionKind()
    target = torch.from_numpy(scenes.generate(20, 2, seed=0).captions())
    perfect = torch.nn.functional.one_hot(target, len(scenes.WORDS)).float()
    scores = kind.metrics(perfect, target)
    assert scores[""] == 1.0 and scores["tokens"] == 1.0 and scores["bleu"] == pytest.approx(100)
    wrong = target.clone()
    red = scenes.INDEX["red"]
    wrong[:, 2] = (wrong[:, 2] - red + 1) % 4 + red  # every first colour word changed
    assert (wrong[:, 2] != target[:, 2]).all()
    scores = kind.metrics(torch.nn.functional.one_hot(wrong, len(scenes.WORDS)).float(), target)
    assert scores[""] == 0.0 and 0.7 < scores["tokens"] < 1.0 and scores["bleu"] < 100


def test_wrong_words_are_traced_to_the_module_that_made_them():
    truth = scenes.generate(3, 1, seed=0, noise=0.0)
    captions = truth.captions().copy()
    heads = {n: truth.attribute(n).copy() for n in ("shape", "colour", "size")}
    # scene 0: the caption says another colour, and so does the encoder's head
    other = (truth.colour[0, 0] + 1) % 4
    captions[0, 2] = scenes.INDEX[scenes.COLOURS[other]]
    heads["colour"][0, 0] = other
    # scene 1: the caption says another shape, but the head had it right
    captions[1, 3] = scenes.INDEX[scenes.SHAPES[(truth.shape[1, 0] + 1) % 3]]
    # scene 2: not a sentence
    captions[2, 0] = scenes.INDEX["left"]
    found = caption_errors(truth, captions, heads)
    assert found["attribute_errors"] == {"encoder": 1, "decoder": 1}
    assert found["malformed"] == pytest.approx(1 / 3) and found["parsed"] == pytest.approx(2 / 3)
    assert found["head_accuracy"]["colour"] == pytest.approx(2 / 3)


def test_a_wrong_object_count_is_the_encoders_where_its_head_counts_wrong_too():
    truth = scenes.generate(400, 2, seed=1, noise=0.0)
    two = [i for i in range(400) if truth.count[i] == 2][:2]
    truth = scenes.Scenes(
        *(getattr(truth, f)[two] for f in ("images", "count", "shape", "colour", "size", "column"))
    )
    captions = truth.captions().copy()
    captions[:, 4:] = scenes.PAD  # both captions name the first object only
    captions[:, 4] = scenes.END
    heads = {n: truth.attribute(n).copy() for n in ("shape", "colour", "size")}
    heads["shape"][0, 1] = -1  # the head misses the second object of scene 0 as well
    found = caption_errors(truth, captions, heads)
    assert found["wrong_count"] == 1.0
    assert found["wrong_count_blame"] == {"encoder": 1, "decoder": 1}
    assert found["attribute_accuracy"] == {"size": None, "colour": None, "shape": None}


def test_a_short_captioning_run_trains_and_keeps_its_artifacts():
    spec = make_spec(
        "captioning",
        "greedy",
        knobs={"objects": 1, "test_size": 100, "features": 32, "decoder_width": 32, "width": 4},
        budget=640,
        evaluations=2,
    )
    result = execute(spec)
    assert result.status == "ok"
    assert {"caption", "caption:tokens", "caption:bleu"} <= set(result.final)
    art = result.artifacts
    assert len(art["gallery"]) == 8 and 0 <= art["parsed"] <= 1
    assert set(art["attribute_accuracy"]) == {"size", "colour", "shape"}
    task = make_task("captioning", {"objects": 1})
    assert task.output == "caption" and "colour_1" in task.ports


def _gap_runs(values: dict[int, tuple[float, float]], seeds: int = 3):
    """greedy and e2e runs at each objects value, accuracies (greedy, e2e), seed noise."""
    import dataclasses

    from synthetic import result

    out = []
    for objects, (two_phase, e2e) in values.items():
        for seed in range(seeds):
            for strategy, accuracy in (("greedy", two_phase), ("e2e", e2e)):
                r = result(strategy, 1, seed, accuracy + 0.005 * seed, None)
                knobs = {"objects": objects}
                curve = [
                    {"examples": e, "phase": 0, "metrics": {r.output: accuracy * e / 100_000}}
                    for e in (0, 25_000, 50_000, 100_000)
                ]
                out.append(dataclasses.replace(r, spec=r.spec.changed(knobs=knobs), curve=curve))
    return out


def test_gap_grows_with_knob_reads_paired_gaps_at_both_ends():
    from e2elab.claims import FAIL, PASS, gap_grows_with_knob

    grows = _gap_runs({1: (0.9, 0.8), 3: (0.6, 0.1)})
    verdict = gap_grows_with_knob(grows, "greedy", "e2e", "objects")
    assert verdict.verdict == PASS and "objects=1: +0.100" in verdict.details
    shrinks = _gap_runs({1: (0.9, 0.1), 3: (0.3, 0.1)})
    assert gap_grows_with_knob(shrinks, "greedy", "e2e", "objects").verdict == FAIL


def test_gap_with_budget_compares_runs_trained_on_each_budget():
    import dataclasses

    from e2elab.claims import FAIL, PASS, gap_with_budget

    full = _gap_runs({1: (0.9, 0.1)})  # gap 0.8 at the whole budget
    quarter = []
    for r in _gap_runs({1: (0.5, 0.1)}):  # gap 0.4 at a quarter of it
        spec = r.spec.changed(strategy=r.spec.strategy + "@quarter", budget=25_000)
        quarter.append(dataclasses.replace(r, id=r.id + "q", spec=spec))
    runs = full + quarter
    grows = gap_with_budget(runs, "greedy", "e2e", "quarter", "grows", "objects")
    assert grows.verdict == PASS and "+0.400 at budget 25,000, +0.800 at 100,000" in grows.details
    assert gap_with_budget(runs, "greedy", "e2e", "quarter", "shrinks", "objects").verdict == FAIL
    assert (
        gap_with_budget(full, "greedy", "e2e", "quarter", "grows", "objects").verdict
        == "INCONCLUSIVE"
    )


def test_caption_figures_and_marked_words(tmp_path):
    import dataclasses

    from e2elab.report.captions import caption_figures, marked

    assert marked("a small red square", "a small red square") == ("a small red square", True)
    assert marked("a large red", "a small red square") == ("a LARGE red [...]", False)
    runs = []
    for objects in (1, 2):
        drawn = scenes.test_scenes(objects, 100, 0.05)
        for strategy, good in (("greedy", True), ("e2e", False)):
            for seed in range(2):
                from synthetic import result

                r = result(strategy, 1, seed, 0.9 if good else 0.1, None)
                captions = [scenes.text(c) for c in drawn.captions()[:8]]
                if not good:
                    captions = ["a large green circle"] * 8
                art = {
                    "gallery": captions,
                    "parsed": 1.0,
                    "malformed": 0.0,
                    "wrong_count": 0.0,
                    "attribute_accuracy": {"size": 0.9, "colour": 0.9, "shape": 0.9},
                    "attribute_errors": {"encoder": 3, "decoder": 1},
                }
                knobs = {"objects": objects, "test_size": 100, "noise": 0.05}
                final = {
                    r.output: r.output_metric,
                    f"{r.output}:tokens": 0.9,
                    f"{r.output}:bleu": 80.0,
                }
                runs.append(
                    dataclasses.replace(
                        r, spec=r.spec.changed(knobs=knobs), artifacts=art, final=final
                    )
                )
    paths = caption_figures(runs, "objects", tmp_path)
    assert [p.name for p in paths] == [
        "caption_metrics.png",
        "caption_errors.png",
        "caption_gallery.png",
    ]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
    assert caption_figures([], "objects", tmp_path) == []  # not a captioning experiment


def test_modular_is_refused_where_the_decoder_reads_features_without_a_target():
    from e2elab import strategy as strategies
    from e2elab.errors import E2ELabError
    from e2elab.execution import first_batch
    from e2elab.system import trace

    task = make_task("captioning", {"objects": 1, "test_size": 100})
    graph = trace(task.build_system(), first_batch(task), task.ports)
    assert graph.unforceable("decoder") == {"encoder"}
    with pytest.raises(E2ELabError, match="cannot be teacher-forced; use greedy"):
        strategies.build("modular", graph, "caption")
    phases = strategies.build("pretrain_finetune", graph, "caption").phases
    assert [p.label for p in phases] == ["greedy:encoder", "greedy:decoder", "finetune"]


def test_the_caption_chance_level_is_the_most_common_whole_caption():
    targets = torch.tensor([[3, 4, 2], [3, 4, 2], [3, 5, 2], [3, 6, 2]])
    assert CaptionKind().chance_level(0.0, targets) == 0.5
