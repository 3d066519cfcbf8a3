"""The small frictions a researcher met bringing a system of their own."""

from __future__ import annotations

import yaml
from synthetic import cell_result

from e2elab.cli import main
from e2elab.report.figures import phase_starts
from e2elab.summary import summarize

TINY = ["--knob", "n=1", "--strategy", "e2e", "--seeds", "1", "--budget", "300"]


def test_run_takes_a_name_and_a_tiny_sweep_trains_in_process(tmp_path, capsys):
    assert main(["run", *TINY, "--name", "first-try", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "(experiment first-try)" in captured.out
    assert "a small sweep" in captured.err and "training here" in captured.err
    assert main(["run", *TINY, "--name", "../x", "--out", str(tmp_path / "b")]) == 2


def test_a_store_without_claims_says_so_instead_of_an_empty_table(tmp_path, capsys):
    assert main(["run", *TINY, "--executor", "serial", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "results.sqlite"), "-o", str(tmp_path / "p")]) == 0
    assert "none declared" in capsys.readouterr().out


def test_a_second_reproduce_into_one_folder_keeps_the_first_report(tmp_path, capsys):
    out = tmp_path / "out"
    for name in ("first", "second"):
        path = tmp_path / f"{name}.yaml"
        data = {"name": name, "task": "digit-chain", "grid": {"n": [1]}, "strategies": ["e2e"]}
        path.write_text(yaml.safe_dump({**data, "seeds": 1, "budget": 300}))
        argv = ["reproduce", str(path), "--executor", "serial", "--out", str(out)]
        assert main(argv) == 0
    assert "first" in (out / "report" / "report.md").read_text()
    assert "second" in (out / "report" / "second" / "report.md").read_text()


def test_list_says_how_each_strategy_spends_the_budget(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "how it spends the budget" in out and "equal shares" in out


def _result(ett: int | None, seed: int, phases: list[float]):
    return cell_result("modular", seed, 0.9, ett, phases=phases, budget=30000)


def test_examples_to_threshold_intervals_stay_within_what_a_run_can_draw():
    (row,) = summarize([_result(100, 0, [1.0]), _result(29000, 1, [1.0])])
    assert row.examples_to_threshold.lo >= 0 and row.examples_to_threshold.hi <= 30000


def test_phase_starts_follow_the_schedule():
    assert phase_starts(_result(None, 0, [1 / 3, 1 / 3, 1 / 3])) == [10000.0, 20000.0]
    assert phase_starts(_result(None, 0, [1.0])) == []
