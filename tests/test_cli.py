"""The command line: list, run, and one-line errors with exit code 2."""

import json

import pytest

from e2elab.cli import main


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "--task", "nope"], "unknown task 'nope'; choose one of: digit-chain"),
        (["run", "--knob", "q=1"], "unknown knob for task digit-chain: 'q'; choose one of:"),
        (["run", "--knob", "n=abc"], "knob n expects an integer, got 'abc'"),
        (["run", "--knob", "share_adders=maybe"], "knob share_adders expects true or false"),
        (["run", "--knob", "n=0"], "knob n must be at least 1"),
        (["run", "--knob", "n"], "--knob expects NAME=VALUE"),
        (
            ["run", "--strategy", "bogus"],
            "unknown strategy 'bogus'; choose one of: blackbox, e2e, ensemble",
        ),
        (["run", "--strategy", "hinted:wait=2"], "unknown parameter of strategy hinted: 'wait'"),
        (["run", "--strategy", "hinted:weight=x"], "hinted: weight expects float"),
        (
            ["run", "--strategy", "frozen_others:module=zzz"],
            "unknown module for frozen_others: 'zzz'; choose one of: adder_1",
        ),
        (["run", "--seeds", "0"], "--seeds must be at least 1"),
        (["run", "--budget", "-5"], "budget must be a positive integer"),
        (["run", "--device", "tpu"], "unknown device 'tpu'"),
        (["run", "--bogus-flag"], "unrecognized arguments: --bogus-flag"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_input_gets_one_line_and_exit_code_2(argv, expected, capsys, tmp_path):
    code = main([*argv, "--out", str(tmp_path)] if argv[0] == "run" else argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("e2elab: error: ")
    assert expected in err
    assert not any(tmp_path.iterdir())


def test_list_shows_tasks_strategies_and_knob_defaults(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ["digit-chain", "share_adders", "frozen_others", "ensemble", "local", "hinted"]:
        assert word in out


def test_run_prints_a_table_and_writes_one_json_per_run(capsys, tmp_path):
    argv = [
        "run",
        "--knob",
        "n=1",
        "--knob",
        "m=2",
        "--strategy",
        "e2e",
        "--strategy",
        "frozen_others",
        "--seeds",
        "2",
        "--budget",
        "2000",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    files = sorted(tmp_path.glob("*.json"))
    # frozen_others without a module expands to one strategy per module (2 modules here)
    assert len(files) == 3 * 2
    strategies = {json.loads(f.read_text())["spec"]["strategy"] for f in files}
    assert strategies == {"e2e", "frozen_others:module=recognizer", "frozen_others:module=adder_1"}
    for name in ["e2e", "frozen_others:module=recognizer", "output accuracy", "95% CI"]:
        assert name in out
    # a rerun recognises the stored runs and trains nothing
    stamps = {f: f.stat().st_mtime_ns for f in files}
    assert main(argv) == 0
    assert {f: f.stat().st_mtime_ns for f in files} == stamps


def test_a_diverging_run_is_reported_and_the_others_go_on(capsys, tmp_path):
    argv = [
        "run",
        "--knob",
        "n=1",
        "--strategy",
        "e2e",
        "--strategy",
        "modular",
        "--seeds",
        "1",
        "--budget",
        "1000",
        "--lr",
        "1e12",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    results = [json.loads(f.read_text()) for f in tmp_path.glob("*.json")]
    assert len(results) == 2
    assert {r["status"] for r in results} <= {"ok", "diverged"}
    assert any(r["status"] == "diverged" for r in results)
    assert "diverged" in out


@pytest.mark.parametrize("flag, stacked", [([], True), (["--no-batch-seeds"], False)])
def test_run_trains_seeds_together_unless_told_not_to(flag, stacked, tmp_path):
    argv = ["run", "--knob", "n=1", "--strategy", "e2e", "--seeds", "2", "--budget", "640"]
    assert main([*argv, *flag, "--out", str(tmp_path)]) == 0
    results = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("*.json"))]
    assert sorted(r["spec"]["seed"] for r in results) == [0, 1]
    assert all(("seeds_batched" in r["memory"]) is stacked for r in results)
