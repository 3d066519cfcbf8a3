"""Whose bug is it? An exception raised inside a user's own code (their task module, a
system's forward, a sampler) is theirs to fix, not a bug in e2elab; this finds where.

A frame is the user's when its file lies outside e2elab's package, the Python
installation (standard library, site-packages, the environment's scripts) and frozen
modules. An error is the user's when such a frame runs below (inside a call from) an
e2elab frame: e2elab called their code and their code raised, or called something
that did. Errors from worker processes carry their traceback as text
(``concurrent.futures`` and Ray attach it), and are read the same way.
"""

from __future__ import annotations

import os
import re
import sys
import sysconfig
import traceback
from pathlib import Path

_PACKAGE = str(Path(__file__).resolve().parent) + os.sep
_FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+)', re.MULTILINE)


def _installed_roots() -> tuple[str, ...]:
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    for name in ("stdlib", "platstdlib", "purelib", "platlib", "scripts"):
        path = sysconfig.get_paths().get(name)
        if path:
            roots.add(path)
    return tuple(str(Path(r).resolve()) + os.sep for r in roots if r)


def _kind(filename: str) -> str:
    """'e2elab', 'installed' or 'user'."""
    if filename.startswith("<"):  # <frozen ...>, <string>
        return "installed"
    path = str(Path(filename).resolve())
    if path.startswith(_PACKAGE):
        return "e2elab"
    if path.startswith(_installed_roots()):
        return "installed"
    return "user"


def _frames(error: BaseException) -> list[tuple[str, int]]:
    """(file, line) of every frame from the outermost to where ``error`` was raised, with
    a worker process's frames (its traceback as text) after the local ones."""
    frames = [(f.filename, f.lineno or 0) for f in traceback.extract_tb(error.__traceback__)]
    cause = error.__cause__
    text = str(cause) if cause is not None and "Traceback" in str(cause) else ""
    if not text and "Traceback (most recent call last)" in str(error):
        text = str(error)  # Ray puts the worker's traceback into the message
    frames += [(name, int(line)) for name, line in _FRAME.findall(text)]
    return frames


def user_frame(error: BaseException) -> tuple[str, int] | None:
    """The deepest frame of the user's own code that runs inside a call from e2elab, as
    (file, line), or None when the error is not the user's."""
    frames = _frames(error)
    kinds = [_kind(name) for name, _ in frames]
    if "e2elab" not in kinds:
        return None
    below = kinds.index("e2elab")
    mine = [i for i in range(below, len(frames)) if kinds[i] == "user"]
    return frames[mine[-1]] if mine else None


def describe(error: BaseException, where: tuple[str, int]) -> str:
    """One line: where in the user's code, and what was raised."""
    name, line = where
    text = " ".join(str(error).split())
    if "Traceback (most recent call last)" in text:  # a worker's text: keep its last line
        text = text.rsplit("Traceback (most recent call last)", 1)[0].strip() or text[-300:]
    text = text[:300]
    return (
        f"your code raised at {name}:{line}: {type(error).__name__}: {text} "
        "(a bug in the task or system, not in e2elab: fix it there; E2ELAB_DEBUG=1 shows "
        "the traceback)"
    )
