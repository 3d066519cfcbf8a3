"""The last reliability edges: read-only stores and full disks, workers that start after
their parent died, errors in a user's own code, damaged stores, and paths that escape.
Each failed before the change that made it pass."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

from e2elab import spill
from e2elab.claims import every_seed_reaches, reaches_threshold
from e2elab.cli import main
from e2elab.executors import in_processes
from e2elab.store import Store, StoreWriteError

TINY = ["--knob", "n=1", "--strategy", "e2e", "--seeds", "1", "--budget", "300"]
TWO = ["run", "--knob", "n=1", "--strategy", "e2e", "--strategy", "modular", "--seeds", "1"]
TWO += ["--budget", "300", "--executor", "serial"]


def _refused(capsys, argv: list[str], expected: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("e2elab: error: ")]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    assert expected in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------ read-only stores, full disks


@contextlib.contextmanager
def _read_only(path: Path):
    """``path`` as a file this process may not write: chmod 444, which root ignores, so
    as root the immutable attribute (chattr +i) instead."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        yield
        path.chmod(0o644)
        return
    if shutil.which("chattr") is None:
        pytest.skip("root, and no chattr to make a file read-only for root")
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("root, and this file system refuses chattr +i")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_store_the_user_may_not_write_is_refused_at_open(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["run", *TINY, "--executor", "serial", "--out", str(out)]) == 0
    store = out / "results.sqlite"
    before = store.read_bytes()
    argv = ["run", "--knob", "n=2", "--strategy", "e2e", "--seeds", "1", "--budget", "300"]
    with _read_only(store):
        line = _refused(capsys, [*argv, "--executor", "serial", "--out", str(out)], "chmod u+w")
        assert "cannot be written" in line
        assert main(["export", str(store), "-o", str(tmp_path / "r.csv")]) == 0  # reads fine
    assert store.read_bytes() == before


def test_runs_a_full_disk_refuses_are_spilled_and_imported_next_time(tmp_path, capsys, monkeypatch):
    out = tmp_path / "o"
    argv = [*TWO, "--out", str(out)]
    put = Store.put
    calls = {"n": 0}

    def full_after_one(self, result, experiment=None):
        calls["n"] += 1
        if calls["n"] > 1:
            raise StoreWriteError(f"cannot write to {self.path} (database or disk is full)")
        put(self, result, experiment)

    monkeypatch.setattr(Store, "put", full_after_one)
    err = _refused(capsys, argv, "1 finished runs could not be stored")
    spilled = out / ("results.sqlite" + spill.SUFFIX)
    assert f"they were written to {spilled}" in err and "Every run stored before is kept" in err
    assert spilled.exists() and len(spilled.read_text().splitlines()) == 1
    monkeypatch.setattr(Store, "put", put)
    assert main(argv) == 0  # space again: the spilled run is imported, nothing trains
    out_text = capsys.readouterr().out
    assert "2 runs (2 already stored, 0 trained, 1 recovered from a spill file)" in out_text
    assert not spilled.exists()
    with Store(out / "results.sqlite", readonly=True) as store:
        assert len(store.results()) == 2


def test_a_spill_goes_to_the_cache_when_the_store_folder_refuses_it_too(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    store = tmp_path / "s" / "results.sqlite"
    Store(store).close()
    beside = store.with_name(store.name + spill.SUFFIX)
    beside.mkdir()  # a folder where the file would go: writing beside the store fails
    from e2elab.execution import execute, make_spec

    result = execute(make_spec("digit-chain", "e2e", seed=0, knobs={"n": 1}, budget=200))
    where = spill.spill(store, [result], "x")
    assert where is not None and where.is_relative_to(tmp_path / "cache")
    ((back, experiment),), broken = spill.read(where)
    assert back.id == result.id and experiment == "x" and broken == 0
    assert spill.waiting(store) == [where]


def test_export_to_a_full_disk_leaves_the_old_file_whole(tmp_path, capsys, monkeypatch):
    out = tmp_path / "o"
    assert main(["run", *TINY, "--executor", "serial", "--out", str(out)]) == 0
    target = tmp_path / "runs.csv"
    target.write_text("the previous export\n")
    to_csv = pd.DataFrame.to_csv

    def half_then_full(self, path, **kwargs):
        Path(path).write_text("id,task\nhalf")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_full)
    _refused(capsys, ["export", str(out / "results.sqlite"), "-o", str(target)], "No space left")
    assert target.read_text() == "the previous export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o", "runs.csv"]  # no partial file
    monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv)
    assert main(["export", str(out / "results.sqlite"), "-o", str(target)]) == 0
    assert len(pd.read_csv(target)) == 1


