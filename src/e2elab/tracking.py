"""A store's runs where researchers look at runs: MLflow and TensorBoard.

Both write with the libraries' own writers, installed as an optional extra
(``pip install -e '.[tracking]'``: mlflow-skinny and tensorboard):

- MLflow: one MLflow experiment per e2elab experiment in the store, one MLflow run per
  e2elab run, named ``STRATEGY seed S (knobs)``, with the spec as parameters (task,
  strategy, seed, each knob, the training settings, the code version), the status and
  e2elab's run id as tags, the final metric of every port, examples-to-threshold and
  wall time as metrics, and the learning curve of every port as step metrics
  (``curve/PORT``, step = training examples drawn). It writes a local file store, which
  MLflow 3 keeps in maintenance mode: view it with
  ``MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri DIR``.
- TensorBoard: one event folder per run (``EXPERIMENT/STRATEGY/seed-S``, then the
  values of the knobs the experiment varies, e.g. ``n=3``), the
  curves as scalars ``curve/PORT`` at their examples, the final metrics as
  ``final/PORT``, and the spec as text: ``tensorboard --logdir DIR``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from e2elab.errors import E2ELabError
from e2elab.records import RunResult

TARGETS = ("mlflow", "tensorboard")
_EXTRA = "install the tracking extra: pip install 'e2elab[tracking]'"


def export_runs(runs: Iterable[tuple[str, RunResult]], target: str, folder: Path) -> int:
    """Write (experiment, run) pairs to ``target`` under ``folder``; the number of runs."""
    pairs = list(runs)
    if target == "mlflow":
        return _mlflow(pairs, folder)
    if target == "tensorboard":
        return _tensorboard(pairs, folder)
    raise E2ELabError(f"unknown export target {target!r}; choose one of: {', '.join(TARGETS)}")


def varying(results: Iterable[RunResult]) -> list[str]:
    """The knobs whose values differ between ``results`` (a grid's axes)."""
    seen: dict[str, set[str]] = {}
    for result in results:
        for knob, value in result.spec.knobs.items():
            seen.setdefault(knob, set()).add(repr(value))
    return sorted(k for k, values in seen.items() if len(values) > 1)


def run_name(result: RunResult, knobs: list[str]) -> str:
    spec = result.spec
    point = ", ".join(f"{k}={spec.knobs.get(k)}" for k in knobs)
    return f"{spec.strategy} seed {spec.seed}" + (f" ({point})" if point else "")


def params(result: RunResult) -> dict[str, str]:
    spec = result.spec
    out = {"task": spec.task, "strategy": spec.strategy, "seed": str(spec.seed)}
    out |= {f"knob.{k}": str(v) for k, v in sorted(spec.knobs.items())}
    for name in ("budget", "batch_size", "lr", "optimizer", "evaluations", "threshold"):
        out[name] = str(spec.value(name))
    out["code"] = result.code_version
    return out


def final_metrics(result: RunResult) -> dict[str, float]:
    out = {f"final/{port}": value for port, value in result.final.items()}
    out["wall_seconds"] = result.wall_seconds
    if result.examples_to_threshold is not None:
        out["examples_to_threshold"] = float(result.examples_to_threshold)
    return {k: float(v) for k, v in out.items() if _finite(v)}


def curve_points(result: RunResult) -> list[tuple[str, float, int]]:
    """(name, value, examples) of every port's learning curve."""
    return [
        (f"curve/{port}", float(value), int(point["examples"]))
        for point in result.curve
        for port, value in point["metrics"].items()
        if _finite(value)
    ]


def last_step(result: RunResult) -> int:
    """The training examples drawn at the run's last evaluation."""
    return int(result.curve[-1]["examples"]) if result.curve else 0


def _axes(pairs: list[tuple[str, RunResult]]) -> dict[str, list[str]]:
    """Per experiment, the knobs its runs vary."""
    names = {name for name, _ in pairs}
    return {n: varying(r for name, r in pairs if name == n) for n in names}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _mlflow(pairs: list[tuple[str, RunResult]], folder: Path) -> int:
    # MLflow 3 refuses a new file store unless told that it is wanted
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise E2ELabError(f"export --to mlflow needs MLflow; {_EXTRA}") from None
    folder.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=folder.resolve().as_uri())
    experiments: dict[str, str] = {}
    axes = _axes(pairs)
    for name, result in pairs:
        if name not in experiments:
            found = client.get_experiment_by_name(name)
            experiments[name] = (
                found.experiment_id if found is not None else client.create_experiment(name)
            )
        run = client.create_run(
            experiments[name],
            run_name=run_name(result, axes[name]),
            tags={"e2elab.run_id": result.id, "e2elab.status": result.status},
        )
        metrics = [Metric(k, v, 0, last_step(result)) for k, v in final_metrics(result).items()]
        metrics += [Metric(k, v, 0, step) for k, v, step in curve_points(result)]
        values = [Param(k, v) for k, v in params(result).items()]
        tags = [RunTag("e2elab.strategy", result.spec.strategy)]
        for start in range(0, max(len(metrics), 1), 1000):  # MLflow's batch limit
            part = metrics[start : start + 1000]
            client.log_batch(
                run.info.run_id, metrics=part, params=values if start == 0 else [], tags=tags
            )
        client.set_terminated(run.info.run_id, "FINISHED" if result.status == "ok" else "FAILED")
    return len(pairs)


def _tensorboard(pairs: list[tuple[str, RunResult]], folder: Path) -> int:
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise E2ELabError(f"export --to tensorboard needs TensorBoard; {_EXTRA}") from None
    axes = _axes(pairs)
    for name, result in pairs:
        spec = result.spec
        where = folder / name / spec.strategy.replace("/", "_") / f"seed-{spec.seed}"
        point = "_".join(f"{k}={spec.knobs.get(k)}" for k in axes[name])
        where = where / point if point else where
        writer = SummaryWriter(log_dir=str(where))
        try:
            for tag, value, step in curve_points(result):
                writer.add_scalar(tag, value, step)
            for tag, value in final_metrics(result).items():
                writer.add_scalar(tag, value, last_step(result))
            text = "\n".join(f"- {k}: {v}" for k, v in params(result).items())
            writer.add_text("spec", f"run {result.id} ({result.status})\n\n{text}", 0)
        finally:
            writer.close()
    return len(pairs)
