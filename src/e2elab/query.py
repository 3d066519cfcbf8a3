"""Results as tables: DataFrames over stored runs, and the one place runs are grouped.

``runs_frame`` has one row per run with its knobs, strategy and seed, final metrics,
probes (trained and at initialisation), memory, FLOPs and time as columns;
``curves_frame`` has the learning curves in long form (one row per run, evaluation point
and port). ``group`` splits runs into cells by any of their settings; the claims, the
summary tables and the figures all group through it. Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from e2elab import versions
from e2elab.errors import E2ELabError
from e2elab.records import RunResult
from e2elab.store import Store

if TYPE_CHECKING:
    import pandas as pd

Key = tuple[Any, ...]

# memory entries of a run (per phase, the largest is kept) that become columns
_MEMORY = ("activation_bytes", "step_bytes_estimate", "trained_parameter_bytes")


def field(result: RunResult, name: str) -> Any:
    """One of a run's settings by name: ``strategy``, ``seed``, ``knobs`` (all of them, as
    JSON text), a knob's name, or any other field of its spec (``budget``, ...)."""
    spec = result.spec
    if name == "knobs":
        return json.dumps(spec.knobs, sort_keys=True)
    if name in spec.knobs:
        return hashable(spec.knobs[name])
    return hashable(spec.value(name))


def group(
    results: Iterable[RunResult], *by: str, where: Callable[[RunResult], bool] | None = None
) -> dict[Key, list[RunResult]]:
    """Runs split into cells by the values of ``by`` (see ``field``), in first-seen order."""
    cells: dict[Key, list[RunResult]] = {}
    for r in results:
        if where is None or where(r):
            cells.setdefault(tuple(field(r, name) for name in by), []).append(r)
    return cells


def runs_frame(results: Iterable[RunResult]) -> pd.DataFrame:
    import pandas as pd  # loads here: the claims use this module's grouping, not frames

    """One row per run (see the module docstring). Columns: run_id, task, ``knob_<name>``,
    strategy, seed, the settings (with any loaded modules), status, output metric and
    chance, at-chance flag,
    examples-to-threshold, ``final_<port>``, ``probe_<port>``, ``probe_init_<port>``,
    ``oracle_<set>_<port>`` (the metrics with the set's ports forced, see ``oracle``),
    memory (bytes), training FLOPs, wall seconds (and ``seconds_<category>``, where they
    went: see ``timesplit``), the weights' hash, and ``code`` (the code
    version it was trained under), ``stored_at`` and ``superseded`` (a run of the same
    cell was stored later under other code: see ``versions``)."""
    results = list(results)
    _, old = versions.split(results)
    stale = {id(r) for r in old}
    rows = []
    for r in results:
        spec = r.spec
        row: dict[str, Any] = {"run_id": r.id, "task": spec.task}
        row |= {f"knob_{k}": v for k, v in spec.knobs.items()}
        row |= {
            "strategy": spec.strategy,
            "seed": spec.seed,
            "budget": spec.settings.budget,
            "batch_size": spec.settings.batch_size,
            "lr": spec.settings.lr,
            "optimizer": spec.settings.optimizer,
            "threshold": spec.settings.threshold,
            # modules loaded before training: MODULE=SHA256 of the weights, and where
            # they were read (STORE#RUN_ID: the run they came from)
            "load": spec.settings.load or None,
            "load_from": spec.settings.load_from or None,
            "status": r.status,
            "reason": r.reason,
            "output": r.output,
            "output_metric": r.output_metric,
            "chance": r.chance.get(r.output),
            "at_chance": r.at_chance,
            "examples_to_threshold": r.examples_to_threshold,
        }
        row |= {f"final_{port}": value for port, value in r.final.items()}
        row |= {f"probe_{port}": value for port, value in r.probes.items()}
        row |= {f"probe_init_{port}": value for port, value in r.probes_at_init.items()}
        for name, evaluation in r.oracle.items():  # ports forced at evaluation (oracle)
            row |= {f"oracle_{name}_{p}": v for p, v in evaluation["metrics"].items()}
        row |= _memory(r.memory)
        row |= {"wall_seconds": r.wall_seconds, "weights_sha256": r.weights_sha256}
        # where the run's time went (timesplit): seconds_training, seconds_set_up, ...
        row |= {f"seconds_{re.sub(r'[^a-z]+', '_', k)}": v for k, v in r.timing.items()}
        # the code it was trained under, when it was stored, and whether a run of the same
        # cell was stored later under other code (versions.split)
        row |= {"code": r.code_version, "stored_at": r.stored_at, "superseded": id(r) in stale}
        rows.append(row)
    frame = pd.DataFrame(rows)
    if "examples_to_threshold" in frame:
        frame["examples_to_threshold"] = frame["examples_to_threshold"].astype("Int64")
    return frame


