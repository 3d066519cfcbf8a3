"""The SQLite store: transactional writes, resume, corrupt files, exports."""

import sqlite3

import pandas as pd
import pytest
from synthetic import result

from e2elab.errors import E2ELabError
from e2elab.query import export, load_frame
from e2elab.store import Store


def test_put_and_read_back_with_curves(tmp_path):
    path = tmp_path / "results.sqlite"
    runs = [result("e2e", 2, s, 0.5, None) for s in range(3)]
    with Store(path) as store:
        for r in runs:
            store.put(r, "exp")
        assert store.count() == 3
        assert store.curve_rows() == 3 * 4
        back = store.results("exp")
    assert [r.id for r in back] == [r.id for r in runs]
    assert back[0].curve == runs[0].curve and back[0].probes == runs[0].probes


def test_storing_the_same_run_twice_keeps_one_row(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        r = result("e2e", 1, 0, 0.9, 1000)
        store.put(r)
        store.put(r)
        assert store.count() == 1 and store.curve_rows() == 4


def test_a_failed_write_leaves_no_partial_run(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        store.put(result("e2e", 1, 0, 0.9, 1000))
        bad = result("e2e", 1, 1, 0.9, 1000)
        bad.spec = bad.spec.changed(knobs=object())  # not JSON-serialisable: fails mid-write
        with pytest.raises(TypeError):
            store.put(bad)
        assert store.count() == 1 and store.curve_rows() == 4


def test_corrupt_store_gets_one_line_and_the_file_is_kept(tmp_path):
    path = tmp_path / "results.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(E2ELabError, match="not a readable e2elab results store"):
        Store(path)
    assert path.read_bytes() == b"this is not a database" * 100


def test_missing_store_and_newer_schema(tmp_path):
    with pytest.raises(E2ELabError, match="no results store"):
        Store(tmp_path / "none.sqlite", create=False)
    path = tmp_path / "s.sqlite"
    Store(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    with pytest.raises(E2ELabError, match="schema 99"):
        Store(path)


def test_a_store_of_the_old_schema_is_refused_and_left_as_it_was(tmp_path):
    # schema 1 held runs whose result depended on the command that trained them
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('schema', '1')")
    before = path.read_bytes()
    with pytest.raises(E2ELabError, match="has store schema 1, this e2elab reads 3"):
        Store(path)
    assert path.read_bytes() == before  # no table was added


def test_export_csv_and_parquet_and_frame_agree(tmp_path):
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        store.put(result("e2e", 2, 0, 0.1, None))
        store.put(result("modular", 2, 0, 0.9, 20_000))
    frame = load_frame(path)
    assert list(frame["strategy"]) == ["e2e", "modular"]
    assert {
        "run_id",
        "knob_n",
        "knob_m",
        "seed",
        "status",
        "examples_to_threshold",
        "final_sum_2",
        "wall_seconds",
    } <= set(frame.columns)
    assert export(path, "csv", tmp_path / "runs.csv") == 2
    csv = pd.read_csv(tmp_path / "runs.csv")
    assert list(csv["run_id"]) == list(frame["run_id"])
    assert export(path, "parquet", tmp_path / "runs.parquet") == 2
    parquet = pd.read_parquet(tmp_path / "runs.parquet")
    assert parquet["examples_to_threshold"].isna().tolist() == [True, False]
    with pytest.raises(E2ELabError, match="unknown export format 'xls'"):
        export(path, "xls", tmp_path / "x.xls")


def test_a_result_stored_before_the_rename_reads_at_chance():
    from synthetic import cell_result

    from e2elab.records import RunResult

    old = cell_result("e2e", 0, 0.5, None).to_dict()
    old["breakdown"], old["breakdown_p_value"] = old.pop("at_chance"), old.pop("at_chance_p_value")
    old["breakdown"], old["breakdown_p_value"] = True, 0.4
    back = RunResult.from_dict(old)
    assert back.at_chance is True and back.at_chance_p_value == 0.4
