"""Runs of older code kept apart from the current ones.

A store keeps every run it was given. When a task's code (or e2elab's spec version)
changes, new runs get new ids and train again, and the old ones stay: read together,
they would pool as extra seeds of the same cell. Here a run is *superseded* when a run
of the same cell (the same spec but for its seed and code) was stored later under other
code; the current code version of a cell is that of its most recently stored run.
"""

from __future__ import annotations

import dataclasses
import json

from e2elab.records import RunResult

# spec fields that do not make a cell: the seed, the code, and settings that change no
# result or only how it is judged
_NOT_THE_CELL = ("seed", "code", "version", "device", "threshold", "save_modules", "load_from")


def cell_key(result: RunResult) -> str:
    spec = {k: v for k, v in result.spec.to_dict().items() if k not in _NOT_THE_CELL}
    return json.dumps(spec, sort_keys=True, default=str)


def split(results: list[RunResult]) -> tuple[list[RunResult], list[RunResult]]:
    """(current, superseded), each in the given order, which must be the order the runs
    were stored in (``Store.results`` gives it)."""
    latest: dict[str, str] = {}
    for result in results:
        latest[cell_key(result)] = result.code_version
    current, old = [], []
    for result in results:
        (current if latest[cell_key(result)] == result.code_version else old).append(result)
    return current, old


def labelled(results: list[RunResult]) -> list[RunResult]:
    """Every run, the superseded ones under their own strategy label
    (``e2e [older code 5/0.1.0]``): shown beside the current ones, never pooled with
    them, and matched by no claim that names the strategy."""
    _, old = split(results)
    stale = {id(r) for r in old}
    out = []
    for result in results:
        if id(result) in stale:
            label = f"{result.spec.strategy} [older code {result.code_version}]"
            result = dataclasses.replace(result, spec=result.spec.relabelled(label))
        out.append(result)
    return out


def left_out_note(count: int, what: str) -> str:
    return (
        f"{what}: left out {count} run{'s' if count != 1 else ''} of older code (a task or "
        "e2elab changed since they were trained); --all-versions shows them, labelled, and "
        "'e2elab prune STORE' drops them"
    )
