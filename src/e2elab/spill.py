"""Finished runs the store could not take (a full disk, a store made read-only during a
sweep) are written to a spill file instead of being lost, and the next command that
writes to that store imports them.

The spill file is JSON lines, one run a line (the result, its experiment, and any saved
modules' bytes in base64), beside the store as ``results.sqlite.unstored.jsonl``, or,
where that folder cannot be written either, in the user's cache folder under a name
derived from the store's absolute path.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

from e2elab.records import RunResult

SUFFIX = ".unstored.jsonl"


def _cache_file(store: Path) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    key = hashlib.sha256(str(store.resolve()).encode()).hexdigest()[:16]
    return cache / "e2elab" / "unstored" / f"{store.name}-{key}{SUFFIX}"


def candidates(store: Path) -> list[Path]:
    """Where runs that ``store`` could not take may wait: beside it, then the cache."""
    return [store.with_name(store.name + SUFFIX), _cache_file(store)]


def spill(store: Path, results: list[RunResult], experiment: str | None) -> Path | None:
    """Append ``results`` to the first spill file that takes them whole; its path, or
    None where none could be written (then nothing was)."""
    lines = "".join(_line(result, experiment) + "\n" for result in results)
    for path in candidates(store):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as file:
                file.write(lines)
                file.flush()
                os.fsync(file.fileno())
            return path
        except OSError:
            continue
    return None


def _line(result: RunResult, experiment: str | None) -> str:
    modules = {k: base64.b64encode(v).decode() for k, v in result.checkpoints.items()}
    return json.dumps({"experiment": experiment, "result": result.to_dict(), "modules": modules})


def waiting(store: Path) -> list[Path]:
    """The spill files of ``store`` that exist."""
    return [p for p in candidates(store) if p.is_file()]


def read(path: Path) -> tuple[list[tuple[RunResult, str | None]], int]:
    """The runs in a spill file, and how many of its lines could not be read (a line cut
    short when the disk filled while it was written)."""
    runs, broken = [], 0
    for text in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not text.strip():
            continue
        try:
            data = json.loads(text)
            result = RunResult.from_dict(data["result"])
            result.checkpoints = {
                k: base64.b64decode(v) for k, v in data.get("modules", {}).items()
            }
            runs.append((result, data.get("experiment")))
        except (ValueError, KeyError, TypeError):
            broken += 1
    return runs, broken
