"""Where a command's time went: the runs' own seconds, the command's set-up, gradient
SNR and idle workers, adding up to workers x wall time."""

from __future__ import annotations

import dataclasses
import json

import pytest
from synthetic import result

from e2elab.cli import main
from e2elab.timesplit import CATEGORIES, TimeSplit, run_seconds


def test_the_split_adds_up_to_the_workers_capacity_and_idle_takes_the_rest():
    runs = [
        dataclasses.replace(result("e2e", 1, s, 0.9, 10), timing={"training": 3.0, "probes": 1.0})
        for s in range(4)
    ]
    seconds = run_seconds(runs)
    assert seconds["training"] == 12.0 and seconds["probes"] == 4.0
    split = TimeSplit.of_command(wall=20.0, workers=2, runs=seconds, training_wall=16.0)
    assert split.seconds["set-up"] == pytest.approx(4.0)  # the command's own, outside training
    assert sum(split.seconds.values()) == pytest.approx(40.0)  # 2 workers x 20 s
    assert split.seconds["idle"] == pytest.approx(40.0 - 12.0 - 4.0 - 4.0)
    assert "training 12.0 s (30%)" in split.line() and "idle 20.0 s (50%)" in split.line()
    assert "black boxes" not in split.line()  # a category that took nothing is left out
    assert set(split.to_dict()["seconds"]) == set(CATEGORIES)


def test_a_run_command_ends_with_its_split_and_writes_it(tmp_path, capsys):
    argv = ["run", "--knob", "n=1", "--strategy", "e2e", "--strategy", "blackbox:model=logreg"]
    argv += ["--seeds", "2", "--budget", "600", "--executor", "serial", "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("time (1 worker x "))
    split = json.loads((tmp_path / "time_split.json").read_text())
    assert line.startswith(f"time (1 worker x {split['wall_seconds']:.1f} s): training ")
    assert split["workers"] == 1 and split["wall_seconds"] < 600  # this command's, alone
    assert sum(split["seconds"].values()) == pytest.approx(split["wall_seconds"], rel=1e-6)
    for name in ("training", "evaluation", "probes", "black boxes", "set-up"):
        assert split["seconds"][name] > 0, name
    from e2elab.store import Store

    with Store(tmp_path / "results.sqlite") as store:
        timings = [r.timing for r in store.results()]
    assert all(t.get("set-up", 0) > 0 for t in timings)
    assert (
        sum("black boxes" in t for t in timings) == 2 and sum("training" in t for t in timings) == 2
    )
