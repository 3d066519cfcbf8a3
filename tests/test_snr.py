"""Gradient signal-to-noise per module, and the diagnose command."""

import json
import math

import torch

from e2elab import make_task
from e2elab.cli import main
from e2elab.diagnostics.snr import gradient_snr


def test_snr_is_signal_over_noise_of_the_module_gradient():
    task = make_task("digit-chain", {"n": 2})
    result = gradient_snr(task, "e2e", inits=2, batches=6, batch_size=32)
    assert set(result.per_init) == {"recognizer", "adder_1", "adder_2"}
    assert all(len(v) == 2 and all(x > 0 for x in v) for v in result.per_init.values())
    mean, lo, hi = result.log10_summary("recognizer")
    assert lo <= mean <= hi


def test_snr_with_identical_batches_is_infinite():
    # every mini-batch the same -> no noise at all
    task = make_task("digit-chain", {"n": 1})
    fixed = task.sample(16, torch.Generator().manual_seed(0))
    task.sample = lambda size, generator: fixed
    result = gradient_snr(task, "e2e", inits=1, batches=4, batch_size=16)
    assert all(math.isinf(v[0]) or v[0] > 1e6 for v in result.per_init.values())


def test_frozen_modules_are_left_out_of_the_snr():
    task = make_task("digit-chain", {"n": 2})
    result = gradient_snr(task, "frozen_others:module=adder_1", inits=2, batches=4, phase=-1)
    assert set(result.per_init) == {"adder_1"}


def test_diagnose_snr_writes_json_and_figure(tmp_path, capsys):
    argv = [
        "diagnose",
        "snr",
        "--sweep",
        "n=1,2",
        "--inits",
        "2",
        "--batches",
        "4",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    data = json.loads((tmp_path / "snr.json").read_text())
    assert {(d["strategy"], d["knobs"]["n"]) for d in data} == {
        ("e2e", 1),
        ("e2e", 2),
        ("hinted", 1),
        ("hinted", 2),
    }
    assert (tmp_path / "snr.png").stat().st_size > 10_000
    assert "log10 gradient SNR" in capsys.readouterr().out


def test_diagnose_snr_errors(capsys):
    assert main(["diagnose", "snr", "--sweep", "n"]) == 2
    assert "--sweep expects NAME=V1,V2" in capsys.readouterr().err
    assert main(["diagnose", "snr", "--sweep", "n=1", "--inits", "1"]) == 2
    assert "at least 2" in capsys.readouterr().err
