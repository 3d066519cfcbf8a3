"""A store's runs in MLflow and TensorBoard, read back with each library's own reader."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from e2elab.cli import main
from e2elab.store import Store

pytest.importorskip("mlflow", reason="the tracking extra is not installed")
pytest.importorskip("tensorboard", reason="the tracking extra is not installed")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tracked")
    argv = ["run", "--knob", "n=2", "--strategy", "e2e", "--strategy", "modular"]
    argv += ["--seeds", "2", "--budget", "600", "--executor", "serial", "--out", str(out)]
    assert main(argv) == 0
    return out / "results.sqlite"


def _stored(store: Path):
    with Store(store, readonly=True) as opened:
        (name,) = opened.experiments()
        return name, {r.id: r for r in opened.results(name)}


def test_export_to_mlflow_writes_runs_params_finals_and_curves(store, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    folder = tmp_path / "mlruns"
    assert main(["export", str(store), "--to", "mlflow", "-o", str(folder)]) == 0
    name, results = _stored(store)
    client = MlflowClient(tracking_uri=folder.resolve().as_uri())
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 4
    for run in runs:
        result = results[run.data.tags["e2elab.run_id"]]
        assert run.data.params["strategy"] == result.spec.strategy
        assert run.data.params["seed"] == str(result.spec.seed)
        assert run.data.params["knob.n"] == "2"
        for port, value in result.final.items():
            assert run.data.metrics[f"final/{port}"] == pytest.approx(value)
        history = client.get_metric_history(run.info.run_id, "curve/sum_2")
        expected = [(p["examples"], p["metrics"]["sum_2"]) for p in result.curve]
        got = sorted((m.step, m.value) for m in history)
        assert [s for s, _ in got] == [s for s, _ in expected]
        assert [v for _, v in got] == pytest.approx([v for _, v in expected])
        assert run.info.status == "FINISHED"


def test_export_to_tensorboard_writes_event_files_per_run(store, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = tmp_path / "tb"
    assert main(["export", str(store), "--to", "tensorboard", "-o", str(folder)]) == 0
    name, results = _stored(store)
    (result,) = [r for r in results.values() if r.spec.strategy == "e2e" and r.spec.seed == 1]
    events = EventAccumulator(str(folder / name / "e2e" / "seed-1")).Reload()
    scalars = events.Scalars("curve/sum_2")
    assert [s.step for s in scalars] == [p["examples"] for p in result.curve]
    assert [s.value for s in scalars] == pytest.approx(
        [p["metrics"]["sum_2"] for p in result.curve]
    )
    assert events.Scalars("final/sum_2")[-1].value == pytest.approx(result.final["sum_2"])
    runs = {p.parent.relative_to(folder) for p in folder.rglob("events.out.tfevents.*")}
    assert len(runs) == 4


def test_a_missing_tracking_library_is_one_line_with_the_install(
    store, tmp_path, capsys, monkeypatch
):
    for module in [m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "mlflow", None)
    assert main(["export", str(store), "--to", "mlflow", "-o", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'e2elab[tracking]'" in err[0]
    assert main(["export", str(store), "--to", "wandb", "-o", str(tmp_path / "w")]) == 2
    assert "choose one of: mlflow, table, tensorboard" in capsys.readouterr().err
