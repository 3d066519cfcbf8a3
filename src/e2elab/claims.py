"""Claims: statements from papers as executable checks over stored results.

Each check is a small function ``check(results, **params) -> Verdict``. Results are
grouped into cells (one grid point x one strategy, over seeds). Uncertainty is explicit:
means carry 95% Student-t intervals over seeds, and "at chance" is the per-run one-sided
test against chance on the test-set size (``RunResult.at_chance``; binomial for success
rates, Hoeffding for rewards).
A check never adapts its thresholds to the data: if the data disagree, it says FAIL.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import typing
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from itertools import pairwise
from typing import Any, Literal

import numpy as np
from pydantic import TypeAdapter, ValidationError
from scipy.stats import binomtest

from e2elab.query import group
from e2elab.records import RunResult
from e2elab.stats import mean_interval, metric_interval

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"


@dataclass
class Verdict:
    """The outcome of one claim: PASS, FAIL or INCONCLUSIVE, with the numbers behind it."""

    verdict: str
    details: str
    numbers: dict[str, Any] = field(default_factory=dict)
    id: str = ""
    statement: str = ""
    explains: list[str] = field(default_factory=list)
    # the share of seed resamples that give this verdict again (None: one seed), over
    # how many resamples, and the distance to the claim's threshold (see ``stability``)
    stable: float | None = None
    resamples: int = 0
    margin: str | None = None
    # why the experiment's profile cannot decide this claim (its YAML's ``undecided``)
    undecided: str | None = None

    @property
    def fragile(self) -> bool:
        from e2elab.stability import FRAGILE

        return self.stable is not None and self.stable < FRAGILE

    def stability_text(self) -> str:
        """``stable 100%`` or ``stable 55%: fragile``; ``-`` where not measured."""
        if self.resamples == 0:
            return "-" if self.stable is None else ""
        text = f"stable {100 * self.stable:.0f}%"  # type: ignore[operator]
        text = f"{text}: fragile" if self.fragile else text
        return f"{text}; undecided by this profile" if self.undecided else text

    def as_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "statement": self.statement,
            "verdict": self.verdict,
            "details": self.details,
            "stability": self.stability_text(),
            "margin": self.margin or "",
            "undecided": self.undecided or "",
        }


# ---------------------------------------------------------------- the registry

CHECKS: dict[str, Callable[..., Verdict]] = {}
# per check: the figures that show its evidence on the report page (file names without
# .png, or their beginnings; ``{knob}`` is the claim's knob)
CHECK_FIGURES: dict[str, tuple[str, ...]] = {}


def check(*figures: str) -> Callable[[Callable[..., Verdict]], Callable[..., Verdict]]:
    """Register a check under its function's name, with the figures that show it."""

    def register(function: Callable[..., Verdict]) -> Callable[..., Verdict]:
        CHECKS[function.__name__] = function
        CHECK_FIGURES[function.__name__] = figures
        return function

    return register


# ---------------------------------------------------------------- selecting cells


def _matches(result: RunResult, where: dict[str, Any]) -> bool:
    """``where`` maps knob -> value, or knob -> {">=": v, "<=": v, "in": [...]}."""
    knobs = result.spec["knobs"]
    for name, wanted in where.items():
        value = knobs.get(name)
        if isinstance(wanted, dict):
            ops: dict[str, Callable[[Any, Any], bool]] = {
                ">=": lambda a, b: a >= b,
                "<=": lambda a, b: a <= b,
                ">": lambda a, b: a > b,
                "<": lambda a, b: a < b,
                "in": lambda a, b: a in b,
            }
            if not all(ops[op](value, arg) for op, arg in wanted.items()):
                return False
        elif value != wanted:
            return False
    return True


def _strategy_matches(name: str, patterns: str | list[str]) -> bool:
    pats = [patterns] if isinstance(patterns, str) else patterns
    # a strategy's own name matches itself even where it holds pattern characters
    # (frozen_others:force=digit_[2-9],...)
    return any(name == p or fnmatchcase(name, p) for p in pats)


def cells(
    results: Iterable[RunResult], strategies: str | list[str], where: dict[str, Any] | None = None
) -> dict[tuple[str, str], list[RunResult]]:
    """Group runs into (knobs as JSON, strategy) cells; strategies may use * patterns."""

    def chosen(r: RunResult) -> bool:
        return _strategy_matches(r.spec["strategy"], strategies) and _matches(r, where or {})

    return group(results, "knobs", "strategy", where=chosen)  # type: ignore[return-value]


def _knob(key: tuple[str, str], name: str) -> Any:
    return json.loads(key[0])[name]


def _ok(runs: list[RunResult]) -> list[RunResult]:
    return [r for r in runs if r.status == "ok"]


def _ett(r: RunResult) -> float:
    """Examples to threshold; a run that never reached it counts as infinitely many."""
    return math.inf if r.examples_to_threshold is None else float(r.examples_to_threshold)


def _fmt_ett(value: float) -> str:
    return "never" if math.isinf(value) else f"{value:,.0f}"


def _no_data(what: str) -> Verdict:
    return Verdict(INCONCLUSIVE, f"no stored runs match {what}")


def _by_knob(results: list[RunResult], knob: str) -> dict[Any, list[RunResult]]:
    return {key[0]: runs for key, runs in sorted(group(results, knob).items())}


# ---------------------------------------------------------------- checks


@check("accuracy_vs", "accuracy_by_approach", "caption_metrics")
def reaches_threshold(
    results: list[RunResult],
    strategies: str | list[str],
    where: dict[str, Any] | None = None,
    threshold: float | None = None,
) -> Verdict:
    """Every matching cell's mean output metric over seeds reaches the threshold (the
    runs' own threshold unless given). A diverged run counts as a failure (0) in a cell
    that has a finished run; a cell where every run diverged or failed is INCONCLUSIVE."""
    groups = cells(results, strategies, where)
    if not groups:
        return _no_data(f"strategies {strategies} where {where}")
    failing, lines, unfinished, means = [], [], [], []
    for key, runs in sorted(groups.items()):
        level = threshold if threshold is not None else runs[0].spec["threshold"]
        label = f"{key[1]} @ {_short(key[0])}"
        if not _ok(runs):  # every run diverged or failed: no evidence either way
            unfinished.append(f"{label}: no finished run{_unfinished(runs)}")
            continue
        values = [r.output_metric if r.status == "ok" else 0.0 for r in runs]
        ci = metric_interval(values)
        means.append((ci.mean - level, ci.mean, level))
        ok = ci.mean >= level
        lines.append(f"{label}: {ci.format(3)} {'>=' if ok else '<'} {level:g}{_unfinished(runs)}")
        if not ok:
            failing.append(label)
    finished = len(groups) - len(unfinished)
    detail = f"{finished - len(failing)}/{len(groups)} cells reach it" + (
        f"; below: {'; '.join(line for line in lines if ' < ' in line)}" if failing else ""
    )
    if unfinished:
        detail += f"; {'; '.join(unfinished)}"
    verdict = FAIL if failing else (INCONCLUSIVE if unfinished else PASS)
    return Verdict(verdict, detail, {"cells": lines + unfinished, "means": means})


