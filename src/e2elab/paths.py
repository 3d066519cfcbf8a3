"""Output paths checked before anything trains or is written, so an output problem never
costs a trained run: each problem is one line naming the path, the flag and the fix."""

from __future__ import annotations

import os
from pathlib import Path

from e2elab.errors import E2ELabError


def writable_folder(path: Path, flag: str) -> Path:
    """``path`` is, or can be made, a folder this process can write into."""
    if path.exists() and not path.is_dir():
        raise E2ELabError(f"{flag} {path} is a file, not a folder; give a folder")
    _writable(_existing(path), path, flag)
    return path


def writable_file(path: Path, flag: str) -> Path:
    """``path`` can be written as a file (its folder exists or can be made)."""
    if path.is_dir():
        raise E2ELabError(f"{flag} {path} is a folder; give a file name, e.g. {path}/runs.csv")
    if path.exists() and not os.access(path, os.W_OK):
        raise E2ELabError(f"{flag} {path} cannot be written (permission denied); choose another")
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise E2ELabError(f"{flag} {path}: {folder} is a file, not a folder; choose another path")
    _writable(_existing(folder), path, flag)
    return path


def _existing(path: Path) -> Path:
    """The nearest folder on the way to ``path`` that exists (a file there is an error)."""
    here = path.absolute()
    while not here.exists():
        here = here.parent
    return here


def _writable(existing: Path, path: Path, flag: str) -> None:
    if not existing.is_dir():
        raise E2ELabError(f"{flag} {path}: {existing} is a file, not a folder; choose another")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise E2ELabError(
            f"{flag} {path}: {existing} cannot be written (read-only or no permission); "
            "choose a writable folder"
        )


SQLITE_MAGIC = b"SQLite format 3\x00"


def not_a_store(path: Path, flag: str, source: Path | None = None) -> Path:
    """Refuse to write over ``source`` (the store being read) or over any existing
    SQLite database: an output file must never replace a results store."""
    if source is not None and path.exists() and source.exists() and path.samefile(source):
        raise E2ELabError(f"{flag} {path} is the store being read; give another file name")
    if path.is_file():
        with path.open("rb") as handle:
            if handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC:
                raise E2ELabError(
                    f"{flag} {path} is a SQLite database (perhaps a results store); "
                    "e2elab does not write over one: give another file name"
                )
    return path
