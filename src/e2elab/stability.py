"""How stable is a verdict under the seeds? A claim's check is run again on resamples
of the seeds: every leave-one-seed-out set, and, where some cell has 5 seeds or more, 200
bootstrap resamples (seeds drawn with replacement, a drawn seed's runs counted as often
as it is drawn). The share of resamples that give the stored verdict is its stability; a
verdict below ``FRAGILE`` is fragile: another seed could well have decided it.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from e2elab.records import RunResult

FRAGILE = 0.8
BOOTSTRAP = 200
BOOTSTRAP_FROM = 5  # seeds in the largest cell before bootstrap resamples are added


@dataclass(frozen=True)
class Stability:
    share: float | None  # of resamples that give the stored verdict; None: no resample
    resamples: int

    @property
    def fragile(self) -> bool:
        return self.share is not None and self.share < FRAGILE

    def label(self) -> str:
        """``stable 100%``, ``stable 55%: fragile``, or ``one seed: no resample``."""
        if self.share is None:
            return "one seed: stability unknown"
        text = f"stable {100 * self.share:.0f}%"
        return f"{text}: fragile" if self.fragile else text


def resamples(results: list[RunResult], seed: int = 0) -> list[list[RunResult]]:
    """Leave-one-seed-out sets, then bootstrap resamples where the largest cell (runs of
    one strategy at one grid point) has ``BOOTSTRAP_FROM`` seeds or more."""
    seeds = sorted({r.spec.seed for r in results})
    if len(seeds) < 2:
        return []
    by_seed: dict[int, list[RunResult]] = {}
    for r in results:
        by_seed.setdefault(r.spec.seed, []).append(r)
    out = [[r for r in results if r.spec.seed != s] for s in seeds]
    cells = Counter((r.spec.strategy, str(r.spec.knobs)) for r in results)
    if max(cells.values()) >= BOOTSTRAP_FROM:
        draw = random.Random(seed)
        for _ in range(BOOTSTRAP):
            chosen = draw.choices(seeds, k=len(seeds))
            out.append([r for s in chosen for r in by_seed[s]])
    return out


def stability(
    verdict: str, judge: Callable[[list[RunResult]], str], results: list[RunResult]
) -> Stability:
    """How often ``judge`` (a claim's check, giving a verdict) gives ``verdict`` again on
    the resamples of ``results``."""
    sets = resamples(results)
    if not sets:
        return Stability(None, 0)
    same = sum(judge(s) == verdict for s in sets)
    return Stability(same / len(sets), len(sets))


def margin(check: str, params: dict[str, Any], numbers: dict[str, Any]) -> str | None:
    """The distance to the claim's threshold in its own units, where the check's numbers
    give it: e.g. ``probe gain +0.13 against 0.1``, ``ratio 1.41 against 1``."""
    if check == "breakdown" and "probe_gains" in numbers:
        gains = [g for g in numbers["probe_gains"].values() if g == g]
        bound = params.get("min_probe_gain", 0.1)
        if gains:
            return f"largest probe gain {max(gains):+.3f} against {bound:g}"
    if check == "beats_by_ratio" and numbers.get("ratios"):
        ratios = [r for r in numbers["ratios"].values() if r == r]
        if ratios:
            return f"smallest ratio {min(ratios):.2f} against {params.get('min_ratio', 1.0):g}"
    if check == "reaches_threshold" and numbers.get("means"):
        _, mean, level = min(numbers["means"])  # the cell closest below (or above) it
        return f"lowest cell mean {mean:.3f} against {level:g}"
    if check == "ratio_grows_with_knob" and numbers.get("ratios"):
        ratios = [f"{r:.2f}" for r in numbers["ratios"].values()]
        return f"ratios {' -> '.join(ratios)} (must exceed 1 and grow)"
    if check == "oracle_ceiling" and numbers.get("ceilings"):
        worst = min if params.get("cause", "module") == "module" else max
        name = "lowest" if worst is min else "highest"
        return f"{name} ceiling {worst(numbers['ceilings']):.3f} against {numbers['threshold']:g}"
    return None
