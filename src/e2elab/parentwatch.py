"""The first thing a worker process does: tie its life to its parent's.

This module imports nothing but the standard library, so a spawned worker can run it
before the heavy imports (torch, the training code) that take seconds on a loaded
machine: a parent killed in those seconds must not leave its workers behind.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1  # prctl option: a signal to receive when the parent dies


def die_with_parent(parent: int) -> None:
    """In a worker: end when the process that started it ends, even by ``kill -9``
    (Linux: the kernel sends SIGKILL on the parent's death; elsewhere a watcher thread
    polls the parent's pid)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(2.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="e2elab-parent-watch").start()