# ------------------------------------------------------------ workers


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_a_worker_ties_itself_to_its_parent_before_any_heavy_import():
    """The parent-death signal is set before torch or the command line is imported: a
    parent killed while its workers start (seconds under load) takes them along."""
    from worker_probe import probe

    ((_, seen),) = list(in_processes(probe, [()], 1))
    assert seen["deathsig"] == signal.SIGKILL
    assert seen["loaded"] == [], seen


# ------------------------------------------------------------ the user's own code

_TASK = """
import torch
from torch import nn
from e2elab import Batch, Knob, PortSpec, System, Task, TrainingDefaults

class Net(System):
    def __init__(self):
        super().__init__(net=nn.Linear(4, 2))
    def forward(self, batch):
        return self.port("y", self.net(batch.x["x"]))

class Mine(Task):
    name = "mine"
    knobs = {"unused": Knob(0, "unused", minimum=0)}
    defaults = TrainingDefaults(budget=256, batch_size=32, lr=1e-2, evaluations=2)
    ports = {"y": PortSpec("class", 2, 0.5)}
    output = "y"
    def build_system(self):
        BUILD
        return Net()
    def sample(self, size, generator):
        SAMPLE
        x = torch.randn(size, 4, generator=generator)
        return Batch({"x": x}, {"y": (x[:, 0] > 0).long()})
    def test_set(self):
        return self.sample(64, torch.Generator().manual_seed(1))
"""

_MODULES = {
    "raises_on_import": ("raise RuntimeError('no config file')\n" + _TASK, "RuntimeError"),
    "syntax_error": (_TASK + "\ndef broken(:\n", "SyntaxError"),
    "missing_dependency": ("import no_such_package_here\n" + _TASK, "ModuleNotFoundError"),
    "exits_on_import": ("import sys\nsys.exit(3)\n" + _TASK, "called sys.exit(3)"),
    "raises_in_build": (_TASK.replace("BUILD", "raise ValueError('bad width')"), "ValueError"),
    "raises_in_sample": (_TASK.replace("SAMPLE", "raise KeyError('column')"), "KeyError"),
}


def _module(tmp_path: Path, name: str, package: str, monkeypatch) -> tuple[Path, str]:
    text, expected = _MODULES[name]
    text = text.replace("BUILD", "pass").replace("SAMPLE", "pass")
    folder = tmp_path / package
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    return path, expected


@pytest.mark.parametrize("name", list(_MODULES))
@pytest.mark.parametrize("executor", ["serial", "local"])
def test_an_error_in_the_users_own_code_is_theirs_with_file_and_line(
    name, executor, tmp_path, capsys, monkeypatch
):
    if executor == "local" and name not in ("raises_in_build", "raises_in_sample"):
        pytest.skip("import errors are found before any worker starts")
    package = f"mine_{executor}"  # a package of its own: imported modules stay cached
    path, expected = _module(tmp_path, name, package, monkeypatch)
    argv = ["run", "--task", f"{package}.{name}:Mine", "--strategy", "e2e", "--seeds", "1"]
    argv += ["--executor", executor, "--out", str(tmp_path / "o")]
    if executor == "local":
        argv += ["--workers", "2"]
    line = _refused(capsys, argv, expected)
    assert "internal error" not in line and "please report" not in line
    if name != "exits_on_import":
        assert f"{path}:" in line, line  # the file, and the line in it
    if name in ("raises_in_build", "raises_in_sample"):
        assert "your code raised at" in line


