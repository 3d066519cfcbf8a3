"""A claim's verdict, and the registry every check joins with its figures."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from e2elab.claims.cells import Cells
from e2elab.records import RunResult
from e2elab.stats import mean_interval

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

# per check: earlier parameter names -> today's, still read (experiment files written
# before the names were made the same for the same role across checks)
CHECK_ALIASES: dict[str, dict[str, str]] = {}


def check(
    *figures: str, aliases: dict[str, str] | None = None
) -> Callable[[Callable[..., Verdict]], Callable[..., Verdict]]:
    """Register a check under its function's name, with the figures that show it and the
    earlier names of its parameters. The registered function takes the runs as a
    ``Cells`` or as a plain list of runs (made into one), and earlier names."""

    def register(function: Callable[..., Verdict]) -> Callable[..., Verdict]:
        name = function.__name__

        @functools.wraps(function)
        def judged(cells: Cells | Iterable[RunResult], *args: Any, **params: Any) -> Verdict:
            bound = inspect.signature(function).bind(cells, *args, **renamed(name, params))
            given = as_lists(function, dict(bound.arguments))
            given["cells"] = Cells.of(cells)
            return function(**given)

        CHECKS[name] = judged
        CHECK_FIGURES[name] = figures
        CHECK_ALIASES[name] = dict(aliases or {})
        return judged

    return register


def as_lists(function: Callable[..., Verdict], params: dict[str, Any]) -> dict[str, Any]:
    """One convention for every check: a parameter that takes a list of strategies (or
    other names) also takes a single one."""
    hints = typing.get_type_hints(function)
    return {
        key: [value]
        if isinstance(value, str) and typing.get_origin(hints.get(key)) is list
        else value
        for key, value in params.items()
    }


def renamed(check: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` under today's names (see ``CHECK_ALIASES``); refuses an old name given
    beside its new one."""
    aliases = CHECK_ALIASES.get(check, {})
    out = {}
    for key, value in params.items():
        new = aliases.get(key, key)
        if new != key and new in params:
            raise ValueError(f"{check}: give {new!r} or its earlier name {key!r}, not both")
        out[new] = value
    return out


# ---------------------------------------------------------------- verdicts made alike


def no_data(what: str) -> Verdict:
    return Verdict(INCONCLUSIVE, f"no stored runs match {what}")


def no_knob(check: str, knobs: Iterable[str]) -> Verdict:
    """For a check given no ``knob`` where not exactly one knob varies."""
    moving = ", ".join(sorted(knobs)) or "none"
    return Verdict(
        INCONCLUSIVE, f"{check} needs a knob: the runs it reads vary over {moving}; name one"
    )


def paired_verdict(
    pairs: list[tuple[float, float]],
    first: str,
    second: str,
    what: str,
    sign: float = 1.0,
    margin: float = 0.0,
) -> Verdict:
    """PASS where the 95% interval of ``sign * (first - second)`` over the paired seeds
    lies above 0 (above ``-margin`` with a margin: matches or beats); the details give
    both means and the interval."""
    diff = mean_interval([sign * (a - b) for a, b in pairs])
    means = [float(np.mean([p[i] for p in pairs])) for i in (0, 1)]
    detail = (
        f"{first} {means[0]:.3f} vs {second} {means[1]:.3f}, {what} {diff.format(3)} "
        f"over {len(pairs)} seeds"
    )
    good = diff.lo > -margin
    floor = f"-{margin:g}" if margin else "0"
    return Verdict(PASS if good else FAIL, detail + ("" if good else f" -- not above {floor}"))
