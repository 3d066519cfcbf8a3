"""``e2elab prune``: drop the runs of older code that later runs replaced."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.table import Table

from e2elab.cli.common import (
    _plural,
    wide_console,
)


def add(commands: Any) -> None:
    """The ``prune`` command's parser."""
    prune = commands.add_parser(
        "prune", help="drop the runs of older code that later runs of the same cell replaced"
    )
    prune.add_argument("store", type=Path, help="a results.sqlite file")
    prune.add_argument(
        "--dry-run", action="store_true", help="say what would be dropped, drop nothing"
    )
    prune.set_defaults(handler=_cmd_prune)


def _cmd_prune(args: argparse.Namespace) -> int:
    from e2elab import versions
    from e2elab.store import Store

    with Store(args.store, readonly=args.dry_run, create=False) as store:
        _, old = versions.split(store.results())
        if not old:
            print(f"{args.store}: no runs of older code; nothing to drop")
            return 0
        counts: dict[tuple[str, str], int] = {}
        for result in old:
            key = (result.spec.strategy, result.code_version)
            counts[key] = counts.get(key, 0) + 1
        table = Table(title=f"runs of older code in {args.store}", title_justify="left")
        for column in ("strategy", "code", "runs"):
            table.add_column(column)
        for (strategy, code), count in sorted(counts.items()):
            table.add_row(strategy, code, str(count))
        wide_console().print(table)
        if args.dry_run:
            print(f"would drop {_plural(len(old), 'run')} (--dry-run: nothing dropped)")
            return 0
        store.drop([r.id for r in old])
    print(f"dropped {_plural(len(old), 'run')} of older code from {args.store}")
    return 0