# ------------------------------------------------------------ smaller ones


def test_a_learning_rate_that_overflows_the_optimiser_is_refused(tmp_path, capsys):
    _refused(capsys, ["run", "--lr", "1e38", "--out", str(tmp_path / "o")], "lr must be at most")
    assert not (tmp_path / "o").exists()


def _diverged_results(tmp_path: Path):
    out = tmp_path / "d"
    argv = ["run", "--knob", "n=1", "--strategy", "e2e", "--seeds", "2", "--budget", "300"]
    argv += ["--lr", "1e12", "--executor", "serial", "--out", str(out)]
    assert main(argv) == 0
    with Store(out / "results.sqlite", readonly=True) as store:
        results = store.results()
    assert {r.status for r in results} == {"diverged"}
    return results


def test_claims_over_runs_that_all_diverged_are_inconclusive_and_say_so(tmp_path):
    results = _diverged_results(tmp_path)
    for verdict in (reaches_threshold(results, "e2e"), every_seed_reaches(results, "e2e")):
        assert verdict.verdict == "INCONCLUSIVE", verdict
        assert "no finished run" in verdict.details and "2 diverged" in verdict.details


def _store_with_runs(tmp_path: Path, runs: int = 3) -> Path:
    out = tmp_path / "s"
    argv = ["run", "--knob", "n=1", "--strategy", "e2e", "--seeds", str(runs), "--budget", "300"]
    assert main([*argv, "--executor", "serial", "--out", str(out)]) == 0
    return out / "results.sqlite"