def curves_frame(results: Iterable[RunResult]) -> pd.DataFrame:
    import pandas as pd

    """The learning curves in long form: run_id, strategy, seed, ``knob_<name>``,
    examples, phase, port, metric (a port's extra metrics appear as ``PORT:NAME``)."""
    rows = []
    for r in results:
        spec = r.spec
        base = {"run_id": r.id, "strategy": spec.strategy, "seed": spec.seed}
        base |= {f"knob_{k}": v for k, v in spec.knobs.items()}
        for point in r.curve:
            for port, value in point["metrics"].items():
                rows.append(
                    {
                        **base,
                        "examples": point["examples"],
                        "phase": point["phase"],
                        "port": port,
                        "metric": value,
                    }
                )
    columns = ["run_id", "strategy", "seed", "examples", "phase", "port", "metric"]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=columns)


def load_frame(path: Path | str, experiment: str | None = None) -> pd.DataFrame:
    """The runs in a store (of one experiment, if named) as a DataFrame."""
    return runs_frame(_results(path, experiment))


def load_curves(path: Path | str, experiment: str | None = None) -> pd.DataFrame:
    """The learning curves in a store (of one experiment, if named), in long form."""
    return curves_frame(_results(path, experiment))


FORMATS = ("csv", "parquet", "json")
TABLES = ("runs", "curves")


def export(
    path: Path | str,
    fmt: str,
    target: Path | str,
    table: str = "runs",
    experiment: str | None = None,
) -> int:
    """Write the store's runs (one row each) or curves (long form) as CSV, Parquet or JSON
    (records, one object per row); returns the number of rows."""
    if fmt not in FORMATS:
        raise E2ELabError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if table not in TABLES:
        raise E2ELabError(f"unknown table {table!r}; choose one of: {', '.join(TABLES)}")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise E2ELabError(
                "parquet export needs pyarrow; install it with: pip install 'e2elab[parquet]'"
            ) from None
    frame = (load_frame if table == "runs" else load_curves)(path, experiment)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # written whole or not at all: into a temporary file beside the target, then renamed
    # over it (a full disk leaves the old file, or none, never a truncated one)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        if fmt == "csv":
            frame.to_csv(partial, index=False)
        elif fmt == "parquet":
            frame.to_parquet(partial, index=False)
        else:
            frame.to_json(partial, orient="records", indent=1)
        os.replace(partial, target)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise E2ELabError(
            f"cannot write {target} ({error.strerror or error}); nothing was written there: "
            "free space or choose another -o"
        ) from None
    return len(frame)


def _results(path: Path | str, experiment: str | None) -> list[RunResult]:
    with Store(path, readonly=True) as store:
        if experiment is not None and experiment not in store.experiments():
            raise E2ELabError(
                f"{path} holds no experiment {experiment!r}; it has: "
                f"{', '.join(store.experiments()) or '(none)'}"
            )
        return store.results(experiment)


def _memory(memory: dict[str, Any]) -> dict[str, Any]:
    phases = memory.get("phases", [])
    out: dict[str, Any] = {
        f"memory_{name}": max((p.get(name, 0) for p in phases), default=None) for name in _MEMORY
    }
    out["memory_max_rss_bytes"] = memory.get("max_rss_bytes")
    out["memory_model_state_bytes"] = memory.get("model_state_bytes")
    out["training_flops"] = memory.get("training_flops")
    out["seeds_batched"] = memory.get("seeds_batched", 1)
    out["stacking"] = memory.get("stacking")  # how the seed trained, and why not stacked
    return out


def hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return json.dumps(value, sort_keys=True, default=str)
    return value
