"""Build a report from stored results: claims, figures, page, for one or more experiments."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2elab.claims import Verdict, deviations, evaluate
from e2elab.experiment import Experiment
from e2elab.query import group
from e2elab.records import RunResult, SNRResult
from e2elab.report.approaches import approach_figures
from e2elab.report.blackbox import COLUMNS as BLACKBOX_COLUMNS
from e2elab.report.blackbox import blackbox_rows
from e2elab.report.captions import caption_figures
from e2elab.report.declared import declared_figures, figure_file
from e2elab.report.driving import closed_loop_rows, driving_figures, propagation_rows
from e2elab.report.evidence import caption, claim_figures
from e2elab.report.figures import all_figures, claim_figure, phase_starts
from e2elab.report.index import write_index
from e2elab.report.page import Section, slug, write_report
from e2elab.report.snr import snr_figure
from e2elab.report.speech import speech_figures
from e2elab.report.translation import translation_figures
from e2elab.summary import port_label, port_names, summarize


@dataclass
class Part:
    """One experiment's share of a report."""

    experiment: Experiment
    results: list[RunResult]
    snr: list[SNRResult] = field(default_factory=list)
    # transfer runs: source run id -> the source's label (runner.source_labels)
    sources: dict[str, str] = field(default_factory=dict)
    # runs of older code the store holds for this experiment, not read (versions.split)
    left_out: int = 0

    @property
    def runs(self) -> list[RunResult]:
        """The results as claims and figures read them (variants and transfers named)."""
        return self.experiment.labelled(self.results, self.sources)


@dataclass(frozen=True)
class Report:
    verdicts: list[Verdict]
    figures: list[Path]
    markdown: Path
    # the claims as the page shows them: verdict rows with their anchor and experiment
    rows: list[dict[str, Any]] = field(default_factory=list)


def sweep_knob(experiment: Experiment) -> str:
    """The knob on the figures' x-axis: ``sweep``, else the last grid knob, else (an
    experiment of one cell) the task's first knob."""
    if experiment.sweep:
        return experiment.sweep
    if experiment.grid:
        return list(experiment.grid)[-1]
    return next(iter(experiment.knobs), "")


