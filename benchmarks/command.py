"""Seed batching as the user feels it: one whole ``e2elab run`` command, batched against
``--no-batch-seeds``, side by side in one run of this script.

Each command trains S seeds of one spec into a fresh store, in its own process, exactly
as a user would type it; the wall time includes start-up, set-up, evaluations, linear
probes, the memory probe and writing the store. Both commands must store the same
numbers (seed batching changes the time, not the results): the script checks that every
seed's final metrics agree and says so.

Each command writes where its time went (``time_split.json``: training steps,
evaluation, probes, set-up, idle workers...). The ceiling of the speed-up is the
one-by-one time divided by the batched command's training steps alone, as wall time (its
workers' training seconds over its workers: what stacking would give if nothing but
training took time); the JSON has both splits, the ceiling and the share of it reached.

    python benchmarks/command.py [--seeds 16] [--budget 200000] [--task digit-chain]
                                 [--knob n=3] [--strategy e2e] [--repeats 1]
                                 [--device cpu]

On an accelerator (``--device cuda``) both commands train there and the JSON goes to
``results/command-DEVICE.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import save, show

from e2elab.store import Store


def command(args: argparse.Namespace, out: Path, batched: bool) -> list[str]:
    line = [sys.executable, "-m", "e2elab", "run", "--task", args.task, "--strategy"]
    line += [args.strategy, "--seeds", str(args.seeds), "--budget", str(args.budget)]
    line += ["--out", str(out), "--device", args.device]
    for knob in args.knob:
        line += ["--knob", knob]
    return line + ([] if batched else ["--no-batch-seeds"])


def timed_command(line: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(line, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def finals(out: Path) -> dict[int, dict[str, float]]:
    return {r.spec.seed: r.final for r in Store(out / "results.sqlite").results()}


def largest_gap(a: dict[int, dict[str, float]], b: dict[int, dict[str, float]]) -> float:
    """The largest difference of one final metric of one seed between two stores."""
    if a.keys() != b.keys():
        return math.inf
    gaps = [abs(a[s][k] - b[s].get(k, math.inf)) for s in a for k in a[s]]
    return math.inf if any(math.isnan(g) for g in gaps) else max(gaps, default=0.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digit-chain")
    parser.add_argument("--knob", action="append", default=None)
    parser.add_argument("--strategy", default="e2e")
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--budget", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or mps")
    args = parser.parse_args(argv)
    args.knob = args.knob if args.knob is not None else ["n=3"]
    times: dict[str, list[float]] = {"batched": [], "one by one": []}
    splits: dict[str, list[dict]] = {"batched": [], "one by one": []}
    same, gap = True, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            stores = {}
            for name, batched in (("one by one", False), ("batched", True)):
                out = Path(tmp) / f"{name.replace(' ', '-')}-{repeat}"
                times[name].append(timed_command(command(args, out, batched)))
                splits[name].append(json.loads((out / "time_split.json").read_text()))
                stores[name] = finals(out)
            same = same and stores["batched"] == stores["one by one"]
            gap = max(gap, largest_gap(stores["batched"], stores["one by one"]))
    best = {name: min(values) for name, values in times.items()}
    ratio = best["one by one"] / best["batched"]
    fastest = {name: values.index(min(values)) for name, values in times.items()}
    split = {name: splits[name][fastest[name]] for name in times}
    # the batched command's training steps as wall time: its workers' training seconds
    # over its workers (what it would take if it did nothing else, on every worker)
    training = split["batched"]["seconds"]["training"] / split["batched"]["workers"]
    ceiling = best["one by one"] / training if training > 0 else math.inf
    case = f"{args.task} {' '.join(args.knob)} {args.strategy}, {args.seeds} seeds, {args.budget:,}"
    case += f" on {args.device}"
    show(
        f"e2elab run, whole command ({case}); best of {args.repeats}",
        ["mode", "wall s", "speed-up"],
        [
            ["--no-batch-seeds", best["one by one"], 1.0],
            ["batched (default)", best["batched"], ratio],
        ],
    )
    print(
        f"batched {ratio:.2f}x against a ceiling of {ceiling:.2f}x (one by one / the batched "
        f"command's training steps, {training:.1f} s of wall time on each worker): "
        f"{100 * ratio / ceiling:.0f}% of it"
    )
    for name in ("one by one", "batched"):
        shares = split[name]["shares"]
        listed = ", ".join(f"{k} {100 * v:.0f}%" for k, v in shares.items() if v >= 0.005)
        workers, wall = split[name]["workers"], split[name]["wall_seconds"]
        print(f"  {name}: {listed} of {workers} x {wall:.1f} s")
    print(f"same stored results per seed: {'yes' if same else 'NO'}; largest gap {gap:.3g}")
    save(
        "command" if args.device == "cpu" else f"command-{args.device}",
        {
            "case": case,
            "command": " ".join(command(args, Path("OUT"), True)[1:]),
            "seconds": times,
            "speedup": ratio,
            "ceiling": ceiling,
            "share_of_ceiling": ratio / ceiling,
            "time_split": split,
            "same_results": same,
            "largest_gap": gap,
        },
    )
    # bit for bit on the CPU; on an accelerator kernels may round differently with the
    # batch of seeds, so the gap is reported, not required to be 0
    if not same and args.device == "cpu":
        sys.exit("batched and one-by-one runs stored different numbers")


if __name__ == "__main__":
    main()
