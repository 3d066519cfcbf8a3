"""The checks are documented from one source, and every check follows one set of
parameter conventions."""

from __future__ import annotations

import math
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
    assert all(name in out for name in CHECKS) and "fast: list[str]" in out
    assert main(["checks", "nosuch"]) == 2


def test_a_list_of_strategies_also_takes_a_single_one():
    check_params("beats_by_ratio", {"slow": "e2e", "fast": "modular"}, ["n"])
    check_params("reaches_threshold", {"strategies": "e2e"}, ["n"])
    with pytest.raises(ValueError, match="fast of beats_by_ratio expects"):
        check_params("beats_by_ratio", {"slow": "e2e", "fast": 5}, ["n"])


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
