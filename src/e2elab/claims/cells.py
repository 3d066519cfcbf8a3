"""The runs a claim reads: matched by ``where`` and strategy patterns, grouped into cells
(one grid point x one strategy, over seeds), labelled by what varies, paired by seed."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from fnmatch import fnmatchcase
from typing import Any

import numpy as np

from e2elab.claims.verdict import FAIL, INCONCLUSIVE, PASS, Verdict
from e2elab.query import group
from e2elab.records import RunResult
from e2elab.stats import mean_interval, metric_interval


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


def _unfinished(runs: list[RunResult]) -> str:
    """`` (2 diverged, 1 failed)``: runs that did not finish, counted apart by status."""
    counts: dict[str, int] = {}
    for r in runs:
        if r.status != "ok":
            counts[r.status] = counts.get(r.status, 0) + 1
    return (
        f" ({', '.join(f'{n} {status}' for status, n in sorted(counts.items()))})" if counts else ""
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


def _varying(results: list[RunResult]) -> frozenset[str]:
    seen: dict[str, set[str]] = {}
    for r in results:
        for k, v in r.spec["knobs"].items():
            seen.setdefault(k, set()).add(json.dumps(v))
    return frozenset(k for k, values in seen.items() if len(values) > 1)


def _knobs_match(knobs: dict[str, Any], where: dict[str, Any]) -> bool:
    fake = RunResult.__new__(RunResult)
    fake.spec = {"knobs": knobs}
    return _matches(fake, where)


def _point_value(cellsets: dict[str, list[RunResult]], knob: str) -> Any:
    runs = next(iter(cellsets.values()))
    return runs[0].spec["knobs"].get(knob)


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


def short_cells(
    groups: dict[tuple[str, str], list[RunResult]],
) -> Iterator[tuple[tuple[str, str], list[RunResult], Any, float]]:
    """The cells whose finished runs end, on average, below their threshold: per cell its
    key, those runs, the output's mean with its 95% interval, and the threshold."""
    for key, runs in sorted(groups.items()):
        level = runs[0].spec["threshold"]
        ok = _ok(runs)
        final = metric_interval([r.output_metric for r in ok])
        if ok and final.mean < level:
            yield key, ok, final, level
