"""Retrain a stored run from its spec and compare it with what was stored, bit for bit
(``e2elab rerun``): the same spec must give the same weights on the same machine."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2elab.checkpoints import parse_pairs, store_source
from e2elab.errors import E2ELabError
from e2elab.execution import execute
from e2elab.numerics import describe
from e2elab.records import RunResult, RunSpec
from e2elab.store import Store


@dataclass(frozen=True)
class Rerun:
    """A stored run and the same spec trained again now."""

    stored: RunResult
    fresh: RunResult
    spec: RunSpec

    @property
    def same(self) -> bool:
        """The same weights, bit for bit, and the same curve."""
        return (
            self.fresh.weights_sha256 == self.stored.weights_sha256
            and self.fresh.curve == self.stored.curve
        )

    def largest_gap(self) -> tuple[str, float] | None:
        """The port whose final metric moved most, and by how much (a NaN counts as the
        largest move); None where the stored run has no final metric."""
        gaps = {
            port: abs(self.fresh.final.get(port, float("nan")) - value)
            for port, value in self.stored.final.items()
        }
        if not gaps:
            return None
        worst = max(gaps, key=lambda p: gaps[p] if gaps[p] == gaps[p] else float("inf"))
        return worst, gaps[worst]

    def changed_numerics(self) -> list[str]:
        """What of the numeric environment (``numerics.describe``) differs from the
        stored run's; empty: the same environment."""
        now: dict[str, Any] = describe(self.spec.settings.device)
        return [k for k in now if k in self.stored.numerics and self.stored.numerics[k] != now[k]]


def stored_run(store: Path, run_id: str) -> tuple[RunResult, RunSpec]:
    """The stored run ``run_id`` (a unique prefix will do) of ``store``, and the spec
    that trains it again here. Refuses a run stored by another e2elab version (its spec
    would now hash to another id)."""
    with Store(store, readonly=True) as opened:
        full = opened.full_id(run_id)
        found = opened.results_by_id([full])
    if not found:
        raise E2ELabError(
            f"{store}: run {full}'s stored record is damaged (it cannot be read back), so "
            "there is no spec to train again; 'e2elab prune' lists damaged records"
        )
    (stored,) = found
    spec = moved_sources(stored.spec, store)
    if spec.id != stored.id:
        raise E2ELabError(
            f"run {stored.id} was stored by another e2elab version (its spec now hashes to "
            f"{spec.id}); rerun it with the version that trained it"
        )
    return stored, spec


def retrain(stored: RunResult, spec: RunSpec) -> Rerun:
    """Train ``spec`` (see ``stored_run``) and set the outcome beside ``stored``."""
    return Rerun(stored, execute(spec), spec)


def moved_sources(spec: RunSpec, store: Path) -> RunSpec:
    """A spec whose modules were loaded from runs of a store that has since moved (or
    been copied): read them from ``store``, the one being rerun, which holds those runs.
    The weights' SHA-256 (in the id) still has to match."""
    text = spec.settings.load_from
    if not text:
        return spec
    pairs = parse_pairs(text, "load_from")
    for module, source in pairs.items():
        path, hashmark, source_id = source.rpartition("#")
        if hashmark and not Path(path).exists():
            pairs[module] = store_source(store, source_id)
    return spec.with_settings(load_from=",".join(f"{m}={s}" for m, s in pairs.items()))
