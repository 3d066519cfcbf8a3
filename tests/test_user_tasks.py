"""A user's own task, in a package outside src/ (tests/user_tasks), through every door:
``e2elab run`` and ``reproduce`` with the process pool (and Ray where installed), a YAML
file, ``report`` and ``export``; an installed package's entry point; and a changed task,
which is trained anew instead of answered from the store."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from e2elab.cli import main
from e2elab.store import Store

FUSION = "user_tasks.fusion:Fusion"


def _out_line(capsys) -> str:
    return capsys.readouterr().out


@pytest.mark.slow
def test_a_user_task_runs_through_run_reproduce_report_and_export(tmp_path, capsys):
    argv = ["run", "--task", FUSION, "--strategy", "e2e", "--strategy", "modular"]
    argv += ["--seeds", "2", "--budget", "1200", "--workers", "2", "--out", str(tmp_path / "r")]
    assert main(argv) == 0  # the process pool: workers import user_tasks.fusion
    out = _out_line(capsys)
    assert "4 runs (0 already stored, 4 trained)" in out
    with Store(tmp_path / "r" / "results.sqlite", readonly=True) as store:
        results = store.results()
    assert {r.spec.source for r in results} == {FUSION}
    assert all(r.status == "ok" for r in results)

    experiment = tmp_path / "fusion.yaml"
    experiment.write_text(
        yaml.safe_dump(
            {
                "name": "fusion-sweep",
                "task": FUSION,
                "grid": {"width": [8, 16]},
                "strategies": ["e2e", "hinted"],
                "seeds": 1,
                "budget": 1200,
                "claims": [
                    {
                        "id": "F1",
                        "check": "reaches_threshold",
                        "statement": "hinted learns both sides",
                        "params": {"strategies": ["hinted"], "threshold": 0.5},
                    }
                ],
            }
        )
    )
    store = tmp_path / "x" / "results.sqlite"
    argv = ["reproduce", str(experiment), "--workers", "2", "--out", str(tmp_path / "x")]
    assert main(argv) == 0
    out = _out_line(capsys)
    assert "fusion-sweep: 4 runs, 0 already stored, 4 trained" in out and "F1" in out
    assert main(["report", str(store), "-o", str(tmp_path / "page")]) == 0
    assert (tmp_path / "page" / "report.html").exists()
    assert main(["export", str(store), "--format", "csv", "-o", str(tmp_path / "r.csv")]) == 0
    frame = pd.read_csv(tmp_path / "r.csv")
    assert len(frame) == 4 and {"final_distance", "probe_side_left"} <= set(frame.columns)
    argv = ["export", str(store), "--table", "curves", "--format", "json"]
    assert main([*argv, "-o", str(tmp_path / "c.json")]) == 0
    curves = json.loads((tmp_path / "c.json").read_text())
    assert {row["port"] for row in curves} == {"side_left", "side_right", "distance", "both"}


@pytest.mark.slow
def test_a_user_task_runs_on_ray_workers(tmp_path, capsys):
    pytest.importorskip("ray")
    argv = ["run", "--task", FUSION, "--strategy", "e2e", "--seeds", "1", "--budget", "600"]
    assert main([*argv, "--executor", "ray", "--workers", "2", "--out", str(tmp_path)]) == 0
    assert "1 run (0 already stored, 1 trained)" in _out_line(capsys)


def test_a_changed_task_is_trained_anew_not_answered_from_the_store(tmp_path, capsys):
    package = tmp_path / "src"
    package.mkdir()
    source = (Path(__file__).parent / "user_tasks" / "fusion.py").read_text()
    module = package / "my_fusion.py"
    module.write_text(source)
    sys.path.insert(0, str(package))
    try:
        argv = ["run", "--task", "my_fusion:Fusion", "--strategy", "e2e", "--seeds", "1"]
        argv += ["--budget", "600", "--executor", "serial", "--out", str(tmp_path / "o")]
        assert main(argv) == 0
        assert "1 run (0 already stored, 1 trained)" in _out_line(capsys)
        assert main(argv) == 0  # unchanged: answered from the store
        assert "1 run (1 already stored, 0 trained)" in _out_line(capsys)
        # the user changes their system's architecture (a wider fusion read-out)
        module.write_text(source.replace("nn.Linear(width, 3)", "nn.Linear(width, 3, bias=False)"))
        del sys.modules["my_fusion"]
        assert main(argv) == 0
        assert "1 run (0 already stored, 1 trained)" in _out_line(capsys)
    finally:
        sys.path.remove(str(package))
        sys.modules.pop("my_fusion", None)


def test_a_published_task_is_listed_and_runs_by_its_name(tmp_path, capsys, monkeypatch):
    # what `pip install` of a package with [project.entry-points."e2elab.tasks"] leaves
    dist = tmp_path / "fusion_tasks-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fusion-tasks\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[e2elab.tasks]\nsensor-fusion = {FUSION}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["list"]) == 0
    assert "sensor-fusion" in _out_line(capsys)
    argv = ["run", "--task", "sensor-fusion", "--strategy", "hinted", "--seeds", "1"]
    assert main([*argv, "--budget", "600", "--out", str(tmp_path / "o")]) == 0
    assert "1 run (0 already stored, 1 trained)" in _out_line(capsys)


def test_a_task_only_this_process_knows_is_refused_for_worker_processes(tmp_path, capsys):
    from user_tasks.fusion import Fusion

    from e2elab import experiment as experiments
    from e2elab.executors import LocalPoolExecutor
    from e2elab.runner import run_experiment
    from e2elab.tasks import TASKS, register

    class LocalFusion(Fusion):  # defined in a function: no other process can import it
        name = "local-fusion"

    register(LocalFusion)
    try:
        definition = {"name": "local", "task": "local-fusion", "strategies": ["e2e"], "seeds": 1}
        experiment = experiments.Experiment.model_validate({**definition, "budget": 300})
        with Store(tmp_path / "s.sqlite") as store, pytest.raises(Exception) as error:
            run_experiment(experiment, store, LocalPoolExecutor(workers=2))
        assert "worker processes cannot import it" in str(error.value)
        assert "--executor serial" in str(error.value)
    finally:
        TASKS.pop("local-fusion")


def test_a_change_in_a_helper_module_of_the_users_package_is_seen(tmp_path, capsys):
    package = tmp_path / "src" / "fusionpkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "helpers.py").write_text("SCALE = 10.0\n")
    source = (Path(__file__).parent / "user_tasks" / "fusion.py").read_text()
    # the data depend on a constant of a helper module, not on a knob
    source = source.replace('self.knobs["scale"] *', "helpers.SCALE *")
    assert "helpers.SCALE *" in source
    (package / "tasks.py").write_text(
        source.replace("import torch\n", "import torch\n\nfrom fusionpkg import helpers\n", 1)
    )
    sys.path.insert(0, str(package.parent))
    try:
        argv = ["run", "--task", "fusionpkg.tasks:Fusion", "--strategy", "e2e", "--seeds", "1"]
        argv += ["--budget", "300", "--executor", "serial", "--out", str(tmp_path / "o")]
        assert main(argv) == 0
        assert "1 run (0 already stored, 1 trained)" in _out_line(capsys)
        (package / "helpers.py").write_text("SCALE = 1000.0\n")  # only the helper changes
        for name in ("fusionpkg", "fusionpkg.tasks", "fusionpkg.helpers"):
            sys.modules.pop(name, None)
        assert main(argv) == 0
        assert "1 run (0 already stored, 1 trained)" in _out_line(capsys)
    finally:
        sys.path.remove(str(package.parent))
        for name in ("fusionpkg", "fusionpkg.tasks", "fusionpkg.helpers"):
            sys.modules.pop(name, None)
