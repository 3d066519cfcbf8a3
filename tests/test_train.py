"""The training loop: freezing, budgets, determinism, divergence, every strategy learns."""

import pytest
import torch
from strategies import every_strategy

from e2elab import execute, make_spec, make_task, run, trace
from e2elab import strategy as strategies
from e2elab.execution import first_batch
from e2elab.records import Settings
from e2elab.train import train


def _snapshot(systems):
    return {
        name: [p.detach().clone() for p in module.parameters()]
        for name, module in systems[0].named_children()
    }


@pytest.mark.parametrize(
    "text",
    [
        "modular",
        "greedy",
        "pretrain_finetune",
        "frozen_others:module=adder_2",
        "frozen_others:module=recognizer",
        "e2e",
        "local",
    ],
)
def test_frozen_modules_are_bit_for_bit_unchanged_after_each_phase(text):
    task = make_task("digit-chain", {"n": 2})
    graph = trace(task.build_system(), first_batch(task), task.ports)
    strategy = strategies.build(text, graph, task.output)
    snapshots = []
    config = Settings(budget=3000, batch_size=64, lr=3e-3, evaluations=2)
    train(
        task,
        strategy,
        graph,
        config,
        on_boundary=lambda k, systems: snapshots.append(_snapshot(systems)),
    )
    assert len(snapshots) == len(strategy.phases) + 1
    for k, phase in enumerate(strategy.phases):
        before, after = snapshots[k], snapshots[k + 1]
        for module in graph.modules:
            same = all(torch.equal(a, b) for a, b in zip(before[module], after[module]))
            if module in phase.train:
                assert not same, f"phase {k} ({phase.label}) should have changed {module}"
            else:
                assert same, f"phase {k} ({phase.label}) changed frozen module {module}"


def test_frozen_others_module_starts_from_its_initialisation():
    task = make_task("digit-chain", {"n": 2})
    graph = trace(task.build_system(), first_batch(task), task.ports)
    strategy = strategies.build("frozen_others:module=adder_1", graph, task.output)
    snapshots = []
    config = Settings(budget=3000, batch_size=64, lr=3e-3, evaluations=2)
    train(task, strategy, graph, config, on_boundary=lambda k, s: snapshots.append(_snapshot(s)))
    last = len(strategy.phases) - 1
    assert all(
        torch.equal(a, b) for a, b in zip(snapshots[0]["adder_1"], snapshots[last]["adder_1"])
    )
    assert strategy.phases[-1].losses == {task.output: 1.0}


@pytest.mark.parametrize("text", ["e2e", "modular", "ensemble:members=3", "pretrain_finetune"])
def test_budget_counts_training_examples_exactly(text):
    spec = make_spec("digit-chain", text, knobs={"n": 2}, budget=1000, batch_size=64, evaluations=3)
    result = execute(spec)
    assert result.curve[-1]["examples"] == 1000
    assert [p["examples"] for p in result.curve] == sorted(p["examples"] for p in result.curve)


def test_same_spec_and_seed_give_identical_results():
    spec = make_spec("digit-chain", "hinted", knobs={"n": 2}, budget=2000, seed=3)
    a, b = execute(spec), execute(spec)
    assert a.curve == b.curve and a.final == b.final and a.id == b.id


def test_different_seeds_give_different_runs():
    a = make_spec("digit-chain", "e2e", knobs={"n": 2}, budget=2000, seed=0)
    b = make_spec("digit-chain", "e2e", knobs={"n": 2}, budget=2000, seed=1)
    assert a.id != b.id
    assert execute(a).final != execute(b).final


def test_a_nan_loss_ends_the_run_as_diverged_with_its_reason():
    result = run("digit-chain", "e2e", knobs={"n": 1}, budget=5000, lr=1e12)
    assert result.status == "diverged"
    assert "nan" in result.reason.lower() or "inf" in result.reason.lower()
    assert "phase 1" in result.reason


def test_local_gives_every_non_output_module_an_auxiliary_head():
    task = make_task("digit-chain", {"n": 3})
    graph = trace(task.build_system(), first_batch(task), task.ports)
    phase = strategies.build("local", graph, task.output).phases[0]
    assert set(phase.losses) == {"sum_3", "aux:recognizer", "aux:adder_1", "aux:adder_2"}
    assert phase.cut == frozenset(graph.ports) - {"sum_3"}


ALL = every_strategy(n=1)


@pytest.mark.parametrize("text", ALL)
def test_every_strategy_learns_one_digit_parity_on_a_small_budget(text):
    result = run("digit-chain", text, knobs={"n": 1, "m": 2}, budget=30_000)
    assert result.status == "ok"
    assert result.output_metric >= 0.9, result.final
    assert not result.at_chance


@pytest.mark.slow
@pytest.mark.parametrize("text", [s for s in ALL if s != "local"])
def test_every_strategy_but_local_reads_one_digit_on_a_small_budget(text):
    result = run("digit-chain", text, knobs={"n": 1, "m": 10}, budget=60_000)
    assert result.output_metric >= 0.85, result.final


def test_blackbox_baseline_is_a_run_with_the_same_budget_and_result_fields():
    result = run("digit-chain", "blackbox:model=random_forest", knobs={"n": 1}, budget=2000)
    assert result.status == "ok"
    assert result.curve[-1]["examples"] == 2000
    assert result.final[result.output] > 0.8  # a forest reads single digits well
    assert not result.at_chance
    hard = run("digit-chain", "blackbox:model=random_forest", knobs={"n": 3}, budget=2000)
    assert hard.at_chance  # ... but not the sum of three of them from raw pixels


def test_blackbox_rejects_an_unknown_model():
    from e2elab.errors import E2ELabError

    with pytest.raises(E2ELabError, match="unknown model for blackbox: 'gbm'"):
        run("digit-chain", "blackbox:model=gbm", knobs={"n": 1}, budget=100)


def test_training_flops_are_counted_per_phase():
    e2e = run("digit-chain", "e2e", knobs={"n": 2}, budget=1280, evaluations=1)
    (phase,) = e2e.memory["phases"]
    assert phase["flops_per_example"] > 0
    assert e2e.memory["training_flops"] == pytest.approx(phase["flops_per_example"] * 1280)
    modular = run("digit-chain", "modular", knobs={"n": 2}, budget=1280, evaluations=1)
    # training one module at a time back-propagates through less of the network
    per_phase = [p["flops_per_example"] for p in modular.memory["phases"]]
    assert len(per_phase) == 3 and max(per_phase) < phase["flops_per_example"]
    assert modular.memory["training_flops"] < e2e.memory["training_flops"]
