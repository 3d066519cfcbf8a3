"""Where a command's time went: training steps, held-out evaluation, linear probes,
gradient-SNR measurements, black boxes, set-up, and workers left idle.

Each run records its own seconds per category (``RunResult.timing``: its share where
seeds trained together). A command adds them up over the runs it trained, adds what its
own process did outside training (set-up: reading the experiment, the estimate, the
store; and the SNR measurements), and counts as idle whatever the workers' capacity
(workers x wall time) leaves over: a pool whose jobs end unevenly, or one stack of seeds
training in one process while the other workers wait.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from e2elab.records import RunResult

CATEGORIES = (
    "training",
    "evaluation",
    "probes",
    "gradient SNR",
    "black boxes",
    "set-up",
    "idle",
)


def run_seconds(results: Iterable[RunResult]) -> dict[str, float]:
    """The runs' own seconds per category, added up (runs stored before runs recorded
    their timing add nothing)."""
    total = dict.fromkeys(CATEGORIES[:-1], 0.0)
    for result in results:
        for name, seconds in result.timing.items():
            total[name] = total.get(name, 0.0) + float(seconds)
    return total


@dataclass
class TimeSplit:
    """A command's wall time over ``workers`` processes, split by category (seconds of
    worker time: they add up to workers x wall)."""

    wall: float
    workers: int
    seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of_command(
        cls,
        wall: float,
        workers: int,
        runs: dict[str, float],
        training_wall: float,
        snr_wall: float = 0.0,
    ) -> TimeSplit:
        """``runs``: the trained runs' seconds (``run_seconds``); ``training_wall``: the
        wall time the command spent training them; ``snr_wall``: measuring gradient SNR
        (on all the workers). The rest of the command's wall time is its own set-up."""
        seconds = dict.fromkeys(CATEGORIES, 0.0)
        for name, value in runs.items():
            seconds[name] = seconds.get(name, 0.0) + value
        seconds["gradient SNR"] += snr_wall * workers
        seconds["set-up"] += max(0.0, wall - training_wall - snr_wall)
        used = sum(v for k, v in seconds.items() if k != "idle")
        seconds["idle"] = max(0.0, workers * wall - used)
        return cls(wall, workers, seconds)

    @property
    def capacity(self) -> float:
        return self.workers * self.wall

    def share(self, name: str) -> float:
        return self.seconds.get(name, 0.0) / self.capacity if self.capacity > 0 else 0.0

    def line(self) -> str:
        """``time (1 worker x 79.5 s): training 61.2 s (77%), evaluation ...``; the
        categories that took none are left out."""
        unit = "worker" if self.workers == 1 else "workers"
        parts = [
            f"{name} {self.seconds[name]:.1f} s ({100 * self.share(name):.0f}%)"
            for name in CATEGORIES
            if self.seconds.get(name, 0.0) >= 0.05
        ]
        return f"time ({self.workers} {unit} x {self.wall:.1f} s): " + ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "wall_seconds": self.wall,
            "workers": self.workers,
            "seconds": {k: self.seconds.get(k, 0.0) for k in CATEGORIES},
            "shares": {k: self.share(k) for k in CATEGORIES},
        }
