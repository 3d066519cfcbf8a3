"""Checks against a bound: reaching the threshold, ending at chance, breaking down."""

from __future__ import annotations

from typing import Any

from e2elab.claims.cells import Cells, finished, point_value, sortable, unfinished_note
from e2elab.claims.verdict import FAIL, INCONCLUSIVE, PASS, Verdict, check, no_data, no_knob
from e2elab.records import RunResult
from e2elab.stats import mean_interval, metric_interval


@check("accuracy_vs", "accuracy_by_approach", "caption_metrics")
def reaches_threshold(
    cells: Cells,
    strategies: list[str],
    where: dict[str, Any] | None = None,
    threshold: float | None = None,
) -> Verdict:
    """Every matching cell's mean output metric over seeds reaches the threshold (the
    runs' own threshold unless given). A diverged run counts as a failure (0) in a cell
    that has a finished run; a cell where every run diverged or failed is INCONCLUSIVE."""
    groups = cells.select(strategies, where).grouped()
    if not groups:
        return no_data(f"strategies {', '.join(strategies)} where {where}")
    failing, lines, unfinished, means = [], [], [], []
    for key, runs in sorted(groups.items()):
        level = threshold if threshold is not None else runs[0].spec.settings.threshold
        label = f"{key[1]} @ {cells.label(key[0])}"
        if not finished(runs):  # every run diverged or failed: no evidence either way
            unfinished.append(f"{label}: no finished run{unfinished_note(runs)}")
            continue
        values = [r.output_metric if r.status == "ok" else 0.0 for r in runs]
        ci = metric_interval(values)
        means.append((ci.mean - level, ci.mean, level))
        ok = ci.mean >= level
        sign = ">=" if ok else "<"
        lines.append(f"{label}: {ci.format(3)} {sign} {level:g}{unfinished_note(runs)}")
        if not ok:
            failing.append(label)
    judged = len(groups) - len(unfinished)
    detail = f"{judged - len(failing)}/{len(groups)} cells reach it" + (
        f"; below: {'; '.join(line for line in lines if ' < ' in line)}" if failing else ""
    )
    if unfinished:
        detail += f"; {'; '.join(unfinished)}"
    verdict = FAIL if failing else (INCONCLUSIVE if unfinished else PASS)
    return Verdict(verdict, detail, {"cells": lines + unfinished, "means": means})


@check("accuracy_vs", "accuracy_by_approach", "learning_curves")
def at_chance(cells: Cells, strategy: str, where: dict[str, Any] | None = None) -> Verdict:
    """Every run of the matching cells ends indistinguishable from chance. ``strategy``
    may be a * pattern (e.g. ``blackbox:*``); then each line names its strategy."""
    groups = cells.select(strategy, where).grouped()
    if not groups:
        return no_data(f"strategy {strategy} where {where}")
    several = len({key[1] for key in groups}) > 1
    lines, bad, missing = [], 0, 0
    for key, runs in sorted(groups.items(), key=lambda item: (item[0][1], item[0][0])):
        ok = finished(runs)
        broken = sum(r.at_chance for r in ok)
        accuracy = metric_interval([r.output_metric for r in ok])
        name = f"{key[1]} @ " if several else ""
        lines.append(
            f"{name}{cells.label(key[0])}: {broken}/{len(ok)} at chance, acc {accuracy.format(3)}"
            + unfinished_note(runs)
        )
        missing += not ok
        bad += bool(ok) and broken != len(ok)
    verdict = FAIL if bad else (INCONCLUSIVE if missing else PASS)
    return Verdict(verdict, "; ".join(lines) + (" -- no finished run in a cell" if missing else ""))


@check("accuracy_vs", "learning_curves")
def seeds_learn(
    cells: Cells,
    strategy: str,
    where: dict[str, Any] | None = None,
    min_fraction: float = 0.0,
) -> Verdict:
    """Near the edge of learnability one seed decides nothing: in some initialisations a
    strategy learns, in others it does not. Per matching cell, the fraction of seeds whose
    output beats chance (the per-run test), with a 95% Clopper-Pearson interval, and which
    seeds learned. PASS when every cell's interval lies above ``min_fraction`` (0: at
    least one seed learned)."""
    groups = cells.select(strategy, where).grouped()
    if not groups:
        return no_data(f"strategy {strategy} where {where}")
    lines, numbers, bad, missing = [], {}, 0, 0
    for key, runs in sorted(groups.items()):
        ok = sorted(finished(runs), key=lambda r: r.spec.seed)
        learned = [r.spec.seed for r in ok if not r.at_chance]
        if not ok:
            lines.append(f"{cells.label(key[0])}: no finished run{unfinished_note(runs)}")
            missing += 1
            continue
        from scipy.stats import binomtest  # loads here, not with the command line

        low, high = binomtest(len(learned), len(ok)).proportion_ci(method="exact")
        seeds = ", ".join(str(s) for s in learned) or "none"
        lines.append(
            f"{cells.label(key[0])}: {len(learned)}/{len(ok)} seeds learned "
            f"({len(learned) / len(ok):.2f} [{low:.2f}, {high:.2f}]; seeds {seeds})"
        )
        numbers[key[0]] = {"learned": learned, "seeds": len(ok), "interval": [low, high]}
        bad += not low > min_fraction
    verdict = FAIL if bad else (INCONCLUSIVE if missing else PASS)
    return Verdict(verdict, "; ".join(lines), numbers)


