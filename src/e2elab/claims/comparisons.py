"""Checks that compare strategies: examples-to-threshold ratios, accuracy differences
over paired seeds, crossovers, the best strategy at each knob value."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import Any, Literal

import numpy as np

from e2elab.claims.cells import (
    Cells,
    finished,
    fmt_ett,
    fmt_ratio,
    mean_ett,
    point_value,
    sortable,
)
from e2elab.claims.verdict import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    Verdict,
    check,
    no_data,
    no_knob,
    paired_verdict,
)
from e2elab.stats import mean_interval


@check("examples_to_threshold_vs", "learning_curves", aliases={"slow": "loser", "fast": "winners"})
def beats_by_ratio(
    cells: Cells,
    loser: str,
    winners: list[str],
    where: dict[str, Any] | None = None,
    min_ratio: float = 1.0,
) -> Verdict:
    """In every matching grid point, ``loser`` needs more than ``min_ratio`` times the
    examples-to-threshold of the best of ``winners`` (means over seeds; never =
    infinite)."""
    table = cells.select(where=where).ratios(loser, winners)
    if not table:
        return no_data(f"{loser} and {winners} where {where}")
    lines = [
        f"{k}: {fmt_ratio(r)} ({fmt_ett(s)} vs {fmt_ett(f)})" for k, (r, s, f) in table.items()
    ]
    failing = [k for k, (r, _, _) in table.items() if not math.isnan(r) and not r > min_ratio]
    undetermined = [k for k, (r, _, _) in table.items() if math.isnan(r)]
    detail = "; ".join(lines)
    if undetermined and not failing:
        detail += " -- neither reached the threshold at " + ", ".join(map(str, undetermined))
    verdict = FAIL if failing else (INCONCLUSIVE if undetermined else PASS)
    return Verdict(verdict, detail, {"ratios": {k: v[0] for k, v in table.items()}})


@check("examples_to_threshold_vs", aliases={"slow": "loser", "fast": "winners"})
def ratio_grows_with_knob(
    cells: Cells,
    loser: str,
    winners: list[str],
    knob: str | None = None,
    where: dict[str, Any] | None = None,
) -> Verdict:
    """``loser`` needs more examples than the best of ``winners`` at every knob value
    (ratio > 1), and the ratio grows with the knob: it never falls and ends above where
    it started. A ratio where ``loser`` never reached the threshold is infinite.
    ``knob``: by default the only knob that varies over the matching runs."""
    chosen = cells.select([loser, *winners], where)
    if not chosen:
        return no_data(f"{loser} and {winners} where {where}")
    walked = chosen.knob(knob)
    if walked is None:
        return no_knob("ratio_grows_with_knob", chosen.varying_here())
    knob = walked
    table = chosen.ratios(loser, winners, knob)
    if not table:
        return no_data(f"{loser} and {winners} where {where}")
    lines = [
        f"{knob}={k}: {fmt_ratio(r)} ({fmt_ett(s)} vs {fmt_ett(f)})"
        for k, (r, s, f) in table.items()
    ]
    # where neither side ever reached the threshold the ratio is undetermined: left out
    ratios = [r for r, _, _ in table.values() if r == r]
    undetermined = [str(k) for k, (r, _, _) in table.items() if r != r]
    if len(ratios) < 2:
        return Verdict(INCONCLUSIVE, "; ".join(lines) + " -- fewer than two determined ratios")
    above = all(r > 1 for r in ratios)
    grows = all(b >= a for a, b in pairwise(ratios)) and ratios[-1] > ratios[0]
    why = [] if above else ["ratio <= 1 somewhere"]
    why += [] if grows else ["ratio does not grow monotonically"]
    why += [f"undetermined at {knob} = {', '.join(undetermined)}"] if undetermined else []
    detail = "; ".join(lines) + (f" -- {', '.join(why)}" if why else "")
    verdict = PASS if above and grows else FAIL
    return Verdict(verdict, detail, {"ratios": {str(k): v[0] for k, v in table.items()}})


@check("examples_to_threshold_vs")
def examples_grow_with_knob(
    cells: Cells,
    strategy: str,
    knob: str,
    where: dict[str, Any] | None = None,
) -> Verdict:
    """Learning slows down: ``strategy``'s mean examples-to-threshold never falls as the
    knob grows and ends higher than it starts (a seed that never reached the threshold
    counts as infinitely many examples)."""
    runs = cells.select(strategy, where)
    if not runs:
        return no_data(f"strategy {strategy} where {where}")
    by_value = runs.by_value(knob)
    means = {v: mean_ett(rs) for v, rs in by_value.items()}
    values = [m for m in means.values() if m is not None]
    reached = {
        v: sum(r.examples_to_threshold is not None for r in rs) for v, rs in by_value.items()
    }
    lines = [
        f"{knob}={v}: {fmt_ett(m)} ({reached[v]}/{len(by_value[v])} reached)"
        for v, m in means.items()
        if m is not None
    ]
    if len(values) < 2:
        return Verdict(INCONCLUSIVE, "; ".join(lines) + " -- fewer than two knob values")
    grows = all(b >= a for a, b in pairwise(values)) and values[-1] > values[0]
    detail = "; ".join(lines) + ("" if grows else " -- does not grow monotonically")
    return Verdict(PASS if grows else FAIL, detail)


@check("accuracy_vs", "accuracy_by_approach", "caption_metrics")
def accuracy_beats(
    cells: Cells,
    winner: str,
    loser: str,
    knob: str,
    at: Literal["smallest", "largest"] = "smallest",
    where: dict[str, Any] | None = None,
) -> Verdict:
    """At the smallest (``at: smallest``) or largest (``at: largest``) value of ``knob``,
    ``winner``'s output metric exceeds ``loser``'s: the 95% interval of the mean paired
    difference over seeds lies above 0."""
    table = cells.select(where=where).paired(winner, loser, knob)
    if not table:
        return no_data(f"{winner} and {loser} with the same seeds where {where}")
    value = min(table) if at == "smallest" else max(table)
    pairs = list(table[value].values())
    if len(pairs) < 2:
        return Verdict(INCONCLUSIVE, f"{knob}={value}: {len(pairs)} paired seed(s); need 2")
    return paired_verdict(pairs, f"{knob}={value}: {winner}", loser, "difference")


@check("accuracy_vs", "accuracy_by_approach")
def crossover(
    cells: Cells,
    early: str,
    late: str,
    knob: str,
    where: dict[str, Any] | None = None,
    resamples: int = 2000,
    min_share: float = 0.95,
) -> Verdict:
    """Where ``late`` overtakes ``early`` as ``knob`` grows: the point, interpolated on a
    log scale between the last value where ``early`` leads and the next, from which
    ``late``'s mean is at least ``early``'s at every larger value; with a 95% bootstrap
    interval. A resample draws seeds with replacement once for every value (a seed's
    runs at all sizes share its nested subsets). PASS when the observed curves cross and
    at least ``min_share`` of the resamples cross in the range too; FAIL "no crossover in
    the range" when the observed ones do not (``late`` never takes the lead for good, or
    leads from the smallest value on), and FAIL with the share when too few resamples do."""
    table = cells.select(where=where).paired(early, late, knob)
    if len(table) < 2:
        return no_data(f"{early} and {late} at two values of {knob} where {where}")
    values = list(table)
    seeds = sorted(set.intersection(*(set(table[v]) for v in values)))
    if len(seeds) < 2:
        return Verdict(INCONCLUSIVE, f"fewer than 2 seeds with runs of both at every {knob}")

    def locate(diffs: list[float]) -> float | None:
        # diffs: late - early per value; the crossover lies after the last lead of early
        leads = [i for i, d in enumerate(diffs) if d < 0]
        if not leads or leads[-1] == len(diffs) - 1:
            return None
        i = leads[-1]
        lo, hi = math.log(values[i]), math.log(values[i + 1])
        d0, d1 = diffs[i], diffs[i + 1]
        return math.exp(lo + (hi - lo) * (-d0) / (d1 - d0))

    def diffs_of(chosen: Sequence[int]) -> list[float]:
        return [sum(table[v][s][1] - table[v][s][0] for s in chosen) / len(chosen) for v in values]

    point = locate(diffs_of(seeds))
    means = ", ".join(
        f"{knob}={v}: {early} {sum(table[v][s][0] for s in seeds) / len(seeds):.3f} / {late} "
        f"{sum(table[v][s][1] for s in seeds) / len(seeds):.3f}"
        for v in values
    )
    if point is None:
        return Verdict(FAIL, f"no crossover in the range; {means}")
    rng = np.random.default_rng(0)
    found = []
    for _ in range(resamples):
        chosen = [seeds[j] for j in rng.integers(0, len(seeds), len(seeds))]
        where_found = locate(diffs_of(chosen))
        if where_found is not None:
            found.append(where_found)
    share = len(found) / resamples
    lo, hi = np.percentile(found, [2.5, 97.5]) if found else (math.nan, math.nan)
    detail = (
        f"{late} overtakes {early} at {knob} ~ {point:,.0f} (95% bootstrap interval "
        f"{lo:,.0f} to {hi:,.0f}, over the {share:.0%} of {resamples} resamples of "
        f"{len(seeds)} seeds that cross in the range); {means}"
    )
    numbers = {"crossover": point, "interval": [float(lo), float(hi)], "share": share}
    if share < min_share:
        return Verdict(FAIL, detail + f" -- fewer than {min_share:.0%} of resamples cross", numbers)
    return Verdict(PASS, detail, numbers)


@check("accuracy_vs", "accuracy_against")
def best_at_each(
    cells: Cells,
    strategies: list[str],
    expected: list[str],
    knob: str,
    where: dict[str, Any] | None = None,
) -> Verdict:
    """At every value of ``knob``, the strategy with the highest mean output metric among
    ``strategies`` is one of ``expected``, and it beats the best of the rest: the 95%
    interval of the paired difference over seeds (same seed, same data) lies above 0."""
    table = cells.select(strategies, where).by_point()
    if not table:
        return no_data(f"{strategies} where {where}")
    lines, wrong, unresolved = [], [], []
    for cellsets in sorted(table.values(), key=lambda c: sortable(point_value(c, knob))):
        value = point_value(cellsets, knob)
        means = {
            name: float(np.mean([r.output_metric for r in finished(runs)]))
            for name, runs in cellsets.items()
            if finished(runs)
        }
        absent = [name for name in strategies if name not in means]
        if absent:  # a strategy without finished runs here could be the best: not judged
            unresolved.append(f"{knob}={value}")
            lines.append(f"{knob}={value}: no finished run of {', '.join(absent)}")
            continue
        best = max(means, key=lambda name: means[name])
        rest = {n: m for n, m in means.items() if n not in expected}
        line = f"{knob}={value}: best {best} {means[best]:.3f}"
        if best not in expected:
            wrong.append(f"{knob}={value}")
        elif rest:
            rival = max(rest, key=lambda name: rest[name])
            seeds_a = {r.spec.seed: r.output_metric for r in finished(cellsets[best])}
            seeds_b = {r.spec.seed: r.output_metric for r in finished(cellsets[rival])}
            diffs = [seeds_a[k] - seeds_b[k] for k in sorted(set(seeds_a) & set(seeds_b))]
            if len(diffs) < 2:
                unresolved.append(f"{knob}={value}")
                line += f", vs {rival} {rest[rival]:.3f}: {len(diffs)} paired seed(s)"
            else:
                diff = mean_interval(diffs)
                line += f", best other {rival} {rest[rival]:.3f}, difference {diff.format(3)}"
                if not diff.lo > 0:
                    unresolved.append(f"{knob}={value}")
        lines.append(line)
    detail = "; ".join(lines)
    if wrong:
        return Verdict(FAIL, f"another strategy is best at {', '.join(wrong)}; {detail}")
    if any("no finished run" in line for line in lines):
        return Verdict(INCONCLUSIVE, detail)
    if unresolved:
        return Verdict(FAIL, f"not clearly ahead at {', '.join(unresolved)}; {detail}")
    return Verdict(PASS, detail)


@check("accuracy_vs", "caption_metrics", aliases={"a": "winner", "b": "loser"})
def gap_grows_with_knob(
    cells: Cells,
    winner: str,
    loser: str,
    knob: str,
    where: dict[str, Any] | None = None,
) -> Verdict:
    """The gap ``winner`` minus ``loser`` (output metric, paired by seed) is larger at the
    largest value of ``knob`` than at the smallest: the 95% interval over seeds of (gap
    at the largest) - (gap at the smallest) lies above 0."""
    a, b = winner, loser
    gaps = cells.select(where=where).seed_gaps(a, b, knob)
    if len(gaps) < 2:
        return no_data(f"{a} and {b} at two values of {knob} where {where}")
    values = sorted(gaps, key=sortable)
    low, high = gaps[values[0]], gaps[values[-1]]
    seeds = sorted(set(low) & set(high))
    listed = ", ".join(f"{knob}={v}: {np.mean(list(gaps[v].values())):+.3f}" for v in values)
    if len(seeds) < 2:
        return Verdict(INCONCLUSIVE, f"gap {a} - {b}: {listed}; {len(seeds)} paired seed(s)")
    growth = mean_interval([high[s] - low[s] for s in seeds])
    detail = f"gap {a} - {b}: {listed}; change {growth.format(3)} over {len(seeds)} seeds"
    ok = growth.lo > 0
    return Verdict(PASS if ok else FAIL, detail + ("" if ok else " -- not above 0"))


@check("accuracy_vs", "caption_metrics", aliases={"a": "winner", "b": "loser"})
def gap_with_budget(
    cells: Cells,
    winner: str,
    loser: str,
    smaller: str,
    direction: Literal["shrinks", "grows"],
    knob: str,
    at: Literal["smallest", "largest"] = "largest",
    where: dict[str, Any] | None = None,
) -> Verdict:
    """How the gap ``winner`` minus ``loser`` moves with the training budget: at the
    smallest or largest value of ``knob``, the gap at the experiment's budget minus the
    gap at a smaller one (the variant labelled ``smaller``: ``winner@smaller`` and
    ``loser@smaller``, runs trained on that budget from the start), paired by seed, has a
    95% interval below 0 (``shrinks``) or above 0 (``grows``)."""
    a, b = winner, loser
    names = [a, b, f"{a}@{smaller}", f"{b}@{smaller}"]
    table = cells.select(names, where).by_point()
    cellsets = [c for c in table.values() if all(finished(c.get(n, [])) for n in names)]
    if not cellsets:
        return no_data(f"{', '.join(names)} where {where}")
    pick = min if at == "smallest" else max
    chosen = pick(cellsets, key=lambda c: sortable(point_value(c, knob)))
    value = point_value(chosen, knob)
    by = {n: {r.spec.seed: r for r in finished(chosen[n])} for n in names}
    seeds = sorted(set.intersection(*(set(v) for v in by.values())))
    if len(seeds) < 2:
        return Verdict(INCONCLUSIVE, f"{knob}={value}: {len(seeds)} paired seed(s); need 2")
    early = [by[names[2]][s].output_metric - by[names[3]][s].output_metric for s in seeds]
    late = [by[a][s].output_metric - by[b][s].output_metric for s in seeds]
    change = mean_interval([y - x for x, y in zip(early, late, strict=True)])
    budgets = (by[names[2]][seeds[0]].spec.settings.budget, by[a][seeds[0]].spec.settings.budget)
    detail = (
        f"{knob}={value}: gap {a} - {b} {np.mean(early):+.3f} at budget {budgets[0]:,}, "
        f"{np.mean(late):+.3f} at {budgets[1]:,}; change {change.format(3)} over "
        f"{len(seeds)} seeds"
    )
    ok = change.hi < 0 if direction == "shrinks" else change.lo > 0
    side = "below" if direction == "shrinks" else "above"
    return Verdict(PASS if ok else FAIL, detail + ("" if ok else f" -- not {side} 0"))
