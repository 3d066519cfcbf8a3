"""``e2elab rerun``: retrain one stored run and say whether it reproduced."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from e2elab.cli.common import (
    wide_console,
)
from e2elab.errors import E2ELabError

if TYPE_CHECKING:
    from e2elab.records import RunSpec


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
    from e2elab.execution import execute
    from e2elab.numerics import describe
    from e2elab.store import Store

    with Store(args.store, readonly=True) as store:
        (stored,) = store.results_by_id([store.full_id(args.run_id)])
    spec = _moved_sources(stored.spec, args.store)
    if spec.id != stored.id:
        raise E2ELabError(
            f"run {stored.id} was stored by another e2elab version (its spec now hashes to "
            f"{spec.id}); rerun it with the version that trained it"
        )
    console = wide_console()
    console.print(
        f"retraining {stored.id}: {spec.task} {spec.knobs} {spec.strategy} seed {spec.seed}"
    )
    fresh = execute(spec)
    same = fresh.weights_sha256 == stored.weights_sha256 and fresh.curve == stored.curve
    if same:
        console.print(f"reproduced bit for bit: weights sha256 {fresh.weights_sha256[:16]}...")
        return 0
    gaps = {
        port: abs(fresh.final.get(port, float("nan")) - value)
        for port, value in stored.final.items()
    }
    worst = max(gaps, key=lambda p: gaps[p] if gaps[p] == gaps[p] else float("inf"), default=None)
    now = describe(spec.settings.device)
    changed = [k for k in now if stored.numerics.get(k) != now[k] and k in stored.numerics]
    console.print(
        f"differs: weights sha256 {str(stored.weights_sha256)[:16]}... stored, "
        f"{str(fresh.weights_sha256)[:16]}... now"
        + (f"; largest final-metric gap {worst}: {gaps[worst]:.6g}" if worst else "")
        + (
            f"; numeric environment changed in: {', '.join(changed)}"
            if changed
            else "; same numeric environment (a bug: please report it)"
        )
    )
    return 1


def _moved_sources(spec: RunSpec, store: Path) -> RunSpec:
    """A spec whose modules were loaded from runs of a store that has since moved (or
    been copied): read them from ``store``, the one being rerun, which holds those runs.
    The weights' SHA-256 (in the id) still has to match."""
    from e2elab.checkpoints import parse_pairs, store_source

    text = spec.settings.load_from
    if not text:
        return spec
    pairs = parse_pairs(text, "load_from")
    for module, source in pairs.items():
        path, hashmark, run_id = source.rpartition("#")
        if hashmark and not Path(path).exists():
            pairs[module] = store_source(store, run_id)
    return spec.with_settings(load_from=",".join(f"{m}={s}" for m, s in pairs.items()))
