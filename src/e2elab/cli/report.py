"""``e2elab report``: claims and figures from results stores."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from e2elab import experiment as experiments
from e2elab.cli.common import (
    _versions,
    _versions_flag,
    claims_table,
    wide_console,
)
from e2elab.errors import E2ELabError, choices
from e2elab.paths import writable_folder


def add(commands: Any) -> None:
    """The ``report`` command's parser."""
    report = commands.add_parser("report", help="claims and figures from a results store")
    report.add_argument(
        "store",
        type=Path,
        nargs="+",
        help="results.sqlite files; with several, one page each under OUT and an index",
    )
    report.add_argument("-o", "--out", type=Path, required=True, help="folder for the report")
    report.add_argument("--experiment", help="report only this experiment in the store")
    _versions_flag(report)
    report.set_defaults(handler=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from e2elab.report.build import build_report
    from e2elab.report.index import write_index
    from e2elab.report.page import slug

    console = wide_console()
    writable_folder(args.out, "-o")
    if len({Path(path).resolve() for path in args.store}) != len(args.store):
        raise E2ELabError("the same store is named twice; name each store once")
    loaded = [_report_parts(path, args.experiment, args) for path in args.store]  # all, first
    if len(loaded) == 1:
        names, parts = loaded[0]
        title = f"e2elab report: {', '.join(names)}"
        report = build_report(parts, args.out, title)
        console.print(claims_table(report.verdicts, ", ".join(names)))
        console.print(f"report: {report.markdown} ({len(report.figures)} figures)")
        return 0
    pages = []
    used: set[str] = set()
    for path, (names, parts) in zip(args.store, loaded, strict=True):
        # a folder name safe in a URL and on any disk, never the index's own name
        label = slug(Path(path).resolve().parent.name or "store")
        folder, k = label, 2
        while folder in used:
            folder, k = f"{label}-{k}", k + 1
        used.add(folder)
        title = f"e2elab report: {', '.join(names)}"
        report = build_report(parts, args.out / folder, title)
        pages.append((f"{', '.join(names)} ({path})", f"{folder}/report.html", report.rows))
        console.print(claims_table(report.verdicts, ", ".join(names)))
    index = write_index(args.out / "index.html", "e2elab reports", pages)
    console.print(f"index: {index} ({len(pages)} reports)")
    return 0


def _report_parts(
    path: Path, only: str | None, args: argparse.Namespace
) -> tuple[list[str], list[Any]]:
    """The experiments of one store, ready for ``build_report`` (a bad store or an
    unknown experiment is refused here, before any page is written)."""
    from e2elab.records import SNRResult
    from e2elab.report.build import Part
    from e2elab.store import Store

    with Store(path, readonly=True) as store:
        stored = store.experiments()
        if not stored:
            raise E2ELabError(f"{path} holds no experiment; run 'e2elab reproduce' first")
        names = [only] if only else list(stored)
        parts = []
        for name in names:
            if name not in stored:
                raise choices(f"experiment in {path}", name, list(stored))
            where = f"{path}: the stored definition of {name!r}"
            experiment = experiments.validated(stored[name], where)
            snr = [SNRResult(**r) for r in store.snr(name).values()]
            sources = experiments.source_labels(experiment, store)
            runs, left_out = _versions(store.results(name), args, name)
            parts.append(Part(experiment, runs, snr, sources, left_out))
    return names, parts