@check("accuracy_vs", "probe_heatmap_e2e", "port_curves")
def breakdown(
    cells: Cells,
    strategy: str = "e2e",
    knob: str | None = None,
    where: dict[str, Any] | None = None,
    min_probe_gain: float = 0.1,
) -> Verdict:
    """From some knob value on, the strategy ends at chance in every seed, and there no
    module learned: no module's mean linear-probe accuracy over its ports rises more than
    ``min_probe_gain`` above the same probe on the untrained system.

    The breakdown point is found per seed (the smallest knob value from which that seed
    is at chance at every larger value) and reported with a 95% interval over seeds.
    ``knob``: by default the only knob that varies over the matching runs."""
    every = cells.select(strategy, where)
    if not every:
        return no_data(f"strategy {strategy} where {where}")
    walked = every.knob(knob)
    if walked is None:
        return no_knob("breakdown", every.varying_here())
    knob = walked
    runs = every.resampled(finished(every))
    empty = [v for v, rs in every.by_value(knob).items() if not finished(rs)]
    if empty:  # diverged or failed runs are no evidence of a breakdown
        return Verdict(
            INCONCLUSIVE,
            f"no finished run of {strategy} at {knob} = {', '.join(map(str, empty))}"
            + unfinished_note(list(every)),
        )
    by_value = runs.by_value(knob)
    values = list(by_value)
    points = []
    for seed in sorted({r.spec.seed for r in runs}):
        flags = {v: any(r.at_chance for r in by_value[v] if r.spec.seed == seed) for v in values}
        point = next((v for i, v in enumerate(values) if all(flags[u] for u in values[i:])), None)
        points.append(point)
    broken_everywhere = [v for v in values if all(r.at_chance for r in finished(by_value[v]))]
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


@check("accuracy_vs", "learning_curves")
def every_seed_reaches(
    cells: Cells,
    strategies: list[str],
    where: dict[str, Any] | None = None,
    any_strategy: bool = False,
) -> Verdict:
    """Every finished seed of every matching cell reaches the threshold (a mean that does
    may hide a seed that never did, which makes examples-to-threshold infinite). With
    ``any_strategy``, a grid point passes when one of the strategies does so (as a best-of
    comparison needs)."""
    groups = cells.select(strategies, where).grouped()
    if not groups:
        return no_data(f"strategies {', '.join(strategies)} where {where}")
    points: dict[str, list[tuple[bool, str]]] = {}
    unfinished: list[str] = []  # cells where every run diverged or failed
    open_points: set[str] = set()
    for key, runs in sorted(groups.items()):
        ok = sorted(finished(runs), key=lambda r: r.spec.seed)
        missed = [str(r.spec.seed) for r in ok if r.examples_to_threshold is None]
        text = (
            f"{key[1]} @ {cells.label(key[0])}: {len(ok) - len(missed)}/{len(ok)} seeds reached"
            + (f" (not seeds {', '.join(missed)})" if missed else "")
            + unfinished_note(runs)
        )
        if not ok:  # every run diverged or failed: no evidence either way
            label = f"{key[1]} @ {cells.label(key[0])}"
            unfinished.append(f"{label}: no finished run{unfinished_note(runs)}")
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


@check("accuracy_vs", "accuracy_against")
def stays_at_chance(
    cells: Cells,
    base: str,
    others: list[str],
    knob: str,
    where: dict[str, Any] | None = None,
) -> Verdict:
    """No rescue: at every value of ``knob`` where every finished seed of ``base`` ends
    at chance, every finished seed of each of ``others`` (e.g. ensembles of ``base``, a
    wider ``base``) ends at chance too. Needs at least one such value where each of
    ``others`` has finished runs; a value where ``base`` learns is not judged."""
    table = cells.select([base, *others], where).by_point()
    if not table:
        return no_data(f"{base} and {others} where {where}")
    judged, rescued, lines = 0, [], []
    for cellsets in sorted(table.values(), key=lambda c: sortable(point_value(c, knob))):
        value = point_value(cellsets, knob)
        ok_base = finished(cellsets.get(base, []))
        if not ok_base or not all(r.at_chance for r in ok_base):
            continue
        parts = [f"{base} {metric_interval([r.output_metric for r in ok_base]).format(3)}"]
        complete = True
        for other in others:
            ok = finished(cellsets.get(other, []))
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


def _learned_modules(
    by_value: dict[Any, list[RunResult]], values: list[Any], min_gain: float
) -> dict[str, Any]:
    """Per knob value, each module's mean probe gain over its untrained probe; which
    modules gained at least ``min_gain`` (``any``)."""
    text: dict[Any, str] = {}
    learned: list[str] = []
    means: dict[str, float] = {}
    for v in values:
        gains: dict[str, list[float]] = {}
        for r in finished(by_value[v]):
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
