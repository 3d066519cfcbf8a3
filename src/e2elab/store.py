"""The results store: one embedded SQLite file, one row per run plus its curve.

Every write is one transaction, so an interrupted sweep leaves only whole runs behind,
and a rerun skips the ids already stored. The full RunResult is kept as JSON next to
the columns that queries and exports need.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from e2elab.errors import E2ELabError
from e2elab.run import RunResult

# 2: results of spec version 3 (see run.SPEC_VERSION): trained under fixed numerics, with
#    the numeric environment and a hash of the trained weights. A store of schema 1 mixes
#    runs whose result depended on the command that trained them, so it is refused.
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    knobs TEXT NOT NULL,
    strategy TEXT NOT NULL,
    seed INTEGER NOT NULL,
    budget INTEGER NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    output TEXT NOT NULL,
    output_metric REAL,
    chance REAL,
    breakdown INTEGER NOT NULL,
    examples_to_threshold INTEGER,
    wall_seconds REAL NOT NULL,
    result TEXT NOT NULL,
    stored_at TEXT NOT NULL DEFAULT (datetime('now'))
);
CREATE TABLE IF NOT EXISTS curves (
    run_id TEXT NOT NULL REFERENCES runs(id),
    examples INTEGER NOT NULL,
    phase INTEGER NOT NULL,
    port TEXT NOT NULL,
    metric REAL
);
CREATE INDEX IF NOT EXISTS curves_by_run ON curves(run_id);
CREATE TABLE IF NOT EXISTS experiments (name TEXT PRIMARY KEY, definition TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS snr (
    experiment TEXT NOT NULL,
    key TEXT NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (experiment, key)
);
CREATE TABLE IF NOT EXISTS experiment_runs (
    experiment TEXT NOT NULL,
    run_id TEXT NOT NULL REFERENCES runs(id),
    PRIMARY KEY (experiment, run_id)
);
"""


