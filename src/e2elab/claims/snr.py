"""Checks over gradient signal-to-noise measurements (and the gradients' alignment)."""

from __future__ import annotations

import math
from typing import Any

from e2elab.claims.cells import Cells, knobs_match, varying, walked_knob
from e2elab.claims.verdict import FAIL, INCONCLUSIVE, PASS, Verdict, check, no_data, no_knob
from e2elab.stats import mean_interval


@check("gradient_snr")
def snr_contrast(
    cells: Cells,
    snr: list[Any],
    falling: str = "e2e",
    flat: str = "hinted",
    module: str = "",
    knob: str | None = None,
    min_drop: float = 2.0,
    max_flat_drop: float = 1.0,
    where: dict[str, Any] | None = None,
) -> Verdict:
    """Gradient SNR of ``module`` (at initialisation, mean log10 over inits) falls by at
    least ``min_drop`` decades from the smallest to the largest knob value under
    ``falling``, and by at most ``max_flat_drop`` decades under ``flat``.

    An SNR below the estimator's resolution is an upper bound. It may stand at the low end
    of a drop (the true drop is then at least as large), but nowhere else: a drop cannot be
    shown from a bound at its start, nor flatness from any bound. ``knob``: by default
    the only knob that varies over the matching measurements."""
    chosen = [r for r in snr if knobs_match(r.knobs, where) and r.strategy in (falling, flat)]
    if not chosen:
        return no_data(f"gradient SNR of {module} under {falling} and {flat} where {where}")
    walked = walked_knob(knob, (r.knobs for r in chosen))
    if walked is None:
        return no_knob("snr_contrast", varying(r.knobs for r in chosen))
    knob = walked
    series: dict[str, list[tuple[Any, float, bool]]] = {falling: [], flat: []}
    methods: dict[str, set[str]] = {falling: set(), flat: set()}
    batches: list[int] = []
    for r in chosen:
        if r.strategy in series and module in r.per_init:
            methods[r.strategy].add(r.method)
            if r.method == "sampled":
                batches.append(r.batches)
            series[r.strategy].append(
                (r.knobs[knob], r.log10_summary(module)[0], r.is_bound(module))
            )
    if any(len(v) < 2 for v in series.values()):
        return no_data(f"gradient SNR of {module} under {falling} and {flat} at two {knob} values")
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


@check("gradient_snr")
def snr_below_resolution(
    cells: Cells,
    snr: list[Any],
    falling: str = "e2e",
    flat: str = "hinted",
    module: str = "",
    knob: str | None = None,
    min_drop: float = 2.0,
    max_flat_drop: float = 1.0,
    where: dict[str, Any] | None = None,
) -> Verdict:
    """The diagnostic of an ``snr_contrast`` (same parameters) that cannot be decided:
    PASS when points it needs are upper bounds (below the estimator's resolution), with
    the batches they came from; each tenfold more batches resolve about tenfold smaller
    SNRs. FAIL when every point it needs is resolved (then resolution is not why)."""
    contrast = snr_contrast(cells, snr, falling, flat, module, knob, min_drop, max_flat_drop, where)
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


@check("gradient_snr")
def alignment_contrast(
    cells: Cells,
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
            if not knobs_match(r.knobs, {**(where or {}), **extra}):
                continue
            values = [v for v in r.alignment[module] if not math.isnan(v)]
            ci = mean_interval(values) if values else None
            label = cells.label(r.knobs)
            if ci is not None:
                chosen.append((label, ci.mean, ci.lo, ci.hi))
        return sorted(chosen)

    lows, highs = points(low, low_where or {}), points(high, {})
    if not lows or not highs:
        return no_data(f"gradient alignment of {module} under {low} and {high}")
    bad = [f"{low} @ {k}" for k, v, _, _ in lows if v >= boundary]
    bad += [f"{high} @ {k}" for k, v, _, _ in highs if v <= boundary]

    def listed(rows: list[tuple[Any, float, float, float]]) -> str:
        return ", ".join(f"{k}: {v:.2f} [{lo:.2f}, {hi:.2f}]" for k, v, lo, hi in rows)

    detail = f"{low}: {listed(lows)}; {high}: {listed(highs)}" + (
        f" -- on the wrong side of {boundary:g}: {'; '.join(bad)}" if bad else ""
    )
    return Verdict(PASS if not bad else FAIL, detail)
