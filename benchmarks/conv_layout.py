"""Where line-parity's convnet step goes on the CPU: layout and layer order, side by side.

One training step (forward, backward, Adam) of line-parity's scorer on 600 images (batch
200 at k = 3), on one intra-op thread as e2elab trains, for four variants of the same
network: the contiguous (NCHW) layout or channels-last (``numerics.conv_layout``), and
ReLU before each max-pool (the scorer before issue 19) or after it (now; the two orders
are the same function with the same gradients, the ReLU then touches a quarter of the
values). Each variant's step rate is given against the matmul peak of the same run.

    python benchmarks/conv_layout.py [--repeats 5]
"""

from __future__ import annotations

import argparse

import torch
from common import matmul_peak_gflops, save, show, timed
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from e2elab.numerics import conv_layout
from e2elab.tasks.line_parity import scorer

IMAGES = 600
STEPS = 10


def variant(pool_first: bool, channels_last: bool) -> nn.Module:
    torch.manual_seed(0)
    net = scorer()  # conv, pool, relu, conv, pool, relu, ...
    if not pool_first:
        order = [0, 2, 1, 3, 5, 4, *range(6, len(net))]
        net = nn.Sequential(*[net[i] for i in order])
        for layer in net:
            if isinstance(layer, nn.ReLU):
                layer.inplace = False
    return conv_layout(net, "cpu") if channels_last else net


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    peak = matmul_peak_gflops()
    images = torch.rand(IMAGES, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter:
        variant(True, False)(images).square().mean().backward()
    flops = counter.get_total_flops()
    rows, data = [], []
    for pool_first in (False, True):
        for channels_last in (False, True):
            net = variant(pool_first, channels_last)
            optimizer = torch.optim.Adam(net.parameters(), 1e-3)

            def steps(net: nn.Module = net, optimizer: torch.optim.Optimizer = optimizer) -> None:
                for _ in range(STEPS):
                    loss = net(images).square().mean()
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()

            steps()  # warm-up
            seconds = timed(steps, repeats=args.repeats) / STEPS
            achieved = flops / seconds / 1e9
            name = f"{'pool, relu' if pool_first else 'relu, pool'}; " + (
                "channels-last" if channels_last else "NCHW"
            )
            rows.append([name, f"{seconds * 1e3:.1f}", f"{achieved:.1f}", f"{achieved / peak:.3f}"])
            data.append(
                {
                    "variant": name,
                    "step_seconds": seconds,
                    "gflops": achieved,
                    "of_peak": achieved / peak,
                }
            )
    base = data[0]["step_seconds"]
    for row, item in zip(rows, data, strict=True):
        row.append(f"{base / item['step_seconds']:.2f}")
    show(
        f"line-parity scorer, {IMAGES} images, 1 thread (matmul peak {peak:.1f} GFLOP/s)",
        ["variant", "ms/step", "GFLOP/s", "of 1-thread peak", "x first"],
        rows,
    )
    save("conv_layout", {"peak_gflops_1_thread": peak, "flops_per_step": flops, "rows": data})


if __name__ == "__main__":
    main()
