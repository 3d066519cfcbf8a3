"""The runs a claim reads, as one object: ``Cells``, matched by ``where`` and strategy
patterns, grouped into cells (one grid point x one strategy, over seeds) by
``query.group``, labelled by the knobs that vary, and paired by seed."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from e2elab.query import group, hashable
from e2elab.records import RunResult

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    "in": lambda a, b: a in b,
}


def knobs_match(knobs: dict[str, Any], where: dict[str, Any] | None) -> bool:
    """``where`` maps knob -> value, or knob -> {">=": v, "<=": v, "in": [...]}."""
    for name, wanted in (where or {}).items():
        value = knobs.get(name)
        if isinstance(wanted, dict):
            if not all(_OPS[op](value, arg) for op, arg in wanted.items()):
                return False
        elif value != wanted:
            return False
    return True


def strategy_matches(name: str, patterns: str | list[str]) -> bool:
    pats = [patterns] if isinstance(patterns, str) else patterns
    # a strategy's own name matches itself even where it holds pattern characters
    # (frozen_others:force=digit_[2-9],...)
    return any(name == p or fnmatchcase(name, p) for p in pats)


def varying(knob_sets: Iterable[dict[str, Any]]) -> frozenset[str]:
    """The knobs that take more than one value over ``knob_sets``."""
    seen: dict[str, set[str]] = {}
    for knobs in knob_sets:
        for k, v in knobs.items():
            seen.setdefault(k, set()).add(json.dumps(v, sort_keys=True))
    return frozenset(k for k, values in seen.items() if len(values) > 1)


def walked_knob(knob: str | None, knob_sets: Iterable[dict[str, Any]]) -> str | None:
    """The knob a check walks: the one named, or else the only one that varies over the
    runs it reads (None: several vary, or none does; the check asks for ``knob``)."""
    if knob is not None:
        return knob
    moving = sorted(varying(knob_sets))
    return moving[0] if len(moving) == 1 else None


@dataclass(frozen=True)
class Cells:
    """Runs, with the knobs that vary over every run the claims of an experiment read
    (``varying``): a cell's label shows those, whichever subset a check selects or a
    stability resample leaves. Build with ``Cells.of``; every check takes one."""

    runs: tuple[RunResult, ...]
    varying: frozenset[str]

    @classmethod
    def of(cls, results: Iterable[RunResult] | Cells) -> Cells:
        if isinstance(results, Cells):
            return results
        runs = tuple(results)
        return cls(runs, varying(r.spec.knobs for r in runs))

    def resampled(self, runs: Iterable[RunResult]) -> Cells:
        """Other runs (a resample of the seeds) under the same labels."""
        return Cells(tuple(runs), self.varying)

    def select(
        self, strategies: str | list[str] | None = None, where: dict[str, Any] | None = None
    ) -> Cells:
        """The runs of ``strategies`` (names or * patterns; None: every one) at the grid
        points ``where`` matches."""
        return self.resampled(
            r
            for r in self.runs
            if (strategies is None or strategy_matches(r.spec.strategy, strategies))
            and knobs_match(r.spec.knobs, where)
        )

    def __iter__(self) -> Any:
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)

    def grouped(self) -> dict[tuple[str, str], list[RunResult]]:
        """(knobs as JSON, strategy) -> that cell's runs, in first-seen order."""
        return group(self.runs, "knobs", "strategy")  # type: ignore[return-value]

    def by_value(self, knob: str) -> dict[Any, list[RunResult]]:
        """Knob value -> the runs there, in ascending order of the value."""
        return {key[0]: runs for key, runs in sorted(group(self.runs, knob).items())}

    def by_point(self) -> dict[str, dict[str, list[RunResult]]]:
        """Grid point (its label) -> strategy -> that cell's runs."""
        out: dict[str, dict[str, list[RunResult]]] = {}
        for (knobs, strategy), runs in self.grouped().items():
            out.setdefault(self.label(knobs), {})[strategy] = runs
        return out

    def label(self, knobs: str | dict[str, Any]) -> str:
        """A grid point's label: the knobs that vary (all of them where none does)."""
        values = json.loads(knobs) if isinstance(knobs, str) else dict(sorted(knobs.items()))
        shown = [k for k in values if k in self.varying] or list(values)
        return ",".join(f"{k}={values[k]}" for k in shown)

    def varying_here(self) -> frozenset[str]:
        """The knobs that vary over these runs (``varying``: over every run)."""
        return varying(r.spec.knobs for r in self.runs)

    def knob(self, knob: str | None) -> str | None:
        """See ``walked_knob``, over these runs."""
        return walked_knob(knob, (r.spec.knobs for r in self.runs))

    def paired(self, a: str, b: str, knob: str) -> dict[Any, dict[int, tuple[float, float]]]:
        """Per value of ``knob``, per seed present in both: (a's, b's) output metric
        (seeds pair up: the same seed draws the same data, e.g. the same subset)."""
        out: dict[Any, dict[int, tuple[float, float]]] = {}
        for by_strategy in self.select([a, b]).by_point().values():
            runs_a = {r.spec.seed: r for r in finished(by_strategy.get(a, []))}
            runs_b = {r.spec.seed: r for r in finished(by_strategy.get(b, []))}
            for seed in sorted(set(runs_a) & set(runs_b)):
                value = runs_a[seed].spec.knobs[knob]
                pair = (runs_a[seed].output_metric, runs_b[seed].output_metric)
                out.setdefault(value, {})[seed] = pair
        return dict(sorted(out.items()))

    def seed_gaps(self, a: str, b: str, knob: str) -> dict[Any, dict[int, float]]:
        """Per value of ``knob``, per seed present for both: a's output metric minus b's."""
        return {
            value: {seed: pa - pb for seed, (pa, pb) in pairs.items()}
            for value, pairs in self.paired(a, b, knob).items()
        }

    def ratios(
        self, loser: str, winners: list[str], knob: str | None = None
    ) -> dict[Any, tuple[float, float, float]]:
        """Per grid point (its label), or per value of ``knob``: (ratio, the loser's mean
        examples-to-threshold, the best winner's mean). Strategies named exactly."""
        groups: dict[Any, list[RunResult]] = {}
        for r in self.runs:
            key = hashable(r.spec.knobs[knob]) if knob else self.label(r.spec.knobs)
            groups.setdefault(key, []).append(r)
        table = {}
        for key, runs in sorted(groups.items()):
            loser_mean = mean_ett([r for r in runs if r.spec.strategy == loser])
            means = [mean_ett([r for r in runs if r.spec.strategy == name]) for name in winners]
            found = [m for m in means if m is not None]
            if loser_mean is None or not found:
                continue
            best = min(found)
            table[key] = (ett_ratio(loser_mean, best), loser_mean, best)
        return table


