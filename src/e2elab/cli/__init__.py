"""The command line: list, run, reproduce, report, export, diagnose snr.

Every user error becomes one line on stderr, ``e2elab: error: ...``, and exit code 2.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from e2elab.blame import describe as describe_user_error
from e2elab.blame import user_frame

# One module per command, each adding its own parser (``add``). The training half
# (torch) is imported inside the commands that train: ``report``, ``export`` and
# ``list --help`` start without it.
from e2elab.cli import (
    checks,
    common,
    diagnose,
    export,
    listing,
    modules,
    prune,
    report,
    reproduce,
    rerun,
    run,
)
from e2elab.cli.common import (
    _Parser,
    _version,
    claims_table,
    parse_knobs,
    wide_console,
)
from e2elab.cli.reproduce import _available
from e2elab.errors import E2ELabError

__all__ = ["_available", "_build_parser", "claims_table", "main", "parse_knobs", "wide_console"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Every user error is one line and exit code 2; Ctrl-C and SIGTERM
    exit 130 keeping what is stored; anything unforeseen is one line and exit code 1
    (``E2ELAB_DEBUG=1`` shows its traceback)."""
    common.STARTED = time.perf_counter()  # the command's wall time counts from here
    parser = _build_parser()
    previous = _terminate_as_interrupt()
    # like `python -m`: a user's own package in the current folder can be named as
    # --task my_pkg.tasks:Task (worker processes inherit this path)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        args = parser.parse_args(argv)
        if not hasattr(args, "handler"):
            parser.print_help()
            return 2
        return args.handler(args)
    except E2ELabError as error:
        print(f"e2elab: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("e2elab: interrupted; results already written are kept", file=sys.stderr)
        return 130
    except OSError as error:  # a file system problem the checks could not foresee
        print(f"e2elab: error: {error}; nothing stored was lost", file=sys.stderr)
        return 2
    except Exception as error:
        if os.environ.get("E2ELAB_DEBUG"):
            raise
        where = user_frame(error)
        if where is not None:  # raised in the user's own task or system code
            print(f"e2elab: error: {describe_user_error(error, where)}", file=sys.stderr)
            return 2
        text = " ".join(str(error).split())[:300]
        print(
            f"e2elab: internal error: {type(error).__name__}: {text} (a bug: please report "
            "it; E2ELAB_DEBUG=1 shows the traceback); results already stored are kept",
            file=sys.stderr,
        )
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminate_as_interrupt() -> Any:
    """SIGTERM ends a command the way Ctrl-C does (workers stop, the store is kept)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def _build_parser() -> _Parser:
    parser = _Parser(prog="e2elab", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(title="commands", parser_class=_Parser)
    for command in (
        listing,
        run,
        reproduce,
        report,
        checks,
        prune,
        diagnose,
        rerun,
        modules,
        export,
    ):
        command.add(commands)
    return parser
