"""The accelerator path: every shipped task under every strategy trains with ``--device
cuda``, two seeds stacked by default. Skipped where torch sees no CUDA device (as on CI);
run it on a GPU machine with ``pytest -q tests/test_cuda.py``."""

from __future__ import annotations

import math

import pytest
import torch

from e2elab import strategy as strategies
from e2elab.errors import E2ELabError
from e2elab.run import execute_seeds, first_batch, make_spec
from e2elab.system import trace
from e2elab.tasks import SHIPPED, make_task

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

# small members of each task, so that a run takes seconds
SMALL = {
    "digit-chain": {"n": 2},
    "driving": {"frames": 128, "roads": 2, "test_roads": 2, "test_length": 20.0},
    "captioning": {"objects": 1},
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
        assert result.spec["device"] == "cuda"
        assert all(math.isfinite(v) for v in result.final.values())
        assert result.memory.get("seeds_batched") == 2  # stacking is on by default there
