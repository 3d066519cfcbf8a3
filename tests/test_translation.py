"""The translation task: which corpus each phase draws, greedy decoding on the model's own
output, a cascade whose second stage reads the first stage's output at test time, a
short run of every strategy, and one-line errors (no long training)."""

from __future__ import annotations

import pytest
import torch

from e2elab.cli import main
from e2elab.execution import execute, make_spec
from e2elab.prepare import prepare
from e2elab.replicas import plan_seeds
from e2elab.seq2seq import EOS, PAD
from e2elab.tasks import make_task

TINY = {"pairs": 30, "pivot_pairs": 60, "test_size": 50, "width": 16, "layers": 1, "heads": 2}


def _task(**knobs):
    return make_task("translation", {**TINY, **knobs})


def _corpora(task, strategy: str) -> list[str | None]:
    built = prepare(task).strategy(strategy, task)
    return [task.data_of(phase) for phase in built.phases]


def test_each_phase_draws_the_corpus_its_losses_need():
    task = _task()
    assert _corpora(task, "e2e") == ["direct:A-C"]
    assert _corpora(task, "hinted") == ["direct:A-B-C"]
    assert _corpora(task, "modular") == ["pivot:A-B", "pivot:B-C"]
    assert _corpora(task, "greedy") == ["pivot:A-B", "direct:A-C"]
    assert _corpora(task, "pretrain_finetune") == ["pivot:A-B", "pivot:B-C", "direct:A-C"]
    assert _corpora(task, "frozen_others:module=first") == ["pivot:B-C", "direct:A-C"]
    direct = _task(system="direct")
    assert _corpora(direct, "e2e") == ["direct:A-C"] and _corpora(direct, "hinted") == [
        "direct:A-B-C"
    ]
    speech = make_task("translation", {**TINY, "route": "speech-A-C"})
    assert speech.corpora == {
        "direct": "direct:speech-C",
        "annotated": "direct:speech-A-C",
        "first": "pivot:speech-A",
        "second": "pivot:A-C",
    }
    # forcing the pivot while it is scored too needs sentences with both; forcing it on
    # the direct system (where nothing reads it) changes no data
    assert _corpora(task, "hinted:force=pivot") == ["direct:A-B-C"]
    assert _corpora(direct, "e2e:force=pivot") == ["direct:A-C"]


def test_a_batch_holds_only_what_its_corpus_pairs():
    task = _task()
    g = torch.Generator().manual_seed(0)
    phases = prepare(task).strategy("pretrain_finetune", task).phases
    with task.drawing_for(phases[0]):  # source-pivot: no target
        ab = task.sample(8, g)
    assert (ab.targets["target"] == PAD).all() and (ab.targets["pivot"] != PAD).any()
    with task.drawing_for(phases[1]):  # pivot-target: no source
        bc = task.sample(8, g)
    assert (bc.x["source"] == EOS).all() and bc.x["source"].shape[1] == 1
    with task.drawing_for(phases[2]):  # the direct pairs: no pivot for e2e to be fed
        ac = task.sample(8, g)
    assert ac.targets["pivot"].shape == (8, 0) and (ac.targets["target"] != PAD).any()
    direct = task._pool["direct"]
    assert any((direct["A"] == row).all(-1).any() for row in ac.x["source"])


def test_sentences_of_the_test_set_never_train():
    task = _task(pairs=200, pivot_pairs=500, test_size=200)
    sets = task._pool["sentences"]
    train = {s.a for name in ("direct", "pivot1", "pivot2") for s in sets[name]}
    assert not train & {s.a for s in sets["test"]}
    assert not train & {s.a for s in sets["validation"]}
    # the direct pairs grow by adding sentences: a smaller set is a prefix of a larger
    small = _task(pairs=50, pivot_pairs=500, test_size=200)._pool["sentences"]["direct"]
    assert [s.a for s in small] == [s.a for s in sets["direct"][:50]]


