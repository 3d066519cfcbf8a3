"""Checks over what a task keeps of its trained system (``RunResult.artifacts``)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from e2elab.claims.cells import Cells, finished, point_value, sortable
from e2elab.claims.verdict import FAIL, PASS, Verdict, check, no_data, paired_verdict
from e2elab.records import RunResult
from e2elab.stats import mean_interval


@check("closed_loop_vs_{knob}", "closed_loop_conditions", "birds_eye")
def artifact_beats(
    cells: Cells,
    winner: str,
    loser: str,
    metric: str,
    knob: str,
    at: Literal["smallest", "largest"] = "smallest",
    lower_is_better: bool = True,
    where: dict[str, Any] | None = None,
    loser_metric: str | None = None,
    margin: float = 0.0,
) -> Verdict:
    """At the smallest or largest value of ``knob``, ``winner`` does better than
    ``loser`` on a number the runs kept after training (``metric``, a dotted path into
    ``artifacts``, e.g. ``closed_loop.nominal.departures_per_km``): the 95% interval of
    the paired difference over seeds lies on the better side of 0. ``loser_metric``
    reads the loser's number at another path (two systems' own answers, e.g. one
    strategy's pipeline transcript against another's direct one); with a ``margin``,
    "matches or beats": the interval lies above -margin."""
    other = loser_metric or metric
    value, pairs = _artifact_pairs(cells, winner, loser, metric, knob, at, where, other)
    if len(pairs) < 2:
        return no_data(f"{metric} of {winner} and {other} of {loser} with two paired seeds")
    better = "lower" if lower_is_better else "higher"
    return paired_verdict(
        pairs,
        f"{knob}={value}: {metric} {winner}",
        loser if other == metric else f"{other} {loser}",
        f"advantage ({better} is better)",
        sign=-1.0 if lower_is_better else 1.0,
        margin=margin,
    )


@check(
    "closed_loop_vs_shift",
    "closed_loop_conditions",
    aliases={"robust": "winner", "fragile": "loser"},
)
def degrades_less(
    cells: Cells,
    winner: str,
    loser: str,
    nominal: str,
    shifted: str,
    knob: str,
    at: Literal["smallest", "largest"] = "largest",
    lower_is_better: bool = True,
    where: dict[str, Any] | None = None,
) -> Verdict:
    """Under a shift, ``winner`` loses less than ``loser``: the change from the
    ``nominal`` to the ``shifted`` number (dotted artifact paths, e.g.
    ``closed_loop.nominal.mean_abs_offset`` and ``closed_loop.dark.mean_abs_offset``),
    in the worse direction, is smaller for ``winner``: the 95% interval over seeds of
    (loser's loss - winner's loss) lies above 0."""
    robust, fragile = winner, loser
    value, base = _artifact_pairs(cells, robust, fragile, nominal, knob, at, where)
    _, moved = _artifact_pairs(cells, robust, fragile, shifted, knob, at, where)
    if len(base) < 2 or len(moved) != len(base):
        return no_data(f"{nominal} and {shifted} of {robust} and {fragile} where {where}")
    sign = 1.0 if lower_is_better else -1.0  # a loss is a rise of a lower-is-better number
    loss_r = [sign * (m[0] - b[0]) for b, m in zip(base, moved, strict=True)]
    loss_f = [sign * (m[1] - b[1]) for b, m in zip(base, moved, strict=True)]
    diff = mean_interval([f - r for r, f in zip(loss_r, loss_f, strict=True)])
    detail = (
        f"{knob}={value}: from {nominal} to {shifted}, {robust} loses "
        f"{np.mean(loss_r):+.3f}, {fragile} {np.mean(loss_f):+.3f}; difference "
        f"{diff.format(3)} over {len(base)} seeds"
    )
    ok = diff.lo > 0
    return Verdict(PASS if ok else FAIL, detail + ("" if ok else " -- not above 0"))


@check("error_propagation")
def artifact_exceeds(
    cells: Cells,
    strategy: str,
    larger: str,
    smaller: str,
    knob: str,
    at: Literal["smallest", "largest"] = "smallest",
    where: dict[str, Any] | None = None,
) -> Verdict:
    """Within ``strategy``'s runs at the smallest or largest value of ``knob``, one kept
    number exceeds another (dotted artifact paths, e.g. the steering error the
    perception causes against the controller's own): the 95% interval over seeds of
    (larger - smaller) lies above 0."""
    value, pairs = _artifact_pairs(cells, strategy, strategy, larger, knob, at, where)
    _, other = _artifact_pairs(cells, strategy, strategy, smaller, knob, at, where)
    if len(pairs) < 2 or len(other) != len(pairs):
        return no_data(f"{larger} and {smaller} of {strategy} with two seeds where {where}")
    both = [(a[0], b[0]) for a, b in zip(pairs, other, strict=True)]
    return paired_verdict(both, f"{knob}={value}, {strategy}: {larger}", smaller, "difference")


def artifact_value(run: RunResult, path: str) -> float | None:
    """A number the run's task kept after training (``Task.artifacts``), by a dotted
    path, e.g. ``closed_loop.nominal.departures_per_km``; None where it has none."""
    value: Any = run.artifacts
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _artifact_pairs(
    cells: Cells,
    a: str,
    b: str,
    metric: str,
    knob: str,
    at: str,
    where: Any,
    b_metric: str | None = None,
) -> tuple[Any, list[tuple[float, float]]]:
    """At the smallest or largest value of ``knob`` where both have finished runs: that
    value, and per seed of both, (a's, b's) number at ``metric``."""
    table = cells.select([a, b], where).by_point()
    points = [c for c in table.values() if finished(c.get(a, [])) and finished(c.get(b, []))]
    if not points:
        return None, []
    pick = min if at == "smallest" else max
    chosen = pick(points, key=lambda c: sortable(point_value(c, knob)))
    runs_a = {r.spec.seed: artifact_value(r, metric) for r in finished(chosen[a])}
    runs_b = {r.spec.seed: artifact_value(r, b_metric or metric) for r in finished(chosen[b])}
    pairs = [
        (runs_a[s], runs_b[s])
        for s in sorted(set(runs_a) & set(runs_b))
        if runs_a[s] is not None and runs_b[s] is not None
    ]
    return point_value(chosen, knob), pairs  # type: ignore[return-value]