def test_a_store_with_corrupted_pages_is_not_written_and_reads_warn(tmp_path, capsys):
    path = _store_with_runs(tmp_path)
    capsys.readouterr()
    with sqlite3.connect(path) as db:
        page = db.execute("PRAGMA page_size").fetchone()[0]
        pages = db.execute("PRAGMA page_count").fetchone()[0]
    data = bytearray(path.read_bytes())
    at = page * (pages // 2)  # a page in the middle of the file: not the header
    data[at : at + 12] = b"\x0d\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"  # a bad b-tree header
    path.write_bytes(bytes(data))
    before = path.read_bytes()
    _refused(capsys, ["run", *TINY, "--executor", "serial", "--out", str(path.parent)], "damaged")
    assert path.read_bytes() == before
    code = main(["export", str(path), "-o", str(tmp_path / "runs.csv")])
    err = capsys.readouterr().err
    assert "is damaged" in err, err
    assert code in (0, 2) and "Traceback" not in err
    assert path.read_bytes() == before


def test_a_leftover_journal_is_explained(tmp_path, capsys):
    path = _store_with_runs(tmp_path)
    # a write interrupted mid-transaction leaves a hot journal: simulate one by killing a
    # process that holds a write transaction with changed pages
    code = textwrap.dedent(
        f"""
        import os, sqlite3
        db = sqlite3.connect({str(path)!r}, isolation_level=None)
        db.execute("PRAGMA cache_size = 1")
        db.execute("BEGIN IMMEDIATE")
        db.execute("DELETE FROM curves")
        db.execute("UPDATE runs SET result = result || ' '")
        os._exit(0)
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    journal = path.with_name(path.name + "-journal")
    assert journal.exists() and journal.stat().st_size > 0
    line = _refused(capsys, ["export", str(path), "-o", str(tmp_path / "r.csv")], "journal")
    assert "open the store read-write once" in line and "Do not delete" in line
    assert main(["run", *TINY, "--executor", "serial", "--out", str(path.parent)]) == 0
    assert not journal.exists() or journal.stat().st_size == 0
    assert main(["export", str(path), "-o", str(tmp_path / "r.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "r.csv")) == 3  # the interrupted write was undone


def test_an_experiment_name_that_leaves_results_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("../../etc/x", "a/b", ".hidden", "..", ""):
        path = tmp_path / "bad.yaml"
        data = {"name": name, "task": "digit-chain", "grid": {"n": [1]}, "strategies": ["e2e"]}
        path.write_text(yaml.safe_dump({**data, "seeds": 1, "budget": 300}))
        _refused(capsys, ["reproduce", str(path)], "field 'name'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_a_refused_command_leaves_no_empty_output_folder(tmp_path, capsys):
    out = tmp_path / "new" / "deeper"
    argv = ["run", "--knob", "n=4", "--strategy", "e2e", "--seeds", "3", "--budget", "10000000"]
    _refused(capsys, [*argv, "--max-hours", "0.0001", "--out", str(out)], "--max-hours")
    assert not (tmp_path / "new").exists()


def test_hand_damaged_run_records_are_skipped_with_a_count_and_their_ids(tmp_path, capsys):
    path = _store_with_runs(tmp_path, runs=3)
    with sqlite3.connect(path) as db:
        ids = [row[0] for row in db.execute("SELECT id FROM runs ORDER BY rowid")]
        db.execute("UPDATE runs SET result = '{not json' WHERE id = ?", (ids[0],))
        text = db.execute("SELECT result FROM runs WHERE id = ?", (ids[1],)).fetchone()[0]
        data = json.loads(text)
        del data["spec"]["seed"]
        db.execute("UPDATE runs SET result = ? WHERE id = ?", (json.dumps(data), ids[1]))
    capsys.readouterr()
    assert main(["export", str(path), "-o", str(tmp_path / "runs.csv")]) == 0
    err = capsys.readouterr().err
    assert "skipped 2 damaged run records" in err and ids[0] in err and ids[1] in err
    assert len(pd.read_csv(tmp_path / "runs.csv")) == 1
    assert main(["report", str(path), "-o", str(tmp_path / "page")]) == 0
    assert "skipped 2 damaged run records" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("strategy", 7),
        ("knobs", [["n", 1]]),
        ("knobs", {"n": {"deep": 1}}),
        ("budget", "lots"),
        ("task", None),
        ("seed", 1.7),
        ("seed", True),
    ],
)
def test_a_spec_field_of_the_wrong_kind_is_a_damaged_record_everywhere(
    tmp_path, capsys, field, value
):
    path = _store_with_runs(tmp_path, runs=2)
    with sqlite3.connect(path) as db:
        ids = [row[0] for row in db.execute("SELECT id FROM runs ORDER BY rowid")]
        text = db.execute("SELECT result FROM runs WHERE id = ?", (ids[0],)).fetchone()[0]
        data = json.loads(text)
        data["spec"][field] = value
        db.execute("UPDATE runs SET result = ? WHERE id = ?", (json.dumps(data), ids[0]))
    capsys.readouterr()
    assert main(["report", str(path), "-o", str(tmp_path / "report")]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 damaged run record" in err and ids[0] in err, err
    assert main(["export", str(path), "-o", str(tmp_path / "runs.csv")]) == 0
    assert "skipped 1 damaged run record" in capsys.readouterr().err
    _refused(capsys, ["rerun", str(path), ids[0]], "stored record is damaged")


def test_a_damaged_stored_definition_is_one_line_from_report(tmp_path, capsys):
    path = _store_with_runs(tmp_path, runs=1)
    with sqlite3.connect(path) as db:
        (text,) = db.execute("SELECT definition FROM experiments").fetchone()
        data = json.loads(text)
        data["claims"] = [
            {
                "id": "X",
                "check": "beats_by_ratio",
                "statement": "s",
                "params": {"slow": "e2e", "loser": "e2e", "fast": ["modular"]},
            }
        ]
        db.execute("UPDATE experiments SET definition = ?", (json.dumps(data),))
    _refused(capsys, ["report", str(path), "-o", str(tmp_path / "r")], "not both")
    with sqlite3.connect(path) as db:
        db.execute("UPDATE experiments SET definition = '{not json'")
    _refused(capsys, ["report", str(path), "-o", str(tmp_path / "r")], "is damaged (not JSON)")
