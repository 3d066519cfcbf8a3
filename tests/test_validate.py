"""A user's task is checked where it enters: one line that names the port and the fix,
never a torch traceback, and never a silent broadcast."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import e2elab
from e2elab import Batch, Knob, PortSpec, Settings, System, Task
from e2elab.cli import main
from e2elab.errors import E2ELabError


class _Pair(System):
    def __init__(self, emit: str = "digit_b", hidden_port: bool = True) -> None:
        super().__init__(encoder=nn.Linear(3, 4), head=nn.Linear(4, 5))
        self.emit, self.hidden_port = emit, hidden_port

    def forward(self, batch: Batch) -> torch.Tensor:
        code = self.encoder(batch.x["x"])  # (B, 4)
        if self.hidden_port:
            code = self.port(self.emit, code)
        return self.port("y", self.head(code))  # (B, 5)


class _PairTask(Task):
    name = "pair"
    knobs = {"case": Knob("ok", "which fault to plant")}
    defaults = Settings(budget=256, batch_size=32, lr=1e-2, threshold=0.9, evaluations=2)

    @property
    def ports(self) -> dict[str, PortSpec]:
        ports = {"digit_b": PortSpec("class", 4, 0.25), "y": PortSpec("class", 5, 0.2)}
        if self.knobs["case"] == "regression-shape":
            ports["digit_b"] = PortSpec("regression", 4, 0.0)
        return ports

    @property
    def output(self) -> str:
        return "y"

    def build_system(self) -> _Pair:
        case = self.knobs["case"]
        emit = "digit_B" if case == "misnamed" else "digit_b"
        return _Pair(emit=emit, hidden_port=case != "fused")

    def sample(self, batch_size: int, generator: torch.Generator, test: bool = False) -> Batch:
        x = torch.randn(batch_size, 3, generator=generator)
        targets = {"digit_b": (x[:, 0] > 0).long(), "y": (x[:, 1] > 0).long()}
        case = self.knobs["case"]
        if case == "missing":
            del targets["digit_b"]
        elif case == "float-class":
            targets["y"] = targets["y"].float()
        elif case == "out-of-range" or (case == "train-out-of-range" and not test):
            targets["y"] = targets["y"] + 12
        elif case == "regression-shape":
            targets["digit_b"] = x[:, :1].squeeze(1)  # (B,) against a (B, 4) value
        return Batch({"x": x}, targets)

    def test_set(self) -> Batch:
        return self.sample(64, torch.Generator().manual_seed(1), test=True)


class _FusedTask(_PairTask):
    """Only y has a target. With case="fused" the system emits no port between encoder and
    head, so both are credited with y; otherwise it emits an untargeted one (plumbing)."""

    name = "fused"

    @property
    def ports(self) -> dict[str, PortSpec]:
        return {"y": PortSpec("class", 5, 0.2)}


@pytest.mark.parametrize(
    "task, strategy, expected",
    [
        (_PairTask(case="misnamed"), "e2e", "port 'digit_b' is declared but the system never"),
        (_PairTask(case="misnamed"), "e2e", "close emitted names: digit_B"),
        (_PairTask(case="missing"), "e2e", "the test set has no target for port 'digit_b'"),
        (_PairTask(case="float-class"), "e2e", "port 'y': targets must be integers (class index"),
        (_PairTask(case="out-of-range"), "e2e", "port 'y': a class index must lie in 0..4"),
        (_PairTask(case="train-out-of-range"), "e2e", "a training batch: port 'y': a class"),
        (_PairTask(case="regression-shape"), "e2e", "port 'digit_b': target shape (64,) differs"),
        (_FusedTask(case="fused"), "modular", "port 'y' depends on modules encoder, head"),
        (_FusedTask(case="ok"), "local", "local: module 'encoder' produces no port with a"),
    ],
)
def test_a_faulty_task_gets_one_line_naming_the_port(task, strategy, expected):
    with pytest.raises(E2ELabError) as error:
        e2elab.run(task, strategy)
    message = str(error.value)
    assert expected in message, message
    assert "\n" not in message


def test_a_sound_task_trains_under_every_strategy_that_fits_it():
    for strategy in ("e2e", "hinted", "modular", "greedy", "local"):
        assert e2elab.run(_PairTask(), strategy).status == "ok"
    assert e2elab.run(_FusedTask(case="fused"), "e2e").status == "ok"  # e2e needs no port


def test_the_command_line_says_it_in_one_line_with_exit_code_2(capsys, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "faulty_tasks.py").write_text(
        "from e2elab import Knob\n"
        "from test_validate import _PairTask\n\n"
        "class Faulty(_PairTask):\n"
        "    name = 'faulty'\n"
        "    knobs = {'case': Knob('out-of-range', 'fault')}\n"
    )
    argv = ["run", "--task", "faulty_tasks:Faulty", "--strategy", "e2e"]
    code = main([*argv, "--executor", "serial", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "a class index must lie in 0..4" in err
    assert not (tmp_path / "o").exists()  # nothing was written