def build_report(parts: list[Part], out_dir: Path, title: str) -> Report:
    """Evaluate every part's claims and write its figures; one page for all parts, and
    an index of every claim (``index.html``) beside it."""
    verdicts: list[Verdict] = []
    figures: list[Path] = []
    rows: list[dict[str, Any]] = []
    tables: list[Section] = []
    captions: dict[str, str] = {}
    for part in parts:
        exp, results = part.experiment, part.runs
        mine = evaluate(exp.claims, results, part.snr, undecided=exp.undecided)
        verdicts += mine
        folder = out_dir / "figures" / (slug(exp.name) if len(parts) > 1 else "")
        knob = sweep_knob(exp)
        drawn = all_figures(results, knob, folder)
        declared = declared_figures(exp, results, folder)
        declared_captions = {
            str(figure_file(folder, f.title)): f.caption or f.title for f in exp.figures
        }
        drawn += declared
        drawn += caption_figures(results, sweep_knob(exp), folder)
        drawn += driving_figures(results, sweep_knob(exp), folder)
        drawn += speech_figures(results, sweep_knob(exp), folder)
        drawn += translation_figures(results, sweep_knob(exp), folder)
        if part.snr:
            drawn.append(snr_figure(part.snr, sweep_knob(exp), folder / "gradient_snr.png"))
        if exp.task == "images":  # approaches differ by knob (front) and by strategy
            drawn += approach_figures(results, sweep_knob(exp), folder, exp.name)
        figures += drawn
        for path in drawn:  # in a suite, each caption says whose figure it is
            text = declared_captions.get(str(path)) or caption(path)
            captions[str(path)] = f"{exp.name}: {text}" if len(parts) > 1 else text
        prefix = exp.name if len(parts) > 1 else ""
        summary = summary_sections(results, prefix)
        tables += summary
        for claim, verdict in zip(exp.claims, mine, strict=True):
            row = verdict.as_row()
            row["anchor"] = f"{prefix}-{claim.id}" if prefix else claim.id
            row["experiment"] = exp.name
            row["figures"] = claim_figures(claim.check, claim.params, drawn, claim.figures)
            own = claim_figure(prefix + claim.id, _named(claim.params), results, knob, folder)
            figures += own
            for path in own:
                text = "The claim's strategies in colour, every other one faint: " + caption(
                    path.with_name("accuracy_vs.png")
                )
                captions[str(path)] = f"{exp.name}: {text}" if len(parts) > 1 else text
            row["figures"] = own + row["figures"]
            where = claim.params.get("where") or {}
            row["tables"] = _tables_for(verdict.details, where, summary)
            rows.append(row)
    sections = [
        Section(
            "Deviations",
            ("claim", "explanation", "by", "measured"),
            [
                {
                    "claim": r["id"],
                    "explanation": r["verdict"],
                    "by": r["by"],
                    "measured": r["details"],
                }
                for r in deviations(verdicts)
            ],
            "Every FAIL above, with the diagnostic claims that measure why: explained when "
            "all of them pass, partly explained when some do, unexplained otherwise.",
        ),
        Section(
            "Lost in the last phase",
            PHASE_COLUMNS,
            [row for part in parts for row in phase_losses(part.runs)],
            f"Cells whose mean output metric fell by more than {PHASE_DROP} in their last "
            "phase (e.g. fine-tuning after pre-training), means over seeds.",
        ),
    ]
    sections += driving_sections(parts)
    sections += blackbox_sections(parts)
    sections += time_sections(parts)
    stale = [{"experiment": p.experiment.name, "runs": p.left_out} for p in parts if p.left_out]
    if stale:
        sections.append(
            Section(
                "Runs of older code left out",
                ("experiment", "runs"),
                stale,
                "The store also holds runs of these experiments trained under older code (a "
                "task or e2elab changed since): they are not pooled with the current runs. "
                "'e2elab report --all-versions' shows them, labelled; 'e2elab prune' drops "
                "them.",
            )
        )
    markdown = write_report(out_dir, title, rows, figures, None, sections, tables, captions)
    # the verdicts as data: each with its stability under the seeds and its margin
    keys = (
        "experiment",
        "id",
        "statement",
        "verdict",
        "stability",
        "margin",
        "undecided",
        "details",
    )
    (out_dir / "claims.json").write_text(
        json.dumps([{k: r.get(k) for k in keys} for r in rows], indent=1)
    )
    write_index(out_dir / "index.html", title, [(title, "report.html", rows)])
    return Report(verdicts, figures, markdown, rows)


def _named(params: dict[str, Any]) -> list[str]:
    """The strategies a claim's parameters name (strategies, strategy, slow, fast, ...)."""
    out: list[str] = []
    for key, value in params.items():
        if key in ("where", "low_where", "knob", "port", "artifact"):
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                out.append(item)
    return out


def _tables_for(
    details: str, where: dict[str, Any], tables: list[Section]
) -> list[tuple[str, str]]:
    """The summary tables a verdict speaks of: those whose grid point has each of its
    knob=value pairs fixed by the claim's ``where`` or named in its numbers; else the
    experiment's first table (labelled so)."""
    found = []
    for table in tables:
        tags = {k: f"{k}={v}" for k, v in table.point.items()}
        if tags and all(
            (k in where and str(where[k]) == str(table.point[k]))
            or re.search(rf"(?<![\w.]){re.escape(tag)}(?![\w.])", details)
            for k, tag in tags.items()
        ):
            found.append((table.anchor, ", ".join(tags.values())))
    if not found and tables:
        found.append((tables[0].anchor, "summary tables"))
    return found


def blackbox_sections(parts: list[Part]) -> list[Section]:
    """The black-box table of each part that has black-box runs."""
    sections = []
    for part in parts:
        rows = blackbox_rows(part.runs)
        if rows:
            name = f" ({part.experiment.name})" if len(parts) > 1 else ""
            sections.append(
                Section(
                    "Black boxes" + name,
                    BLACKBOX_COLUMNS,
                    rows,
                    "The scikit-learn baselines on the raw inputs: the model is the named "
                    "estimator; where it was fitted another way than the plain estimator on "
                    "dense inputs, the implementation says how (the same model: an RBF SVM "
                    "on its precomputed Gram matrix, trees on sparse inputs). Hyper-parameters "
                    "were chosen on the validation set where the task has one (else the defaults); "
                    "means over seeds.",
                    numeric=("train accuracy", "test accuracy", "seconds"),
                )
            )
    return sections


