"""Oracle evaluation: ports forced to their true values at evaluation, recorded per run,
and the ``oracle_ceiling`` check that reads it."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from synthetic import cell_result

from e2elab import strategy as strategies
from e2elab.claims import FAIL, INCONCLUSIVE, PASS, oracle_ceiling
from e2elab.errors import E2ELabError
from e2elab.execution import execute, first_batch, make_spec
from e2elab.oracle import check_oracle, oracle_metrics, oracle_ports, oracle_sets
from e2elab.system import trace
from e2elab.tasks import make_task
from e2elab.train import train_seeds


def _prepared(n: int = 2, strategy: str = "frozen_others:module=recognizer"):
    task = make_task("digit-chain", {"n": n, "test_size": 400})
    system = task.build_system()
    graph = trace(system, first_batch(task), task.ports)
    return task, graph, strategies.build(strategy, graph, task.output)


def test_forcing_the_true_digits_gives_the_adders_own_accuracy():
    task, graph, strategy = _prepared()
    settings = make_spec(task, "frozen_others:module=recognizer", budget=6000).settings
    outcome = train_seeds(task, strategy, graph, settings, [0])[0]
    members = outcome.systems
    ports = oracle_ports("trained", task, strategy, graph)
    assert ports == ("digit_1", "digit_2")  # the recognizer's, the output left alone
    metrics = oracle_metrics(task, members, ports)
    # the adders alone, fed the one-hot true digits as the forced ports give them
    system, test = members[0], task.test_set()
    with torch.no_grad():
        state = F.one_hot(torch.zeros(len(test), dtype=torch.long), system.m).float()
        for i in range(2):
            digit = task.ports[f"digit_{i + 1}"].forced(test.targets[f"digit_{i + 1}"], state)
            total = system.adder_at(i)(torch.cat([state, digit.softmax(-1)], -1))
            state = total.softmax(-1)
    own = (total.argmax(-1) == test.targets["sum_2"]).float().mean().item()
    assert metrics["sum_2"] == pytest.approx(own, abs=1e-6)
    # the recognizer's own port is scored on what it emitted, not on the forced value
    assert metrics["digit_1"] == pytest.approx(outcome.final["digit_1"], abs=1e-6)
    assert metrics["digit_1"] < 0.5  # untrained in phase 1: the forcing did not leak in


def test_a_run_records_its_oracle_sets_and_keeps_its_id():
    task = make_task("digit-chain", {"n": 2, "test_size": 400})
    plain = make_spec(task, "modular", budget=3000)
    asked = make_spec(task, "modular", budget=3000, oracle="trained; others")
    assert asked.id == plain.id  # an evaluation, not a different training
    result = execute(asked, task)
    assert set(result.oracle) == {"trained", "others"}
    # modular's last phase trains the last adder, which emits only the output: an
    # oracle of it makes the output exact
    assert result.oracle["trained"]["ports"] == ["sum_2"]
    assert result.oracle["trained"]["metrics"]["sum_2"] == 1.0
    # every other module's ports forced: the last adder's own accuracy on true inputs,
    # above what it reaches behind the trained recognizer and first adder
    others = result.oracle["others"]
    assert others["ports"] == ["digit_1", "sum_1", "digit_2"]
    assert 0 <= result.final["sum_2"] < others["metrics"]["sum_2"]
    assert execute(plain, task).oracle == {}


def test_an_oracle_that_names_no_port_is_refused_in_one_line():
    task, graph, strategy = _prepared()
    with pytest.raises(E2ELabError, match=r"oracle .digit_9. matches no port .* its ports are"):
        check_oracle("trained;digit_9", task, strategy, graph)
    assert oracle_sets(" trained ; digit_1, sum_1 ;trained") == ["trained", "digit_1,sum_1"]
    assert oracle_ports("digit_*", task, strategy, graph) == ("digit_1", "digit_2")


def _short(strategy: str, seed: int, metric: float, ceiling: float | None, n: int):
    run = cell_result(strategy, seed, metric, None, knobs={"n": n})
    if ceiling is not None:
        run.oracle = {"trained": {"ports": ["h"], "metrics": {"y": ceiling}}}
    return run


def test_oracle_ceiling_tells_the_module_from_the_chain():
    runs = [
        _short("fo", s, m, c, n)
        for s in (0, 1)
        for n, m, c in [(1, 0.95, 1.0), (2, 0.6, 0.97), (3, 0.55, 0.7)]
    ]
    by_module = oracle_ceiling(runs, "fo", cause="module")
    assert by_module.verdict == FAIL and "fo @ n=3" in by_module.details.split("--")[1]
    assert "n=2: " in by_module.details and "the others carry an oracle" in by_module.details
    assert oracle_ceiling(runs, "fo", cause="chain").verdict == FAIL
    only_two = [r for r in runs if r.spec.knobs["n"] != 3]
    assert oracle_ceiling(only_two, "fo", cause="module").verdict == PASS
    assert oracle_ceiling(only_two, "fo", cause="chain").verdict == FAIL
    # nothing short: nothing to explain; a short cell not evaluated: say how to get it
    fine = [r for r in runs if r.spec.knobs["n"] == 1]
    assert oracle_ceiling(fine, "fo").verdict == INCONCLUSIVE
    bare = [dataclasses.replace(r, oracle={}) for r in only_two]
    verdict = oracle_ceiling(bare, "fo")
    assert verdict.verdict == INCONCLUSIVE and "train with oracle: trained" in verdict.details