@check("accuracy_vs", "accuracy_by_approach", "learning_curves")
def at_chance(
    results: list[RunResult], strategy: str, where: dict[str, Any] | None = None
) -> Verdict:
    """Every run of the matching cells ends indistinguishable from chance. ``strategy``
    may be a * pattern (e.g. ``blackbox:*``); then each line names its strategy."""
    groups = cells(results, strategy, where)
    if not groups:
        return _no_data(f"strategy {strategy} where {where}")
    several = len({key[1] for key in groups}) > 1
    lines, bad, missing = [], 0, 0
    for key, runs in sorted(groups.items(), key=lambda item: (item[0][1], item[0][0])):
        ok = _ok(runs)
        broken = sum(r.at_chance for r in ok)
        accuracy = metric_interval([r.output_metric for r in ok])
        name = f"{key[1]} @ " if several else ""
        lines.append(
            f"{name}{_short(key[0])}: {broken}/{len(ok)} at chance, acc {accuracy.format(3)}"
            + _unfinished(runs)
        )
        missing += not ok
        bad += bool(ok) and broken != len(ok)
    verdict = FAIL if bad else (INCONCLUSIVE if missing else PASS)
    return Verdict(verdict, "; ".join(lines) + (" -- no finished run in a cell" if missing else ""))


def _unfinished(runs: list[RunResult]) -> str:
    """`` (2 diverged, 1 failed)``: runs that did not finish, counted apart by status."""
    counts: dict[str, int] = {}
    for r in runs:
        if r.status != "ok":
            counts[r.status] = counts.get(r.status, 0) + 1
    return (
        f" ({', '.join(f'{n} {status}' for status, n in sorted(counts.items()))})" if counts else ""
    )


@check("accuracy_vs", "learning_curves")
def seeds_learn(
    results: list[RunResult],
    strategy: str,
    where: dict[str, Any] | None = None,
    min_fraction: float = 0.0,
) -> Verdict:
    """Near the edge of learnability one seed decides nothing: in some initialisations a
    strategy learns, in others it does not. Per matching cell, the fraction of seeds whose
    output beats chance (the per-run test), with a 95% Clopper-Pearson interval, and which
    seeds learned. PASS when every cell's interval lies above ``min_fraction`` (0: at
    least one seed learned)."""
    groups = cells(results, strategy, where)
    if not groups:
        return _no_data(f"strategy {strategy} where {where}")
    lines, numbers, bad, missing = [], {}, 0, 0
    for key, runs in sorted(groups.items()):
        ok = sorted(_ok(runs), key=lambda r: r.spec["seed"])
        learned = [r.spec["seed"] for r in ok if not r.at_chance]
        if not ok:
            lines.append(f"{_short(key[0])}: no finished run{_unfinished(runs)}")
            missing += 1
            continue
        low, high = binomtest(len(learned), len(ok)).proportion_ci(method="exact")
        seeds = ", ".join(str(s) for s in learned) or "none"
        lines.append(
            f"{_short(key[0])}: {len(learned)}/{len(ok)} seeds learned "
            f"({len(learned) / len(ok):.2f} [{low:.2f}, {high:.2f}]; seeds {seeds})"
        )
        numbers[key[0]] = {"learned": learned, "seeds": len(ok), "interval": [low, high]}
        bad += not low > min_fraction
    verdict = FAIL if bad else (INCONCLUSIVE if missing else PASS)
    return Verdict(verdict, "; ".join(lines), numbers)


@check("accuracy_vs", "probe_heatmap_e2e", "port_curves")
def breakdown(
    results: list[RunResult],
    strategy: str = "e2e",
    knob: str = "n",
    where: dict[str, Any] | None = None,
    min_probe_gain: float = 0.1,
) -> Verdict:
    """From some knob value on, the strategy ends at chance in every seed, and there no
    module learned: no module's mean linear-probe accuracy over its ports rises more than
    ``min_probe_gain`` above the same probe on the untrained system.

    The breakdown point is found per seed (the smallest knob value from which that seed
    is at chance at every larger value) and reported with a 95% interval over seeds."""
    every = [r for r in results if r.spec["strategy"] == strategy and _matches(r, where or {})]
    if not every:
        return _no_data(f"strategy {strategy} where {where}")
    runs = _ok(every)
    empty = [v for v, rs in _by_knob(every, knob).items() if not _ok(rs)]
    if empty:  # diverged or failed runs are no evidence of a breakdown
        return Verdict(
            INCONCLUSIVE,
            f"no finished run of {strategy} at {knob} = {', '.join(map(str, empty))}"
            + _unfinished(every),
        )
    by_value = _by_knob(runs, knob)
    values = list(by_value)
    points = []
    for seed in sorted({r.spec["seed"] for r in runs}):
        flags = {v: any(r.at_chance for r in by_value[v] if r.spec["seed"] == seed) for v in values}
        point = next((v for i, v in enumerate(values) if all(flags[u] for u in values[i:])), None)
        points.append(point)
    broken_everywhere = [v for v in values if all(r.at_chance for r in _ok(by_value[v]))]
    common = next(
        (v for i, v in enumerate(values) if all(u in broken_everywhere for u in values[i:])), None
    )
    learned = _learned_modules(
        by_value, [v for v in values if common is not None and v >= common], min_probe_gain
    )
    seeds_text = ", ".join("none" if p is None else str(p) for p in points)
    if common is None or any(p is None for p in points):
        return Verdict(
            FAIL,
            f"{strategy} never settles at chance in every seed over {knob} = {values}; "
            f"per-seed breakdown {knob}: {seeds_text}",
            {"per_seed": points},
        )
    ci = mean_interval([float(p) for p in points])
    gains = "; ".join(f"{knob}={v}: {g}" for v, g in learned["text"].items())
    verdict = PASS if not learned["any"] else FAIL
    return Verdict(
        verdict,
        f"{strategy} at chance for {knob} >= {common} in every seed; breakdown {knob} per seed "
        f"{seeds_text}, mean {ci.format(2)}; probe gain over init per module: {gains}"
        + (f"; modules that learned: {', '.join(learned['any'])}" if learned["any"] else ""),
        {
            "breakdown": common,
            "per_seed": points,
            "interval": [ci.lo, ci.hi],
            "probe_gains": learned["gains"],
        },
    )