def time_sections(parts: list[Part]) -> list[Section]:
    """Where the stored runs' time went (``timesplit``), per experiment: their own
    seconds per category, added up, and each category's share of them. What a command
    spent outside its runs (its own set-up, SNR measurements, idle workers) is in the
    command's last line and its ``time_split.json``."""
    from e2elab.timesplit import CATEGORIES, run_seconds

    shown = [c for c in CATEGORIES if c not in ("gradient SNR", "idle")]
    rows = []
    for part in parts:
        seconds = run_seconds(part.runs)
        total = sum(seconds.values())
        if total <= 0:
            continue  # runs stored before they recorded their timing
        row: dict[str, Any] = {"experiment": part.experiment.name}
        row["runs' seconds"] = f"{total:,.1f} s"
        row |= {
            c: f"{seconds.get(c, 0.0):,.1f} s ({100 * seconds.get(c, 0.0) / total:.0f}%)"
            for c in shown
        }
        rows.append(row)
    if not rows:
        return []
    return [
        Section(
            "Where the runs' time went",
            ("experiment", *shown, "runs' seconds"),
            rows,
            "The stored runs' own seconds, added up: training steps, held-out evaluation "
            "(with oracle evaluations and artifacts), linear probes, black-box fitting and "
            "set-up (data, tracing, the stack's first batches); a run trained in a stack "
            "of seeds counts its share. The command that trained them printed the rest "
            "(its own set-up, gradient SNR, idle workers) and wrote it to time_split.json.",
        )
    ]


def driving_sections(parts: list[Part]) -> list[Section]:
    """The closed-loop and error-propagation tables, for parts that drove in closed loop."""
    sections = []
    for part in parts:
        knob = sweep_knob(part.experiment)
        loop = closed_loop_rows(part.runs, knob)
        if not loop:
            continue
        name = f" ({part.experiment.name})" if len(parts) > 1 else ""
        sections.append(
            Section(
                "Closed loop" + name,
                tuple(loop[0]),
                loop,
                "Each learned policy driving the held-out roads, per condition: means and "
                "95% intervals over seeds (cut at 0). A departed car is counted and put back "
                "on the centre line. Metres to the first departure are censored: a road "
                "without one counts the whole distance driven, so read them beside the "
                "share of roads without a departure.",
            )
        )
        blame = propagation_rows(part.runs, knob)
        sections.append(
            Section(
                "Error propagation" + name,
                tuple(blame[0]) if blame else ("strategy",),
                blame,
                "Where the steering error comes from in closed loop, for stacks whose pose "
                "ports are trained (e2e's are a free bottleneck): the steering error the "
                "perception's errors cause (steering from the perceived pose against "
                "steering from the true pose), against the controller's own (its steering "
                "from the true pose against the expert's). The larger is the module at fault.",
            )
        )
    return sections


PHASE_DROP = 0.02
PHASE_COLUMNS = ("grid point", "strategy", "before the last phase", "at the end", "change")


def phase_losses(results: list[RunResult]) -> list[dict[str, str]]:
    """Cells (grid point x strategy) of multi-phase runs whose mean output metric at the
    end is more than ``PHASE_DROP`` below its mean at the end of the phase before."""
    rows = []
    varying = {
        k
        for r in results
        for k in r.spec.knobs
        if len({json.dumps(x.spec.knobs.get(k)) for x in results}) > 1
    }
    for (knobs, strategy), runs in sorted(group(results, "knobs", "strategy").items()):
        point = json.loads(knobs)
        knobs = ", ".join(f"{k}={point[k]}" for k in sorted(varying)) or knobs
        ends = [r.phase_ends() for r in runs if r.status == "ok"]
        ends = [e for e in ends if len(e) >= 2]
        if not ends:
            continue
        before = sum(e[-2]["output"] for e in ends) / len(ends)
        after = sum(e[-1]["output"] for e in ends) / len(ends)
        if after < before - PHASE_DROP:
            rows.append(
                {
                    "grid point": knobs,
                    "strategy": strategy,
                    "before the last phase": f"{before:.3f} (after {ends[0][-2]['label']})",
                    "at the end": f"{after:.3f}",
                    "change": f"{after - before:+.3f} ({len(ends)} seeds)",
                }
            )
    return rows


