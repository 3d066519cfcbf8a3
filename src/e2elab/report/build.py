"""Build a report from stored results: claims, figures, page, for one or more experiments."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from e2elab.claims import Verdict, evaluate
from e2elab.experiment import Experiment
from e2elab.query import group
from e2elab.records import RunResult, SNRResult
from e2elab.report.figures import all_figures
from e2elab.report.page import write_report
from e2elab.report.snr import snr_figure
from e2elab.summary import summarize


@dataclass
class Part:
    """One experiment's share of a report."""

    experiment: Experiment
    results: list[RunResult]
    snr: list[SNRResult] = field(default_factory=list)


@dataclass(frozen=True)
class Report:
    verdicts: list[Verdict]
    figures: list[Path]
    markdown: Path


def sweep_knob(experiment: Experiment) -> str:
    """The knob on the figures' x-axis: ``sweep``, else the last grid knob, else (an
    experiment of one cell) the task's first knob."""
    if experiment.sweep:
        return experiment.sweep
    if experiment.grid:
        return list(experiment.grid)[-1]
    return next(iter(experiment.knobs), "")


def build_report(parts: list[Part], out_dir: Path, title: str) -> Report:
    """Evaluate every part's claims and write its figures; one page for all parts."""
    verdicts: list[Verdict] = []
    figures: list[Path] = []
    summaries = []
    for part in parts:
        exp = part.experiment
        verdicts += evaluate(exp.claims, part.results, part.snr)
        folder = out_dir / "figures" / (exp.name if len(parts) > 1 else "")
        figures += all_figures(part.results, sweep_knob(exp), folder)
        if part.snr:
            figures.append(snr_figure(part.snr, sweep_knob(exp), folder / "gradient_snr.png"))
        summaries.append(f"== {exp.name} ==\n{summary_tables(part.results)}")
    rows = [v.as_row() for v in verdicts]
    markdown = write_report(out_dir, title, rows, figures, "\n\n".join(summaries))
    return Report(verdicts, figures, markdown)


def summary_tables(results: list[RunResult]) -> str:
    """Per grid point, one line per strategy: accuracy, examples to threshold, at chance."""
    lines = []
    for (knobs,), runs in group(results, "knobs").items():
        lines.append(f"{knobs}  (threshold {runs[0].spec['threshold']:g})")
        for row in summarize(runs):
            done = row.runs - row.diverged - row.failed
            lines.append(
                f"  {row.strategy:34s} acc {row.accuracy.format(3):24s} "
                f"examples-to-threshold {row.examples_to_threshold.format(0):24s} "
                f"reached {row.reached}/{done}  at chance {row.breakdowns}/{done}"
                + (f"  diverged {row.diverged}" if row.diverged else "")
                + (f"  failed {row.failed}" if row.failed else "")
            )
    return "\n".join(lines)
