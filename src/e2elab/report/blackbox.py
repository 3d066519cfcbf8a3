"""The black-box baselines' table: which scikit-learn model ran, how it was fitted (an
implementation that differs from the plain estimator is named), on how many examples,
with which hyper-parameters, and what it scored."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from e2elab.records import RunResult

COLUMNS = (
    "grid point",
    "model",
    "implementation",
    "examples used",
    "chosen",
    "train accuracy",
    "test accuracy",
    "seconds",
    "seeds",
)


def blackbox_rows(results: list[RunResult]) -> list[dict[str, Any]]:
    """One row per grid point (the knobs that vary) and black-box strategy; means over
    seeds of the finished runs ("seconds": fitting, choosing and scoring)."""
    values: dict[str, set[str]] = defaultdict(set)
    for r in results:
        for k, v in r.spec.knobs.items():
            values[k].add(str(v))
    varying = sorted(k for k, v in values.items() if len(v) > 1)
    cells: dict[tuple[str, str], list[RunResult]] = defaultdict(list)
    for r in results:
        if r.status == "ok" and r.learner == "model" and r.phases:
            point = ", ".join(f"{k}={r.spec.knobs.get(k)}" for k in varying)
            cells[(point, r.spec.strategy)].append(r)
    rows = []
    for (point, strategy), runs in sorted(cells.items()):
        phases = [r.phases[0] for r in runs]
        ways = sorted({str(p.get("implementation", "not recorded")) for p in phases})
        chosen = sorted({_chosen(p.get("hyper_parameters") or {}) for p in phases})
        used = sorted({int(r.curve[-1]["examples"]) for r in runs if r.curve})
        rows.append(
            {
                "grid point": point or "-",
                "model": _model(strategy),
                "implementation": "; ".join(ways),
                "examples used": ", ".join(f"{u:,}" for u in used),
                "chosen": "; ".join(chosen),
                "train accuracy": _mean(p.get("train_accuracy") for p in phases),
                "test accuracy": _mean(r.final.get(r.output) for r in runs),
                "seconds": _mean((p.get("seconds") for p in phases), digits=1),
                "seeds": str(len(runs)),
            }
        )
    return rows


def _model(strategy: str) -> str:
    """``blackbox:features=hog,model=svm`` -> ``svm + hog``; plain ``blackbox`` -> its
    default model."""
    options = dict(
        part.split("=", 1) for part in strategy.partition(":")[2].split(",") if "=" in part
    )
    model = options.get("model", "random_forest")
    return f"{model} + {options['features']}" if options.get("features") else model


def _chosen(hyper: dict[str, Any]) -> str:
    return (
        ", ".join(
            f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(hyper.items())
        )
        or "defaults"
    )


def _mean(values: Any, digits: int = 3) -> str:
    numbers = [float(v) for v in values if v is not None]
    return f"{sum(numbers) / len(numbers):.{digits}f}" if numbers else "-"