# ---------------------------------------------------------------- what a cell's runs give


def finished(runs: Iterable[RunResult]) -> list[RunResult]:
    """The runs that finished (neither diverged nor failed)."""
    return [r for r in runs if r.status == "ok"]


def unfinished_note(runs: list[RunResult]) -> str:
    """`` (2 diverged, 1 failed)``: runs that did not finish, counted apart by status."""
    counts: dict[str, int] = {}
    for r in runs:
        if r.status != "ok":
            counts[r.status] = counts.get(r.status, 0) + 1
    return (
        f" ({', '.join(f'{n} {status}' for status, n in sorted(counts.items()))})" if counts else ""
    )


def ett(r: RunResult) -> float:
    """Examples to threshold; a run that never reached it counts as infinitely many."""
    return math.inf if r.examples_to_threshold is None else float(r.examples_to_threshold)


def mean_ett(runs: list[RunResult]) -> float | None:
    """Mean examples-to-threshold of the finished runs (None: no run finished)."""
    runs = finished(runs)
    if not runs:
        return None
    values = [ett(r) for r in runs]
    return math.inf if any(math.isinf(v) for v in values) else sum(values) / len(values)


def ett_ratio(slow: float, fast: float) -> float:
    """``slow`` / ``fast`` examples-to-threshold, where never reaching it counts as
    infinitely many examples: never / reached = inf, reached / never = 0, and never /
    never is undetermined (NaN). Every ratio check reads "never" this way."""
    if math.isinf(slow) and math.isinf(fast):
        return math.nan
    if math.isinf(fast):
        return 0.0
    return slow / fast


def fmt_ett(value: float) -> str:
    return "never" if math.isinf(value) else f"{value:,.0f}"


def fmt_ratio(r: float) -> str:
    if r != r:
        return "undetermined (neither reached)"
    return "inf (never reached)" if math.isinf(r) else f"{r:.2f}x"


def point_value(by_strategy: dict[str, list[RunResult]], knob: str) -> Any:
    """The value of ``knob`` at a grid point (its cells, by strategy)."""
    runs = next(iter(by_strategy.values()))
    return runs[0].spec.knobs.get(knob)


def sortable(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, (int, float)) else (1, str(value))


def cells(
    results: Iterable[RunResult] | Cells,
    strategies: str | list[str],
    where: dict[str, Any] | None = None,
) -> dict[tuple[str, str], list[RunResult]]:
    """Runs grouped into (knobs as JSON, strategy) cells; strategies may use * patterns."""
    return Cells.of(results).select(strategies, where).grouped()
