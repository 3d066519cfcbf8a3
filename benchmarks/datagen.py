"""Data generation rate per task: training examples per second drawn by ``task.sample``
(at each task's default batch size), and for pentomino the one-off generation of a fixed
training set (images per second, without the disk cache).

    python benchmarks/datagen.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import time

import torch
from common import save, show

from e2elab import make_task
from e2elab.tasks import TASKS
from e2elab.tasks import pentomino as pm

SMALL_PENTOMINO = {"train_size": 2000, "test_size": 400}


def sample_rate(name: str, seconds: float) -> tuple[int, float]:
    knobs = SMALL_PENTOMINO if name == "pentomino" else {}
    task = make_task(name, knobs)
    batch = type(task).defaults.batch_size
    task.test_set()  # built once, outside the timing
    task.sample(batch, torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    drawn, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        drawn += len(task.sample(batch, generator))
    return batch, drawn / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--pentomino-images", type=int, default=40_000)
    args = parser.parse_args()
    rows, records = [], []
    for name in sorted(TASKS):
        batch, rate = sample_rate(name, args.seconds)
        rows.append([name, "task.sample", batch, rate])
        records.append({"task": name, "what": "sample", "batch_size": batch, "per_second": rate})
    began = time.perf_counter()
    pm.generate("train", args.pentomino_images, seed=12345)
    seconds = time.perf_counter() - began
    rate = args.pentomino_images / seconds
    rows.append(["pentomino", f"generate {args.pentomino_images:,} images", "-", rate])
    records.append(
        {
            "task": "pentomino",
            "what": "generate",
            "images": args.pentomino_images,
            "seconds": seconds,
            "per_second": rate,
        }
    )
    show("data generation", ["task", "what", "batch", "examples/s"], rows)
    save("datagen", {"results": records})


if __name__ == "__main__":
    main()
