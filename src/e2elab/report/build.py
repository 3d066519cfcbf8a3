"""Build an experiment's report from stored results: claims, figures, page."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from e2elab.claims import Verdict, evaluate
from e2elab.experiment import Experiment
from e2elab.report.figures import all_figures
from e2elab.report.page import write_report
from e2elab.run import RunResult
from e2elab.summary import summarize


@dataclass(frozen=True)
class Report:
    verdicts: list[Verdict]
    figures: list[Path]
    markdown: Path


def sweep_knob(experiment: Experiment) -> str:
    """The knob on the figures' x-axis: ``sweep``, else the last grid knob."""
    if experiment.sweep:
        return experiment.sweep
    return list(experiment.grid)[-1] if experiment.grid else "n"


def build_report(experiment: Experiment, results: list[RunResult], out_dir: Path) -> Report:
    """Evaluate the experiment's claims on ``results`` and write figures and pages."""
    verdicts = evaluate(experiment.claims, results)
    figures = all_figures(results, sweep_knob(experiment), out_dir / "figures")
    title = f"e2elab report: {experiment.name}"
    markdown = write_report(
        out_dir, title, [v.as_row() for v in verdicts], figures, summary_tables(results)
    )
    return Report(verdicts, figures, markdown)


def summary_tables(results: list[RunResult]) -> str:
    """Per grid point, one line per strategy: accuracy, examples to threshold, at chance."""
    groups: dict[str, list[RunResult]] = {}
    for r in results:
        groups.setdefault(json.dumps(r.spec["knobs"], sort_keys=True), []).append(r)
    lines = []
    for knobs, runs in groups.items():
        lines.append(f"{knobs}  (threshold {runs[0].spec['threshold']:g})")
        for row in summarize(runs):
            done = row.runs - row.diverged
            lines.append(
                f"  {row.strategy:34s} acc {row.accuracy.format(3):24s} "
                f"examples-to-threshold {row.examples_to_threshold.format(0):24s} "
                f"reached {row.reached}/{done}  at chance {row.breakdowns}/{done}"
                + (f"  diverged {row.diverged}" if row.diverged else "")
            )
    return "\n".join(lines)
