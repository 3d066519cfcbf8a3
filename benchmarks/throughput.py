"""Training throughput (examples per second) and achieved FLOP/s against the matmul peak.

For digit-chain (n = 3) and line-parity (k = 3, batch 200), end-to-end training:
- baseline: a plain PyTorch loop written here, the way a researcher would write it (the
  same model and batches, torch.optim.Adam, one seed at a time);
- e2elab: the library's training loop, for 1 seed and for S seeds: stacked (one vmapped
  computation), and as the library chooses by itself (stacked or one by one, timed).
  Its rate is the steady state; a run's fixed cost (setup, evaluations, memory probe)
  is given apart, in seconds.

The plain loop runs first, with glibc's default allocator settings, as a script would;
then e2elab's allocator setting (e2elab/allocator.py) is applied to the process, and the
plain loop is timed again under it ("allocator kept") before the library's loops.

FLOPs of one training step (forward + backward) are counted with torch's FlopCounterMode
on the plain model; achieved FLOP/s = FLOPs per example x examples per second. The peak is
float32 torch.matmul on 1024 x 1024 matrices, measured in the same run, twice: with
torch's threads (what the plain loop uses) and with one thread. e2elab trains every run
on one intra-op thread (fixed numerics; a sweep's other cores train other runs), so its
rows are also given against the one-thread peak ("of 1-thread peak").

On an accelerator (``--device cuda``; ``benchmarks/gpu.py`` runs it on whatever is
present) both loops train there, the peak is the device's float32 matmul, and the JSON
goes to ``results/throughput-DEVICE.json``.

    python benchmarks/throughput.py [--seeds 1 8 16] [--seconds 8] [--threads N]
                                    [--device cpu]
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from common import matmul_peak_gflops, save, show, sync, timed
from torch.utils.flop_counter import FlopCounterMode

from e2elab import make_task, replicas, trace
from e2elab import strategy as strategies
from e2elab.allocator import keep_freed_memory
from e2elab.execution import first_batch
from e2elab.records import Settings
from e2elab.train import train_seeds

CASES = {
    "digit-chain n=3": ("digit-chain", {"n": 3}, 64, 3e-3),
    "line-parity k=3": ("line-parity", {"k": 3}, 200, 1e-3),
}


def _loss(task: Any, value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The loss a researcher would write for the task's output: cross-entropy or hinge."""
    if task.ports[task.output].port_kind.name == "binary":
        return F.relu(1 - value.reshape(target.shape) * target.to(value.dtype)).mean()
    return F.cross_entropy(value, target)


def baseline_loop(
    task: Any, batch_size: int, lr: float, steps: int, seed: int = 0, device: str = "cpu"
) -> float:
    """A researcher's loop: model, Adam, sample, (move to the device), forward, loss,
    backward, step. Returns examples per second (best of two timings, after 3 warm-up
    steps)."""
    torch.manual_seed(seed)
    model = task.build_system().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)

    def steps_of(count: int) -> None:
        for _ in range(count):
            batch = task.sample(batch_size, generator).to(device)
            loss = _loss(task, model(batch), batch.targets[task.output])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    steps_of(3)
    sync(device)
    return steps * batch_size / timed(lambda: steps_of(steps), repeats=2, device=device)


def e2elab_loop(
    task: Any,
    batch_size: int,
    lr: float,
    examples: int,
    seeds: int,
    batch: bool | None,
    device: str = "cpu",
    lone: str | None = None,
) -> tuple[float, float, bool]:
    """The library's loop (strategy e2e) for ``seeds`` seeds, stacked (``batch`` True),
    one by one (False) or as the library chooses (None).

    Returns the steady-state examples per second over all seeds, the fixed seconds of a
    run (setup, the evaluations at start and end, the memory probe), and whether the
    seeds were stacked. Rate and fixed cost come from a short and a long run: the rate
    is their difference in examples over their difference in time."""
    graph = trace(task.build_system(), first_batch(task), task.ports)
    strategy = strategies.build("e2e", graph, task.output)
    stacked = False
    if lone is not None:  # force the code a lone seed trains through (plain or a stack)
        plan = replicas.plan_seeds(
            task, strategy, graph, "adam", lr, batch_size, torch.device(device)
        )
        forced = dataclasses.replace(plan, lone=lone)
        replicas._PLANS.update({k: forced for k, v in replicas._PLANS.items() if v is plan})

    def run(budget: int) -> None:
        nonlocal stacked
        config = Settings(budget=budget, batch_size=batch_size, lr=lr, evaluations=1, device=device)
        outcomes = train_seeds(task, strategy, graph, config, list(range(seeds)), batch=batch)
        stacked = "seeds_batched" in outcomes[0].memory
        if lone is not None:
            how = outcomes[0].memory["stacking"]
            assert ("(plain)" if lone == "plain" else "stack of one") in how, how

    short = 3 * batch_size
    run(short)  # warm-up
    t_short = timed(lambda: run(short), repeats=2, device=device)
    t_long = timed(lambda: run(short + examples), repeats=2, device=device)
    rate = seeds * examples / max(t_long - t_short, 1e-9)
    fixed = max(0.0, t_short - seeds * short / rate)
    return rate, fixed, stacked


