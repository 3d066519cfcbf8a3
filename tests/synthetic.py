"""Hand-made RunResults, for testing claims, the store and reports without training."""

from __future__ import annotations

from e2elab.records import RunResult, RunSpec, Settings


def spec(task: str, knobs: dict, strategy: str, seed: int, **settings) -> RunSpec:
    """A run's spec with ``settings`` laid over the defaults (budget 100,000)."""
    return RunSpec(task, dict(knobs), strategy, seed, Settings(**{"budget": 100_000, **settings}))


def result(
    strategy: str,
    n: int,
    seed: int,
    accuracy: float,
    ett: int | None,
    *,
    m: int = 10,
    breakdown: bool | None = None,
    probes: dict[str, float] | None = None,
    probes_at_init: dict[str, float] | None = None,
    status: str = "ok",
) -> RunResult:
    chance = 1.0 / m
    output = f"sum_{n}"
    modules = {"recognizer": [f"digit_{i}" for i in range(1, n + 1)]}
    modules |= {f"adder_{i}": [f"sum_{i}"] for i in range(1, n + 1)}
    ports = [p for ps in modules.values() for p in ps]
    made = spec("digit-chain", {"n": n, "m": m}, strategy, seed, lr=0.003, evaluations=4)
    made = made.changed(threshold=0.8)
    curve = [
        {"examples": e, "phase": 0, "metrics": {output: chance + (accuracy - chance) * e / 100_000}}
        for e in (0, 25_000, 50_000, 100_000)
    ]
    return RunResult(
        id=f"{strategy}-{n}-{m}-{seed}",
        spec=made,
        status=status,
        reason=None if status == "ok" else "loss became nan",
        output=output,
        curve=curve,
        final={output: accuracy},
        chance={p: chance for p in ports},
        examples_to_threshold=ett,
        at_chance=(accuracy < chance + 0.03) if breakdown is None else breakdown,
        at_chance_p_value=0.5,
        test_size=2000,
        wall_seconds=1.0,
        memory={},
        probes=probes if probes is not None else {p: 0.5 for p in ports},
        probes_at_init=probes_at_init if probes_at_init is not None else {p: 0.5 for p in ports},
        modules=modules,
        learner="model" if strategy.startswith("blackbox") else "system",
    )


def fixture_store(path, name: str, seeds: int = 2):
    """A results store holding hand-made runs for every grid point and strategy of the
    shipped experiment (or suite) ``name``, for rendering its report without training.
    Returns the store's path."""
    import dataclasses

    from e2elab import experiment as experiments
    from e2elab.store import Store

    _, parts = experiments.load_all(name)
    with Store(path) as store:
        for exp in parts:
            store.put_experiment(exp.name, exp.model_dump())
            for p, point in enumerate(exp.grid_points()):
                for s, strategy in enumerate(exp.strategies):
                    for seed in range(seeds):
                        accuracy = 0.1 + 0.8 * ((p + s + seed) % 5) / 4
                        # wide cells, as real runs have: 6-digit intervals, FLOP counts
                        ett = None if accuracy < 0.8 else 123_456 + 98_765 * (p + s + seed)
                        r = result(strategy, 2, seed, accuracy, ett)
                        knobs = {**exp.knobs, **point}
                        made = r.spec.changed(task=exp.task, strategy=strategy, knobs=knobs)
                        run_id = f"{exp.name}-{p}-{s}-{seed}"
                        memory = {"training_flops": 123_456_789_012.0 * (s + 1)}
                        run = dataclasses.replace(
                            r, id=run_id, spec=made, wall_seconds=1234.5, memory=memory
                        )
                        store.put(run, exp.name)
    return path


def cell_result(
    strategy: str,
    seed: int,
    metric: float,
    ett: int | None,
    knobs: dict | None = None,
    phases: list[float] | None = None,
    budget: int = 100,
) -> RunResult:
    """One run of a one-port task: output ``y`` ended at ``metric`` (chance 0.5)."""
    return RunResult(
        id=f"{strategy}-{seed}-{knobs}",
        spec=spec("t", knobs or {}, strategy, seed, threshold=0.8, budget=budget),
        status="ok",
        reason=None,
        output="y",
        curve=[{"examples": budget, "phase": 0, "metrics": {"y": metric}}],
        final={"y": metric},
        chance={"y": 0.5},
        examples_to_threshold=ett,
        at_chance=False,
        at_chance_p_value=None,
        test_size=100,
        wall_seconds=1.0,
        memory={},
        phases=[{"label": f"p{i}", "share": s} for i, s in enumerate(phases or [1.0])],
    )
