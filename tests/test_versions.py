"""Runs of older code kept apart: after a change to a task's code, reports, claims and
summaries read the current code's runs only (and say how many they left out), export
shows each run's code version and when it was stored, and ``prune`` drops the old."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

from e2elab import versions
from e2elab.cli import main
from e2elab.store import Store

_HELPER = "WIDTH = {width}\n"

_TASK = """
import torch
from torch import nn
from e2elab import Batch, Knob, PortSpec, System, Task, TrainingDefaults
from stale_pkg.helper import WIDTH

class Net(System):
    def __init__(self):
        super().__init__(
            first=nn.Sequential(nn.Linear(4, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 2)),
            second=nn.Sequential(nn.Linear(2, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 2)),
        )
    def forward(self, batch):
        code = self.port("code", self.first(batch.x["x"]))
        return self.port("y", self.second(code.softmax(-1)))

class Stale(Task):
    name = "stale"
    knobs = {"unused": Knob(0, "unused", minimum=0)}
    defaults = TrainingDefaults(budget=512, batch_size=32, lr=1e-2, evaluations=2)
    ports = {"code": PortSpec("class", 2, 0.5), "y": PortSpec("class", 2, 0.5)}
    output = "y"
    def build_system(self):
        return Net()
    def sample(self, size, generator):
        x = torch.randn(size, 4, generator=generator)
        return Batch({"x": x}, {"code": (x[:, 0] > 0).long(), "y": (x[:, 0] > 0).long()})
    def test_set(self):
        return self.sample(128, torch.Generator().manual_seed(1))
"""


def _package(root: Path, width: int) -> None:
    folder = root / "stale_pkg"
    folder.mkdir(exist_ok=True)
    (folder / "__init__.py").write_text("")
    (folder / "helper.py").write_text(_HELPER.format(width=width))
    (folder / "task.py").write_text(textwrap.dedent(_TASK))


@pytest.mark.slow
def test_a_changed_helper_module_keeps_the_reports_seed_counts_right(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    _package(tmp_path, width=8)
    experiment = tmp_path / "stale.yaml"
    experiment.write_text(
        yaml.safe_dump(
            {
                "name": "stale",
                "task": "stale_pkg.task:Stale",
                "strategies": ["e2e", "modular"],
                "seeds": 1,
                "budget": 512,
                "claims": [
                    {
                        "id": "S1",
                        "check": "reaches_threshold",
                        "statement": "e2e learns",
                        "params": {"strategies": "e2e", "threshold": 0.0},
                    }
                ],
            }
        )
    )
    out = tmp_path / "out"
    argv = ["reproduce", str(experiment), "--executor", "serial", "--out", str(out)]
    assert main(argv) == 0
    capsys.readouterr()

    # the user edits a helper module: the task's code fingerprint changes
    import sys

    for name in [m for m in sys.modules if m.startswith("stale_pkg")]:
        del sys.modules[name]
    _package(tmp_path, width=12)
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "left out 2 runs of older code" in captured.err
    report = (out / "report" / "report.md").read_text()
    assert "Runs of older code left out" in report
    store = out / "results.sqlite"
    with Store(store, readonly=True) as opened:
        results = opened.results("stale")
    assert len(results) == 4  # the store keeps both versions
    current, old = versions.split(results)
    assert len(current) == 2 and len(old) == 2
    assert len({r.code_version for r in current}) == 1
    assert {r.code_version for r in old}.isdisjoint({r.code_version for r in current})

    # the summary in the report counts one seed per strategy, not two
    frame = pd.read_csv(_export(store, tmp_path / "runs.csv"))
    assert set(frame.columns) >= {"code", "stored_at", "superseded"}
    assert frame["superseded"].sum() == 2 and frame["stored_at"].notna().all()
    assert main(["report", str(store), "-o", str(tmp_path / "page")]) == 0
    text = (tmp_path / "page" / "report.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith(("| e2e ", "| **e2e**"))]
    assert rows and all(line.split("|")[2].strip() == "1" for line in rows), rows  # seeds

    # every version, labelled: older runs show under their own label, never pooled
    assert main(["report", str(store), "-o", str(tmp_path / "all"), "--all-versions"]) == 0
    assert "[older code" in (tmp_path / "all" / "report.md").read_text()

    # prune: says what it drops, then drops it
    assert main(["prune", str(store), "--dry-run"]) == 0
    assert "would drop 2 runs" in capsys.readouterr().out
    assert main(["prune", str(store)]) == 0
    assert "dropped 2 runs of older code" in capsys.readouterr().out
    with Store(store, readonly=True) as opened:
        assert len(opened.results()) == 2
    assert main(["prune", str(store)]) == 0
    assert "nothing to drop" in capsys.readouterr().out


def _export(store: Path, target: Path) -> Path:
    assert main(["export", str(store), "-o", str(target)]) == 0
    return target


def test_version_says_the_spec_version_and_schema(capsys):
    try:
        main(["--version"])
    except SystemExit as exit_:
        assert exit_.code == 0
    out = capsys.readouterr().out
    assert out.startswith("e2elab ") and "spec version" in out and "store schema" in out
