"""``e2elab list``: tasks, strategies and knobs with their defaults."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from e2elab.cli.common import (
    wide_console,
)


def add(commands: Any) -> None:
    """The ``listing`` command's parser."""
    listing = commands.add_parser("list", help="tasks, strategies and knobs with their defaults")
    listing.set_defaults(handler=_cmd_list)


def _cmd_list(args: argparse.Namespace) -> int:
    from e2elab import strategy as strategies
    from e2elab.tasks import TASKS, published

    console = wide_console()
    tasks = Table(title="tasks", title_justify="left")
    for column in ("task", "knob", "default", "meaning"):
        tasks.add_column(column)
    for name, cls in TASKS.items():
        d = cls.defaults
        tasks.add_row(
            name,
            "",
            "",
            f"{cls.description} [dim](budget {d.budget}, batch {d.batch_size}, lr {d.lr}, "
            f"threshold {d.threshold})[/dim]",
        )
        for knob_name, knob in cls.knobs.items():
            tasks.add_row("", knob_name, str(knob.default), knob.help)
    for name, ref in published().items():
        if name not in TASKS:
            tasks.add_row(name, "", "", f"published by an installed package: {ref}")
    console.print(tasks)
    table = Table(title="strategies", title_justify="left")
    for column in ("strategy", "parameters (defaults)", "what it does", "how it spends the budget"):
        table.add_column(column)
    for name, info in strategies.STRATEGIES.items():
        params = ", ".join(
            f"{k}={info.defaults[k]}" if k in info.defaults else f"{k} ({v.__name__})"
            for k, v in info.params.items()
        )
        table.add_row(name, params or "-", info.help, info.schedule)
    console.print(table)
    console.print(strategies.COMMON_HELP)
    return 0
