"""The command line: list, run, and one-line errors with exit code 2."""

import pytest

from e2elab.cli import main
from e2elab.store import Store


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "--task", "nope"], "unknown task 'nope'; choose one of: captioning, digit-chain"),
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


def _stored(out):
    """Every result in OUT/results.sqlite, as dicts."""
    return [r.to_dict() for r in Store(out / "results.sqlite", readonly=True).results()]


def test_run_prints_a_table_and_stores_every_run(capsys, tmp_path):
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
        "--executor",
        "serial",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    results = _stored(tmp_path)
    # frozen_others without a module expands to one strategy per module (2 modules here)
    assert len(results) == 3 * 2
    strategies = {r["spec"]["strategy"] for r in results}
    assert strategies == {"e2e", "frozen_others:module=recognizer", "frozen_others:module=adder_1"}
    for name in ["e2e", "frozen_others:module=recognizer", "output accuracy", "95% CI"]:
        assert name in out
    assert "6 runs (0 already stored, 6 trained)" in out
    # a rerun recognises the stored runs and trains nothing; --force retrains them
    assert main(argv) == 0
    assert "6 runs (6 already stored, 0 trained)" in capsys.readouterr().out
    assert main([*argv, "--force"]) == 0
    assert "6 runs (0 already stored, 6 trained)" in capsys.readouterr().out
    assert len(_stored(tmp_path)) == 6


def test_a_changed_threshold_rescores_stored_runs_without_training(capsys, tmp_path):
    argv = ["run", "--knob", "n=1", "--strategy", "hinted", "--seeds", "1", "--budget", "6000"]
    argv += ["--executor", "serial", "--out", str(tmp_path)]
    assert main([*argv, "--threshold", "0.2"]) == 0
    (before,) = _stored(tmp_path)
    assert main([*argv, "--threshold", "0.99"]) == 0
    assert "1 run (1 already stored, 0 trained)" in capsys.readouterr().out
    (after,) = _stored(tmp_path)
    assert after == before  # the stored run is not rewritten: other experiments share it
    with Store(tmp_path / "results.sqlite", readonly=True) as store:
        judged = {
            definition["training"]["threshold"]: store.results(name)[0]
            for name, definition in store.experiments().items()
        }
    assert judged[0.2].examples_to_threshold is not None
    assert judged[0.99].examples_to_threshold is None  # 0.99 is never reached in 6000 examples
    assert judged[0.99].curve == before["curve"] and judged[0.99].spec.settings.threshold == 0.99


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
        "--executor",
        "serial",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    results = _stored(tmp_path)
    assert len(results) == 2
    assert {r["status"] for r in results} <= {"ok", "diverged"}
    assert any(r["status"] == "diverged" for r in results)
    assert "diverged" in out


@pytest.mark.parametrize("flag, stacked", [([], True), (["--no-batch-seeds"], False)])
def test_run_trains_seeds_together_unless_told_not_to(flag, stacked, tmp_path):
    argv = ["run", "--knob", "n=1", "--strategy", "e2e", "--seeds", "2", "--budget", "640"]
    assert main([*argv, *flag, "--executor", "serial", "--out", str(tmp_path)]) == 0
    results = _stored(tmp_path)
    assert sorted(r["spec"]["seed"] for r in results) == [0, 1]
    assert all(("seeds_batched" in r["memory"]) is stacked for r in results)
