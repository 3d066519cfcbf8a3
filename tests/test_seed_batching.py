"""Seed-batched training: S seeds trained as one vmapped computation give each seed's
result alone, for every strategy; executors group seeds; divergence stays per seed."""

import math

import pytest
import torch
from strategies import every_strategy
from torch import nn

from e2elab import Batch, Knob, PortSpec, System, Task, TrainingDefaults, make_task, replicas, trace
from e2elab import strategy as strategies
from e2elab.execution import execute, execute_seeds, first_batch, make_spec
from e2elab.executors import MAX_SEEDS_PER_BATCH, SerialExecutor, seed_batches
from e2elab.records import Settings
from e2elab.replicas import Stacked, plan_seeds
from e2elab.train import train, train_seeds

SEEDS = [0, 1, 2]
EVERY_STRATEGY = every_strategy(n=2, members=2)


def _setup(text, n=2):
    task = make_task("digit-chain", {"n": n})
    graph = trace(task.build_system(), first_batch(task), task.ports)
    return task, graph, strategies.build(text, graph, task.output)


def _config(**overrides):
    settings = dict(budget=1500, batch_size=64, lr=3e-3, evaluations=3)
    return Settings(**{**settings, **overrides})


@pytest.mark.parametrize("text", EVERY_STRATEGY)
def test_each_batched_seed_matches_training_that_seed_alone(text):
    task, graph, strategy = _setup(text)
    batched = train_seeds(task, strategy, graph, _config(), SEEDS, batch=True)
    assert len(batched) == len(SEEDS)
    for seed, together in zip(SEEDS, batched, strict=True):
        alone = train(task, strategy, graph, _config(), seed)
        assert together.status == alone.status == "ok"
        assert [p["examples"] for p in together.curve] == [p["examples"] for p in alone.curve]
        # bit for bit: a seed's result does not depend on the seeds stacked beside it
        assert together.curve == alone.curve, seed
        for mine, theirs in zip(together.systems, alone.systems, strict=True):
            for (name, p), q in zip(mine.named_parameters(), theirs.parameters(), strict=True):
                assert torch.equal(p, q), (seed, name)


def test_batched_seeds_really_differ_from_each_other():
    task, graph, strategy = _setup("e2e")
    outcomes = train_seeds(task, strategy, graph, _config(), SEEDS, batch=True)
    first = [p for p in outcomes[0].systems[0].parameters()]
    for other in outcomes[1:]:
        assert not all(torch.equal(a, b) for a, b in zip(first, other.systems[0].parameters()))


def test_run_results_of_a_seed_batch_match_single_runs_and_keep_their_ids():
    specs = [make_spec("digit-chain", "hinted", seed=s, knobs={"n": 2}, budget=1500) for s in SEEDS]
    batched = execute_seeds(specs, batch=True)
    for spec, together in zip(specs, batched, strict=True):
        alone = execute(spec)
        assert together.id == alone.id == spec.id
        assert together.final == alone.final
        assert together.weights_sha256 == alone.weights_sha256
        assert together.probes == alone.probes
        assert together.memory["seeds_batched"] == len(SEEDS)
        assert together.memory["phases"] == alone.memory["phases"]  # one run's step memory


def test_blackbox_specs_in_a_batch_run_one_by_one():
    specs = [
        make_spec("digit-chain", "blackbox:model=decision_tree", seed=s, budget=500) for s in (0, 1)
    ]
    results = execute_seeds(specs)
    assert [r.id for r in results] == [s.id for s in specs]
    assert results[0].final == execute(specs[0]).final


def test_specs_that_differ_by_more_than_the_seed_are_refused():
    a = make_spec("digit-chain", "e2e", seed=0, budget=500)
    b = make_spec("digit-chain", "e2e", seed=1, budget=600)
    with pytest.raises(Exception, match="differ only by seed"):
        execute_seeds([a, b])


def test_a_diverging_seed_ends_alone_and_the_others_train_on(monkeypatch):
    step = Stacked.step

    def poisoned(self, member, batches):
        losses = step(self, member, batches)
        return torch.where(torch.arange(len(losses)) == 1, torch.nan, losses)

    monkeypatch.setattr(Stacked, "step", poisoned)
    task, graph, strategy = _setup("e2e")
    outcomes = train_seeds(task, strategy, graph, _config(), SEEDS, batch=True)
    assert [o.status for o in outcomes] == ["ok", "diverged", "ok"]
    assert "NaN or infinite" in outcomes[1].reason and "phase 1" in outcomes[1].reason
    assert outcomes[1].curve[-1]["examples"] == 0  # nothing recorded after the divergence
    assert outcomes[0].curve[-1]["examples"] == outcomes[2].curve[-1]["examples"] == 1500


