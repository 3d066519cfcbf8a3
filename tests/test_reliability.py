"""Reliability at the edges: foreign files are never written, output problems are found
before anything trains, experiment files are checked completely, absurd settings are
refused, unfinished runs never make a claim pass, workers end with their parent, and a
stored run can be retrained to check it reproduces. Each refusal is one line, exit code 2,
no traceback, and the bytes of every file already there unchanged."""

from __future__ import annotations

import importlib
import importlib.util
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from e2elab.cli import main
from e2elab.store import Store

TINY = ["--knob", "n=1", "--strategy", "e2e", "--seeds", "1", "--budget", "300"]


def _refused(capsys, argv: list[str], expected: str, alone: bool = True) -> str:
    """Exit code 2 and one error line (``alone``: nothing else either, as for every refusal
    before training; after training starts, progress lines may precede it)."""
    code = main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    err = lines[-1] if lines else ""
    assert code == 2, lines
    assert err.startswith("e2elab: error: "), lines
    assert not alone or len(lines) == 1, lines
    assert sum(line.startswith("e2elab: error") for line in lines) == 1, lines
    assert "Traceback" not in "\n".join(lines)
    assert expected in err, err
    return err


def _foreign_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    empty = folder / "empty.sqlite"
    empty.write_bytes(b"")
    other = folder / "other.sqlite"
    with sqlite3.connect(other) as db:  # another program's database, with a 'runs' table
        db.execute("CREATE TABLE runs (name TEXT, distance REAL)")
        db.execute("INSERT INTO runs VALUES ('home', 3.5)")
    future = folder / "future.sqlite"
    Store(future).close()
    with sqlite3.connect(future) as db:
        db.execute("UPDATE meta SET value = '7' WHERE key = 'schema'")
    return {"empty": empty, "other": other, "future": future}


@pytest.mark.parametrize("kind", ["empty", "other", "future"])
def test_a_file_that_is_not_our_store_is_never_written(kind, tmp_path, capsys):
    path = _foreign_files(tmp_path / "f")[kind]
    before = path.read_bytes()
    expected = "has store schema 7" if kind == "future" else "is not an e2elab results store"
    _refused(capsys, ["report", str(path), "-o", str(tmp_path / "page")], expected)
    _refused(capsys, ["export", str(path), "-o", str(tmp_path / "runs.csv")], expected)
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.sqlite").write_bytes(before)
    _refused(capsys, ["run", *TINY, "--executor", "serial", "--out", str(out)], expected)
    assert path.read_bytes() == before
    assert (out / "results.sqlite").read_bytes() == before


def test_output_paths_are_checked_before_anything_trains(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    adir = tmp_path / "adir"
    adir.mkdir()
    store = tmp_path / "s"
    assert main(["run", *TINY, "--executor", "serial", "--out", str(store)]) == 0
    capsys.readouterr()
    db = str(store / "results.sqlite")
    cases = [
        (["run", *TINY, "--out", str(afile)], "--out"),
        (["report", db, "-o", str(afile)], "is a file, not a folder"),
        (["export", db, "-o", str(adir)], "is a folder; give a file name"),
        (["export", db, "-o", str(afile / "x.csv")], "is a file, not a folder"),
        (["diagnose", "snr", "--sweep", "n=1", "--out", str(afile)], "is a file, not a folder"),
        (["reproduce", "glasmachers", "--quick", "--out", str(afile)], "is a file"),
    ]
    for argv, expected in cases:
        _refused(capsys, argv, expected)
    assert afile.read_text() == "mine" and not any(adir.iterdir())


def _experiment(tmp_path: Path, **changes) -> Path:
    data = {
        "name": "bad",
        "task": "digit-chain",
        "grid": {"n": [1]},
        "strategies": ["e2e"],
        "seeds": 1,
        "budget": 300,
        "claims": [],
    }
    data.update(changes)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _claim(check: str, **params) -> dict:
    return {"id": "X1", "check": check, "statement": "s", "params": params}


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"claims": [_claim("beats_by_ratio")]}, "field 'claims.0.params': beats_by_ratio needs"),
        (
            {"claims": [_claim("breakdown", min_probe_gain="abc")]},
            "min_probe_gain of breakdown expects float",
        ),
        ({"claims": [_claim("reaches_threshold", strategies=5)]}, "strategies of reaches_"),
        ({"claims": [_claim("at_chance", strategy="e2e", where=5)]}, "where of at_chance"),
        ({"claims": [_claim("breakdown", knob="nosuch")]}, "knob 'nosuch' of breakdown is not"),
        (
            {"claims": [_claim("reaches_threshold", strategies=["e2e"], threshold="high")]},
            "threshold",
        ),
        ({"sweep": "nosuch"}, "field 'sweep': 'nosuch' is not a knob"),
        ({"training": {"threshold": -0.5}}, "an accuracy threshold lies in [0, 1]"),
        ({"seeds": True}, "field 'seeds'"),
        ({"budget": 10**20}, "field 'budget'"),
        ({"training": {"batch_size": 10**11}}, "field 'training.batch_size'"),
        ({"training": {"optimizer": "adamw"}}, "field 'training': unknown optimizer 'adamw'"),
        ({"strategies": ["frozen_others:module=zzz"]}, "unknown module for frozen_others: 'zzz'"),
        ({"strategies": ["ensemble:members=0"]}, "ensemble: members must be in 1..1000"),
        ({"strategies": ["hinted:weight=-1"]}, "hinted: weight must be >= 0"),
        ({"grid": {"n": [1000]}}, "knob n must be at most 64"),
    ],
)
def test_an_experiment_file_is_checked_completely_before_training(
    changes, expected, tmp_path, capsys
):
    path = _experiment(tmp_path, **changes)
    out = tmp_path / "out"
    err = _refused(capsys, ["reproduce", str(path), "--out", str(out)], expected)
    assert str(path) in err
    assert not (out / "results.sqlite").exists()


