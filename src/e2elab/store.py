"""The results store: one embedded SQLite file, one row per run plus its curve (frames
and exports over it live in ``query``).

Every write is one transaction, so an interrupted sweep leaves only whole runs behind,
and a rerun skips the ids already stored. The full RunResult is kept as JSON next to
the columns that queries and exports need.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

from e2elab.errors import E2ELabError
from e2elab.records import RunResult

# 2: results of spec version 3 (see run.SPEC_VERSION): trained under fixed numerics, with
#    the numeric environment and a hash of the trained weights. A store of schema 1 mixes
#    runs whose result depended on the command that trained them, so it is refused.
# 3: an experiment's threshold for each of its runs (experiment_runs.threshold), and
#    e2elab's SQLite application id.
SCHEMA_VERSION = 3
# SQLite's application id for e2elab stores (PRAGMA application_id): 'e2eL'
APPLICATION_ID = 0x6532654C

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
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
    breakdown INTEGER NOT NULL,  -- RunResult.at_chance (the column keeps its first name)
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
    threshold REAL,  -- the experiment's accuracy threshold for this run (NULL: the run's own)
    PRIMARY KEY (experiment, run_id)
);
"""
# saved modules (Settings.save_modules): safetensors bytes, one row per run and module;
# made on first use, so stores written before it stay readable by older versions
_MODULES = """
CREATE TABLE IF NOT EXISTS modules (
    run_id TEXT NOT NULL REFERENCES runs(id),
    module TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (run_id, module)
);
"""


class StoreWriteError(E2ELabError):
    """The store refused a write (disk full, read-only file): nothing was half-written."""


