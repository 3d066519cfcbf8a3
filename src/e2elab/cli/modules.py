"""``e2elab modules``: list or export the modules runs saved."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.table import Table

from e2elab.cli.common import (
    _Parser,
    wide_console,
)
from e2elab.paths import not_a_store, writable_file


def add(commands: Any) -> None:
    """The ``modules`` command's parser."""
    modules = commands.add_parser("modules", help="list or export the modules runs saved")
    actions = modules.add_subparsers(title="actions", parser_class=_Parser)
    listed = actions.add_parser("list", help="the runs of a store that saved modules")
    listed.add_argument("store", type=Path, help="a results.sqlite file")
    listed.set_defaults(handler=_cmd_modules_list)
    exported = actions.add_parser("export", help="write one saved module as a checkpoint file")
    exported.add_argument("store", type=Path, help="a results.sqlite file")
    exported.add_argument("run_id", help="the run's id (or a unique prefix of it)")
    exported.add_argument("module", help="the module's name, e.g. recognizer")
    exported.add_argument("-o", "--output", type=Path, required=True, help=".safetensors file")
    exported.set_defaults(handler=_cmd_modules_export)


def _cmd_modules_list(args: argparse.Namespace) -> int:
    from e2elab.store import Store

    with Store(args.store, readonly=True) as store:
        saved = store.saved_modules()
        results = {r.id: r for r in store.results_by_id(list(saved))}
    if not saved:
        print(f"{args.store}: no run saved modules; train with --save-modules")
        return 0
    table = Table("run", "task", "knobs", "strategy", "seed", "modules")
    for run_id, names in saved.items():
        if run_id not in results:  # its modules outlived the run's row
            table.add_row(run_id, "?", "", "?", "?", ", ".join(names))
            continue
        spec = results[run_id].spec
        knobs = ", ".join(f"{k}={v}" for k, v in spec.knobs.items())
        table.add_row(run_id, spec.task, knobs, spec.strategy, str(spec.seed), ", ".join(names))
    wide_console().print(table)
    return 0


def _cmd_modules_export(args: argparse.Namespace) -> int:
    from e2elab.checkpoints import decode
    from e2elab.store import Store

    with Store(args.store, readonly=True) as store:
        data = store.checkpoint(args.run_id, args.module)
    decode(data, f"run {args.run_id}")  # never write out what would not load
    writable_file(args.output, "-o")
    not_a_store(args.output, "-o", args.store)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.output.with_name(args.output.name + ".part")
    temporary.write_bytes(data)
    temporary.replace(args.output)
    print(f"{args.output}: module {args.module} of run {args.run_id}, {len(data):,} bytes")
    return 0