def _bomb(levels: int = 9) -> str:
    """A YAML flow mapping of about 700 bytes whose aliases expand to 10**levels leaves."""
    parts = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        parts.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]")
    return "{" + ", ".join(parts) + "}"


_BASE = "name: bad\ntask: digit-chain\nstrategies: [e2e]\nseeds: 1\nbudget: 300\n"
_BOMBS = {
    "claims where": _BASE
    + "grid: {n: [1]}\nclaims:\n- {id: X1, check: at_chance, statement: s, params: "
    + f"{{strategy: e2e, where: {_bomb()}}}}}\n",
    "figures at": _BASE + f"grid: {{n: [1]}}\nfigures:\n- {{kind: curves, at: {_bomb()}}}\n",
    "profiles": _BASE + f"grid: {{n: [1]}}\nprofiles: {{quick: {{grid: {_bomb()}}}}}\n",
    "grid": _BASE + f"grid: {_bomb()}\n",
    "itself": _BASE + "grid: &g {n: [1], m: *g}\n",
}


@pytest.mark.parametrize("where", list(_BOMBS))
def test_yaml_aliases_that_expand_beyond_a_budget_are_refused_while_loading(
    where, tmp_path, capsys
):
    path = tmp_path / "bomb.yaml"
    path.write_text(_BOMBS[where])
    assert path.stat().st_size < 2000
    began = time.monotonic()
    out = tmp_path / "o"
    expected = "YAML aliases (*name) expand to more than 200,000 values"
    _refused(capsys, ["reproduce", str(path), "--out", str(out)], expected)
    assert time.monotonic() - began < 20
    assert not out.exists()


def test_a_few_aliases_are_still_fine(tmp_path):
    from e2elab.experiment import load

    path = tmp_path / "ok.yaml"
    path.write_text(
        _BASE + "grid: {n: &ns [1, 2]}\nsweep: n\nprofiles: {quick: {grid: {n: *ns}}}\n"
    )
    assert load(path).grid == {"n": [1, 2]}


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"name: a\nname: b\n", "key 'name' given twice"),
        ("name: a\n".encode("utf-16"), "not UTF-8 text"),
        (b"a: " + b"[" * 3000 + b"]" * 3000, "nested too deeply"),
        (b"name: a\n" + b"#" * (1 << 20) + b"\n", "an experiment file may have at most"),
        (b"suite: [nosuch-part]\nname: s\n", "field 'suite': part 'nosuch-part'"),
    ],
)
def test_malformed_files_are_refused_with_one_line(content, expected, tmp_path, capsys):
    path = tmp_path / "x.yaml"
    path.write_bytes(content)
    _refused(capsys, ["reproduce", str(path), "--out", str(tmp_path / "o")], expected)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["run", "--budget", str(10**20)], "budget must be at most"),
        (["run", "--knob", "n=1000"], "knob n must be at most 64"),
        (["run", "--batch-size", str(10**11)], "batch_size must be at most"),
        (["run", "--lr", "inf"], "lr must be a positive finite number"),
        (["run", "--lr", "nan"], "lr must be a positive finite number"),
        (["run", "--threshold", "nan"], "threshold must be a finite number"),
        (["run", "--max-hours", "-1"], "--max-hours must be a positive number"),
        (["diagnose", "snr", "--sweep", "n=1", "--batch-size", "-4"], "--batch-size must be"),
        (["diagnose", "snr", "--sweep", "n=1", "--batch-size", "0"], "--batch-size must be"),
        (["run", "--executor", "ray", "--address", "127.0.0.1:1"], "no Ray head answers"),
    ],
)
def test_absurd_settings_are_refused(argv, expected, tmp_path, capsys):
    began = time.monotonic()
    out = ["--out", str(tmp_path / "o")]
    if "ray" in argv and importlib.util.find_spec("ray") is None:
        expected = "the Ray executor needs ray; install it with"  # its own one-line refusal
    _refused(capsys, [*argv, *out] if argv[0] == "run" else argv, expected)
    assert time.monotonic() - began < 60
    assert not (tmp_path / "o" / "results.sqlite").exists()


