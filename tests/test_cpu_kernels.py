"""Seed stacking under every CPU kernel set this machine can run.

torch picks its vectorised kernels by the CPU's instruction set, and MKL its BLAS paths
by vendor and instruction set, so a rounding that one machine gives another may not.
Each case starts a fresh process with ``ATEN_CPU_CAPABILITY`` (torch's kernels) or MKL's
own switch set, and checks there what must hold on every CPU: a seed's numbers do not
depend on whether, or beside how many seeds, it trains; where the guard refuses to stack,
it says why, and the seeds still match their lone runs. A seed's linear probes, fitted
for its whole stack at once, equal those fitted for it alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

_SCRIPT = r"""
import json, torch
from e2elab import make_task, trace
from e2elab import strategy as strategies
from e2elab.records import Settings
from e2elab.replicas import plan_seeds
from e2elab.execution import first_batch
from e2elab.train import train_seeds
from e2elab.diagnostics.probes import stack_probes

out = {"capability": torch.backends.cpu.get_cpu_capability(), "cases": []}
for name, knobs, text in [("digit-chain", {"n": 2}, "e2e"), ("digit-chain", {"n": 2}, "hinted"),
                          ("stocks", {"k": 10}, "e2e")]:
    task = make_task(name, knobs)
    graph = trace(task.build_system(), first_batch(task), task.ports)
    strategy = strategies.build(text, graph, task.output)
    config = Settings(budget=640, batch_size=64, lr=3e-3, evaluations=2)
    plan = plan_seeds(task, strategy, graph, "adam", 3e-3, 64, torch.device("cpu"))
    seeds = [0, 1, 2]
    together = train_seeds(task, strategy, graph, config, seeds)
    probed = stack_probes(task, [o.systems[0] for o in together])  # fitted for the stack
    same = []
    for seed, mine, probes in zip(seeds, together, probed):
        alone = train_seeds(task, strategy, graph, config, [seed])[0]
        params = zip(mine.systems[0].parameters(), alone.systems[0].parameters())
        lone_probes = stack_probes(task, [alone.systems[0]])[0]
        same.append(mine.curve == alone.curve and all(torch.equal(p, q) for p, q in params)
                    and probes == lone_probes)
    out["cases"].append({
        "case": f"{name} {text}", "stack": plan.stack, "lone": plan.lone,
        "reason": plan.reason, "stacking": together[0].memory["stacking"],
        "note": together[0].memory.get("stacking_note"), "same": same,
    })
print(json.dumps(out))
"""


def _flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _supported(capability: str) -> bool:
    flags = _flags()
    if capability == "default":
        return True
    if capability == "avx2":
        return {"avx2", "fma"} <= flags
    return {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags


CASES = [
    pytest.param({"ATEN_CPU_CAPABILITY": "default"}, "DEFAULT", id="aten-default"),
    pytest.param({"ATEN_CPU_CAPABILITY": "avx2"}, "AVX2", id="aten-avx2"),
    pytest.param({"ATEN_CPU_CAPABILITY": "avx512"}, "AVX512", id="aten-avx512"),
    pytest.param({"MKL_ENABLE_INSTRUCTIONS": "AVX2"}, None, id="mkl-avx2"),
    pytest.param({"MKL_CBWR": "COMPATIBLE"}, None, id="mkl-cbwr-compatible"),
]


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/cpuinfo; x86 kernel sets")
@pytest.mark.parametrize("env, capability", CASES)
def test_a_seed_trains_to_the_same_bits_stacked_or_alone_under_each_kernel_set(env, capability):
    wanted = env.get("ATEN_CPU_CAPABILITY")
    if wanted is not None and not _supported(wanted):
        pytest.skip(f"this CPU cannot run torch's {wanted} kernels")
    environment = {k: v for k, v in os.environ.items() if k not in env}
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    if capability is not None:
        assert out["capability"] == capability
    for case in out["cases"]:
        # whichever way the guard decided, every seed matches its lone run bit for bit
        assert all(case["same"]), case
        if case["stack"]:
            assert case["stacking"] == "stacked: 3 seeds", case
        else:  # refused: the result says why, in words
            assert case["stacking"].startswith("one at a time"), case
            assert case["reason"] and case["note"], case
    # MLP systems of the shipped tasks stack under every kernel set tried so far
    assert out["cases"][0]["stack"], out["cases"][0]
