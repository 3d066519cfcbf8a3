"""Shared helpers of the benchmark scripts: machine facts, matmul peak, tables, JSON."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from e2elab.numerics import describe

OUT = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "gpu": gpu,
        "cores": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "kernel_env": describe()["env"],
        "load_average": os.getloadavg(),
    }


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it (``platform.processor`` is empty on
    most Linux machines)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sync(device: str = "cpu") -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def matmul_peak_gflops(size: int = 1024, seconds: float = 2.0, device: str = "cpu") -> float:
    """The best GFLOP/s of float32 ``torch.matmul`` on size x size matrices, here and now
    (on an accelerator: 8192 x 8192, and 10 products per timing, so launches do not
    count)."""
    repeat = 1
    if device != "cpu":
        size, repeat = 8192, 10
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    for _ in range(3):
        torch.matmul(a, b)
    sync(device)
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        began = time.perf_counter()
        for _ in range(repeat):
            torch.matmul(a, b)
        sync(device)
        best = max(best, repeat * 2 * size**3 / (time.perf_counter() - began) / 1e9)
    return best


def timed(fn: Callable[[], Any], repeats: int = 3, device: str = "cpu") -> float:
    """The fastest of ``repeats`` wall-clock timings of ``fn()``, in seconds (the
    device's queued work included)."""
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        began = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - began)
    return best


def show(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right" if column != columns[0] else "left")
    for row in rows:
        table.add_row(*[f"{v:,.3g}" if isinstance(v, float) else str(v) for v in row])
    Console(width=160).print(table)


def save(name: str, data: dict[str, Any]) -> Path:
    """Write ``results/NAME.json``: the machine's facts and ``data``."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=1))
    print(f"wrote {path}")
    return path
