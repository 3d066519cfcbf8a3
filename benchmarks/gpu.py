"""The throughput, memory and whole-command benchmarks on whatever accelerator is present
(CUDA, else Apple's MPS, else the CPU), writing the same JSON as ``throughput.py``,
``memory.py`` and ``command.py`` (``results/throughput-cuda.json``,
``results/memory-cuda.json``, ``results/command-cuda.json``, ...).

    python benchmarks/gpu.py [--seconds 4] [--seeds 1 8 16] [--command-budget 50000]
"""

from __future__ import annotations

import argparse

import command
import memory
import throughput
import torch


def present() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="rough time per measurement")
    parser.add_argument("--seeds", nargs="+", default=["1", "8", "16"])
    parser.add_argument(
        "--command-budget", type=int, default=50_000, help="examples per seed, whole command"
    )
    args = parser.parse_args()
    device = present()
    print(f"device: {device}" + (f" ({torch.cuda.get_device_name(0)})" if device == "cuda" else ""))
    throughput.main(["--device", device, "--seconds", str(args.seconds), "--seeds", *args.seeds])
    memory.main(["--device", device])
    command.main(["--device", device, "--budget", str(args.command_budget)])


if __name__ == "__main__":
    main()
