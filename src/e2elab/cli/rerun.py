"""``e2elab rerun``: retrain one stored run and say whether it reproduced."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from e2elab.cli.common import wide_console


def add(commands: Any) -> None:
    """The ``rerun`` command's parser."""
    rerun = commands.add_parser(
        "rerun", help="retrain one stored run and say whether it reproduced bit for bit"
    )
    rerun.add_argument("store", type=Path, help="a results.sqlite file")
    rerun.add_argument("run_id", help="the run's id (or a unique prefix of it)")
    rerun.set_defaults(handler=_cmd_rerun)


def _cmd_rerun(args: argparse.Namespace) -> int:
    """Exit 0 when the retrained run equals the stored one bit for bit, 1 when it differs."""
    from e2elab.rerun import retrain, stored_run

    stored, spec = stored_run(args.store, args.run_id)
    console = wide_console()
    console.print(
        f"retraining {stored.id}: {spec.task} {spec.knobs} {spec.strategy} seed {spec.seed}"
    )
    again = retrain(stored, spec)
    fresh = again.fresh
    if again.same:
        console.print(f"reproduced bit for bit: weights sha256 {fresh.weights_sha256[:16]}...")
        return 0
    gap = again.largest_gap()
    changed = again.changed_numerics()
    console.print(
        f"differs: weights sha256 {str(stored.weights_sha256)[:16]}... stored, "
        f"{str(fresh.weights_sha256)[:16]}... now"
        + (f"; largest final-metric gap {gap[0]}: {gap[1]:.6g}" if gap else "")
        + (
            f"; numeric environment changed in: {', '.join(changed)}"
            if changed
            else "; same numeric environment (a bug: please report it)"
        )
    )
    return 1
