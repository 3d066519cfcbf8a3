"""A job for a spawned worker that reports what the worker had done before the job ran
(standard library only, so importing it changes nothing of what it measures)."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_PR_GET_PDEATHSIG = 2


def probe() -> dict:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    signal = ctypes.c_int(0)
    libc.prctl(_PR_GET_PDEATHSIG, ctypes.byref(signal))
    heavy = ["torch", "e2elab.cli", "e2elab.executors", "e2elab.execution", "scipy", "pandas"]
    return {"deathsig": signal.value, "loaded": [m for m in heavy if m in sys.modules]}