def test_seed_batches_group_by_everything_but_the_seed():
    specs = [
        make_spec("digit-chain", text, seed=s, budget=500)
        for text in ("e2e", "modular")
        for s in range(MAX_SEEDS_PER_BATCH + 2)
    ]
    batches = seed_batches(specs)
    assert [len(b) for b in batches] == [MAX_SEEDS_PER_BATCH, 2, MAX_SEEDS_PER_BATCH, 2]
    for batch in batches:
        assert len({(s.strategy, s.settings.budget) for s in batch}) == 1
    assert seed_batches(specs, batch_seeds=False) == [[s] for s in specs]


def test_seed_batches_split_so_every_worker_has_one():
    specs = [make_spec("digit-chain", "e2e", seed=s, budget=500) for s in range(16)]
    assert [len(b) for b in seed_batches(specs, workers=2)] == [8, 8]
    assert [len(b) for b in seed_batches(specs, workers=3)] == [4, 4, 8]
    assert [len(b) for b in seed_batches(specs[:3], workers=8)] == [1, 1, 1]
    split = seed_batches(specs, workers=2)
    assert [s.seed for b in split for s in b] == list(range(16))  # order kept
    many = [make_spec("digit-chain", t, seed=0, budget=500) for t in ("e2e", "modular")]
    assert [len(b) for b in seed_batches(many, workers=2)] == [1, 1]
    assert seed_batches([], workers=4) == []


def test_seed_batches_on_an_accelerator_stay_one_stack():
    import dataclasses

    specs = [make_spec("digit-chain", "e2e", seed=s, budget=500) for s in range(16)]
    gpu = [dataclasses.replace(s, settings=s.settings.override(device="cuda")) for s in specs]
    assert [len(b) for b in seed_batches(gpu, workers=16)] == [16]
    # beside CPU batches, only those are split
    cpu = [make_spec("digit-chain", "modular", seed=s, budget=500) for s in range(4)]
    batches = seed_batches(gpu + cpu, workers=4)
    assert sorted(len(b) for b in batches) == [1, 1, 2, 16]


def test_executor_with_and_without_seed_batching_store_matching_results():
    specs = [make_spec("digit-chain", "e2e", seed=s, knobs={"n": 2}, budget=1000) for s in (0, 1)]
    on = {r.id: r.final for r in SerialExecutor(batch_seeds=True).map(specs)}
    off = {r.id: r.final for r in SerialExecutor(batch_seeds=False).map(specs)}
    assert on.keys() == off.keys()
    assert on == off


class _Branchy(System):
    """Data-dependent Python control flow: vmap cannot batch it."""

    def __init__(self):
        super().__init__(first=nn.Linear(4, 3), second=nn.Linear(3, 2))

    def forward(self, batch):
        hidden = self.port("hidden", self.first(batch.x["x"]))
        if hidden.abs().max() > 1e6:  # never true, but needs the value
            hidden = hidden * 0
        return self.port("y", self.second(hidden))


class _BranchyTask(Task):
    name = "branchy"
    knobs = {"noise": Knob(0, "unused", minimum=0)}
    defaults = TrainingDefaults(budget=640, batch_size=32, lr=1e-2, threshold=0.8, evaluations=2)

    @property
    def ports(self):
        return {"hidden": PortSpec("class", 3, 1 / 3), "y": PortSpec("class", 2, 0.5)}

    @property
    def output(self):
        return "y"

    def build_system(self):
        return _Branchy()

    def _make(self, size, generator):
        x = torch.randn(size, 4, generator=generator)
        return Batch({"x": x}, {"hidden": x[:, :3].argmax(1), "y": (x[:, 0] > 0).long()})

    def sample(self, batch_size, generator):
        return self._make(batch_size, generator)

    def test_set(self):
        return self._make(200, torch.Generator().manual_seed(10**6))


