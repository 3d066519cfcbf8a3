"""``e2elab export``: a store's runs or curves as a table, or to MLflow or TensorBoard."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from e2elab.cli.common import (
    _plural,
    _versions,
    _versions_flag,
)
from e2elab.errors import choices
from e2elab.paths import not_a_store, writable_file, writable_folder


def add(commands: Any) -> None:
    """The ``export`` command's parser."""
    export = commands.add_parser("export", help="write a store's runs or curves as a table")
    export.add_argument("store", type=Path, help="a results.sqlite file")
    export.add_argument("--format", default="csv", help="csv (default), parquet or json")
    export.add_argument(
        "--table", default="runs", help="runs (one row per run, default) or curves (long form)"
    )
    export.add_argument("--experiment", help="only this experiment's runs")
    export.add_argument(
        "--to",
        default="table",
        help="table (default: a file in --format), mlflow (a local MLflow store in the folder "
        "-o) or tensorboard (event files in the folder -o)",
    )
    _versions_flag(export, "with --to mlflow|tensorboard: ")
    export.add_argument(
        "-o", "--output", type=Path, required=True, help="file to write (a folder with --to)"
    )
    export.set_defaults(handler=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from e2elab.query import export

    if args.to != "table":
        return _export_tracking(args)
    writable_file(args.output, "-o")
    not_a_store(args.output, "-o", args.store)
    rows = export(args.store, args.format, args.output, args.table, args.experiment)
    print(f"wrote {rows} {args.table} rows to {args.output}")
    return 0


def _export_tracking(args: argparse.Namespace) -> int:
    """``export --to mlflow|tensorboard``: every experiment's runs (of the current code,
    unless --all-versions) into a tracking folder."""
    from e2elab import tracking
    from e2elab.store import Store

    if args.to not in tracking.TARGETS:
        raise choices("export target (--to)", args.to, ["table", *tracking.TARGETS])
    writable_folder(args.output, "-o")
    with Store(args.store, readonly=True) as store:
        stored = list(store.experiments())
        names = [args.experiment] if args.experiment else stored
        pairs = []
        for name in names:
            if name not in stored:
                raise choices(f"experiment in {args.store}", name, stored)
            runs, _ = _versions(store.results(name), args, name)
            pairs += [(name, run) for run in runs]
    count = tracking.export_runs(pairs, args.to, args.output)
    how = "mlflow ui --backend-store-uri" if args.to == "mlflow" else "tensorboard --logdir"
    print(f"wrote {_plural(count, 'run')} to {args.output} ({args.to}); view: {how} {args.output}")
    return 0