def test_the_transformer_decodes_greedily_on_its_own_output_in_evaluation():
    torch.manual_seed(0)
    task = _task(system="direct")
    system = task.build_system().eval()
    test = task.test_set().slice(0, 16)
    with torch.no_grad():
        ports = system.run_ports(test)
        scrambled = test.slice(0, 16)
        scrambled.targets = {k: torch.randint_like(v, 3, 10) for k, v in test.targets.items()}
        again = system.run_ports(scrambled)
        memory, padding = system.encoder(test.x["source"])
        by_hand = system.decoder.decode(memory, padding, soft=False)
    assert torch.equal(ports["target"], again["target"])  # no reference is read
    assert torch.equal(ports["target"], by_hand)
    tokens = ports["target"].argmax(-1)
    for row in tokens:  # PAD after the first end token
        ends = (row == EOS).nonzero()
        if len(ends):
            assert (row[ends[0, 0] + 1 :] == PAD).all()
    # each step reads the tokens before it: changing the decoder's input embedding of a
    # token the model wrote changes what follows it
    with torch.no_grad():
        system.decoder.embed.weight[tokens[0, 0]] += 5.0
        changed = system.decoder.decode(memory, padding, soft=False)
    assert torch.equal(changed[:, 0], by_hand[:, 0])
    assert not torch.equal(changed[:, 1:], by_hand[:, 1:])


def test_the_decoder_is_teacher_forced_only_while_training():
    torch.manual_seed(0)
    task = _task(system="direct")
    system = task.build_system().train()
    batch = task.test_set().slice(0, 8)
    forced = system.run_ports(batch)["target"]
    reference = batch.targets["target"]
    # one causal pass over the reference: position t's logits ignore reference[t:]
    later = batch.slice(0, 8)
    later.targets = dict(batch.targets)
    later.targets["target"] = torch.where(
        torch.arange(reference.shape[1]) >= 3, (reference + 1) % 5 + 3, reference
    )
    changed = system.run_ports(later)["target"]
    assert torch.allclose(forced[:, :3], changed[:, :3], atol=1e-5)


def test_the_cascade_reads_the_first_stages_output_not_the_reference_at_test_time():
    torch.manual_seed(0)
    task = _task()
    system = task.build_system().eval()
    test = task.test_set().slice(0, 16)
    with torch.no_grad():
        base = system.run_ports(test)["target"]
        wrong = test.slice(0, 16)
        wrong.targets = dict(test.targets)
        wrong.targets["pivot"] = torch.randint_like(test.targets["pivot"], 3, 10)
        assert torch.equal(system.run_ports(wrong)["target"], base)  # the true pivot unread
        first = system.first
        seen = {}

        def swap(module, args, output):
            seen["pivot"] = output
            return torch.roll(output, 1, dims=-1)  # another token at every position

        handle = first.register_forward_hook(swap)
        try:
            moved = system.run_ports(test)["target"]
        finally:
            handle.remove()
    assert not torch.equal(moved, base)  # the second stage reads what the first wrote


CASCADE = ["modular", "greedy", "e2e", "hinted", "pretrain_finetune", "frozen_others:module=first"]


@pytest.mark.parametrize(
    "system,strategy", [("cascade", s) for s in CASCADE] + [("direct", "e2e"), ("direct", "hinted")]
)
def test_a_short_run_of_every_strategy(system, strategy):
    spec = make_spec(
        "translation", strategy, knobs={**TINY, "system": system}, budget=192, evaluations=2
    )
    run = execute(spec)
    assert run.status == "ok", run.error
    assert {"target", "target:bleu", "target:tokens", "pivot"} <= set(run.final)
    art = run.artifacts
    assert {"exact", "bleu", "chrf", "agreement", "gender"} <= set(art["test"])
    assert art["errors"]["output"] == pytest.approx(1 - art["test"]["exact"])
    if system == "cascade":
        e = art["errors"]
        assert e["independent"] == pytest.approx(1 - (1 - e["first"]) * (1 - e["second"]))
        assert "attention" not in art
    else:
        att = art["attention"]
        assert len(att["weights"][0]) == len(att["source"]) + 1
        assert len(att["gold"]) == len(att["reference"])
    assert len(art["gallery"]) == 6
    drawn = run.memory["drawn"]
    assert sum(drawn.values()) == 192
    expected = set(_corpora(make_task("translation", spec.knobs), strategy))
    assert set(drawn) == expected


def test_the_cpu_trains_attention_seeds_one_at_a_time_and_a_run_repeats_bit_for_bit():
    task = _task()
    prepared = prepare(task)
    strategy = prepared.strategy("e2e", task)
    plan = plan_seeds(task, strategy, prepared.graph, "adam", 1e-3, 16, torch.device("cpu"))
    assert not plan.stack and "attention" in plan.reason
    knobs = {**TINY}
    one = execute(make_spec("translation", "e2e", knobs=knobs, budget=64, evaluations=1, seed=1))
    two = execute(make_spec("translation", "e2e", knobs=knobs, budget=64, evaluations=1, seed=1))
    assert one.final == two.final and one.artifacts == two.artifacts
    assert one.weights_sha256 == two.weights_sha256


