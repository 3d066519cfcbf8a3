"""Issue 14's instruments: forcing ports under any strategy, the fine-tuning learning rate,
phase ends, exact gradient SNR, SNR after pre-training, plateau stopping, diagnostic
claims and the report's Deviations."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from synthetic import result

from e2elab import strategy as strategies
from e2elab.claims import FAIL, INCONCLUSIVE, PASS, Verdict, deviations, lost_in_phase
from e2elab.diagnostics.snr import gradient_snr
from e2elab.errors import E2ELabError
from e2elab.execution import first_batch, make_spec
from e2elab.records import RunSpec, Settings
from e2elab.system import trace
from e2elab.tasks import make_task


def _graph(task):
    return trace(task.build_system(), first_batch(task), task.ports)


# ------------------------------------------------------------------ force=


def test_force_parses_a_list_and_round_trips():
    name, params = strategies.parse_strategy(
        "frozen_others:module=recognizer,force=digit_3,digit_2"
    )
    assert params == {"module": "recognizer", "force": ["digit_2", "digit_3"]}
    text = strategies.format_strategy(name, params)
    assert text == "frozen_others:force=digit_2,digit_3,module=recognizer"
    assert strategies.parse_strategy(text) == (name, params)


def test_force_teacher_forces_the_ports_in_every_phase():
    task = make_task("digit-chain", {"n": 3})
    graph = _graph(task)
    built = strategies.build(
        "frozen_others:module=recognizer,force=digit_[2-9]", graph, task.output
    )
    for phase in built.phases:
        assert {"digit_2", "digit_3"} <= phase.teacher_forced
    assert "digit_1" not in built.phases[-1].teacher_forced
    assert built.phases[-1].train == {"recognizer"}
    # a pattern may match nothing (n = 1); a plain name must be a port
    single = make_task("digit-chain", {"n": 1})
    one = strategies.build("e2e:force=digit_[2-9]", _graph(single), single.output)
    assert one.phases[0].teacher_forced == frozenset()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("e2e:force=", "at least one port"),
        ("e2e:force=nope", "unknown port to force"),
        ("e2e:force=digit_1,force=digit_2", "given twice"),
        ("blackbox:force=digit_1", "no modules or ports to force"),
        ("e2e:digit_1", "expected key=value"),
    ],
)
def test_force_errors_name_the_problem(text, message):
    task = make_task("digit-chain", {"n": 2})
    with pytest.raises(E2ELabError, match=message):
        strategies.build(text, _graph(task), task.output)


@pytest.mark.slow
def test_forcing_the_other_positions_lets_the_shared_recognizer_learn():
    """The C3 diagnostic at n = 2, small: unforced, frozen_others:module=recognizer stays
    near chance; with digit_2 forced it learns (the shared-recognizer explanation)."""
    from e2elab.execution import execute

    task = "digit-chain"
    knobs = {"n": 2, "m": 10}
    plain = execute(make_spec(task, "frozen_others:module=recognizer", knobs=knobs, budget=30_000))
    forced = execute(
        make_spec(task, "frozen_others:module=recognizer,force=digit_2", knobs=knobs, budget=30_000)
    )
    assert plain.output_metric < 0.2
    assert forced.output_metric > 0.6


# ------------------------------------------------------------------ fine-tuning rate, phase ends


def test_finetune_lr_scale_sets_the_last_phase_learning_rate(monkeypatch):
    from e2elab import replicas

    seen = []
    original = replicas.OPTIMIZERS["adam"]
    monkeypatch.setitem(
        replicas.OPTIMIZERS, "adam", lambda params, lr: seen.append(lr) or original(params, lr)
    )
    from e2elab.execution import execute

    spec = make_spec(
        "digit-chain", "pretrain_finetune:finetune_lr_scale=0.1", knobs={"n": 1}, budget=3000
    )
    out = execute(spec)
    # modular pre-training of the two modules at the run's rate, fine-tuning at a tenth
    lr = spec.settings.lr
    assert sorted(set(seen)) == pytest.approx([lr * 0.1, lr])
    assert seen.index(min(seen)) > seen.index(lr)
    assert out.phases[-1]["lr_scale"] == 0.1
    with pytest.raises(E2ELabError, match="finetune_lr_scale"):
        strategies.parse_strategy("pretrain_finetune:finetune_lr_scale=x")


def test_each_phase_records_its_end():
    from e2elab.execution import execute

    out = execute(make_spec("digit-chain", "pretrain_finetune", knobs={"n": 1}, budget=4000))
    ends = out.phase_ends()
    assert [e["label"] for e in ends] == [p["label"] for p in out.phases]
    assert ends[-1]["examples"] == 4000
    assert ends[-1]["output"] == out.output_metric
    # runs stored before phases recorded their ends: read back from the curve
    old = dataclasses.replace(
        out,
        phases=[
            {k: v for k, v in p.items() if k not in ("metrics", "examples")} for p in out.phases
        ],
    )
    assert old.phase_ends() == ends


def test_lost_in_phase_explains_a_fine_tuning_that_destroyed():
    def run(seed, before, after):
        r = result("pretrain_finetune", 6, seed, after, None)
        r.phases = [
            {"label": "modular:recognizer", "examples": 25_000, "metrics": {"sum_6": 0.1}},
            {"label": "modular:adder", "examples": 50_000, "metrics": {"sum_6": before}},
            {"label": "finetune", "examples": 100_000, "metrics": {"sum_6": after}},
        ]
        return r

    lost = lost_in_phase([run(0, 0.95, 0.3), run(1, 0.93, 0.5)], "pretrain_finetune")
    assert lost.verdict == PASS and "after modular:adder" in lost.details
    never = lost_in_phase([run(0, 0.4, 0.3), run(1, 0.5, 0.5)], "pretrain_finetune")
    assert never.verdict == FAIL and "never reached" in never.details
    short = lost_in_phase([run(0, 0.4, 0.3), run(1, 0.5, 0.5)], "pretrain_finetune", or_short=True)
    assert short.verdict == PASS and "short of 0.8 already" in short.details
    fine = lost_in_phase([run(0, 0.95, 0.9), run(1, 0.93, 0.95)], "pretrain_finetune")
    assert fine.verdict == INCONCLUSIVE


def test_deviations_say_explained_partly_or_unexplained():
    def v(ident, verdict, explains=()):
        return Verdict(verdict, "numbers", id=ident, statement="s", explains=list(explains))

    rows = deviations(
        [
            v("A", FAIL),
            v("B", FAIL),
            v("C", FAIL),
            v("D1", PASS, ["A", "B"]),
            v("D2", FAIL, ["B"]),
            v("D3", FAIL, ["C"]),
            v("E", PASS),
        ]
    )
    by = {r["id"]: r for r in rows}
    assert by["A"]["verdict"] == "explained"
    assert by["B"]["verdict"] == "partly explained" and by["B"]["by"] == "D1, D2"
    assert by["C"]["verdict"] == "unexplained"
    assert "D2" not in by and "E" not in by  # a diagnostic's FAIL shows under its claim
    lone = deviations([v("F", FAIL)])
    assert lone[0]["verdict"] == "unexplained" and "no diagnostic" in lone[0]["details"]


def test_explains_must_name_another_claim(tmp_path):
    from e2elab import experiment

    data = {
        "name": "x",
        "task": "digit-chain",
        "strategies": ["e2e"],
        "claims": [
            {
                "id": "A",
                "check": "reaches_threshold",
                "statement": "s",
                "params": {"strategies": "e2e"},
                "explains": ["nope"],
            },
        ],
    }
    with pytest.raises(E2ELabError, match=r"explains.*'nope' is not the id"):
        experiment.parse(data, "x.yaml")


# ------------------------------------------------------------------ exact SNR


@pytest.mark.parametrize(
    ("task", "knobs", "strategy"),
    [
        ("stocks", {"k": 10}, "e2e"),
        ("stocks", {"k": 10}, "modular"),
        ("parity", {"d": 8}, "e2e"),
        ("parity", {"d": 8, "online": True}, "e2e"),
    ],
)
def test_exact_snr_agrees_with_the_sampled_estimate(task, knobs, strategy):
    """Where both resolve, the sampled SNR (600 batches) lies within 0.25 decades of the
    exact one at the same initialisation."""
    instance = make_task(task, knobs)
    exact = gradient_snr(instance, strategy, inits=2, exact=True)
    sampled = gradient_snr(instance, strategy, inits=2, batches=600)
    assert exact.method == "exact" and sampled.method == "sampled"
    for module, values in exact.per_init.items():
        assert all(exact.resolved[module])
        for e, s, ok in zip(
            values, sampled.per_init[module], sampled.resolved[module], strict=True
        ):
            if ok:
                assert abs(math.log10(e) - math.log10(s)) < 0.25, (module, e, s)


def test_populations_are_distributions():
    for task in (
        make_task("parity", {"d": 9}),
        make_task("stocks", {"k": 5, "d": 50, "test_size": 100}),
    ):
        population = task.population()
        total, count = 0.0, 0
        for batch, weights in population.chunks(100):
            total += float(weights.double().sum())
            count += len(batch)
        assert count == population.size and total == pytest.approx(1.0)
    # parity's disjoint design enumerates its training inputs only
    parity = make_task("parity", {"d": 9})
    for batch, _ in parity.population().chunks(64):
        assert not parity.is_test_input(batch.x["bits"]).any()
    # stocks' reward design: z_y = +1, the other entries with mean 0 and identity covariance
    stocks = make_task("stocks", {"k": 6, "d": 40, "test_size": 100})
    batch, _ = next(stocks.population().chunks(8))  # the 8 rows of x = 0
    z, y = batch.targets["reward"], int(stocks.table[0])
    assert (z[:, y] == 1).all()
    others = torch.cat([z[:, :y], z[:, y + 1 :]], 1)
    assert torch.equal(others.mean(0), torch.zeros(5))
    assert torch.equal(others.T @ others / len(others), torch.eye(5))


def test_exact_snr_refuses_a_module_it_cannot_sum_and_falls_back_for_large_populations():
    line = make_task("line-parity", {"k": 1})
    assert line.population() is None
    sampled = gradient_snr(line, "e2e", inits=2, batches=3, exact=True)
    assert sampled.method == "sampled"  # no finite population: sampled batches
    big = gradient_snr(
        make_task("stocks", {"k": 10}), "e2e", inits=2, batches=3, exact=True, max_population=100
    )
    assert big.method == "sampled"

    from e2elab.diagnostics.exact_snr import linear_layers

    with pytest.raises(E2ELabError, match=r"outside nn\.Linear"):
        linear_layers(torch.nn.Sequential(torch.nn.Conv1d(1, 1, 2)), "scorer")


def test_snr_of_a_later_phase_trains_the_phases_before_it(monkeypatch):
    import e2elab.train as training

    calls = []
    original = training.train
    monkeypatch.setattr(
        training, "train", lambda *a, **k: calls.append(a[3].budget) or original(*a, **k)
    )
    task = make_task("digit-chain", {"n": 2})
    settings = Settings(budget=2000, batch_size=64, lr=3e-3)
    out = gradient_snr(
        task, "frozen_others:module=recognizer", inits=2, batches=4, phase=-1, pretrain=settings
    )
    assert calls == [1000, 1000]  # the adders' half of the budget, once per init
    assert set(out.per_init) == {"recognizer"}
    assert out.phase.startswith("final-loss:recognizer")


# ------------------------------------------------------------------ plateau


def test_patience_stops_a_run_at_a_plateau_and_stays_out_of_old_ids():
    from e2elab.execution import execute

    spec = make_spec(
        "stocks", "modular", knobs={"k": 10}, budget=200_000, evaluations=100, patience=5
    )
    out = execute(spec)
    assert out.curve[-1]["examples"] < 200_000
    assert "plateau" in (out.reason or "")
    assert out.status == "ok"
    base = make_spec("stocks", "modular", knobs={"k": 10}, budget=200_000)
    flat = {k: v for k, v in base.to_dict().items() if k != "patience"}
    assert RunSpec.from_dict(flat).id == base.id
    with pytest.raises(E2ELabError, match="patience"):
        Settings(budget=10, patience=-1).validate()


# ------------------------------------------------------------------ schedule floor, alignment


def test_schedule_floor_explains_a_ratio_below_one_by_the_phases():
    from e2elab.claims import schedule_floor

    def run(strategy, seed, ett, phases):
        r = result(strategy, 1, seed, 0.9, ett)
        r.phases = phases
        return r

    modular = [
        {"label": "modular:recognizer", "share": 0.5, "train": ["recognizer"]},
        {"label": "modular:adder_1", "share": 0.5, "train": ["adder_1"]},
    ]
    e2e = [{"label": "e2e", "share": 1.0, "train": ["recognizer", "adder_1"]}]
    runs = [run("e2e", s, 20_000, e2e) for s in range(2)]
    runs += [run("modular", s, 55_000, modular) for s in range(2)]
    ok = schedule_floor(runs, "e2e", ["modular"])
    assert ok.verdict == PASS and "modular 50,000" in ok.details
    late = [run("e2e", s, 60_000, e2e) for s in range(2)] + runs[2:]
    assert schedule_floor(late, "e2e", ["modular"]).verdict == FAIL


def test_gradient_alignment_separates_informative_from_uninformative_losses():
    """The alignment estimator: near 1 for paired gradients with the same mean, near 0
    for orthogonal means; the claim splits strategies on either side of its boundary."""
    from e2elab.claims import alignment_contrast
    from e2elab.diagnostics.snr import alignment
    from e2elab.records import SNRResult

    torch.manual_seed(0)
    mu = torch.randn(50)
    a = mu + 0.1 * torch.randn(40, 50)
    assert alignment(a, mu + 0.1 * torch.randn(40, 50)) > 0.95
    other = torch.randn(50)
    other -= (other @ mu) / (mu @ mu) * mu  # orthogonal to mu
    assert abs(alignment(a, other + 0.1 * torch.randn(40, 50))) < 0.1

    def snr(strategy, n, values):
        return SNRResult(
            "digit-chain",
            {"n": n, "m": 10},
            strategy,
            "p",
            64,
            10,
            alignment={"recognizer": values},
        )

    points = [
        snr("plain", 1, [0.5, 0.6]),
        snr("plain", 2, [0.0, 0.05]),
        snr("forced", 1, [0.5, 0.6]),
        snr("forced", 2, [0.4, 0.35]),
    ]
    ok = alignment_contrast([], points, "plain", "forced", "recognizer", low_where={"n": {">=": 2}})
    assert ok.verdict == PASS
    points[1] = snr("plain", 2, [0.4, 0.5])
    assert (
        alignment_contrast(
            [], points, "plain", "forced", "recognizer", low_where={"n": {">=": 2}}
        ).verdict
        == FAIL
    )


def test_snr_below_resolution_explains_an_undecided_contrast():
    from e2elab.claims import snr_below_resolution
    from e2elab.records import SNRResult

    def point(strategy, k, value, resolved):
        return SNRResult(
            "line-parity",
            {"k": k},
            strategy,
            "p",
            32,
            60,
            {"scorer": [value, value]},
            {"scorer": [resolved, resolved]},
        )

    undecided = [
        point("e2e", 1, 0.04, False),
        point("e2e", 4, 0.02, False),
        point("hinted", 1, 0.04, False),
        point("hinted", 4, 0.05, True),
    ]
    verdict = snr_below_resolution([], undecided, module="scorer")
    assert verdict.verdict == PASS and "60 sampled batches" in verdict.details
    assert "e2e at k=1" in verdict.details and "hinted at k=1" in verdict.details
    resolved = [
        point(s, k, v, True)
        for s, k, v in [("e2e", 1, 0.1), ("e2e", 4, 1e-4), ("hinted", 1, 0.1), ("hinted", 4, 0.1)]
    ]
    assert snr_below_resolution([], resolved, module="scorer").verdict == FAIL


def test_review_findings_stay_fixed():
    from e2elab import experiment
    from e2elab.claims.cells import strategy_matches as _strategy_matches
    from e2elab.execution import execute

    # a plateau counts the last phase's evaluations only: a modular run is not stopped
    # by the flat curve of its first phase
    spec = make_spec(
        "digit-chain", "modular", knobs={"n": 2}, budget=3000, evaluations=20, patience=3
    )
    out = execute(spec)
    last_start = 2000  # 3 modules, equal shares
    assert sum(p["phase"] == 2 for p in out.curve) > 3 or out.curve[-1]["examples"] == 3000
    assert out.curve[-1]["examples"] > last_start + 3 * 150
    # an SNR phase out of range is refused, not wrapped around
    with pytest.raises(E2ELabError, match="phase must be in"):
        gradient_snr(make_task("stocks", {"k": 10}), "e2e", inits=2, batches=3, phase=1)
    # a strategy with pattern characters matches itself in a claim
    name = "frozen_others:force=digit_[2-9],module=recognizer"
    assert _strategy_matches(name, name)
    # a bracket class cannot hold a comma
    task = make_task("digit-chain", {"n": 3})
    with pytest.raises(E2ELabError, match="unbalanced bracket"):
        strategies.build("e2e:force=digit_[2,3]", _graph(task), task.output)
    # snr.exact names strategies that are measured
    data = {
        "name": "x",
        "task": "stocks",
        "strategies": ["e2e"],
        "snr": {"strategies": ["e2e"], "exact": ["modular"]},
    }
    with pytest.raises(E2ELabError, match=r"snr\.exact"):
        experiment.parse(data, "x.yaml")


def test_every_seed_reaches_per_cell_or_by_best_of():
    from e2elab.claims import every_seed_reaches

    runs = [result("modular", 6, 0, 0.9, 40_000), result("modular", 6, 1, 0.85, None)]
    runs += [result("greedy", 6, s, 0.9, 30_000) for s in range(2)]
    each = every_seed_reaches(runs, ["modular", "greedy"])
    assert each.verdict == FAIL and "not seeds 1" in each.details
    best = every_seed_reaches(runs, ["modular", "greedy"], any_strategy=True)
    assert best.verdict == PASS
    assert every_seed_reaches(runs[:2], ["modular"], any_strategy=True).verdict == FAIL


def test_an_snr_phase_out_of_range_is_refused_before_anything_trains():
    from e2elab import experiment
    from e2elab.runner import experiment_specs

    exp = experiment.parse(
        {
            "name": "x",
            "task": "stocks",
            "strategies": ["e2e"],
            "seeds": 1,
            "budget": 1000,
            "snr": {"strategies": ["e2e"], "phase": 3},
        },
        "x.yaml",
    )
    with pytest.raises(E2ELabError, match=r"snr\.phase 3: strategy e2e has 1 phases"):
        experiment_specs(exp)