def _learned_modules(
    by_value: dict[Any, list[RunResult]], values: list[Any], min_gain: float
) -> dict[str, Any]:
    text: dict[Any, str] = {}
    learned: list[str] = []
    means: dict[str, float] = {}
    for v in values:
        gains: dict[str, list[float]] = {}
        for r in _ok(by_value[v]):
            for module, ports in r.modules.items():
                probed = [p for p in ports if p in r.probes and p in r.probes_at_init]
                if probed:
                    gain = sum(r.probes[p] - r.probes_at_init[p] for p in probed) / len(probed)
                    gains.setdefault(module, []).append(gain)
        parts = []
        for module, values_ in gains.items():
            mean = sum(values_) / len(values_)
            means[f"{module} at {v}"] = mean
            parts.append(f"{module} {mean:+.2f}")
            if mean >= min_gain:
                learned.append(f"{module} at {v}")
        text[v] = ", ".join(parts) if parts else "no probes stored"
    return {"text": text, "any": learned, "gains": means}


@check("examples_to_threshold_vs", "learning_curves")
def beats_by_ratio(
    results: list[RunResult],
    slow: str,
    fast: list[str],
    where: dict[str, Any] | None = None,
    min_ratio: float = 1.0,
) -> Verdict:
    """In every matching grid point, ``slow`` needs more than ``min_ratio`` times the
    examples-to-threshold of the best of ``fast`` (means over seeds; never = infinite)."""
    table = _ratios(results, slow, fast, where)
    if not table:
        return _no_data(f"{slow} and {fast} where {where}")
    lines = [
        f"{k}: {_fmt_ratio(r)} ({_fmt_ett(s)} vs {_fmt_ett(f)})" for k, (r, s, f) in table.items()
    ]
    failing = [k for k, (r, _, _) in table.items() if not math.isnan(r) and not r > min_ratio]
    undetermined = [k for k, (r, _, _) in table.items() if math.isnan(r)]
    detail = "; ".join(lines)
    if undetermined and not failing:
        detail += " -- neither reached the threshold at " + ", ".join(map(str, undetermined))
    verdict = FAIL if failing else (INCONCLUSIVE if undetermined else PASS)
    return Verdict(verdict, detail, {"ratios": {k: v[0] for k, v in table.items()}})