SUMMARY_COLUMNS = (
    "strategy",
    "seeds",
    "output metric [95% CI]",
    "examples to threshold (reached)",
    "at chance",
    "diverged / failed",
    "time s",
    "GFLOP",
)


def summary_sections(results: list[RunResult], prefix: str = "") -> list[Section]:
    """One table per grid point (its knobs that vary across the results in the title),
    strategies as rows. The best output metric is marked (every row that ties with it at
    the shown precision), among strategies where most seeds finished."""
    varying = sorted(
        {
            k
            for r in results
            for k in r.spec.knobs
            if len({json.dumps(x.spec.knobs.get(k)) for x in results}) > 1
        }
    )
    out = []
    for index, ((knobs,), runs) in enumerate(group(results, "knobs").items()):
        point = json.loads(knobs)
        label = ", ".join(f"{k}={point[k]}" for k in varying) or "all runs"
        flops = _mean_flops(runs)
        rows = []
        others = [p for p in port_names(runs) if p != runs[0].output]
        labels = {p: port_label(runs, p) for p in others}
        for row in summarize(runs):
            done = row.runs - row.diverged - row.failed
            rows.append(
                {
                    **{
                        labels[p]: row.ports[p].format(3) if p in row.ports else "-" for p in others
                    },
                    "strategy": row.strategy,
                    "seeds": row.runs,
                    "output metric [95% CI]": row.accuracy.format(3),
                    "examples to threshold (reached)": (
                        f"{row.examples_to_threshold.format(0)} ({row.reached}/{done})"
                        + _floor_note(runs, row.strategy)
                    ),
                    "at chance": f"{row.at_chance}/{done}",
                    "diverged / failed": f"{row.diverged} / {row.failed}",
                    "time s": f"{row.seconds.mean:.1f}",
                    "GFLOP": f"{flops[row.strategy] / 1e9:,.1f}" if row.strategy in flops else "-",
                    "_rank": round(row.accuracy.mean, 3) if 2 * done > row.runs else None,
                }
            )
        ranked = [r["_rank"] for r in rows if r["_rank"] is not None and r["_rank"] == r["_rank"]]
        for r in rows:
            r["_best"] = bool(ranked) and r["_rank"] == max(ranked)
        fixed = {k: v for k, v in point.items() if k not in varying}
        out.append(
            Section(
                (f"{prefix}: " if prefix else "") + f"Summary: {label}",
                SUMMARY_COLUMNS[:3] + tuple(labels.values()) + SUMMARY_COLUMNS[3:],
                rows,
                f"Threshold {runs[0].spec.settings.threshold:g}; the other knobs: "
                + (", ".join(f"{k}={v}" for k, v in sorted(fixed.items())) or "none")
                + ". Means over the seeds that finished, with a column for every other port "
                "(its own metric); the best output metric is marked "
                "(ties at this precision all are; only strategies where most seeds finished).",
                anchor=f"summary-{slug(prefix) + '-' if prefix else ''}{index}",
                numeric=SUMMARY_COLUMNS[1:] + tuple(labels.values()),
                point={k: point[k] for k in varying},
            )
        )
    return out


def _floor_note(runs: list[RunResult], strategy: str) -> str:
    """For a strategy of several phases: its floor, the examples drawn before its last
    phase starts (a threshold on the output is rarely reached earlier, since the output
    trains last), and whether the floor explains the figure."""
    mine = [r for r in runs if r.spec.strategy == strategy]
    starts = phase_starts(mine[0]) if mine else []
    if not starts:
        return ""
    floor = starts[-1]
    reached = [r.examples_to_threshold for r in mine if r.examples_to_threshold is not None]
    near = reached and min(reached) <= floor * 1.25
    return f"; floor {floor:,.0f}" + (" (mostly the floor)" if near else "")


def _mean_flops(runs: list[RunResult]) -> dict[str, float]:
    """Strategy -> mean training FLOPs over its finished runs (where recorded)."""
    found: dict[str, list[float]] = {}
    for r in runs:
        value = r.memory.get("training_flops") if r.status == "ok" else None
        if isinstance(value, (int, float)) and value > 0:
            found.setdefault(r.spec.strategy, []).append(float(value))
    return {k: sum(v) / len(v) for k, v in found.items()}