def step_flops(task: Any, batch_size: int) -> int:
    """FLOPs of one forward + backward pass of the plain model on one batch."""
    torch.manual_seed(0)
    model = task.build_system()
    batch = task.sample(batch_size, torch.Generator().manual_seed(0))
    output = task.ports[task.output]
    with FlopCounterMode(display=False) as counter:
        output.loss(model(batch), batch.targets[task.output]).backward()
    return counter.get_total_flops()


def _label(seeds: int, mode: bool | None, stacked: bool, lone: str | None = None) -> str:
    if seeds == 1:
        return "e2elab, 1 seed" + ("" if lone is None else f" ({lone} code)")
    how = "stacked" if mode else f"auto: {'stacked' if stacked else 'one by one'}"
    return f"e2elab, {seeds} seeds, {how}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--seconds", type=float, default=6.0, help="rough time per measurement")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or mps")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    peak = matmul_peak_gflops(device=device)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    core_peak = matmul_peak_gflops(device=device)
    torch.set_num_threads(threads)
    print(
        f"matmul peak on {device}: {peak:.1f} GFLOP/s ({threads} threads), "
        f"{core_peak:.1f} GFLOP/s (1 thread)"
    )
    rows, records = [], []
    tasks = {label: make_task(name, knobs) for label, (name, knobs, _, _) in CASES.items()}
    plain = {}  # the baseline as a plain script runs: glibc's default allocator settings
    for label, (_, _, batch_size, lr) in CASES.items():
        probe = baseline_loop(tasks[label], batch_size, lr, steps=5, device=device)
        steps = max(10, int(probe * args.seconds / batch_size))
        plain[label] = (steps, baseline_loop(tasks[label], batch_size, lr, steps, device=device))
    keep_freed_memory()  # what e2elab does when it trains (see e2elab/allocator.py)
    for label, (_, _, batch_size, lr) in CASES.items():
        task = tasks[label]
        flops_per_example = step_flops(task, batch_size) / batch_size
        steps, base = plain[label]
        entries = [
            ("baseline (plain loop)", 1, base, None),
            (
                "baseline, allocator kept",
                1,
                baseline_loop(task, batch_size, lr, steps, device=device),
                None,
            ),
        ]
        for seeds in args.seeds:
            examples = max(
                batch_size * 10, int(base * args.seconds / seeds) // batch_size * batch_size
            )
            if seeds == 1:  # as the library chooses, then each code path forced
                for lone in (None, "plain", "stack"):
                    rate, fixed, stacked = e2elab_loop(
                        task, batch_size, lr, examples, 1, None, device, lone
                    )
                    entries.append((_label(1, None, stacked, lone), 1, rate, fixed))
                continue
            for mode in [True, None]:
                rate, fixed, stacked = e2elab_loop(
                    task, batch_size, lr, examples, seeds, mode, device
                )
                entries.append((_label(seeds, mode, stacked), seeds, rate, fixed))
        for what, seeds, rate, fixed in entries:
            gflops = rate * flops_per_example / 1e9
            fixed_text = "-" if fixed is None else f"{fixed:.2f}"
            one = "-" if what.startswith("baseline") else f"{gflops / core_peak:.3f}"
            rows.append([label, what, rate, rate / base, gflops, gflops / peak, one, fixed_text])
            records.append(
                {
                    "case": label,
                    "loop": what,
                    "seeds": seeds,
                    "examples_per_second": rate,
                    "speedup_vs_baseline": rate / base,
                    "gflops": gflops,
                    "fraction_of_matmul_peak": gflops / peak,
                    "fraction_of_one_thread_peak": gflops / core_peak,
                    "fixed_seconds_per_run": fixed,
                }
            )
        print(f"{label}: {flops_per_example / 1e6:.3f} MFLOP per training example")
    show(
        f"training throughput on {device} (matmul peak {peak:.1f} GFLOP/s, "
        f"1 thread {core_peak:.1f})",
        [
            "case",
            "loop",
            "examples/s",
            "x baseline",
            "GFLOP/s",
            "of peak",
            "of 1-thread peak",
            "fixed s/run",
        ],
        rows,
    )
    name = "throughput" if device == "cpu" else f"throughput-{device}"
    data = {"device": device, "matmul_peak_gflops": peak, "one_thread_peak_gflops": core_peak}
    save(name, {**data, "results": records})


if __name__ == "__main__":
    main()
