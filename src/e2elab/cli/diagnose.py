"""``e2elab diagnose snr``: gradient signal-to-noise per module against a knob."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from e2elab.cli.common import _Parser, parse_knobs, wide_console
from e2elab.errors import E2ELabError
from e2elab.paths import writable_folder


def add(commands: Any) -> None:
    """The ``diagnose`` command's parser."""
    diagnose = commands.add_parser("diagnose", help="diagnostics: gradient SNR per module")
    which = diagnose.add_subparsers(title="diagnostics", parser_class=_Parser)
    snr = which.add_parser("snr", help="gradient signal-to-noise per module against a knob")
    snr.add_argument("--task", default="digit-chain", help="task (default digit-chain)")
    snr.add_argument("--knob", action="append", default=[], metavar="NAME=VALUE")
    snr.add_argument(
        "--sweep", required=True, metavar="NAME=V1,V2,...", help="the knob to vary, e.g. n=1,2,3"
    )
    snr.add_argument("--strategy", action="append", default=[], help="default: e2e and hinted")
    snr.add_argument("--inits", type=int, default=3, help="random initialisations (default 3)")
    snr.add_argument("--batches", type=int, default=32, help="mini-batches per init (default 32)")
    snr.add_argument("--batch-size", type=int, help="examples per batch (default: task's)")
    snr.add_argument(
        "--out", type=Path, default=Path("results/snr"), help="folder of the store and figure"
    )
    snr.add_argument("--force", action="store_true", help="measure again what is stored")
    snr.set_defaults(handler=_cmd_snr)


def _cmd_snr(args: argparse.Namespace) -> int:
    from e2elab.diagnostics.sweep import snr_experiment, sweep_snr
    from e2elab.report.snr import snr_figure

    knob, eq, raw = args.sweep.partition("=")
    values = [v.strip() for v in raw.split(",") if v.strip()]
    if not eq or not values:
        raise E2ELabError(
            f"--sweep expects NAME=V1,V2,..., got {args.sweep!r}; e.g. --sweep n=1,2,3"
        )
    fixed = parse_knobs(args.knob, args.task)
    for value in values:
        parse_knobs([*args.knob, f"{knob}={value}"], args.task)
    names = args.strategy or ["e2e", "hinted"]
    experiment = snr_experiment(
        args.task, knob, values, fixed, names, args.inits, args.batches, args.batch_size
    )
    writable_folder(args.out, "--out")
    with Progress(console=Console(stderr=True)) as progress:
        bar = progress.add_task("gradient SNR", total=len(values) * len(names))
        results = sweep_snr(experiment, args.out, lambda: progress.advance(bar), args.force)
    figure = snr_figure(results, knob, args.out / "snr.png")
    table = Table(title=f"log10 gradient SNR at initialisation, {args.task}", title_justify="left")
    columns = ("strategy", knob, "module", "log10 SNR, mean [95% CI] over inits", "noise top dir.")
    for column in columns:
        table.add_column(column)
    for r in results:
        for module in r.per_init:
            _, lo, hi = r.log10_summary(module)
            shares = r.noise_top_share.get(module, [])
            share = f"{sum(shares) / len(shares):.0%}" if shares else "-"
            table.add_row(
                r.strategy,
                str(r.knobs[knob]),
                module,
                f"{r.describe(module)} [{lo:.2f}, {hi:.2f}]",
                share,
            )
    console = wide_console()
    console.print(table)
    if any(r.is_bound(m) for r in results for m in r.per_init):
        console.print(
            "<= : below the resolution of --batches at some init (an upper bound); "
            "more batches resolve smaller SNRs"
        )
    console.print(f"wrote {args.out / 'results.sqlite'}, {args.out / 'snr.json'} and {figure}")
    return 0
