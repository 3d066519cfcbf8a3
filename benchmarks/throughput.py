"""Training throughput (examples per second) and achieved FLOP/s against the matmul peak.

For digit-chain (n = 3) and line-parity (k = 3, batch 200), end-to-end training:
- baseline: a plain PyTorch loop written here, the way a researcher would write it (the
  same model and batches, torch.optim.Adam, one seed at a time);
- e2elab: the library's training loop, for 1 seed and for S seeds trained as one batch.

FLOPs of one training step (forward + backward) are counted with torch's FlopCounterMode
on the plain model; achieved FLOP/s = FLOPs per example x examples per second. The peak is
float32 torch.matmul on 1024 x 1024 matrices, measured in the same run.

    python benchmarks/throughput.py [--seeds 1 8 16] [--seconds 8] [--threads N]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from common import matmul_peak_gflops, save, show
from torch.utils.flop_counter import FlopCounterMode

from e2elab import make_task, trace
from e2elab import strategy as strategies
from e2elab.run import first_batch
from e2elab.train import TrainConfig, train_seeds

CASES = {
    "digit-chain n=3": ("digit-chain", {"n": 3}, 64, 3e-3),
    "line-parity k=3": ("line-parity", {"k": 3}, 200, 1e-3),
}


def baseline_loop(task: Any, batch_size: int, lr: float, steps: int, seed: int = 0) -> float:
    """A researcher's loop: model, Adam, sample, forward, loss, backward, step.
    Returns examples per second."""
    torch.manual_seed(seed)
    model = task.build_system()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    output = task.ports[task.output]
    generator = torch.Generator().manual_seed(seed)
    began = 0.0
    for step in range(steps + 3):
        if step == 3:  # warm-up steps excluded
            began = time.perf_counter()
        batch = task.sample(batch_size, generator)
        loss = output.loss(model(batch), batch.targets[task.output])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps * batch_size / (time.perf_counter() - began)


def e2elab_loop(task: Any, batch_size: int, lr: float, examples: int, seeds: int) -> float:
    """The library's loop (strategy e2e), ``seeds`` seeds at once; examples per second
    over all seeds. One evaluation at the end, as a short run would have."""
    graph = trace(task.build_system(), first_batch(task), task.ports)
    strategy = strategies.build("e2e", graph, task.output)
    warm = TrainConfig(budget=3 * batch_size, batch_size=batch_size, lr=lr, evaluations=1, seed=0)
    train_seeds(task, strategy, graph, warm, list(range(seeds)))
    config = TrainConfig(budget=examples, batch_size=batch_size, lr=lr, evaluations=1, seed=0)
    began = time.perf_counter()
    train_seeds(task, strategy, graph, config, list(range(seeds)))
    return seeds * examples / (time.perf_counter() - began)


def step_flops(task: Any, batch_size: int) -> int:
    """FLOPs of one forward + backward pass of the plain model on one batch."""
    torch.manual_seed(0)
    model = task.build_system()
    batch = task.sample(batch_size, torch.Generator().manual_seed(0))
    output = task.ports[task.output]
    with FlopCounterMode(display=False) as counter:
        output.loss(model(batch), batch.targets[task.output]).backward()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--seconds", type=float, default=6.0, help="rough time per measurement")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    peak = matmul_peak_gflops()
    print(f"matmul peak: {peak:.1f} GFLOP/s with {torch.get_num_threads()} threads")
    rows, records = [], []
    for label, (name, knobs, batch_size, lr) in CASES.items():
        task = make_task(name, knobs)
        flops_per_example = step_flops(task, batch_size) / batch_size
        probe = baseline_loop(task, batch_size, lr, steps=5)
        steps = max(10, int(probe * args.seconds / batch_size))
        base = baseline_loop(task, batch_size, lr, steps)
        entries = [("baseline (plain loop)", 1, base)]
        for seeds in args.seeds:
            examples = max(
                batch_size * 10, int(base * args.seconds / seeds) // batch_size * batch_size
            )
            rate = e2elab_loop(task, batch_size, lr, examples, seeds)
            entries.append((f"e2elab, {seeds} seed{'s' if seeds > 1 else ''}", seeds, rate))
        for what, seeds, rate in entries:
            gflops = rate * flops_per_example / 1e9
            rows.append([label, what, rate, rate / base, gflops, gflops / peak])
            records.append(
                {
                    "case": label,
                    "loop": what,
                    "seeds": seeds,
                    "examples_per_second": rate,
                    "speedup_vs_baseline": rate / base,
                    "gflops": gflops,
                    "fraction_of_matmul_peak": gflops / peak,
                }
            )
        print(f"{label}: {flops_per_example / 1e6:.3f} MFLOP per training example")
    show(
        f"training throughput (matmul peak {peak:.1f} GFLOP/s)",
        ["case", "loop", "examples/s", "x baseline", "GFLOP/s", "of peak"],
        rows,
    )
    save("throughput", {"matmul_peak_gflops": peak, "results": records})


if __name__ == "__main__":
    main()
