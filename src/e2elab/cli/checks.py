"""``e2elab checks``: every claim check, its parameters, and what a PASS means."""

from __future__ import annotations

import argparse
from typing import Any

from rich.markup import escape
from rich.table import Table

from e2elab.cli.common import (
    wide_console,
)
from e2elab.errors import choices


def add(commands: Any) -> None:
    """The ``checks`` command's parser."""
    checks = commands.add_parser(
        "checks", help="every claim check: its parameters, their types, what a PASS means"
    )
    checks.add_argument("name", nargs="?", help="one check (default: all)")
    checks.add_argument(
        "--markdown", action="store_true", help="as docs/checks.md (generated from the code)"
    )
    checks.set_defaults(handler=_cmd_checks)


def _cmd_checks(args: argparse.Namespace) -> int:
    from e2elab.checkdoc import documented, markdown

    docs = documented()
    if args.name is not None and args.name not in {d.name for d in docs}:
        raise choices("check", args.name, [d.name for d in docs])
    if args.markdown:
        print(markdown(args.name), end="")
        return 0
    table = Table(title="claim checks (docs/checks.md has the conventions)", show_lines=True)
    for column in ("check", "parameters (type = default)", "PASS means"):
        table.add_column(column, overflow="fold")
    for doc in docs:
        if args.name is not None and doc.name != args.name:
            continue
        params = "\n".join(
            f"{p.name}: {p.type}" + ("" if p.default is None else f" = {p.default}")
            for p in doc.parameters
        )
        if doc.aliases:
            params += "\n(earlier: " + ", ".join(f"{o} = {n}" for o, n in doc.aliases) + ")"
        meaning = doc.summary + (f"\n\n{doc.details}" if args.name and doc.details else "")
        table.add_row(doc.name, escape(params), escape(meaning))  # list[str] is no style tag
    wide_console().print(table)
    return 0
