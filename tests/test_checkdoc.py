"""The checks are documented from one source, and every check follows one set of
parameter conventions."""

from __future__ import annotations

import inspect
import math
from inspect import Parameter
from pathlib import Path

import pytest
from synthetic import cell_result

from e2elab.checkdoc import documented, markdown
from e2elab.claims import CHECKS, beats_by_ratio, check_params, ett_ratio, ratio_grows_with_knob
from e2elab.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_docs_checks_md_is_what_the_code_says():
    assert (ROOT / "docs" / "checks.md").read_text() == markdown(), (
        "docs/checks.md is stale: regenerate it with e2elab checks --markdown > docs/checks.md"
    )


def test_every_check_is_documented_with_its_parameters_and_a_pass_meaning():
    docs = {d.name: d for d in documented()}
    assert set(docs) == set(CHECKS)
    for name, doc in docs.items():
        assert len(doc.summary) > 30, name  # says what a PASS means
        text = markdown()
        assert f"## `{name}`" in text
        for parameter in doc.parameters:
            assert f"| `{parameter.name}` |" in text


def test_the_readme_links_the_checks_document():
    assert "docs/checks.md" in (ROOT / "README.md").read_text()


def test_e2elab_checks_lists_them_all(capsys):
    assert main(["checks"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in CHECKS) and "winners: list[str]" in out
    assert "(earlier: slow = loser, fast = winners)" in out
    assert main(["checks", "nosuch"]) == 2


def test_a_list_of_strategies_also_takes_a_single_one():
    check_params("beats_by_ratio", {"loser": "e2e", "winners": "modular"}, ["n"])
    check_params("reaches_threshold", {"strategies": "e2e"}, ["n"])
    with pytest.raises(ValueError, match="winners of beats_by_ratio expects"):
        check_params("beats_by_ratio", {"loser": "e2e", "winners": 5}, ["n"])


def test_one_role_has_one_name_in_every_check_and_earlier_names_are_still_read():
    for name, check in CHECKS.items():
        params = set(inspect.signature(check).parameters)
        assert not params & {"slow", "fast", "a", "b", "robust", "fragile"}, name
        if "knob" in params:  # no check defaults to one task's knob name
            assert inspect.signature(check).parameters["knob"].default in (None, Parameter.empty)
    check_params("beats_by_ratio", {"slow": "e2e", "fast": "modular"}, ["n"])  # earlier
    check_params(
        "degrades_less",
        {"robust": "m", "fragile": "e", "nominal": "x", "shifted": "y", "knob": "n"},
        ["n"],
    )
    with pytest.raises(ValueError, match="give 'loser' or its earlier name 'slow', not both"):
        check_params("beats_by_ratio", {"slow": "e2e", "loser": "e2e", "fast": "m"}, ["n"])
    runs = [_run("e2e", n, 400 * n) for n in (1, 2)] + [_run("modular", n, 100) for n in (1, 2)]
    old = ratio_grows_with_knob(runs, slow="e2e", fast=["modular"])  # a Python caller too
    assert old == ratio_grows_with_knob(runs, loser="e2e", winners=["modular"])
    assert old.verdict == "PASS" and "n=1: 4.00x" in old.details  # n: the only knob varying


def test_a_check_whose_knob_is_left_to_the_runs_asks_for_one_where_several_vary():
    runs = [
        cell_result(s, 0, 0.5, e, knobs={"n": n, "m": m})
        for s, e in (("e2e", 400), ("modular", 100))
        for n in (1, 2)
        for m in (2, 10)
    ]
    verdict = ratio_grows_with_knob(runs, "e2e", ["modular"])
    assert verdict.verdict == "INCONCLUSIVE"
    assert "needs a knob: the runs it reads vary over m, n; name one" in verdict.details
    assert ratio_grows_with_knob(runs, "e2e", ["modular"], where={"m": 2}).verdict != "INCONCLUSIVE"


def _run(strategy: str, n: int, ett: int | None, seed: int = 0):
    return cell_result(strategy, seed, 0.5, ett, knobs={"n": n})


def test_never_against_never_means_the_same_in_every_ratio_check():
    assert math.isnan(ett_ratio(math.inf, math.inf))
    assert ett_ratio(math.inf, 100) == math.inf and ett_ratio(100, math.inf) == 0.0
    never = [_run("e2e", n, None) for n in (1, 2)] + [_run("modular", n, None) for n in (1, 2)]
    assert beats_by_ratio(never, "e2e", ["modular"]).verdict == "INCONCLUSIVE"
    assert ratio_grows_with_knob(never, "e2e", ["modular"]).verdict == "INCONCLUSIVE"
    # reached against never: the "fast" strategy is the slower one, a plain FAIL
    mixed = [_run("e2e", 1, 100), _run("modular", 1, None)]
    assert beats_by_ratio(mixed, "e2e", ["modular"]).verdict == "FAIL"


def test_a_misplaced_field_is_pointed_to_a_shipped_file_that_has_it(tmp_path, capsys):
    import yaml

    from e2elab.experiment import shipped

    path = tmp_path / "x.yaml"
    data = {"name": "x", "task": "digit-chain", "strategies": ["e2e"], "threshold": 0.9}
    path.write_text(yaml.safe_dump(data))
    assert main(["reproduce", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "'threshold' is a training setting: put it under training:" in err
    named = err.split("see experiments/")[1].split(".yaml")[0]
    assert "threshold" in yaml.safe_load(shipped()[named].read_text())["training"]


def test_a_python_caller_gives_a_single_name_a_keyword_cells_and_gets_no_data_for_nothing():
    runs = [_run("e2e", n, 400 * n) for n in (1, 2)] + [_run("modular", n, 100) for n in (1, 2)]
    single = beats_by_ratio(runs, "e2e", "modular")  # one name where a list is taken
    assert single == beats_by_ratio(cells=runs, loser="e2e", winners=["modular"])
    assert single.verdict == "PASS"
    nothing = ratio_grows_with_knob(runs, "e2e", ["modular"], where={"n": 99})
    assert nothing.verdict == "INCONCLUSIVE" and "no stored runs match" in nothing.details
    with pytest.raises(ValueError, match=r"loser \(given as slow\) of beats_by_ratio expects"):
        check_params("beats_by_ratio", {"slow": ["e2e"], "fast": "m"}, ["n"])
    check_params("breakdown", {"knob": None}, ["n"])  # the documented default, written out