def test_strategies_that_do_not_apply_are_one_line(capsys):
    base = ["run", "--task", "translation", "--budget", "64", "--seeds", "1"]
    knobs = [f"--knob={k}={v}" for k, v in TINY.items()]
    assert main([*base, *knobs, "--knob", "system=direct", "--strategy", "modular"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "use e2e or hinted" in err
    assert main([*base, *knobs, "--strategy", "local"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "local" in err


@pytest.mark.parametrize(
    "knob,words",
    [
        ("route=A-D-C", ["route", "A-B-C"]),
        ("colour=red", ["colour", "route"]),
        ("vocabulary=1", ["vocabulary", "at least"]),
        ("width=30", ["width", "heads"]),
        ("system=tree", ["system", "cascade"]),
        ("width=100000", ["width", "at most"]),
    ],
)
def test_bad_input_is_one_line_with_exit_2(knob, words, capsys, tmp_path):
    code = main(
        ["run", "--task", "translation", "--knob", knob, "--budget", "64", "--out", str(tmp_path)]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert all(w in err for w in words), err


def test_a_grammar_too_small_for_the_pairs_asked_is_one_line(capsys, tmp_path):
    code = main(
        ["run", "--task", "translation", "--knob", "vocabulary=2", "--knob", "depth=0",
         "--knob", "pivot_pairs=50000", "--budget", "64", "--out", str(tmp_path)]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "distinct training sentences" in err and "vocabulary" in err
    code = main(
        ["run", "--task", "translation", "--knob", "vocabulary=2", "--knob", "depth=0",
         "--knob", "test_size=20000", "--knob", "pivot_pairs=100", "--budget", "64",
         "--out", str(tmp_path)]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "distinct test sentences" in err, err


def test_an_empty_pivot_is_read_without_nan_in_evaluation():
    torch.manual_seed(0)
    task = _task()
    system = task.build_system().eval()
    test = task.test_set().slice(0, 4)
    empty = torch.full((4, 14, task.ports["pivot"].size), -1e4)
    empty[..., PAD] = 1e4  # every position PAD: every key would be masked
    with torch.no_grad():
        memory, padding = system.second.encoder(empty)
    assert torch.isfinite(memory).all() and not padding[:, 0].any()
    assert torch.isfinite(system.run_ports(test)["target"]).all()


def test_a_frozen_first_stage_decodes_on_its_own_tokens_as_at_test_time():
    torch.manual_seed(0)
    task = _task()
    system = task.build_system()
    test = task.test_set().slice(0, 8)
    with torch.no_grad():
        system.eval()
        hard = system.first(test.x["source"], None)
        system.train()
        for p in system.first.parameters():
            p.requires_grad_(False)
        frozen = system.first(test.x["source"], None)
        for p in system.first.parameters():
            p.requires_grad_(True)
    assert torch.equal(frozen.argmax(-1), hard.argmax(-1))
    asked = []
    decode = system.first.decoder.decode
    system.first.decoder.decode = lambda *a, soft: asked.append(soft) or decode(*a, soft=soft)
    system.first(test.x["source"], None)  # training, trainable: soft tokens
    with torch.no_grad():
        system.first(test.x["source"], None)  # no gradient to carry: its own tokens
    assert asked == [True, False]


def test_a_saved_first_stage_loads_into_a_later_cascade(tmp_path, capsys):
    """The recogniser (or translator) of one run, saved, is the frozen first stage of
    another: a cascade of a saved model and a new one."""
    import sqlite3

    out = str(tmp_path)
    knobs = [f"--knob={k}={v}" for k, v in TINY.items()]
    base = ["run", "--task", "translation", *knobs, "--seeds", "1", "--budget", "128"]
    assert main([*base, "--strategy", "modular", "--save-modules", "first", "--out", out]) == 0
    with sqlite3.connect(tmp_path / "results.sqlite") as db:
        (run_id,) = db.execute("select id from runs").fetchone()
    strategy = ["--strategy", "modular:freeze=first", "--load", f"first={run_id}"]
    assert main([*base, *strategy, "--out", out]) == 0
    from e2elab.store import Store

    runs = {r.spec.strategy: r for r in Store(tmp_path / "results.sqlite").results()}
    saved, loaded = runs["modular"], runs["modular:freeze=first"]
    # the loaded first stage was not trained again: it gives the same pivots
    assert loaded.artifacts["pivot"] == saved.artifacts["pivot"]
    assert loaded.memory["drawn"] == {"pivot:B-C": 128}  # the whole budget on stage 2