def test_a_system_vmap_cannot_batch_falls_back_to_one_seed_at_a_time():
    task = _BranchyTask()
    graph = trace(task.build_system(), first_batch(task), task.ports)
    strategy = strategies.build("e2e", graph, task.output)
    plan = plan_seeds(task, strategy, graph, "adam", 1e-2, 64, torch.device("cpu"))
    assert plan.stack is False and plan.lone == "plain"
    assert "vmap cannot batch" in plan.reason
    specs = [make_spec(task, "e2e", seed=s) for s in (0, 1)]
    results = execute_seeds(specs, task)
    alone = [execute(spec, task) for spec in specs]
    assert [r.final for r in results] == [r.final for r in alone]
    assert all("seeds_batched" not in r.memory for r in results)
    assert all(r.memory["stacking"].startswith("one at a time (plain): vmap") for r in results)
    assert not math.isnan(results[0].final["y"])


@pytest.mark.parametrize(
    "name, knobs",
    [
        ("digit-chain", {"n": 3}),
        ("line-parity", {"k": 2, "test_size": 200}),
        ("parity", {}),
        ("stocks", {"k": 10}),
    ],
)
def test_sample_seeds_draws_what_each_generator_would_alone(name, knobs):
    task = make_task(name, knobs)
    stacked = task.sample_seeds(16, [torch.Generator().manual_seed(s) for s in (4, 5, 6)])
    for i, seed in enumerate((4, 5, 6)):
        alone = task.sample(16, torch.Generator().manual_seed(seed))
        part = stacked.part(i)
        for key in alone.x:
            assert torch.equal(part.x[key], alone.x[key])
        for key in alone.targets:
            assert torch.equal(part.targets[key], alone.targets[key])


def test_stacking_is_chosen_for_mlps_and_not_for_convnets_on_the_cpu():
    cpu = torch.device("cpu")
    for name, knobs, expected in [
        ("digit-chain", {"n": 2}, True),
        ("line-parity", {"k": 2}, False),
    ]:
        task = make_task(name, knobs)
        graph = trace(task.build_system(), first_batch(task), task.ports)
        strategy = strategies.build("e2e", graph, task.output)
        assert plan_seeds(task, strategy, graph, "adam", 1e-3, 64, cpu).stack is expected


def test_the_automatic_choice_gives_the_same_results_either_way():
    specs = [
        make_spec("digit-chain", "modular", seed=s, knobs={"n": 2}, budget=1000) for s in (0, 1)
    ]
    auto = execute_seeds(specs)  # stacked: an MLP system on the CPU
    assert all(r.memory.get("seeds_batched") == 2 for r in auto)
    for spec, result in zip(specs, auto, strict=True):
        assert result.weights_sha256 == execute(spec).weights_sha256


class _OneColumn(System):
    """A product with one output column: torch's batched product runs it with a kernel
    that changes with the number of slices, so a stack of three rounds otherwise than
    three stacks of one (on every CPU tried), and the guard must refuse to stack it."""

    def __init__(self):
        super().__init__(
            encoder=nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)),
            gauge=nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 1)),
        )

    def forward(self, batch):
        code = self.port("code", self.encoder(batch.x["x"]))
        return self.port("distance", self.gauge(code.softmax(-1)))


class _OneColumnTask(Task):
    name = "one-column"
    knobs = {"unused": Knob(0, "unused", minimum=0)}
    defaults = TrainingDefaults(budget=1500, batch_size=32, lr=3e-3, evaluations=3)
    ports = {"code": PortSpec("class", 2, 0.5), "distance": PortSpec("regression", 1, 0.0)}
    output = "distance"

    def build_system(self):
        return _OneColumn()

    def sample(self, batch_size, generator):
        x = torch.randn(batch_size, 4, generator=generator)
        return Batch({"x": x}, {"code": (x[:, 0] > 0).long(), "distance": 3 * x[:, :1]})

    def test_set(self):
        return self.sample(200, torch.Generator().manual_seed(5))


def test_a_system_whose_numbers_stacking_would_change_trains_one_seed_at_a_time():
    task = _OneColumnTask()
    specs = [make_spec(task, "e2e", seed=s) for s in (0, 1, 2)]
    together = execute_seeds(specs, task)
    assert all("seeds_batched" not in r.memory for r in together)
    assert all("stacking changes" in r.memory["stacking"] for r in together)
    assert "differs by" in together[0].memory["stacking_note"]
    for spec, result in zip(specs, together, strict=True):
        assert result.weights_sha256 == execute(spec, task).weights_sha256