class Store:
    """An e2elab results database at ``path`` (created if missing)."""

    def __init__(self, path: Path | str, create: bool = True) -> None:
        self.path = Path(path)
        if not self.path.exists() and not create:
            raise E2ELabError(f"no results store at {self.path}; run an experiment first")
        if self.path.is_dir():
            raise E2ELabError(
                f"{self.path} is a folder, not a results store; pass the .sqlite file"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path)
            with self._db:
                self._check_version()  # before creating anything in another version's file
                self._db.executescript(_SCHEMA)
                self._stamp_version()
        except sqlite3.DatabaseError as error:
            raise E2ELabError(
                f"{self.path} is not a readable e2elab results store ({error}); "
                "move it aside or choose another --out"
            ) from None

    def _check_version(self) -> None:
        has_meta = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        if not has_meta:
            return
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is not None and str(row[0]) != str(SCHEMA_VERSION):
            raise E2ELabError(
                f"{self.path} has store schema {row[0]}, this e2elab reads {SCHEMA_VERSION}; "
                "use a new --out folder"
            )

    def _stamp_version(self) -> None:
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ids(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT id FROM runs")}

    def __contains__(self, run_id: str) -> bool:
        row = self._db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone()
        return row is not None

    def put(self, result: RunResult, experiment: str | None = None) -> None:
        """Store one run and its curve in a single transaction (replacing the same id)."""
        spec = result.spec
        with self._db:
            self._db.execute("DELETE FROM curves WHERE run_id = ?", (result.id,))
            self._db.execute(
                "INSERT OR REPLACE INTO runs (id, task, knobs, strategy, seed, budget, status, "
                "reason, output, output_metric, chance, breakdown, examples_to_threshold, "
                "wall_seconds, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    result.id,
                    spec["task"],
                    json.dumps(spec["knobs"], sort_keys=True),
                    spec["strategy"],
                    spec["seed"],
                    spec["budget"],
                    result.status,
                    result.reason,
                    result.output,
                    _finite_or_none(result.output_metric),
                    result.chance.get(result.output),
                    int(result.breakdown),
                    result.examples_to_threshold,
                    result.wall_seconds,
                    json.dumps(result.to_dict()),
                ),
            )
            self._db.executemany(
                "INSERT INTO curves VALUES (?, ?, ?, ?, ?)",
                [
                    (result.id, p["examples"], p["phase"], port, _finite_or_none(value))
                    for p in result.curve
                    for port, value in p["metrics"].items()
                ],
            )
            if experiment is not None:
                self._db.execute(
                    "INSERT OR IGNORE INTO experiment_runs VALUES (?, ?)", (experiment, result.id)
                )

    def link(self, experiment: str, run_ids: Iterable[str]) -> None:
        """Record that already-stored runs belong to ``experiment``."""
        with self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO experiment_runs VALUES (?, ?)",
                [(experiment, i) for i in run_ids],
            )

    def put_experiment(self, name: str, definition: dict[str, Any]) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO experiments VALUES (?, ?)",
                (name, json.dumps(definition, sort_keys=True)),
            )

    def experiments(self) -> dict[str, dict[str, Any]]:
        rows = self._db.execute("SELECT name, definition FROM experiments ORDER BY name")
        return {name: json.loads(text) for name, text in rows}

    def results(self, experiment: str | None = None) -> list[RunResult]:
        """Stored runs (of one experiment, if named), in the order they were stored."""
        if experiment is None:
            rows = self._db.execute("SELECT result FROM runs ORDER BY rowid")
        else:
            rows = self._db.execute(
                "SELECT r.result FROM runs r JOIN experiment_runs e ON e.run_id = r.id "
                "WHERE e.experiment = ? ORDER BY r.rowid",
                (experiment,),
            )
        return [RunResult.from_dict(json.loads(text)) for (text,) in rows]

    def put_snr(self, experiment: str, key: str, result: dict[str, Any]) -> None:
        """Store one gradient-SNR measurement (see diagnostics.snr) under ``key``."""
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO snr VALUES (?, ?, ?)",
                (experiment, key, json.dumps(result, allow_nan=True)),
            )

    def snr(self, experiment: str) -> dict[str, dict[str, Any]]:
        rows = self._db.execute(
            "SELECT key, result FROM snr WHERE experiment = ? ORDER BY rowid", (experiment,)
        )
        return {key: json.loads(text) for key, text in rows}

    def count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]

    def curve_rows(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM curves").fetchone()[0]


def results_frame(results: Iterable[RunResult]) -> pd.DataFrame:
    """One row per run: id, task, one column per knob, strategy, seed, status, final
    metrics (``final_<port>``), examples-to-threshold, breakdown and time."""
    rows = []
    for r in results:
        spec = r.spec
        row: dict[str, Any] = {"run_id": r.id, "task": spec["task"]}
        row |= {f"knob_{k}": v for k, v in spec["knobs"].items()}
        row |= {
            "strategy": spec["strategy"],
            "seed": spec["seed"],
            "budget": spec["budget"],
            "status": r.status,
            "reason": r.reason,
            "output": r.output,
            "output_metric": r.output_metric,
            "chance": r.chance.get(r.output),
            "breakdown": r.breakdown,
            "examples_to_threshold": r.examples_to_threshold,
            "wall_seconds": r.wall_seconds,
        }
        row |= {f"final_{port}": value for port, value in r.final.items()}
        rows.append(row)
    frame = pd.DataFrame(rows)
    if "examples_to_threshold" in frame:
        frame["examples_to_threshold"] = frame["examples_to_threshold"].astype("Int64")
    return frame


def load_frame(path: Path | str, experiment: str | None = None) -> pd.DataFrame:
    """The runs in a store as a pandas DataFrame (see ``results_frame``)."""
    with Store(path, create=False) as store:
        return results_frame(store.results(experiment))


def export(path: Path | str, fmt: str, target: Path | str) -> int:
    """Write the store's runs to CSV or Parquet; returns the number of rows."""
    frame = load_frame(path)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        frame.to_csv(target, index=False)
    elif fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise E2ELabError(
                "parquet export needs pyarrow; install it with: pip install 'e2elab[parquet]'"
            ) from None
        frame.to_parquet(target, index=False)
    else:
        raise E2ELabError(f"unknown export format {fmt!r}; choose one of: csv, parquet")
    return len(frame)


def _finite_or_none(value: float | None) -> float | None:
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return float(value)
