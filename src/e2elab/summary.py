"""Per-strategy summaries of runs over seeds (the table `e2elab run` prints)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from rich.table import Table

from e2elab.query import group
from e2elab.records import RunResult
from e2elab.stats import Interval, mean_interval, metric_interval


@dataclass(frozen=True)
class StrategyRow:
    strategy: str
    runs: int
    accuracy: Interval
    chance: float
    examples_to_threshold: Interval
    reached: int
    at_chance: int
    diverged: int
    seconds: Interval
    failed: int = 0
    # every port's final metric over the finished seeds, the output's included
    ports: dict[str, Interval] = field(default_factory=dict)


def summarize(results: Iterable[RunResult]) -> list[StrategyRow]:
    """One row per strategy, in first-seen order. Runs that did not finish count in
    ``diverged`` (the loss became NaN or infinite) or ``failed`` (e.g. out of memory), apart
    from each other and from the accuracy, threshold and at-chance columns."""
    rows = []
    for (name,), runs in group(results, "strategy").items():
        ok = [r for r in runs if r.status == "ok"]
        reached = [r.examples_to_threshold for r in ok if r.examples_to_threshold is not None]
        rows.append(
            StrategyRow(
                strategy=name,
                runs=len(runs),
                accuracy=metric_interval([r.output_metric for r in ok]),
                chance=next((r.chance[r.output] for r in ok), float("nan")),
                # a count of examples lies in [0, the examples the run could draw]
                examples_to_threshold=mean_interval(
                    [float(x) for x in reached], lower=0.0, upper=_most_examples(ok)
                ),
                reached=len(reached),
                at_chance=sum(r.at_chance for r in ok),
                diverged=sum(r.status == "diverged" for r in runs),
                seconds=mean_interval([r.wall_seconds for r in runs]),
                failed=sum(r.status not in ("ok", "diverged") for r in runs),
                ports={
                    port: metric_interval([r.final[port] for r in ok if port in r.final])
                    for port in port_names(ok)
                },
            )
        )
    return rows


def _most_examples(runs: list[RunResult]) -> float:
    """The most training examples any of ``runs`` drew (its last evaluation)."""
    return max((float(r.curve[-1]["examples"]) for r in runs if r.curve), default=math.inf)


def port_names(results: Iterable[RunResult]) -> list[str]:
    """Every port with a final metric (not a kind's extra ``PORT:NAME`` metrics), the
    output last, in first-seen order."""
    names: dict[str, None] = {}
    outputs: dict[str, None] = {}
    for r in results:
        for port in r.final:
            if ":" not in port and not port.endswith("@validation"):
                (outputs if port == r.output else names)[port] = None
    return [*names, *outputs]


def port_label(results: Iterable[RunResult], port: str) -> str:
    """``PORT (its metric)``, e.g. ``digit_1 (accuracy)``."""
    metric = next((r.metric_names.get(port) for r in results if r.metric_names.get(port)), None)
    return f"{port} ({metric})" if metric else port


def strategy_table(
    rows: list[StrategyRow],
    title: str,
    threshold: float,
    ports: dict[str, str] | None = None,
) -> Table:
    """A rich table: mean [95% CI] over seeds per strategy; with ``ports`` (port ->
    column label) a column per port besides the output."""
    table = Table(title=title, title_justify="left")
    table.add_column("strategy", style="bold")
    table.add_column("seeds", justify="right")
    table.add_column("output accuracy, mean [95% CI]", justify="right")
    table.add_column(f"examples to {threshold:g} (reached)", justify="right")
    table.add_column("at chance", justify="right")
    table.add_column("diverged", justify="right")
    table.add_column("failed", justify="right")
    table.add_column("time s (mean)", justify="right")
    for label in (ports or {}).values():
        table.add_column(label, justify="right")
    for row in rows:
        ett = row.examples_to_threshold.format(0)
        extra = [row.ports[port].format(3) if port in row.ports else "-" for port in (ports or {})]
        table.add_row(
            row.strategy,
            str(row.runs),
            row.accuracy.format(3),
            f"{ett} ({row.reached}/{row.runs - row.diverged - row.failed})",
            f"{row.at_chance}/{row.runs - row.diverged - row.failed}",
            str(row.diverged),
            str(row.failed),
            f"{row.seconds.mean:.1f}",
            *extra,
        )
    return table
