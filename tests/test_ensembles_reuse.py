"""Ensembles of any strategy, freezing modules, experiment variants and transfer runs,
and the claims that judge them (stays_at_chance, best_at_each)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from synthetic import result

from e2elab import strategy as strategies
from e2elab.claims import FAIL, INCONCLUSIVE, PASS, best_at_each, stays_at_chance
from e2elab.errors import E2ELabError
from e2elab.execution import first_batch
from e2elab.executors import SerialExecutor
from e2elab.experiment import parse
from e2elab.runner import experiment_specs, run_experiment
from e2elab.store import Store
from e2elab.system import trace
from e2elab.tasks import make_task
from e2elab.train import train_seeds


def _graph(n: int = 2):
    task = make_task("digit-chain", {"n": n})
    return task, trace(task.build_system(), first_batch(task), task.ports)


def test_an_ensemble_of_modular_systems_has_modular_phases_and_members():
    _, graph = _graph()
    built = strategies.build("ensemble:members=3,of=modular", graph, "sum_2")
    plain = strategies.build("modular", graph, "sum_2")
    assert built.members == 3
    assert [p.train for p in built.phases] == [p.train for p in plain.phases]
    assert strategies.build("ensemble", graph, "sum_2").params == {"members": 3}
    with pytest.raises(E2ELabError, match="strategy for ensemble members"):
        strategies.build("ensemble:of=blackbox", graph, "sum_2")
    with pytest.raises(E2ELabError, match="members must be in"):
        strategies.build("ensemble:members=0", graph, "sum_2")


def test_freeze_drops_a_module_from_every_phase_and_rescales_the_rest():
    _, graph = _graph()
    built = strategies.build("modular:freeze=recognizer", graph, "sum_2")
    assert all("recognizer" not in p.train for p in built.phases)
    assert len(built.phases) == 2 and sum(p.share for p in built.phases) == pytest.approx(1)
    with pytest.raises(E2ELabError, match="leaves no module to train"):
        strategies.build("e2e:freeze=recognizer,adder_1,adder_2", graph, "sum_2")
    with pytest.raises(E2ELabError, match="unknown module to freeze"):
        strategies.build("e2e:freeze=encoder", graph, "sum_2")


def test_a_frozen_module_keeps_its_initial_weights_through_training():
    task, graph = _graph(1)
    built = strategies.build("e2e:freeze=recognizer", graph, task.output)
    settings = task.defaults.override(budget=640, evaluations=2)
    torch.manual_seed(0)
    before = task.build_system().recognizer.state_dict()
    outcome = train_seeds(task, built, graph, settings, [0])[0]
    after = outcome.systems[0].recognizer.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(
        outcome.systems[0].adder_1[0].weight, task.build_system().adder_1[0].weight
    )


BASE = {
    "name": "v",
    "task": "digit-chain",
    "knobs": {"n": 1, "recognizer_width": 8, "adder_width": 8},
    "grid": {"m": [2, 3]},
    "strategies": ["e2e"],
    "seeds": 1,
    "budget": 640,
    "training": {"evaluations": 1},
}


def test_variants_are_checked_and_read_back_as_strategy_at_label():
    wide = {"label": "wide", "knobs": {"recognizer_width": 16}, "strategies": ["e2e"]}
    exp = parse({**BASE, "variants": [wide]}, "t")
    specs = experiment_specs(exp)
    assert len(specs) == 4 and sum(s.knobs["recognizer_width"] == 16 for s in specs) == 2
    for bad, match in (
        ({**wide, "knobs": {"m": 5}}, "swept by the grid"),
        ({**wide, "knobs": {"test_size": 500}}, "give 'test_size' in knobs"),
        ({**wide, "knobs": {"recognizer_width": 8}}, "is the value knobs: gives"),
        ({**wide, "knobs": {"nope": 1}}, "not a knob"),
        ({**wide, "label": "a b"}, "variants.0.label"),
    ):
        with pytest.raises(E2ELabError, match=match):
            parse({**BASE, "variants": [bad]}, "t")
    with pytest.raises(E2ELabError, match="same knobs or share a label"):
        parse({**BASE, "variants": [wide, {**wide, "label": "other"}]}, "t")
    r = result("e2e", 1, 0, 0.9, 100)
    at_wide = dataclasses.replace(
        r, spec=r.spec.changed(knobs={**BASE["knobs"], "m": 2, "recognizer_width": 16})
    )
    plain = dataclasses.replace(r, spec=r.spec.changed(knobs={**BASE["knobs"], "m": 2}))
    labelled = exp.labelled([at_wide, plain])
    assert labelled[0].spec.strategy == "e2e@wide"
    assert labelled[0].spec.knobs == labelled[1].spec.knobs  # the same grid point
    assert labelled[1] is plain


def test_a_transfer_experiment_loads_each_source_runs_module_by_seed(tmp_path):
    source = {
        **BASE,
        "name": "src",
        "grid": {},
        "knobs": {**BASE["knobs"], "m": 10},
        "strategies": ["modular", "e2e"],
        "seeds": 2,
        "save_modules": ["recognizer"],
    }
    target = {
        "name": "tgt",
        "task": "digit-compare",
        "knobs": {"recognizer_width": 8},
        "strategies": ["e2e:freeze=recognizer"],
        "seeds": 2,
        "budget": 640,
        "training": {"evaluations": 1},
        "transfer": {"source": "src", "module": "recognizer", "strategies": ["modular", "e2e"]},
    }
    tgt = parse(target, "t")
    assert len(experiment_specs(tgt)) == 2  # without a store: the target side only
    with Store(tmp_path / "s.sqlite") as store:
        with pytest.raises(E2ELabError, match="no experiment 'src'"):
            run_experiment(tgt, store, SerialExecutor())
        counts = run_experiment(parse(source, "t"), store, SerialExecutor())
        assert counts.trained == 4 and len(store.saved_modules()) == 4
        counts = run_experiment(tgt, store, SerialExecutor())
        assert counts.trained == 6  # 2 baselines + 2 sources x 2 seeds
        from e2elab.experiment import source_labels

        labels = source_labels(tgt, store)
        runs = tgt.labelled(store.results("tgt"), labels)
        names = sorted({r.spec.strategy for r in runs})
        assert names == ["e2e:freeze=recognizer", "from:e2e", "from:modular"]
        by = {(r.spec.strategy, r.spec.seed): r for r in runs}
        sources = {(r.spec.strategy, r.spec.seed): r.id for r in store.results("src")}
        assert sources[("modular", 1)] in by[("from:modular", 1)].spec.settings.load_from
        # a rerun trains nothing; a source without enough seeds is refused
        assert run_experiment(tgt, store, SerialExecutor()).trained == 0
        with pytest.raises(E2ELabError, match="no finished run of 'hinted' with seed 0"):
            bad = {**target, "transfer": {**target["transfer"], "strategies": ["hinted"]}}
            run_experiment(parse(bad, "t"), store, SerialExecutor())
        with pytest.raises(E2ELabError, match=r"transfer\.module 'adder' is not a module"):
            bad = {**target, "transfer": {**target["transfer"], "module": "adder"}}
            experiment_specs(parse(bad, "t"), None, store)


def _cells(spec: dict[str, list[float]], broken: set[str], n: int = 3) -> list:
    out = []
    for strategy, accuracies in spec.items():
        for seed, accuracy in enumerate(accuracies):
            out.append(result(strategy, n, seed, accuracy, None, breakdown=strategy in broken))
    return out


def test_stays_at_chance_passes_only_where_no_other_leaves_chance():
    runs = _cells({"e2e": [0.1, 0.1], "ens": [0.1, 0.11]}, {"e2e", "ens"})
    assert stays_at_chance(runs, "e2e", ["ens"], "n").verdict == PASS
    rescued = _cells({"e2e": [0.1, 0.1], "ens": [0.1, 0.6]}, {"e2e"})
    verdict = stays_at_chance(rescued, "e2e", ["ens"], "n")
    assert verdict.verdict == FAIL and "rescued: ens at n=3" in verdict.details
    learns = _cells({"e2e": [0.9, 0.9], "ens": [0.9, 0.9]}, set())
    assert stays_at_chance(learns, "e2e", ["ens"], "n").verdict == INCONCLUSIVE


def test_best_at_each_needs_the_expected_winner_clearly_ahead():
    clear = _cells({"modular": [0.9, 0.91, 0.92], "e2e": [0.1, 0.1, 0.1]}, set())
    assert best_at_each(clear, ["modular", "e2e"], ["modular"], "n").verdict == PASS
    close = _cells({"modular": [0.9, 0.8, 0.92], "e2e": [0.88, 0.82, 0.9]}, set())
    verdict = best_at_each(close, ["modular", "e2e"], ["modular"], "n")
    assert verdict.verdict == FAIL and "not clearly ahead" in verdict.details
    wrong = _cells({"modular": [0.5, 0.5], "e2e": [0.9, 0.9]}, set())
    verdict = best_at_each(wrong, ["modular", "e2e"], ["modular"], "n")
    assert verdict.verdict == FAIL and "another strategy is best at n=3" in verdict.details


def test_budget_each_gives_every_member_the_whole_budget():
    from e2elab.execution import execute, make_spec

    knobs = {"n": 1, "recognizer_width": 8, "adder_width": 8}
    shared = execute(make_spec("digit-chain", "ensemble:members=3", knobs=knobs, budget=960))
    each = execute(
        make_spec("digit-chain", "ensemble:budget=each,members=3", knobs=knobs, budget=960)
    )
    assert shared.curve[-1]["examples"] == 960
    assert each.curve[-1]["examples"] == 3 * 960
    assert each.memory["training_flops"] == pytest.approx(3 * shared.memory["training_flops"])
    _, graph = _graph()
    with pytest.raises(E2ELabError, match="unknown budget for ensemble"):
        strategies.build("ensemble:budget=all", graph, "sum_2")


def test_best_at_each_is_inconclusive_where_a_listed_strategy_has_no_finished_run():
    only = _cells({"e2e": [0.9, 0.9]}, set())
    verdict = best_at_each(only, ["e2e", "modular"], ["e2e"], "n")
    assert verdict.verdict == INCONCLUSIVE and "no finished run of modular" in verdict.details
    assert best_at_each([], ["e2e"], ["e2e"], "n").verdict == INCONCLUSIVE


def test_a_run_of_overlapping_variants_reads_as_the_most_specific_one():
    narrow = {"label": "r", "knobs": {"recognizer_width": 16}, "strategies": ["e2e"]}
    both = {
        "label": "ra",
        "knobs": {"recognizer_width": 16, "adder_width": 16},
        "strategies": ["e2e"],
    }
    exp = parse({**BASE, "variants": [narrow, both]}, "t")
    r = result("e2e", 1, 0, 0.9, 100)
    knobs = {**BASE["knobs"], "m": 2, "recognizer_width": 16}
    runs = [
        dataclasses.replace(r, spec=r.spec.changed(knobs=knobs)),
        dataclasses.replace(r, spec=r.spec.changed(knobs={**knobs, "adder_width": 16})),
    ]
    labelled = exp.labelled(runs)
    assert [x.spec.strategy for x in labelled] == ["e2e@r", "e2e@ra"]
    assert labelled[0].spec.knobs == labelled[1].spec.knobs == {**BASE["knobs"], "m": 2}


@pytest.mark.parametrize(
    ("figure", "match"),
    [
        ({"kind": "against", "title": "t", "series": {"a": {"0": "e2e"}}}, "positive finite"),
        ({"kind": "against", "title": "t", "series": {"a": {"nan": "e2e"}}}, "positive finite"),
        ({"kind": "against", "title": "t"}, "needs series"),
        ({"kind": "bars", "title": "t"}, "needs strategies"),
        ({"kind": "pie", "title": "t"}, "figures.0.kind"),
        ({"kind": "bars", "title": "t", "strategies": ["e2e"], "at": {"q": 1}}, "not a knob"),
    ],
)
def test_declared_figures_are_checked_on_load(figure, match):
    with pytest.raises(E2ELabError, match=match):
        parse({**BASE, "figures": [figure]}, "t")
    twice = {"kind": "bars", "title": "same", "strategies": ["e2e"]}
    with pytest.raises(E2ELabError, match="share a title"):
        parse({**BASE, "figures": [twice, twice]}, "t")


def test_a_budget_variant_trains_at_its_budget_and_reads_back_apart():
    quarter = {"label": "quarter", "budget": 320, "strategies": ["e2e"]}
    exp = parse({**BASE, "variants": [quarter]}, "t")
    budgets = sorted(s.settings.budget for s in experiment_specs(exp))
    assert budgets == [320, 320, 640, 640]
    r = result("e2e", 1, 0, 0.9, 100)
    knobs = {**BASE["knobs"], "m": 2}
    small = dataclasses.replace(r, spec=r.spec.changed(knobs=knobs, budget=320))
    whole = dataclasses.replace(r, spec=r.spec.changed(knobs=knobs, budget=640))
    assert [x.spec.strategy for x in exp.labelled([small, whole])] == ["e2e@quarter", "e2e"]
    for bad, match in (
        ({**quarter, "budget": 640}, "is the experiment's budget"),
        ({"label": "x", "strategies": ["e2e"]}, "sets knobs:, budget: or both"),
    ):
        with pytest.raises(E2ELabError, match=match):
            parse({**BASE, "variants": [bad]}, "t")