def test_a_lone_seed_trains_as_a_stack_of_one_where_the_plain_code_rounds_otherwise(
    monkeypatch,
):
    """On some CPUs (AMD's, with MKL) plain autograd and the batched product round a
    weight gradient differently; simulated here on any CPU by a plain step that lands
    elsewhere in the last bits. A lone seed then trains through the stacked code."""
    step = replicas.Single.step

    def otherwise(self, member, batch):
        losses = step(self, member, batch)
        with torch.no_grad():
            for p in self.units[member].parameters():
                p.mul_(1 + 2**-20)
        return losses

    monkeypatch.setattr(replicas.Single, "step", otherwise)
    monkeypatch.setattr(replicas, "_PLANS", {})
    task, graph, strategy = _setup("e2e")
    plan = plan_seeds(task, strategy, graph, "adam", 3e-3, 64, torch.device("cpu"))
    assert plan.stack and plan.lone == "stack" and "differs by" in plan.detail
    specs = [make_spec("digit-chain", "e2e", seed=s, knobs={"n": 2}, budget=640) for s in (0, 1)]
    together = execute_seeds(specs)
    assert all(r.memory["seeds_batched"] == 2 for r in together)
    for spec, result in zip(specs, together, strict=True):
        alone = execute(spec)
        assert alone.memory["stacking"] == "alone (a stack of one)"
        assert result.weights_sha256 == alone.weights_sha256
        assert result.final == alone.final


@pytest.mark.parametrize(
    "seeds", [[0, 1], [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]]
)
def test_a_stack_gives_each_seed_what_a_stack_of_one_gives_it(seeds):
    """The canonical computation is the stacked one: any stack size, any position."""
    task, graph, strategy = _setup("hinted")
    config = _config(budget=640)
    stacked = replicas.make_replicas(task, strategy, graph, seeds, torch.device("cpu"))
    together = train_seeds(task, strategy, graph, config, seeds, batch=True)
    assert isinstance(stacked, Stacked)
    for i in (0, len(seeds) - 1):
        alone = train_seeds(task, strategy, graph, config, [seeds[i]], batch=True)[0]
        assert together[i].curve == alone.curve
        for p, q in zip(together[i].systems[0].parameters(), alone.systems[0].parameters()):
            assert torch.equal(p, q)


def _stack_size_leaks(monkeypatch):
    """A fault no CPU is known for: stacked steps that move parameters by the stack size."""
    step = Stacked.step

    def leaky(self, member, batch):
        losses = step(self, member, batch)
        with torch.no_grad():
            for p in self.stack[member].params.values():
                p.add_(1e-6 * len(self.seeds))
        return losses

    monkeypatch.setattr(Stacked, "step", leaky)
    monkeypatch.setattr(replicas, "_PLANS", {})


def test_the_guard_refuses_a_stack_that_changes_a_seed_and_says_what_differed(monkeypatch):
    _stack_size_leaks(monkeypatch)
    task, graph, strategy = _setup("e2e")
    plan = plan_seeds(task, strategy, graph, "adam", 3e-3, 64, torch.device("cpu"))
    assert plan.stack is False
    assert torch.backends.cpu.get_cpu_capability() in plan.reason
    assert plan.detail.startswith("system.") and "differs by" in plan.detail
    specs = [make_spec("digit-chain", "e2e", seed=s, knobs={"n": 2}, budget=640) for s in (0, 1)]
    results = execute_seeds(specs)
    assert all("seeds_batched" not in r.memory for r in results)
    assert all(
        r.memory["stacking"].startswith("one at a time (plain): stacking changes") for r in results
    )


def test_the_cli_says_once_why_seeds_train_one_at_a_time(monkeypatch, tmp_path, capsys):
    from e2elab.cli import main
    from e2elab.query import load_frame

    _stack_size_leaks(monkeypatch)
    argv = ["run", "--knob", "n=1", "--strategy", "e2e", "--strategy", "hinted", "--seeds", "2"]
    argv += ["--budget", "640", "--executor", "serial", "--out", str(tmp_path)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "one at a time" in line]
    assert len(notes) == 1, err
    assert "differs by" in notes[0] and torch.backends.cpu.get_cpu_capability() in notes[0]
    frame = load_frame(next(tmp_path.rglob("results.sqlite")))
    assert set(frame["stacking"].str.split(":").str[0]) == {"one at a time (plain)"}
