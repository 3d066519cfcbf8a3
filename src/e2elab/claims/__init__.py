"""Claims: statements from papers as executable checks over stored results.

Each check is a small function ``check(cells, **params) -> Verdict`` over a ``Cells``
(the runs, grouped into cells: one grid point x one strategy, over seeds; a plain list
of runs is made into one).

Parameters mean the same in every check that has them:
- ``winner`` / ``loser``: the strategy claimed to do better, and the one it beats
  (``winners``: several, the best of which is meant);
- ``strategy``: the one strategy whose cells are judged (a * pattern allowed);
  ``strategies``: several, each judged alone (a single name allowed);
- ``knob``: the knob whose values the check walks; where a check gives it no default
  the claim must name it, and where its default is None it is the only knob that
  varies over the runs the check reads;
- ``where``: the grid points read, ``{knob: value or {op: value}}``.
Earlier names (``slow``/``fast``, ``a``/``b``, ``robust``/``fragile``) are still read.

Uncertainty is explicit: means carry 95% Student-t intervals over seeds, and "at
chance" is the per-run one-sided test against chance on the test-set size
(``RunResult.at_chance``; binomial for success rates, Hoeffding for rewards). A check
never adapts its thresholds to the data: if the data disagree, it says FAIL.
"""

from __future__ import annotations

# isort: off
# the families register their checks in this order (``CHECKS``, ``e2elab checks``)
from e2elab.claims import thresholds, comparisons, diagnostics, snr, artifacts  # noqa: F401
# isort: on

from e2elab.claims.artifacts import artifact_beats, artifact_exceeds, artifact_value, degrades_less
from e2elab.claims.cells import Cells, cells, ett_ratio
from e2elab.claims.comparisons import (
    accuracy_beats,
    beats_by_ratio,
    best_at_each,
    crossover,
    examples_grow_with_knob,
    gap_grows_with_knob,
    gap_with_budget,
    ratio_grows_with_knob,
)
from e2elab.claims.diagnostics import lost_in_phase, oracle_ceiling, schedule_floor
from e2elab.claims.evaluate import check_params, deviations, evaluate, normalized
from e2elab.claims.snr import alignment_contrast, snr_below_resolution, snr_contrast
from e2elab.claims.thresholds import (
    at_chance,
    breakdown,
    every_seed_reaches,
    reaches_threshold,
    seeds_learn,
    stays_at_chance,
)
from e2elab.claims.verdict import (
    CHECK_ALIASES,
    CHECK_FIGURES,
    CHECKS,
    FAIL,
    INCONCLUSIVE,
    PASS,
    Verdict,
    check,
)

__all__ = [
    "CHECKS",
    "CHECK_ALIASES",
    "CHECK_FIGURES",
    "FAIL",
    "INCONCLUSIVE",
    "PASS",
    "Cells",
    "Verdict",
    "accuracy_beats",
    "alignment_contrast",
    "artifact_beats",
    "artifact_exceeds",
    "artifact_value",
    "at_chance",
    "beats_by_ratio",
    "best_at_each",
    "breakdown",
    "cells",
    "check",
    "check_params",
    "crossover",
    "degrades_less",
    "deviations",
    "ett_ratio",
    "evaluate",
    "every_seed_reaches",
    "examples_grow_with_knob",
    "gap_grows_with_knob",
    "gap_with_budget",
    "lost_in_phase",
    "normalized",
    "oracle_ceiling",
    "ratio_grows_with_knob",
    "reaches_threshold",
    "schedule_floor",
    "seeds_learn",
    "snr_below_resolution",
    "snr_contrast",
    "stays_at_chance",
]
