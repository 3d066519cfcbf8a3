"""The accelerator path: every shipped task under every strategy trains with ``--device
cuda``, two seeds stacked by default. Skipped where torch sees no CUDA device (as on CI);
run it on a GPU machine with ``pytest -q tests/test_cuda.py``."""

from __future__ import annotations

import math

import pytest
import torch

from e2elab import strategy as strategies
from e2elab.errors import E2ELabError
from e2elab.execution import execute_seeds, first_batch, make_spec
from e2elab.system import trace
from e2elab.tasks import SHIPPED, make_task

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

# small members of each task, so that a run takes seconds
SMALL = {
    "digit-chain": {"n": 2},
    "driving": {"frames": 128, "roads": 2, "test_roads": 2, "test_length": 20.0},
    "captioning": {"objects": 1},
    "pentomino": {"train_size": 1000, "test_size": 200},
}


def _cases() -> list[tuple[str, str]]:
    cases = []
    for cls in SHIPPED:
        task = make_task(cls.name, SMALL.get(cls.name, {}))
        graph = trace(task.build_system(), first_batch(task), task.ports)
        for text in strategies.STRATEGIES:
            if text == "blackbox":
                continue  # scikit-learn on the host, not a torch system
            for name in strategies.expand(text, list(graph.modules))[:1]:
                cases.append((cls.name, name))
    return cases


@pytest.mark.parametrize(("task", "strategy"), _cases() if torch.cuda.is_available() else [])
def test_every_task_and_strategy_trains_on_cuda_with_seeds_stacked(task, strategy):
    knobs = SMALL.get(task, {})
    try:
        specs = [
            make_spec(task, strategy, seed=s, knobs=knobs, budget=512, evaluations=2, device="cuda")
            for s in (0, 1)
        ]
        results = execute_seeds(specs)
    except E2ELabError as error:  # refused for this task's structure, as on the CPU
        pytest.skip(str(error))
    for result in results:
        assert result.status == "ok", result.reason
        assert result.spec.settings.device == "cuda"
        assert all(math.isfinite(v) for v in result.final.values())
        assert result.memory.get("seeds_batched") == 2  # stacking is on by default there


def _training_steps(name: str, steps: int, device: str = "cuda") -> None:
    """``steps`` e2e training steps of ``name``, seeds stacked where the library would stack
    them, taken as the loop takes them, under torch's sync debug mode on CUDA."""
    from e2elab.replicas import make_replicas, plan_seeds

    task = make_task(name, SMALL.get(name, {}))
    graph = trace(task.build_system(), first_batch(task), task.ports)
    built = strategies.build("e2e", graph, task.output)
    where = torch.device(device)
    seeds = [0, 1]
    if not plan_seeds(task, built, graph, "adam", 1e-3, 32, where).stack:
        seeds = [0]
    rngs = [torch.Generator().manual_seed(s) for s in seeds]
    cuda = where.type == "cuda"
    with task.data_on(where):
        replicas = make_replicas(task, built, graph, seeds, where)
        replicas.begin_phase(built.phases[0], "adam", 1e-3)
        bad = torch.zeros(len(seeds), dtype=torch.bool, device=where)
        for _ in range(2):  # warm-up: lazy initialisation may wait once
            bad |= ~torch.isfinite(replicas.step(0, replicas.draw(task, 32, rngs, where)))
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(steps):
                batch = replicas.draw(task, 32, rngs, where)
                bad |= ~torch.isfinite(replicas.step(0, batch))
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
    assert not bad.any()


@pytest.mark.parametrize("task", [cls.name for cls in SHIPPED] if torch.cuda.is_available() else [])
def test_a_training_step_never_waits_for_the_device(task):
    # torch's sync debug mode raises at any operation that makes the host wait for the
    # GPU (.item(), .tolist(), a copy to the host, data-dependent shapes)
    _training_steps(task, steps=5)


POOLED = {"digit-chain": {"n": 3}, "pentomino": {"train_size": 256, "test_size": 100}}


@pytest.mark.parametrize("name", list(POOLED) if torch.cuda.is_available() else [])
def test_pools_live_on_the_device_and_give_the_host_examples(name):
    task = make_task(name, POOLED[name])
    host = task.sample(64, torch.Generator().manual_seed(3))
    with task.data_on("cuda"):
        placed = task.sample(64, torch.Generator().manual_seed(3))
    for key in (*host.x, *host.targets):
        a = host.x.get(key, host.targets.get(key))
        b = placed.x.get(key, placed.targets.get(key))
        assert b.device.type == "cuda", key
        assert torch.equal(a, b.cpu()), key
