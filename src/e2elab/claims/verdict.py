"""A claim's verdict, and the registry every check joins with its figures."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