class Store:
    """An e2elab results database at ``path`` (created if missing)."""

    def __init__(self, path: Path | str, create: bool = True, readonly: bool = False) -> None:
        """Open (or, unless ``create`` is off, make) the store at ``path``. ``readonly``
        opens it for reading only (``report``, ``export``), so nothing can be written.

        e2elab writes only into files it made: a new store gets e2elab's SQLite
        application id and a meta row, and an existing file without them (an empty file,
        another program's database) is refused before anything is written to it."""
        self.path = Path(path)
        if self.path.is_dir():
            raise E2ELabError(
                f"{self.path} is a folder, not a results store; pass the .sqlite file"
            )
        exists = self.path.exists()
        if not exists and (not create or readonly):
            raise E2ELabError(f"no results store at {self.path}; run an experiment first")
        try:
            if not exists:
                self._create()
            else:
                mode = "ro" if readonly else "rw"
                self._db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode={mode}", uri=True)
                self._identify()
                damage = self._damage()
                if damage is not None and not readonly:
                    raise E2ELabError(
                        f"{self.path} is damaged (SQLite's check: {damage}); nothing was "
                        "written to it. Copy out what can be read (sqlite3 FILE '.recover' | "
                        "sqlite3 NEW) or move it aside, and choose another --out"
                    )
                if damage is not None:
                    print(
                        f"e2elab: warning: {self.path} is damaged (SQLite's check: {damage}); "
                        "what is read from it may be incomplete",
                        file=sys.stderr,
                    )
                if not readonly:
                    self._check_writable()
                    with self._db:
                        self._db.executescript(_MODULES)
        except sqlite3.DatabaseError as error:
            journal = self.path.with_name(self.path.name + "-journal")
            if journal.exists() and readonly:
                raise E2ELabError(
                    f"{self.path} has a rollback journal beside it ({journal.name}): a write "
                    "was interrupted, and the journal holds what undoes it. Reading needs it "
                    "rolled back first, which this read-only command does not do; open the "
                    "store read-write once (e.g. e2elab run or reproduce with --out on its "
                    "folder; nothing retrains) and SQLite recovers it. Do not delete the "
                    f"journal ({error})"
                ) from None
            raise E2ELabError(
                f"{self.path} is not a readable e2elab results store ({error}); "
                "move it aside or choose another --out"
            ) from None

    def _create(self) -> None:
        folder = self.path.parent
        if folder.exists() and not folder.is_dir():
            raise E2ELabError(f"{folder} is a file, not a folder; choose another --out")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path)
            with self._db:
                self._db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                self._db.executescript(_SCHEMA + _MODULES)
                self._stamp_version()
        except (OSError, sqlite3.DatabaseError) as error:
            self.path.unlink(missing_ok=True)  # leave no half-made store behind
            raise E2ELabError(
                f"cannot create a results store at {self.path} ({error}); "
                "choose a writable --out folder"
            ) from None

    def _identify(self) -> None:
        """Refuse a file that is not an e2elab store, or one of another schema."""
        app = self._db.execute("PRAGMA application_id").fetchone()[0]
        tables = {
            row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        schema = None
        if "meta" in tables:
            try:
                row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
                schema = None if row is None else str(row[0])
            except sqlite3.DatabaseError:
                schema = None
        if app != APPLICATION_ID and schema is None:
            raise E2ELabError(
                f"{self.path} is not an e2elab results store (an empty file or another "
                "program's database); e2elab writes only stores it made: pass the "
                "results.sqlite that 'e2elab run' or 'reproduce' wrote, or choose another --out"
            )
        if schema != str(SCHEMA_VERSION):
            raise E2ELabError(
                f"{self.path} has store schema {schema}, this e2elab reads {SCHEMA_VERSION}; "
                "use a new --out folder"
            )
        missing = {"runs", "curves", "experiments", "snr", "experiment_runs"} - tables
        if missing:
            raise E2ELabError(
                f"{self.path} is a damaged e2elab store (no {', '.join(sorted(missing))} "
                "table); move it aside or choose another --out"
            )

    def _damage(self) -> str | None:
        """SQLite's quick check of every page (None: sound); a store with corrupted pages
        can still answer some queries, silently missing what the bad pages held."""
        try:
            rows = [row[0] for row in self._db.execute("PRAGMA quick_check(5)")]
        except sqlite3.DatabaseError as error:
            return str(error)
        return None if rows == ["ok"] else "; ".join(str(r) for r in rows)[:300]

    def _check_writable(self) -> None:
        """A real write, rolled back: SQLite opens a file the user may not write (chmod
        444) read-only without a word, and takes the write lock even so; only a write
        itself, or its journal in a read-only folder, fails."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("UPDATE meta SET value = value WHERE key = 'schema'")
            finally:
                self._db.execute("ROLLBACK")
        except sqlite3.OperationalError as error:
            raise E2ELabError(
                f"{self.path} cannot be written ({error}); make it writable (chmod u+w), "
                "copy it to a writable folder, or choose another --out"
            ) from None

    def _stamp_version(self) -> None:
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ids(self, status: str | None = None) -> set[str]:
        """Ids of the stored runs (of one ``status`` only, if given)."""
        if status is None:
            return {row[0] for row in self._db.execute("SELECT id FROM runs")}
        rows = self._db.execute("SELECT id FROM runs WHERE status = ?", (status,))
        return {row[0] for row in rows}

    def __contains__(self, run_id: str) -> bool:
        row = self._db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone()
        return row is not None

    def put(self, result: RunResult, experiment: str | None = None) -> None:
        """Store one run and its curve in a single transaction (replacing the same id).
        A write the disk or the file refuses raises ``StoreWriteError``; the transaction
        rolls back, so the store keeps every run it had."""
        try:
            self._put(result, experiment)
        except sqlite3.OperationalError as error:
            raise StoreWriteError(f"cannot write to {self.path} ({error})") from None

    def _put(self, result: RunResult, experiment: str | None) -> None:
        spec = result.spec
        with self._db:
            self._db.execute("DELETE FROM curves WHERE run_id = ?", (result.id,))
            self._db.execute(
                "INSERT OR REPLACE INTO runs (id, task, knobs, strategy, seed, budget, status, "
                "reason, output, output_metric, chance, breakdown, examples_to_threshold, "
                "wall_seconds, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    result.id,
                    spec.task,
                    json.dumps(spec.knobs, sort_keys=True),
                    spec.strategy,
                    spec.seed,
                    spec.settings.budget,
                    result.status,
                    result.reason,
                    result.output,
                    _finite_or_none(result.output_metric),
                    result.chance.get(result.output),
                    int(result.at_chance),
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
                    "INSERT OR REPLACE INTO experiment_runs VALUES (?, ?, ?)",
                    (experiment, result.id, spec.settings.threshold),
                )
            self._db.executemany(
                "INSERT OR REPLACE INTO modules VALUES (?, ?, ?)",
                [(result.id, m, sqlite3.Binary(b)) for m, b in result.checkpoints.items()],
            )

    def link(self, experiment: str, thresholds: dict[str, float | None]) -> None:
        """Record that already-stored runs (id -> the experiment's threshold for them)
        belong to ``experiment``."""
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO experiment_runs VALUES (?, ?, ?)",
                [(experiment, i, t) for i, t in thresholds.items()],
            )

    def put_experiment(self, name: str, definition: dict[str, Any]) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO experiments VALUES (?, ?)",
                (name, json.dumps(definition, sort_keys=True)),
            )

    def experiments(self) -> dict[str, dict[str, Any]]:
        rows = self._db.execute("SELECT name, definition FROM experiments ORDER BY name")
        out = {}
        for name, text in rows:
            try:
                out[name] = json.loads(text)
            except (TypeError, ValueError):
                raise E2ELabError(
                    f"{self.path}: the stored definition of experiment {name!r} is damaged "
                    "(not JSON); reproduce it again from its experiment file to store it anew"
                ) from None
        return out

    def results(self, experiment: str | None = None) -> list[RunResult]:
        """Stored runs (of one experiment, if named, judged at its threshold), in the
        order they were stored."""
        if experiment is None:
            rows = self._db.execute("SELECT id, result, stored_at, NULL FROM runs ORDER BY rowid")
        else:
            rows = self._db.execute(
                "SELECT r.id, r.result, r.stored_at, e.threshold FROM runs r JOIN "
                "experiment_runs e "
                "ON e.run_id = r.id WHERE e.experiment = ? ORDER BY r.rowid",
                (experiment,),
            )
        out = []
        for result, threshold in self._decoded(rows):
            # an experiment judges a shared run at its own threshold, read from the curve
            out.append(result if threshold is None else result.rescored(threshold))
        return out

    def _decoded(self, rows: Any) -> list[tuple[RunResult, Any]]:
        """(result, extra) for each (id, JSON, stored_at, extra) row; a row damaged by
        hand (not JSON, a field missing or of the wrong kind) is skipped, and one warning
        names how many were and their ids."""
        out, damaged = [], []
        for run_id, text, stored_at, extra in rows:
            result = _decode(text)
            if result is None:
                damaged.append(str(run_id))
            else:
                result.stored_at = stored_at
                out.append((result, extra))
        if damaged:
            shown = ", ".join(damaged[:5]) + (", ..." if len(damaged) > 5 else "")
            print(
                f"e2elab: warning: {self.path}: skipped {len(damaged)} damaged run "
                f"record{'s' if len(damaged) > 1 else ''} (ids {shown}); rerun them to "
                "store them again",
                file=sys.stderr,
            )
        return out

    def results_by_id(self, run_ids: list[str]) -> list[RunResult]:
        """The stored runs among ``run_ids`` (in the order they were stored)."""
        found = []
        for start in range(0, len(run_ids), 500):  # SQLite's bound-parameter limit
            part = run_ids[start : start + 500]
            marks = ",".join("?" * len(part))
            found += self._db.execute(
                f"SELECT rowid, id, result, stored_at FROM runs WHERE id IN ({marks})", part
            ).fetchall()
        rows = [(run_id, text, at, None) for _, run_id, text, at in sorted(found)]
        return [result for result, _ in self._decoded(rows)]

    def _has_modules_table(self) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='modules'"
        ).fetchone()
        return row is not None

    def saved_modules(self) -> dict[str, list[str]]:
        """Run id -> the modules saved with it."""
        if not self._has_modules_table():
            return {}
        out: dict[str, list[str]] = {}
        for run_id, module in self._db.execute(
            "SELECT run_id, module FROM modules ORDER BY run_id, module"
        ):
            out.setdefault(run_id, []).append(module)
        return out

    def full_id(self, prefix: str, hint: str = "give more of it") -> str:
        """The one stored run id that starts with ``prefix``; one line (ending in
        ``hint``) if none or several do."""
        found = sorted(i for i in self.ids() if i.startswith(prefix)) if prefix else []
        if len(found) != 1:
            what = "no run" if not found else f"{len(found)} runs ({', '.join(found[:3])}...)"
            raise E2ELabError(f"{self.path}: {what} with an id starting with {prefix!r}; {hint}")
        return found[0]

    def checkpoint(self, run_id: str, module: str) -> bytes:
        """The saved module ``module`` of run ``run_id`` (a unique id prefix will do)."""
        hint = "give a stored run's id ('e2elab modules list STORE' lists those with saved modules)"
        found = [self.full_id(run_id, hint)]
        row = None
        if self._has_modules_table():
            row = self._db.execute(
                "SELECT data FROM modules WHERE run_id = ? AND module = ?", (found[0], module)
            ).fetchone()
        if row is None:
            saved = self.saved_modules().get(found[0], [])
            has = f"it saved: {', '.join(saved)}" if saved else "it saved no module"
            raise E2ELabError(
                f"{self.path}: run {found[0]} has no saved module {module!r} ({has}); train "
                "it with --save-modules (or save_modules: in the experiment)"
            )
        return bytes(row[0])

    def module_sha256(self, run_id: str, module: str) -> str | None:
        """The SHA-256 a saved module's header gives for its tensors (read without
        decoding them), or None if the run saved no such module."""
        if not self._has_modules_table():
            return None
        row = self._db.execute(
            "SELECT substr(data, 1, 8), length(data) FROM modules WHERE run_id = ? AND module = ?",
            (run_id, module),
        ).fetchone()
        if row is None:
            return None
        size = int.from_bytes(bytes(row[0]), "little")
        if not 0 < size <= min(row[1] - 8, 1 << 24):
            return None
        head = self._db.execute(
            "SELECT substr(data, 9, ?) FROM modules WHERE run_id = ? AND module = ?",
            (size, run_id, module),
        ).fetchone()
        try:
            meta = json.loads(bytes(head[0]).decode("utf-8")).get("__metadata__") or {}
        except (ValueError, AttributeError):
            return None
        sha = meta.get("sha256") if isinstance(meta, dict) else None
        return sha if isinstance(sha, str) else None

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

    def drop(self, run_ids: list[str]) -> None:
        """Remove these runs, their curves, links and saved modules, in one transaction."""
        with self._db:
            for start in range(0, len(run_ids), 500):  # SQLite's bound-parameter limit
                part = run_ids[start : start + 500]
                marks = ",".join("?" * len(part))
                for table, column in (
                    ("curves", "run_id"),
                    ("experiment_runs", "run_id"),
                    ("modules", "run_id"),
                    ("runs", "id"),
                ):
                    self._db.execute(f"DELETE FROM {table} WHERE {column} IN ({marks})", part)

    def count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]

    def curve_rows(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM curves").fetchone()[0]


def _finite_or_none(value: float | None) -> float | None:
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return float(value)


def _decode(text: Any) -> RunResult | None:
    """A stored result's JSON as a RunResult, or None where it is damaged."""
    try:
        data = json.loads(text)
        result = RunResult.from_dict(data)
    except (TypeError, ValueError, KeyError, AttributeError):  # RunSpec.from_dict refuses
        return None  # a spec that lacks a field or holds one of the wrong kind
    curve = result.curve
    sound = (
        isinstance(result.final, dict)
        and isinstance(curve, list)
        and all(isinstance(p, dict) and isinstance(p.get("metrics"), dict) for p in curve)
    )
    return result if sound else None
