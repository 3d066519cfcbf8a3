"""The results half needs no torch: records, store, query, claims, summary and report, and
the ``report`` and ``export`` commands. Frames give users every number as a column."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pandas as pd
from synthetic import result

from e2elab.query import curves_frame, group, load_curves, load_frame, runs_frame
from e2elab.store import Store


def _store(tmp_path):
    path = tmp_path / "results.sqlite"
    runs = [result("e2e", n, s, 0.1 + 0.3 * n, 20_000 * n) for n in (1, 2) for s in (0, 1)]
    for r in runs:
        r.memory = {
            "phases": [{"phase": 0, "activation_bytes": 100, "step_bytes_estimate": 900}],
            "max_rss_bytes": 5_000,
            "training_flops": 1.5e9,
        }
    experiment = {
        "name": "tiny",
        "task": "digit-chain",
        "sweep": "n",
        "grid": {"n": [1, 2]},
        "strategies": ["e2e"],
        "claims": [
            {
                "id": "C1",
                "check": "reaches_threshold",
                "statement": "e2e learns",
                "params": {"strategies": ["e2e"]},
            }
        ],
    }
    with Store(path) as store:
        for r in runs:
            store.put(r, "tiny")
        store.put_experiment("tiny", experiment)
    return path, runs


def test_report_and_export_run_without_importing_torch(tmp_path):
    path, _ = _store(tmp_path)
    script = textwrap.dedent(
        f"""
        import sys
        from e2elab.cli import main
        assert main(["report", {str(path)!r}, "-o", {str(tmp_path / "page")!r}]) == 0
        assert main(["export", {str(path)!r}, "-o", {str(tmp_path / "runs.csv")!r}]) == 0
        import e2elab.claims, e2elab.query, e2elab.records, e2elab.summary, e2elab.report.build
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        print("torch modules:", loaded)
        assert not loaded, loaded
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert "torch modules: []" in done.stdout
    assert (tmp_path / "page" / "report.md").exists()
    assert len(pd.read_csv(tmp_path / "runs.csv")) == 4


def test_load_frame_has_metrics_probes_memory_flops_and_time_as_columns(tmp_path):
    path, runs = _store(tmp_path)
    frame = load_frame(path)
    assert len(frame) == 4
    for column in (
        "knob_n",
        "strategy",
        "seed",
        "final_sum_1",
        "probe_digit_1",
        "probe_init_digit_1",
        "memory_activation_bytes",
        "memory_step_bytes_estimate",
        "memory_max_rss_bytes",
        "training_flops",
        "wall_seconds",
        "examples_to_threshold",
        "at_chance",
    ):
        assert column in frame.columns, column
    assert frame["training_flops"].tolist() == [1.5e9] * 4
    assert frame["stored_at"].notna().all()  # the store says when it took each run
    unstored = runs_frame(runs)
    assert unstored["stored_at"].isna().all()
    assert frame.drop(columns="stored_at").equals(unstored.drop(columns="stored_at"))


def test_load_curves_is_long_form_with_one_row_per_point_and_port(tmp_path):
    path, runs = _store(tmp_path)
    curves = load_curves(path)
    points = sum(len(p["metrics"]) for r in runs for p in r.curve)
    assert len(curves) == points
    assert list(curves.columns[:3]) == ["run_id", "strategy", "seed"]
    assert {"examples", "phase", "port", "metric", "knob_n"} <= set(curves.columns)
    assert curves_frame([]).empty


def test_group_is_the_one_place_runs_are_split_into_cells():
    runs = [
        result(s, n, seed, 0.5, None) for s in ("e2e", "modular") for n in (1, 2) for seed in (0, 1)
    ]
    cells = group(runs, "strategy", "n")
    assert list(cells) == [("e2e", 1), ("e2e", 2), ("modular", 1), ("modular", 2)]
    assert all(len(c) == 2 for c in cells.values())
    only = group(runs, "knobs", where=lambda r: r.spec.strategy == "modular")
    assert len(only) == 2 and all(len(c) == 2 for c in only.values())