@check(
    "examples_to_threshold_vs",
)
def ratio_grows_with_knob(
    results: list[RunResult],
    slow: str,
    fast: list[str],
    knob: str = "n",
    where: dict[str, Any] | None = None,
) -> Verdict:
    """``slow`` needs more examples than the best of ``fast`` at every knob value (ratio
    > 1), and the ratio grows with the knob: it never falls and ends above where it
    started. A ratio where ``slow`` never reached the threshold is infinite."""
    table = _ratios(results, slow, fast, where, knob)
    if not table:
        return _no_data(f"{slow} and {fast} where {where}")
    lines = [
        f"{knob}={k}: {_fmt_ratio(r)} ({_fmt_ett(s)} vs {_fmt_ett(f)})"
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


@check("accuracy_vs", "learning_curves")
def every_seed_reaches(
    results: list[RunResult],
    strategies: str | list[str],
    where: dict[str, Any] | None = None,
    any_strategy: bool = False,
) -> Verdict:
    """Every finished seed of every matching cell reaches the threshold (a mean that does
    may hide a seed that never did, which makes examples-to-threshold infinite). With
    ``any_strategy``, a grid point passes when one of the strategies does so (as a best-of
    comparison needs)."""
    groups = cells(results, strategies, where)
    if not groups:
        return _no_data(f"strategies {strategies} where {where}")
    points: dict[str, list[tuple[bool, str]]] = {}
    unfinished: list[str] = []  # cells where every run diverged or failed
    open_points: set[str] = set()
    for key, runs in sorted(groups.items()):
        ok = sorted(_ok(runs), key=lambda r: r.spec["seed"])
        missed = [str(r.spec["seed"]) for r in ok if r.examples_to_threshold is None]
        text = (
            f"{key[1]} @ {_short(key[0])}: {len(ok) - len(missed)}/{len(ok)} seeds reached"
            + (f" (not seeds {', '.join(missed)})" if missed else "")
            + _unfinished(runs)
        )
        if not ok:  # every run diverged or failed: no evidence either way
            unfinished.append(f"{key[1]} @ {_short(key[0])}: no finished run{_unfinished(runs)}")
            open_points.add(key[0])
            continue
        points.setdefault(key[0], []).append((not missed, text))
    if any_strategy:
        short = [
            " / ".join(text for _, text in cell)
            for cell in points.values()
            if not any(good for good, _ in cell)
        ]
        undecided = len(open_points - set(points))
        total = len(open_points | set(points))
        unit = "grid points have a strategy that reaches it in every seed"
    else:
        short = [text for cell in points.values() for good, text in cell if not good]
        undecided, total, unit = len(unfinished), len(groups), "cells reach it in every seed"
    detail = f"{total - len(short) - undecided}/{total} {unit}"
    detail += "".join(f"; {text}" for text in [*short, *unfinished])
    return Verdict(FAIL if short else (INCONCLUSIVE if unfinished else PASS), detail)


def _paired(
    results: list[RunResult], a: str, b: str, knob: str, where: dict[str, Any] | None
) -> dict[Any, dict[int, tuple[float, float]]]:
    """Per value of ``knob``, per seed present in both: (a's, b's) output metric (seeds
    pair up: the same seed draws the same data, e.g. the same training subset)."""
    out: dict[Any, dict[int, tuple[float, float]]] = {}
    for cellsets in _by_knob_cells(results, [a, b], where).values():
        runs_a = {r.spec["seed"]: r for r in _ok(cellsets.get(a, []))}
        runs_b = {r.spec["seed"]: r for r in _ok(cellsets.get(b, []))}
        for seed in sorted(set(runs_a) & set(runs_b)):
            value = runs_a[seed].spec["knobs"][knob]
            pair = (runs_a[seed].output_metric, runs_b[seed].output_metric)
            out.setdefault(value, {})[seed] = pair
    return dict(sorted(out.items()))


@check("accuracy_vs", "accuracy_by_approach", "caption_metrics")
def accuracy_beats(
    results: list[RunResult],
    winner: str,
    loser: str,
    knob: str,
    at: Literal["smallest", "largest"] = "smallest",
    where: dict[str, Any] | None = None,
) -> Verdict:
    """At the smallest (``at: smallest``) or largest (``at: largest``) value of ``knob``,
    ``winner``'s output metric exceeds ``loser``'s: the 95% interval of the mean paired
    difference over seeds lies above 0."""
    table = _paired(results, winner, loser, knob, where)
    if not table:
        return _no_data(f"{winner} and {loser} with the same seeds where {where}")
    value = min(table) if at == "smallest" else max(table)
    pairs = list(table[value].values())
    if len(pairs) < 2:
        return Verdict(INCONCLUSIVE, f"{knob}={value}: {len(pairs)} paired seed(s); need 2")
    return _paired_verdict(pairs, f"{knob}={value}: {winner}", loser, "difference")


def _paired_verdict(
    pairs: list[tuple[float, float]], first: str, second: str, what: str, sign: float = 1.0
) -> Verdict:
    """PASS where the 95% interval of ``sign * (first - second)`` over the paired seeds
    lies above 0; the details give both means and the interval."""
    diff = mean_interval([sign * (a - b) for a, b in pairs])
    means = [float(np.mean([p[i] for p in pairs])) for i in (0, 1)]
    detail = (
        f"{first} {means[0]:.3f} vs {second} {means[1]:.3f}, {what} {diff.format(3)} "
        f"over {len(pairs)} seeds"
    )
    ok = diff.lo > 0
    return Verdict(PASS if ok else FAIL, detail + ("" if ok else " -- not above 0"))


@check("accuracy_vs", "accuracy_by_approach")
def crossover(
    results: list[RunResult],
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
    table = _paired(results, early, late, knob, where)
    if len(table) < 2:
        return _no_data(f"{early} and {late} at two values of {knob} where {where}")
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


@check("examples_to_threshold_vs", "learning_curves")
def schedule_floor(
    results: list[RunResult],
    slow: str,
    fast: list[str],
    where: dict[str, Any] | None = None,
) -> Verdict:
    """Where ``slow`` needs no more examples than ``fast``, the schedule says why: each of
    ``fast`` trains its modules one phase after another, so its output cannot be right
    before every module has begun training (its floor: the examples drawn before the
    phase in which its last module starts), and ``slow`` reached the threshold (mean
    over seeds) before the lowest of those floors."""
    table = _by_knob_cells(results, [slow, *fast], where)
    if not table:
        return _no_data(f"{slow} and {fast} where {where}")
    lines, bad = [], []
    for key, by_strategy in sorted(table.items()):
        slow_ett = _mean_ett(by_strategy.get(slow, []))
        floors = {
            name: _floor(runs[0]) for name, runs in by_strategy.items() if name != slow and runs
        }
        if slow_ett is None or not floors:
            continue
        lowest = min(floors.values())
        listed = ", ".join(f"{name} {f:,}" for name, f in sorted(floors.items()))
        lines.append(f"{key}: {slow} {_fmt_ett(slow_ett)}; floors: {listed}")
        if not slow_ett <= lowest:
            bad.append(key)
    if not lines:
        return _no_data(f"{slow} and {fast} with finished runs where {where}")
    detail = "; ".join(lines) + (
        f" -- {slow} not below the floor at {', '.join(bad)}" if bad else ""
    )
    return Verdict(FAIL if bad else PASS, detail)


def _floor(run: RunResult) -> int:
    """Examples drawn before the phase in which the run's last module starts training."""
    seen: set[str] = set()
    modules = {m for phase in run.phases for m in phase.get("train", [])}
    drawn = 0.0
    for phase in run.phases:
        seen |= set(phase.get("train", []))
        if seen >= modules:
            break
        drawn += phase["share"] * run.spec["budget"]
    return round(drawn)


def _by_knob_cells(
    results: list[RunResult], strategies: list[str], where: dict[str, Any] | None
) -> dict[str, dict[str, list[RunResult]]]:
    out: dict[str, dict[str, list[RunResult]]] = {}
    for (knobs, strategy), runs in cells(results, strategies, where).items():
        out.setdefault(_short(knobs), {})[strategy] = runs
    return out


@check(
    "examples_to_threshold_vs",
)
def examples_grow_with_knob(
    results: list[RunResult],
    strategy: str,
    knob: str,
    where: dict[str, Any] | None = None,
) -> Verdict:
    """Learning slows down: ``strategy``'s mean examples-to-threshold never falls as the
    knob grows and ends higher than it starts (a seed that never reached the threshold
    counts as infinitely many examples)."""
    runs = [r for r in results if r.spec["strategy"] == strategy and _matches(r, where or {})]
    if not runs:
        return _no_data(f"strategy {strategy} where {where}")
    by_value = _by_knob(runs, knob)
    means = {v: _mean_ett(rs) for v, rs in by_value.items()}
    values = [m for m in means.values() if m is not None]
    reached = {
        v: sum(r.examples_to_threshold is not None for r in rs) for v, rs in by_value.items()
    }
    lines = [
        f"{knob}={v}: {_fmt_ett(m)} ({reached[v]}/{len(by_value[v])} reached)"
        for v, m in means.items()
        if m is not None
    ]
    if len(values) < 2:
        return Verdict(INCONCLUSIVE, "; ".join(lines) + " -- fewer than two knob values")
    grows = all(b >= a for a, b in pairwise(values)) and values[-1] > values[0]
    detail = "; ".join(lines) + ("" if grows else " -- does not grow monotonically")
    return Verdict(PASS if grows else FAIL, detail)


def _fmt_ratio(r: float) -> str:
    if r != r:
        return "undetermined (neither reached)"
    return "inf (never reached)" if math.isinf(r) else f"{r:.2f}x"


def _ratios(
    results: list[RunResult],
    slow: str,
    fast: list[str],
    where: dict[str, Any] | None,
    knob: str | None = None,
) -> dict[Any, tuple[float, float, float]]:
    """Per grid point (or knob value): (ratio, slow mean ETT, best fast mean ETT)."""
    pool = [r for r in results if _matches(r, where or {})]
    groups: dict[Any, list[RunResult]] = {}
    for r in pool:
        key = r.spec["knobs"][knob] if knob else _short(json.dumps(r.spec["knobs"], sort_keys=True))
        groups.setdefault(key, []).append(r)
    table = {}
    for key, runs in sorted(groups.items()):
        slow_runs = [r for r in runs if r.spec["strategy"] == slow]
        fast_means = [_mean_ett([r for r in runs if r.spec["strategy"] == name]) for name in fast]
        fast_means = [m for m in fast_means if m is not None]
        slow_mean = _mean_ett(slow_runs)
        if slow_mean is None or not fast_means:
            continue
        best = min(fast_means)
        table[key] = (ett_ratio(slow_mean, best), slow_mean, best)
    return table


def ett_ratio(slow: float, fast: float) -> float:
    """``slow`` / ``fast`` examples-to-threshold, where never reaching it counts as
    infinitely many examples: never / reached = inf, reached / never = 0, and never /
    never is undetermined (NaN). Every ratio check reads "never" this way."""
    if math.isinf(slow) and math.isinf(fast):
        return math.nan
    if math.isinf(fast):
        return 0.0
    return slow / fast


def _mean_ett(runs: list[RunResult]) -> float | None:
    """Mean examples-to-threshold of the finished runs (None: no run finished)."""
    runs = _ok(runs)
    if not runs:
        return None
    values = [_ett(r) for r in runs]
    return math.inf if any(math.isinf(v) for v in values) else sum(values) / len(values)


def _short(knobs_json: str) -> str:
    """A grid point's label: the knobs that the current results vary over."""
    knobs = json.loads(knobs_json)
    shown = [k for k in knobs if k in _VARYING.get()] or list(knobs)
    return ",".join(f"{k}={knobs[k]}" for k in shown)


_VARYING: ContextVar[frozenset[str]] = ContextVar("varying", default=frozenset())


@check(
    "learning_curves",
)
def lost_in_phase(
    results: list[RunResult],
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
    groups = cells(results, strategy, where)
    if not groups:
        return _no_data(f"strategy {strategy} where {where}")
    lines, unexplained = [], []
    for key, runs in sorted(groups.items()):
        level = runs[0].spec["threshold"]
        ok = _ok(runs)
        final = metric_interval([r.output_metric for r in ok])
        if not ok or final.mean >= level:
            continue
        ends = [r.phase_ends() for r in ok]
        if any(not -len(e) <= phase < len(e) for e in ends):
            unexplained.append(f"{_short(key[0])}: no phase {phase}")
            continue
        before = metric_interval([e[phase]["output"] for e in ends])
        label = ends[0][phase]["label"]
        lost = before.mean >= level
        lines.append(
            f"{key[1]} @ {_short(key[0])}: {before.format(3)} after {label}, "
            f"{final.format(3)} at the end ({final.mean - before.mean:+.3f}; "
            f"{'lost in a later phase' if lost else f'short of {level:g} already'})"
        )
        if not lost and not or_short:
            unexplained.append(f"{_short(key[0])} never reached {level:g}")
    if not lines and not unexplained:
        return Verdict(INCONCLUSIVE, "no cell ends below the threshold: nothing lost")
    detail = "; ".join(lines) + (
        f" -- not lost in a later phase: {'; '.join(unexplained)}" if unexplained else ""
    )
    return Verdict(FAIL if unexplained else PASS, detail, {"cells": lines})


@check("accuracy_vs", "learning_curves")
def oracle_ceiling(
    results: list[RunResult],
    strategies: str | list[str],
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
    groups = cells(results, strategies, where)
    if not groups:
        return _no_data(f"strategies {strategies} where {where}")
    lines, other, missing, ceilings = [], [], [], []
    for key, runs in sorted(groups.items()):
        level = runs[0].spec["threshold"]
        ok = _ok(runs)
        final = metric_interval([r.output_metric for r in ok])
        if not ok or final.mean >= level:
            continue
        label = f"{key[1]} @ {_short(key[0])}"
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


def _varying(results: list[RunResult]) -> frozenset[str]:
    seen: dict[str, set[str]] = {}
    for r in results:
        for k, v in r.spec["knobs"].items():
            seen.setdefault(k, set()).add(json.dumps(v))
    return frozenset(k for k, values in seen.items() if len(values) > 1)


@check(
    "gradient_snr",
)
def snr_contrast(
    results: list[RunResult],
    snr: list[Any],
    falling: str = "e2e",
    flat: str = "hinted",
    module: str = "",
    knob: str = "k",
    min_drop: float = 2.0,
    max_flat_drop: float = 1.0,
    where: dict[str, Any] | None = None,
) -> Verdict:
    """Gradient SNR of ``module`` (at initialisation, mean log10 over inits) falls by at
    least ``min_drop`` decades from the smallest to the largest knob value under
    ``falling``, and by at most ``max_flat_drop`` decades under ``flat``.

    An SNR below the estimator's resolution is an upper bound. It may stand at the low end
    of a drop (the true drop is then at least as large), but nowhere else: a drop cannot be
    shown from a bound at its start, nor flatness from any bound."""
    series: dict[str, list[tuple[Any, float, bool]]] = {falling: [], flat: []}
    methods: dict[str, set[str]] = {falling: set(), flat: set()}
    batches: list[int] = []
    for r in snr:
        if not _knobs_match(r.knobs, where or {}):
            continue
        if r.strategy in series and module in r.per_init:
            methods[r.strategy].add(r.method)
            if r.method == "sampled":
                batches.append(r.batches)
            series[r.strategy].append(
                (r.knobs[knob], r.log10_summary(module)[0], r.is_bound(module))
            )
    if any(len(v) < 2 for v in series.values()):
        return _no_data(f"gradient SNR of {module} under {falling} and {flat} at two {knob} values")
    drops, parts, unresolved = {}, [], []
    for name, points in series.items():
        points.sort()
        drops[name] = points[0][1] - points[-1][1]
        listed = ", ".join(f"{knob}={k}: {'<= ' if b else ''}{v:.2f}" for k, v, b in points)
        below = [str(k) for k, v, _ in points if v < math.log10(_FLOAT32_EPS)]
        how = " (exact)" if methods[name] == {"exact"} else ""
        parts.append(
            f"{name}{how}: log10 SNR {listed} (drop {'>= ' if points[-1][2] else ''}"
            f"{drops[name]:.2f} decades"
            + (f"; below float32 eps at {knob} = {', '.join(below)}" if below else "")
            + ")"
        )
        bounds = points if name == flat else points[:-1]
        unresolved += [f"{name} at {knob}={k}" for k, _, b in bounds if b]
    ok = drops[falling] >= min_drop and drops[flat] <= max_flat_drop and not unresolved
    why = ""
    if unresolved:
        why = (
            f" -- SNR below resolution ({', '.join(unresolved)}); measured from "
            f"{max(batches, default=0)} batches, a bound falls about tenfold with ten times "
            "as many (snr: batches), or compute it exactly (snr: exact) where the training "
            "distribution is finite"
        )
    elif not ok:
        why = f" -- needs a drop >= {min_drop} under {falling} and <= {max_flat_drop} under {flat}"
    numbers = {"drops": drops, "unresolved": unresolved, "batches": max(batches, default=0)}
    return Verdict(PASS if ok else FAIL, "; ".join(parts) + why, numbers)


@check(
    "gradient_snr",
)
def snr_below_resolution(
    results: list[RunResult],
    snr: list[Any],
    falling: str = "e2e",
    flat: str = "hinted",
    module: str = "",
    knob: str = "k",
    min_drop: float = 2.0,
    max_flat_drop: float = 1.0,
    where: dict[str, Any] | None = None,
) -> Verdict:
    """The diagnostic of an ``snr_contrast`` (same parameters) that cannot be decided:
    PASS when points it needs are upper bounds (below the estimator's resolution), with
    the batches they came from; each tenfold more batches resolve about tenfold smaller
    SNRs. FAIL when every point it needs is resolved (then resolution is not why)."""
    contrast = snr_contrast(
        results, snr, falling, flat, module, knob, min_drop, max_flat_drop, where
    )
    if contrast.verdict == INCONCLUSIVE:
        return contrast
    unresolved = contrast.numbers.get("unresolved", [])
    batches = contrast.numbers.get("batches", 0)
    if not unresolved:
        return Verdict(FAIL, "every point the contrast needs is resolved")
    detail = (
        f"below resolution from {batches} sampled batches: {', '.join(unresolved)}; "
        f"10x the batches resolve about 10x smaller SNRs ({10 * batches} for one decade "
        f"lower, {100 * batches} for two)"
    )
    return Verdict(PASS, detail, {"unresolved": unresolved})


_FLOAT32_EPS = 2.0**-23


@check(
    "gradient_snr",
)
def alignment_contrast(
    results: list[RunResult],
    snr: list[Any],
    low: str,
    high: str,
    module: str,
    where: dict[str, Any] | None = None,
    low_where: dict[str, Any] | None = None,
    boundary: float = 0.2,
) -> Verdict:
    """The gradient alignment of ``module`` (the cosine between the mean gradient of the
    measured loss and that of its own ports' loss, mean over inits; see
    ``SNRResult.alignment``) lies below ``boundary`` under ``low`` at every point of
    ``where`` and ``low_where``, and above it under ``high`` at every point of ``where``:
    the loss carries what the module's target would teach it only under ``high``."""

    def points(strategy: str, extra: dict[str, Any]) -> list[tuple[Any, float, float, float]]:
        chosen = []
        for r in snr:
            if r.strategy != strategy or module not in getattr(r, "alignment", {}):
                continue
            if not _knobs_match(r.knobs, {**(where or {}), **extra}):
                continue
            values = [v for v in r.alignment[module] if not math.isnan(v)]
            ci = mean_interval(values) if values else None
            label = _short(json.dumps(r.knobs, sort_keys=True))
            if ci is not None:
                chosen.append((label, ci.mean, ci.lo, ci.hi))
        return sorted(chosen)

    lows, highs = points(low, low_where or {}), points(high, {})
    if not lows or not highs:
        return _no_data(f"gradient alignment of {module} under {low} and {high}")
    bad = [f"{low} @ {k}" for k, v, _, _ in lows if v >= boundary]
    bad += [f"{high} @ {k}" for k, v, _, _ in highs if v <= boundary]

    def listed(rows: list[tuple[Any, float, float, float]]) -> str:
        return ", ".join(f"{k}: {v:.2f} [{lo:.2f}, {hi:.2f}]" for k, v, lo, hi in rows)

    detail = f"{low}: {listed(lows)}; {high}: {listed(highs)}" + (
        f" -- on the wrong side of {boundary:g}: {'; '.join(bad)}" if bad else ""
    )
    return Verdict(PASS if not bad else FAIL, detail)


def _knobs_match(knobs: dict[str, Any], where: dict[str, Any]) -> bool:
    fake = RunResult.__new__(RunResult)
    fake.spec = {"knobs": knobs}
    return _matches(fake, where)


def _point_value(cellsets: dict[str, list[RunResult]], knob: str) -> Any:
    runs = next(iter(cellsets.values()))
    return runs[0].spec["knobs"].get(knob)


@check("accuracy_vs", "accuracy_against")
def stays_at_chance(
    results: list[RunResult],
    base: str,
    others: list[str],
    knob: str,
    where: dict[str, Any] | None = None,
) -> Verdict:
    """No rescue: at every value of ``knob`` where every finished seed of ``base`` ends
    at chance, every finished seed of each of ``others`` (e.g. ensembles of ``base``, a
    wider ``base``) ends at chance too. Needs at least one such value where each of
    ``others`` has finished runs; a value where ``base`` learns is not judged."""
    table = _by_knob_cells(results, [base, *others], where)
    if not table:
        return _no_data(f"{base} and {others} where {where}")
    judged, rescued, lines = 0, [], []
    for cellsets in sorted(table.values(), key=lambda c: _sortable(_point_value(c, knob))):
        value = _point_value(cellsets, knob)
        ok_base = _ok(cellsets.get(base, []))
        if not ok_base or not all(r.at_chance for r in ok_base):
            continue
        parts = [f"{base} {metric_interval([r.output_metric for r in ok_base]).format(3)}"]
        complete = True
        for other in others:
            ok = _ok(cellsets.get(other, []))
            if not ok:
                complete = False
                parts.append(f"{other}: no finished run")
                continue
            broken = sum(r.at_chance for r in ok)
            accuracy = metric_interval([r.output_metric for r in ok]).format(3)
            parts.append(f"{other} {accuracy} ({broken}/{len(ok)} at chance)")
            if broken != len(ok):
                rescued.append(f"{other} at {knob}={value}")
        judged += complete
        lines.append(f"{knob}={value}: " + ", ".join(parts))
    if not lines:
        return Verdict(
            INCONCLUSIVE, f"{base} is at chance at no value of {knob}: nothing to rescue"
        )
    detail = "; ".join(lines)
    if rescued:
        return Verdict(FAIL, f"rescued: {', '.join(rescued)}; {detail}")
    return Verdict(PASS if judged else INCONCLUSIVE, detail)


@check("accuracy_vs", "accuracy_against")
def best_at_each(
    results: list[RunResult],
    strategies: list[str],
    expected: list[str],
    knob: str,
    where: dict[str, Any] | None = None,
) -> Verdict:
    """At every value of ``knob``, the strategy with the highest mean output metric among
    ``strategies`` is one of ``expected``, and it beats the best of the rest: the 95%
    interval of the paired difference over seeds (same seed, same data) lies above 0."""
    table = _by_knob_cells(results, list(strategies), where)
    if not table:
        return _no_data(f"{strategies} where {where}")
    lines, wrong, unresolved = [], [], []
    for cellsets in sorted(table.values(), key=lambda c: _sortable(_point_value(c, knob))):
        value = _point_value(cellsets, knob)
        means = {
            name: float(np.mean([r.output_metric for r in _ok(runs)]))
            for name, runs in cellsets.items()
            if _ok(runs)
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
            seeds_a = {r.spec["seed"]: r.output_metric for r in _ok(cellsets[best])}
            seeds_b = {r.spec["seed"]: r.output_metric for r in _ok(cellsets[rival])}
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


def _sortable(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, (int, float)) else (1, str(value))


def _seed_gaps(
    results: list[RunResult], a: str, b: str, knob: str, where: dict[str, Any] | None
) -> dict[Any, dict[int, float]]:
    """Per value of ``knob``, per seed present for both: a's output metric minus b's."""
    return {
        value: {seed: pa - pb for seed, (pa, pb) in pairs.items()}
        for value, pairs in _paired(results, a, b, knob, where).items()
    }


@check("accuracy_vs", "caption_metrics")
def gap_grows_with_knob(
    results: list[RunResult],
    a: str,
    b: str,
    knob: str,
    where: dict[str, Any] | None = None,
) -> Verdict:
    """The gap ``a`` minus ``b`` (output metric, paired by seed) is larger at the largest
    value of ``knob`` than at the smallest: the 95% interval over seeds of (gap at the
    largest) - (gap at the smallest) lies above 0."""
    gaps = _seed_gaps(results, a, b, knob, where)
    if len(gaps) < 2:
        return _no_data(f"{a} and {b} at two values of {knob} where {where}")
    values = sorted(gaps, key=_sortable)
    low, high = gaps[values[0]], gaps[values[-1]]
    seeds = sorted(set(low) & set(high))
    listed = ", ".join(f"{knob}={v}: {np.mean(list(gaps[v].values())):+.3f}" for v in values)
    if len(seeds) < 2:
        return Verdict(INCONCLUSIVE, f"gap {a} - {b}: {listed}; {len(seeds)} paired seed(s)")
    growth = mean_interval([high[s] - low[s] for s in seeds])
    detail = f"gap {a} - {b}: {listed}; change {growth.format(3)} over {len(seeds)} seeds"
    ok = growth.lo > 0
    return Verdict(PASS if ok else FAIL, detail + ("" if ok else " -- not above 0"))


@check("accuracy_vs", "caption_metrics")
def gap_with_budget(
    results: list[RunResult],
    a: str,
    b: str,
    smaller: str,
    direction: Literal["shrinks", "grows"],
    knob: str,
    at: Literal["smallest", "largest"] = "largest",
    where: dict[str, Any] | None = None,
) -> Verdict:
    """How the gap ``a`` minus ``b`` moves with the training budget: at the smallest or
    largest value of ``knob``, the gap at the experiment's budget minus the gap at a
    smaller one (the variant labelled ``smaller``: ``a@smaller`` and ``b@smaller``, runs
    trained on that budget from the start), paired by seed, has a 95% interval below 0
    (``shrinks``) or above 0 (``grows``)."""
    names = [a, b, f"{a}@{smaller}", f"{b}@{smaller}"]
    table = _by_knob_cells(results, names, where)
    cellsets = [c for c in table.values() if all(_ok(c.get(n, [])) for n in names)]
    if not cellsets:
        return _no_data(f"{', '.join(names)} where {where}")
    pick = min if at == "smallest" else max
    chosen = pick(cellsets, key=lambda c: _sortable(_point_value(c, knob)))
    value = _point_value(chosen, knob)
    by = {n: {r.spec["seed"]: r for r in _ok(chosen[n])} for n in names}
    seeds = sorted(set.intersection(*(set(v) for v in by.values())))
    if len(seeds) < 2:
        return Verdict(INCONCLUSIVE, f"{knob}={value}: {len(seeds)} paired seed(s); need 2")
    early = [by[names[2]][s].output_metric - by[names[3]][s].output_metric for s in seeds]
    late = [by[a][s].output_metric - by[b][s].output_metric for s in seeds]
    change = mean_interval([y - x for x, y in zip(early, late, strict=True)])
    budgets = (by[names[2]][seeds[0]].spec["budget"], by[a][seeds[0]].spec["budget"])
    detail = (
        f"{knob}={value}: gap {a} - {b} {np.mean(early):+.3f} at budget {budgets[0]:,}, "
        f"{np.mean(late):+.3f} at {budgets[1]:,}; change {change.format(3)} over "
        f"{len(seeds)} seeds"
    )
    ok = change.hi < 0 if direction == "shrinks" else change.lo > 0
    side = "below" if direction == "shrinks" else "above"
    return Verdict(PASS if ok else FAIL, detail + ("" if ok else f" -- not {side} 0"))


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
    results: list[RunResult], a: str, b: str, metric: str, knob: str, at: str, where: Any
) -> tuple[Any, list[tuple[float, float]]]:
    table = _by_knob_cells(results, [a, b], where)
    cellsets = [c for c in table.values() if _ok(c.get(a, [])) and _ok(c.get(b, []))]
    if not cellsets:
        return None, []
    pick = min if at == "smallest" else max
    chosen = pick(cellsets, key=lambda c: _sortable(_point_value(c, knob)))
    runs_a = {r.spec["seed"]: artifact_value(r, metric) for r in _ok(chosen[a])}
    runs_b = {r.spec["seed"]: artifact_value(r, metric) for r in _ok(chosen[b])}
    pairs = [
        (runs_a[s], runs_b[s])
        for s in sorted(set(runs_a) & set(runs_b))
        if runs_a[s] is not None and runs_b[s] is not None
    ]
    return _point_value(chosen, knob), pairs  # type: ignore[return-value]


@check("closed_loop_vs_{knob}", "closed_loop_conditions", "birds_eye")
def artifact_beats(
    results: list[RunResult],
    winner: str,
    loser: str,
    metric: str,
    knob: str,
    at: Literal["smallest", "largest"] = "smallest",
    lower_is_better: bool = True,
    where: dict[str, Any] | None = None,
) -> Verdict:
    """At the smallest or largest value of ``knob``, ``winner`` does better than
    ``loser`` on a number the runs kept after training (``metric``, a dotted path into
    ``artifacts``, e.g. ``closed_loop.nominal.departures_per_km``): the 95% interval of
    the paired difference over seeds lies on the better side of 0."""
    value, pairs = _artifact_pairs(results, winner, loser, metric, knob, at, where)
    if len(pairs) < 2:
        return _no_data(f"{metric} of {winner} and {loser} with two paired seeds where {where}")
    better = "lower" if lower_is_better else "higher"
    return _paired_verdict(
        pairs,
        f"{knob}={value}: {metric} {winner}",
        loser,
        f"advantage ({better} is better)",
        sign=-1.0 if lower_is_better else 1.0,
    )


@check("closed_loop_vs_shift", "closed_loop_conditions")
def degrades_less(
    results: list[RunResult],
    robust: str,
    fragile: str,
    nominal: str,
    shifted: str,
    knob: str,
    at: Literal["smallest", "largest"] = "largest",
    lower_is_better: bool = True,
    where: dict[str, Any] | None = None,
) -> Verdict:
    """Under a shift, ``robust`` loses less than ``fragile``: the change from the
    ``nominal`` to the ``shifted`` number (dotted artifact paths, e.g.
    ``closed_loop.nominal.mean_abs_offset`` and ``closed_loop.dark.mean_abs_offset``),
    in the worse direction, is smaller for ``robust``: the 95% interval over seeds of
    (fragile's loss - robust's loss) lies above 0."""
    value, base = _artifact_pairs(results, robust, fragile, nominal, knob, at, where)
    _, moved = _artifact_pairs(results, robust, fragile, shifted, knob, at, where)
    if len(base) < 2 or len(moved) != len(base):
        return _no_data(f"{nominal} and {shifted} of {robust} and {fragile} where {where}")
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


@check(
    "error_propagation",
)
def artifact_exceeds(
    results: list[RunResult],
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
    value, pairs = _artifact_pairs(results, strategy, strategy, larger, knob, at, where)
    _, other = _artifact_pairs(results, strategy, strategy, smaller, knob, at, where)
    if len(pairs) < 2 or len(other) != len(pairs):
        return _no_data(f"{larger} and {smaller} of {strategy} with two seeds where {where}")
    both = [(a[0], b[0]) for a, b in zip(pairs, other, strict=True)]
    return _paired_verdict(both, f"{knob}={value}, {strategy}: {larger}", smaller, "difference")


_WHERE_OPS = {">=", "<=", ">", "<", "in"}


def check_params(name: str, params: dict[str, Any], knobs: Iterable[str]) -> None:
    """Refuse, before anything trains, claim parameters that would break the check: a
    missing or unknown one, a value of the wrong type, a knob the task does not have, a
    ``where`` that is not ``{knob: value or {op: value}}``. Raises ``ValueError`` naming
    the parameter (the caller adds the file and field)."""
    check = CHECKS[name]
    hints = typing.get_type_hints(check)
    params = normalized(name, params)
    accepted = [p for p in inspect.signature(check).parameters if p not in ("results", "snr")]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"{name} takes no {', '.join(unknown)}; it accepts: {', '.join(accepted)}")
    for parameter in inspect.signature(check).parameters.values():
        if parameter.name in ("results", "snr"):
            continue
        if parameter.default is inspect.Parameter.empty and parameter.name not in params:
            raise ValueError(f"{name} needs {parameter.name!r}")
    known = list(knobs)
    for key, value in params.items():
        try:
            TypeAdapter(hints[key]).validate_python(value, strict=True)
        except ValidationError:
            raise ValueError(
                f"{key} of {name} expects {_type_name(hints[key])}, got {value!r}"
            ) from None
        if key == "knob" and value not in known:
            raise ValueError(f"knob {value!r} of {name} is not a knob of the task: {known}")
        if key in ("where", "low_where") and value is not None:
            for knob, wanted in value.items():
                if knob not in known:
                    raise ValueError(f"where names {knob!r}, not a knob of the task: {known}")
                if isinstance(wanted, dict) and not set(wanted) <= _WHERE_OPS:
                    ops = ", ".join(sorted(_WHERE_OPS))
                    raise ValueError(f"where.{knob} takes the operators {ops}, got {wanted}")


def normalized(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """One convention for every check: a parameter that takes a list of strategies (or
    other names) also takes a single one, as every ``strategies`` parameter does."""
    hints = typing.get_type_hints(CHECKS[name])
    out = dict(params)
    for key, value in params.items():
        if isinstance(value, str) and typing.get_origin(hints.get(key)) is list:
            out[key] = [value]
    return out


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def evaluate(
    claims: list[Any],
    results: list[RunResult],
    snr: list[Any] | None = None,
    resample: bool = True,
    undecided: dict[str, str] | None = None,
) -> list[Verdict]:
    """Run each claim (objects with id, check, statement, params) on the results (and on
    gradient-SNR measurements, for checks that take ``snr``); with ``resample``, also on
    resamples of the seeds, for each verdict's stability (``stability``). ``undecided``:
    claim id -> why the profile cannot decide it, said beside its verdict."""
    from e2elab.stability import margin, stability

    verdicts = []
    _VARYING.set(_varying(results))
    for claim in claims:
        check = CHECKS[claim.check]
        extra = {"snr": snr or []} if "snr" in inspect.signature(check).parameters else {}
        params = normalized(claim.check, claim.params)
        verdict = check(results, **extra, **params)
        if resample:
            judge = functools.partial(_judge, check, {**extra, **params})
            judged = stability(verdict.verdict, judge, results)
            verdict.stable, verdict.resamples = judged.share, judged.resamples
            verdict.margin = margin(claim.check, params, verdict.numbers)
        verdict.id, verdict.statement = claim.id, claim.statement
        verdict.explains = list(getattr(claim, "explains", []) or [])
        why = (undecided or {}).get(claim.id)
        if why:
            verdict.undecided = why
            verdict.details = f"this profile cannot decide it: {why}. {verdict.details}"
        verdicts.append(verdict)
    return verdicts


def _judge(check: Callable[..., Verdict], params: dict[str, Any], runs: list[Any]) -> str:
    return check(runs, **params).verdict


def deviations(verdicts: list[Verdict]) -> list[dict[str, str]]:
    """For every FAIL that is not itself a diagnostic: the diagnostic claims that explain
    it (``explains``), with their verdicts and numbers. A FAIL is "explained" when all of
    them pass, "partly explained" when some do, and "unexplained" when none does (or none
    measures it)."""
    rows = []
    for verdict in verdicts:
        if verdict.verdict != FAIL or verdict.explains:
            continue  # a diagnostic's FAIL shows under the claim it would explain
        found = [d for d in verdicts if verdict.id in d.explains]
        passed = [d for d in found if d.verdict == PASS]
        lines = [f"{d.id} ({d.verdict}): {d.statement} {d.details}" for d in found]
        rows.append(
            {
                "id": verdict.id,
                "verdict": (
                    "explained"
                    if found and len(passed) == len(found)
                    else "partly explained"
                    if passed
                    else "unexplained"
                ),
                "by": ", ".join(d.id for d in found) or "-",
                "details": "\n".join(lines) or "no diagnostic measures this yet",
            }
        )
    return rows