def test_a_run_out_of_memory_is_stored_as_failed_and_the_sweep_goes_on(
    tmp_path, capsys, monkeypatch
):
    from e2elab import learners

    train = learners.train_seeds

    def short_of_memory(task, strategy, *args, **kwargs):
        if strategy.name == "modular":
            raise RuntimeError("DefaultCPUAllocator: not enough memory: out of memory")
        return train(task, strategy, *args, **kwargs)

    monkeypatch.setattr(learners, "train_seeds", short_of_memory)
    argv = ["run", "--knob", "n=1", "--strategy", "e2e", "--strategy", "modular", "--seeds", "1"]
    assert main([*argv, "--budget", "300", "--executor", "serial", "--out", str(tmp_path)]) == 0
    results = {r.spec.strategy: r for r in Store(tmp_path / "results.sqlite").results()}
    assert results["e2e"].status == "ok"
    assert results["modular"].status == "failed" and "out of memory" in results["modular"].reason
    monkeypatch.setattr(learners, "train_seeds", train)
    assert main([*argv, "--budget", "300", "--executor", "serial", "--out", str(tmp_path)]) == 0
    assert "2 runs (1 already stored, 1 trained)" in capsys.readouterr().out  # retried


def test_rerun_says_whether_a_stored_run_reproduced(tmp_path, capsys):
    assert main(["run", *TINY, "--executor", "serial", "--out", str(tmp_path)]) == 0
    path = tmp_path / "results.sqlite"
    (stored,) = Store(path).results()
    assert stored.numerics["e2elab"] and stored.numerics["python"] and stored.numerics["platform"]
    capsys.readouterr()
    assert main(["rerun", str(path), stored.id[:6]]) == 0
    assert "reproduced bit for bit" in capsys.readouterr().out
    with sqlite3.connect(path) as db:  # pretend it was trained elsewhere
        text = db.execute("SELECT result FROM runs").fetchone()[0]
        db.execute("UPDATE runs SET result = ?", (text.replace(stored.weights_sha256, "0" * 64),))
    assert main(["rerun", str(path), stored.id]) == 1
    assert "differs" in capsys.readouterr().out
    _refused(capsys, ["rerun", str(path), "zzz"], "no run with an id starting with 'zzz'")


SCRIPT = """
import sys
from e2elab.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _workers_of(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_pool_workers_end_with_their_parent(how, tmp_path):
    argv = ["run", "--knob", "n=2", "--strategy", "e2e", "--strategy", "modular", "--seeds", "1"]
    argv += ["--budget", "4000000", "--workers", "2", "--out", str(tmp_path)]
    parent = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, *argv], stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    workers: list[int] = []
    while time.monotonic() < deadline and len(workers) < 3:  # 2 workers + resource tracker
        time.sleep(0.5)
        workers = _workers_of(parent.pid)
    assert workers, "the pool never started"
    time.sleep(3)
    parent.send_signal(how)
    code = parent.wait(timeout=60)
    if how == signal.SIGTERM:
        err = parent.stderr.read()
        assert code == 130 and "interrupted; results already written are kept" in err, err
        assert "Traceback" not in err
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.5)
    assert not any(_alive(w) for w in workers), "workers outlived their parent"
    if os.path.exists(tmp_path / "results.sqlite"):  # (an interrupted new store stays empty)
        Store(tmp_path / "results.sqlite", readonly=True).results()  # still readable


def test_a_sweep_estimated_beyond_max_hours_is_refused_before_it_trains(tmp_path, capsys):
    from e2elab import experiment as experiments
    from e2elab.runner import estimate_seconds, experiment_specs

    argv = ["run", "--knob", "n=2", "--strategy", "e2e", "--seeds", "2", "--budget", "4000000"]
    argv += ["--executor", "serial", "--max-hours", "0.001", "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "estimated" in err and "exceeds --max-hours 0.001" in err
    assert not (tmp_path / "results.sqlite").exists()
    definition = {"name": "e", "task": "digit-chain", "grid": {"n": [1]}, "seeds": 1}
    experiment = experiments.Experiment.model_validate(
        {**definition, "strategies": ["e2e", "blackbox:model=svm"], "budget": 2000}
    )
    seconds, untimed = estimate_seconds(experiment_specs(experiment))
    assert 0 < seconds < 60 and untimed == 1
