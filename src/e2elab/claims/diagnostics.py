"""Diagnostic checks that say why a claim fails: the schedule's floor, a phase that
lost accuracy, the ceiling the rest of a system allows (oracle evaluation)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from e2elab.claims.cells import Cells, finished, fmt_ett, mean_ett
from e2elab.claims.verdict import FAIL, INCONCLUSIVE, PASS, Verdict, check, no_data
from e2elab.records import RunResult
from e2elab.stats import Interval, metric_interval


@check("examples_to_threshold_vs", "learning_curves", aliases={"slow": "loser", "fast": "winners"})
def schedule_floor(
    cells: Cells,
    loser: str,
    winners: list[str],
    where: dict[str, Any] | None = None,
) -> Verdict:
    """The diagnostic of a ratio claim (``beats_by_ratio``, ``ratio_grows_with_knob``,
    same strategies) that fails: where
    ``loser`` needs no more examples than ``winners``, the schedule says why. Each of
    ``winners`` trains its modules one phase after another, so its output cannot be
    right before every module has begun training (its floor: the examples drawn before
    the phase in which its last module starts), and ``loser`` reached the threshold
    (mean over seeds) before the lowest of those floors."""
    slow, fast = loser, winners
    table = cells.select([slow, *fast], where).by_point()
    if not table:
        return no_data(f"{slow} and {fast} where {where}")
    lines, bad = [], []
    for key, by_strategy in sorted(table.items()):
        slow_ett = mean_ett(by_strategy.get(slow, []))
        floors = {
            name: _floor(runs[0]) for name, runs in by_strategy.items() if name != slow and runs
        }
        if slow_ett is None or not floors:
            continue
        lowest = min(floors.values())
        listed = ", ".join(f"{name} {f:,}" for name, f in sorted(floors.items()))
        lines.append(f"{key}: {slow} {fmt_ett(slow_ett)}; floors: {listed}")
        if not slow_ett <= lowest:
            bad.append(key)
    if not lines:
        return no_data(f"{slow} and {fast} with finished runs where {where}")
    detail = "; ".join(lines) + (
        f" -- {slow} not below the floor at {', '.join(bad)}" if bad else ""
    )
    return Verdict(FAIL if bad else PASS, detail)


@check("learning_curves")
def lost_in_phase(
    cells: Cells,
    strategy: str,
    phase: int = -2,
    where: dict[str, Any] | None = None,
    or_short: bool = False,
) -> Verdict:
    """Where a cell of ``strategy`` ends below the threshold, it had reached it at the end
    of phase ``phase`` (default: the one before the last, e.g. pre-training before
    fine-tuning): a later phase lost what that phase had. With ``or_short`` a cell that
    was already below the threshold there counts too (that phase fell short, and the
    later ones did not make up for it); each cell says which. Means over seeds, with 95%
    intervals; INCONCLUSIVE when no cell ends below the threshold (nothing to explain)."""
    groups = cells.select(strategy, where).grouped()
    if not groups:
        return no_data(f"strategy {strategy} where {where}")
    lines, unexplained = [], []
    for key, ok, final, level in short_cells(groups):
        ends = [r.phase_ends() for r in ok]
        if any(not -len(e) <= phase < len(e) for e in ends):
            unexplained.append(f"{cells.label(key[0])}: no phase {phase}")
            continue
        before = metric_interval([e[phase]["output"] for e in ends])
        label = ends[0][phase]["label"]
        lost = before.mean >= level
        lines.append(
            f"{key[1]} @ {cells.label(key[0])}: {before.format(3)} after {label}, "
            f"{final.format(3)} at the end ({final.mean - before.mean:+.3f}; "
            f"{'lost in a later phase' if lost else f'short of {level:g} already'})"
        )
        if not lost and not or_short:
            unexplained.append(f"{cells.label(key[0])} never reached {level:g}")
    if not lines and not unexplained:
        return Verdict(INCONCLUSIVE, "no cell ends below the threshold: nothing lost")
    detail = "; ".join(lines) + (
        f" -- not lost in a later phase: {'; '.join(unexplained)}" if unexplained else ""
    )
    return Verdict(FAIL if unexplained else PASS, detail, {"cells": lines})


@check("accuracy_vs", "learning_curves")
def oracle_ceiling(
    cells: Cells,
    strategies: list[str],
    cause: Literal["module", "chain"] = "module",
    oracle: str = "trained",
    where: dict[str, Any] | None = None,
) -> Verdict:
    """Why a cell ends below the threshold, read from the run's oracle evaluation
    (``Settings.oracle``; ``oracle`` names the set): the output with the trained
    module's ports forced to their true values is the ceiling the rest of the system
    allows. A short cell whose ceiling reaches the threshold fell short by its module
    (``cause`` "module": the others would carry a perfect one); one whose ceiling is
    below it is capped by the rest (``cause`` "chain"). PASS when every short cell has
    ``cause``; INCONCLUSIVE when no cell ends short, or a short cell's runs lack the
    evaluation (train them with ``oracle``). Means over seeds, with 95% intervals."""
    groups = cells.select(strategies, where).grouped()
    if not groups:
        return no_data(f"strategies {', '.join(strategies)} where {where}")
    lines, other, missing, ceilings = [], [], [], []
    level = 0.0
    for key, ok, final, level in short_cells(groups):
        label = f"{key[1]} @ {cells.label(key[0])}"
        evaluated = [r for r in ok if oracle in r.oracle]
        if len(evaluated) < len(ok):
            missing.append(label)
            continue
        ceiling = metric_interval([r.oracle[oracle]["metrics"][r.output] for r in evaluated])
        ceilings.append(ceiling.mean)
        found = "module" if ceiling.mean >= level else "chain"
        why = "the others carry an oracle" if found == "module" else "the others cap it"
        lines.append(f"{label}: {final.format(3)}, ceiling {ceiling.format(3)} ({why})")
        if found != cause:
            other.append(label)
    if missing:
        return Verdict(
            INCONCLUSIVE,
            f"no oracle evaluation {oracle!r} in {'; '.join(missing)}: train with "
            f"oracle: {oracle}" + (f"; {'; '.join(lines)}" if lines else ""),
        )
    if not lines:
        return Verdict(INCONCLUSIVE, "no cell ends below the threshold: nothing to explain")
    detail = "; ".join(lines)
    if other:
        detail += f" -- not the {cause}'s: {', '.join(other)}"
    numbers = {"cells": lines, "ceilings": ceilings, "threshold": level}
    return Verdict(FAIL if other else PASS, detail, numbers)


def _floor(run: RunResult) -> int:
    """Examples drawn before the phase in which the run's last module starts training."""
    seen: set[str] = set()
    modules = {m for phase in run.phases for m in phase.get("train", [])}
    drawn = 0.0
    for phase in run.phases:
        seen |= set(phase.get("train", []))
        if seen >= modules:
            break
        drawn += phase["share"] * run.spec.settings.budget
    return round(drawn)


def short_cells(
    groups: dict[tuple[str, str], list[RunResult]],
) -> Iterator[tuple[tuple[str, str], list[RunResult], Interval, float]]:
    """The cells whose finished runs end, on average, below their threshold: per cell its
    key, those runs, the output's mean with its 95% interval, and the threshold."""
    for key, runs in sorted(groups.items()):
        level = runs[0].spec.settings.threshold
        done = finished(runs)
        final = metric_interval([r.output_metric for r in done])
        if done and final.mean < level:
            yield key, done, final, level
