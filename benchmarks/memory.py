"""Peak training-step memory per strategy on a deep system (digit-chain, n = 8).

Module-wise strategies back-propagate through one module at a time, so they need only
that module's activations; end-to-end keeps the whole chain's. For each strategy, the
library measures every phase's first step on a copy of the system: the bytes autograd
saves for backward (activations, counted with saved_tensors_hooks) and an estimate of
the whole step (parameters, plus gradients and two Adam moments of what trains, plus the
activations). The table gives the largest phase of each strategy and its ratio to e2e.

On CUDA (``--device cuda``, or ``benchmarks/gpu.py``) each strategy's run also gives
the device's peak allocated bytes (``torch.cuda.max_memory_allocated``), and the JSON goes
to ``results/memory-DEVICE.json``.

    python benchmarks/memory.py [--n 8] [--batch-size 64] [--device cpu]
"""

from __future__ import annotations

import argparse

import torch
from common import save, show

from e2elab import make_task, trace
from e2elab import strategy as strategies
from e2elab.execution import execute, first_batch, make_spec


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or mps")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    task = make_task("digit-chain", {"n": args.n})
    graph = trace(task.build_system(), first_batch(task), task.ports)
    names = [
        s
        for text in strategies.STRATEGIES
        if text != "blackbox"
        for s in strategies.expand(text, list(graph.modules))
    ]
    # frozen_others gives one strategy per module: keep the first and the last
    frozen = [s for s in names if s.startswith("frozen_others")]
    names = [s for s in names if s not in frozen[1:-1]]
    measured = {}
    for name in names:
        strategy = strategies.build(name, graph, task.output)
        budget = args.batch_size * len(strategy.phases) * 4  # a few steps per phase
        spec = make_spec(
            task,
            name,
            budget=budget,
            batch_size=args.batch_size,
            evaluations=1,
            device=args.device,
        )
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        phases = execute(spec).memory["phases"]
        measured[name] = {
            "activation_bytes": max(p["activation_bytes"] for p in phases),
            "step_bytes_estimate": max(p["step_bytes_estimate"] for p in phases),
            "phases": len(phases),
        }
        if cuda:  # the whole run: test set, evaluations, probes included
            measured[name]["device_peak_bytes"] = torch.cuda.max_memory_allocated()
    base = measured["e2e"]
    rows, records = [], []
    for name, m in measured.items():
        act = m["activation_bytes"] / base["activation_bytes"]
        step = m["step_bytes_estimate"] / base["step_bytes_estimate"]
        kib = m["activation_bytes"] / 1024
        rows.append([name, m["phases"], kib, act, m["step_bytes_estimate"] / 1024, step])
        records.append(
            {"strategy": name, **m, "activation_ratio_to_e2e": act, "step_ratio_to_e2e": step}
        )
        if cuda:
            rows[-1].append(m["device_peak_bytes"] / 1024)
    columns = ["strategy", "phases", "activations KiB", "x e2e", "whole step KiB", "x e2e"]
    show(
        f"peak step memory on {args.device}, digit-chain n={args.n}, batch {args.batch_size} "
        "(largest phase)",
        columns + (["device peak KiB (run)"] if cuda else []),
        rows,
    )
    name = "memory" if args.device == "cpu" else f"memory-{args.device}"
    data = {"device": args.device, "n": args.n, "batch_size": args.batch_size}
    save(name, {**data, "results": records})


if __name__ == "__main__":
    main()
