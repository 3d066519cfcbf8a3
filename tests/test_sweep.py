"""Sweeps: resume after a kill, executor equivalence, and the reproduce/report/export commands."""

import dataclasses
import functools
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from e2elab import experiment as experiments
from e2elab.cli import main
from e2elab.executors import LocalPoolExecutor, SerialExecutor
from e2elab.runner import experiment_specs, run_experiment
from e2elab.store import Store

TINY = {
    "name": "tiny",
    "task": "digit-chain",
    "sweep": "n",
    "grid": {"n": [1, 2]},
    "knobs": {"m": 2, "test_size": 200},
    "strategies": ["e2e", "modular"],
    "seeds": 2,
    "budget": 1500,
    "training": {"evaluations": 3},
    "claims": [
        {
            "id": "C4",
            "check": "reaches_threshold",
            "statement": "modular works",
            "params": {"strategies": ["modular"]},
        },
        {"id": "C2", "check": "breakdown", "statement": "e2e breaks", "params": {"knob": "n"}},
    ],
}


def _tiny(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


def _stored_ids(store_path: Path) -> list[str]:
    if not store_path.exists():
        return []
    try:
        with sqlite3.connect(f"file:{store_path}?mode=ro", uri=True) as db:
            return [row[0] for row in db.execute("SELECT id FROM runs")]
    except sqlite3.OperationalError:
        return []


@pytest.mark.slow
def test_killed_sweep_resumes_and_stores_each_run_exactly_once(tmp_path):
    spec_path = _tiny(tmp_path, budget=6000, seeds=3)
    out = tmp_path / "out"
    store_path = out / "results.sqlite"
    command = [
        sys.executable,
        "-m",
        "e2elab.cli",
        "reproduce",
        str(spec_path),
        "--executor",
        "serial",
        "--out",
        str(out),
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 120
    while len(_stored_ids(store_path)) < 2 and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = _stored_ids(store_path)
    total = len(experiment_specs(experiments.load(spec_path)))
    assert 2 <= len(before) < total, "the sweep should have been killed part-way"

    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    after = _stored_ids(store_path)
    assert len(after) == len(set(after)) == total
    assert set(before) <= set(after)
    counts = re.search(r"(\d+) runs, (\d+) already stored, (\d+) trained", finished.stdout)
    assert counts and int(counts.group(2)) == len(before)
    assert int(counts.group(3)) == total - len(before)


@pytest.mark.slow
def test_serial_and_local_pool_executors_store_identical_results(tmp_path):
    exp = experiments.load(_tiny(tmp_path))
    stores = {}
    for name, executor in {"serial": SerialExecutor(), "pool": LocalPoolExecutor(2)}.items():
        with Store(tmp_path / f"{name}.sqlite") as store:
            counts = run_experiment(exp, store, executor)
            assert counts.trained == counts.total == 8
            stores[name] = {r.id: r for r in store.results("tiny")}
    assert stores["serial"].keys() == stores["pool"].keys()
    for run_id, serial in stores["serial"].items():
        pooled = stores["pool"][run_id]
        assert serial.curve == pooled.curve
        assert serial.final == pooled.final
        assert serial.probes == pooled.probes


@pytest.mark.slow
def test_reproduce_then_report_then_export(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["reproduce", str(_tiny(tmp_path)), "--executor", "serial", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "claims: tiny" in printed and "C4" in printed and "C2" in printed
    assert re.search(r"(PASS|FAIL|INCONCLUSIVE)", printed)
    report = out / "report" / "report.md"
    text = report.read_text()
    assert "C4" in text and "modular works" in text
    pngs = sorted((out / "report" / "figures").glob("*.png"))
    assert len(pngs) >= 4 and all(p.name in text for p in pngs)

    assert main(["report", str(out / "results.sqlite"), "-o", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "report.md").exists()
    assert (
        main(
            [
                "export",
                str(out / "results.sqlite"),
                "--format",
                "csv",
                "-o",
                str(tmp_path / "runs.csv"),
            ]
        )
        == 0
    )
    assert len((tmp_path / "runs.csv").read_text().strip().splitlines()) == 1 + 8


def test_reproduce_and_report_errors_are_one_line(tmp_path, capsys):
    cases = [
        (["reproduce", "nope"], "unknown experiment 'nope'"),
        (["reproduce", "glasmachers", "--profile", "slow"], "has no profile 'slow'"),
        (["reproduce", "glasmachers", "--executor", "spark"], "unknown executor 'spark'"),
        (["reproduce", "glasmachers", "--workers", "0"], "--workers must be at least 1"),
        (["report", str(tmp_path / "none.sqlite"), "-o", str(tmp_path)], "no results store"),
        (
            ["export", str(tmp_path / "none.sqlite"), "-o", str(tmp_path / "x.csv")],
            "no results store",
        ),
    ]
    for argv, expected in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, err


@pytest.mark.slow
def test_ray_executor_stores_the_same_results_as_the_local_executor(tmp_path):
    import pytest

    pytest.importorskip("ray")
    from e2elab.executors import RayExecutor

    exp = experiments.load(_tiny(tmp_path, grid={"n": [1]}, seeds=2))
    stored = {}
    ray_executor = RayExecutor(workers=2)
    try:
        for name, executor in {"ray": ray_executor, "serial": SerialExecutor()}.items():
            with Store(tmp_path / f"{name}.sqlite") as store:
                assert run_experiment(exp, store, executor).trained == 4
                stored[name] = {r.id: (r.curve, r.final) for r in store.results("tiny")}
    finally:
        ray_executor.shutdown()
    assert stored["ray"] == stored["serial"]


@pytest.mark.slow
def test_reproduce_measures_snr_once_and_reports_it(tmp_path, capsys):
    path = _tiny(
        tmp_path,
        grid={"n": [1, 2]},
        seeds=1,
        snr={"strategies": ["e2e", "hinted"], "inits": 2, "batches": 3},
        claims=[
            {
                "id": "S",
                "check": "snr_contrast",
                "statement": "snr",
                "params": {
                    "module": "recognizer",
                    "knob": "n",
                    "min_drop": 0.0,
                    "max_flat_drop": 100.0,
                },
            }
        ],
    )
    out = tmp_path / "out"
    argv = ["reproduce", str(path), "--executor", "serial", "--out", str(out)]
    assert main(argv) == 0
    assert "4 SNR measurements" in capsys.readouterr().out
    assert (out / "report" / "figures" / "gradient_snr.png").exists()
    with Store(out / "results.sqlite") as store:
        first = store.snr("tiny")
    assert len(first) == 4
    assert main(argv) == 0
    with Store(out / "results.sqlite") as store:
        assert store.snr("tiny") == first


@pytest.mark.slow
def test_snr_measured_in_worker_processes_equals_snr_measured_here(tmp_path):
    from e2elab.runner import measure_snr

    path = _tiny(
        tmp_path,
        grid={"n": [1, 2]},
        seeds=1,
        snr={"strategies": ["e2e", "hinted"], "inits": 2, "batches": 3},
    )
    experiment = experiments.load(path)
    found = {}
    for workers in (1, 2):
        done: list[int] = []
        with Store(tmp_path / f"snr{workers}.sqlite") as store:
            tick = functools.partial(done.append, 1)
            results = measure_snr(experiment, store, tick, workers=workers)
            assert len(done) == 4 and len(store.snr("tiny")) == 4
        found[workers] = [dataclasses.asdict(r) for r in results]
    assert json.dumps(found[1]) == json.dumps(found[2])  # same numbers, same order
    assert [(r["knobs"]["n"], r["strategy"]) for r in found[2]] == [
        (1, "e2e"),
        (1, "hinted"),
        (2, "e2e"),
        (2, "hinted"),
    ]


@pytest.mark.parametrize(
    ("task", "knobs", "strategy", "exact"),
    [("parity", {"d": 8}, "e2e", True), ("digit-chain", {"n": 2}, "hinted", False)],
)
def test_an_snr_measured_one_init_at_a_time_is_the_same_measurement(task, knobs, strategy, exact):
    from e2elab.runner import merge_inits, snr_job

    whole = snr_job(task, knobs, strategy, 3, 4, None, 0, None, exact)
    parts = {
        i: snr_job(task, knobs, strategy, 1, 4, None, 0, None, exact, seed=i) for i in (2, 0, 1)
    }
    assert json.dumps(merge_inits(parts), sort_keys=True) == json.dumps(whole, sort_keys=True)
    assert whole["method"] == ("exact" if exact else "sampled")
    assert all(len(v) == 3 for v in whole["per_init"].values())
