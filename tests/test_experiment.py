"""Experiment files: validation on load, grid expansion, profiles, shipped experiments."""

import pytest
import yaml

from e2elab import experiment as experiments
from e2elab.errors import E2ELabError
from e2elab.runner import experiment_specs

VALID = {
    "name": "tiny",
    "task": "digit-chain",
    "grid": {"n": [1, 2]},
    "knobs": {"m": 2},
    "strategies": ["e2e", "frozen_others"],
    "seeds": 2,
    "budget": 1000,
    "profiles": {"quick": {"seeds": 1, "grid": {"n": [1]}}},
    "claims": [
        {
            "id": "A",
            "check": "reaches_threshold",
            "statement": "s",
            "params": {"strategies": ["e2e"]},
        }
    ],
}


def _write(tmp_path, data, text=None):
    path = tmp_path / "exp.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(data))
    return path


def test_valid_file_expands_to_grid_times_strategies_times_seeds(tmp_path):
    exp = experiments.load(_write(tmp_path, VALID))
    specs = experiment_specs(exp)
    # n=1: e2e + frozen_others x 2 modules; n=2: e2e + 3 modules; 2 seeds each
    assert len(specs) == (3 + 4) * 2
    assert len({s.id for s in specs}) == len(specs)
    assert {s.knobs["m"] for s in specs} == {2}


def test_profile_overrides_fields_and_renames(tmp_path):
    quick = experiments.load(_write(tmp_path, VALID)).with_profile("quick")
    assert quick.name == "tiny-quick" and quick.seeds == 1 and quick.grid == {"n": [1]}
    assert len(experiment_specs(quick)) == 3


def _error(tmp_path, data=None, text=None):
    with pytest.raises(E2ELabError) as info:
        experiments.load(_write(tmp_path, data, text))
    message = str(info.value)
    assert "exp.yaml" in message and "\n" not in message
    return message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"seeds": 0}, "field 'seeds'"),
        ({"strategies": []}, "field 'strategies'"),
        ({"sedes": 3}, "field 'sedes'"),
        ({"budget": "lots"}, "field 'budget'"),
        ({"task": "nope"}, "unknown task 'nope'"),
        ({"grid": {"q": [1]}}, "unknown knob for task digit-chain: 'q'"),
        ({"grid": {"n": ["x"]}}, "knob n expects an integer"),
        ({"grid": {"n": []}}, "field 'grid.n'"),
        ({"strategies": ["e2e", "bogus"]}, "unknown strategy 'bogus'"),
        ({"claims": [{"id": "A", "check": "nope", "statement": "s"}]}, "field 'claims.0.check'"),
        (
            {"claims": [{"id": "A", "check": "at_chance", "statement": "s", "params": {"zz": 1}}]},
            "field 'claims.0.params'",
        ),
        ({"profiles": {"quick": {"seeds": -1}}}, "field 'profiles.quick.seeds'"),
        ({"profiles": {"quick": {"grid": {"n": [0]}}}}, "profile quick"),
    ],
)
def test_each_validation_error_names_the_file_and_the_field(tmp_path, change, expected):
    message = _error(tmp_path, {**VALID, **change})
    assert expected in message, message


def test_malformed_yaml_names_the_line(tmp_path):
    assert "not valid YAML at line" in _error(tmp_path, text="name: [unclosed\ntask: x\n")


def test_a_list_at_top_level_is_rejected(tmp_path):
    assert "expected a mapping" in _error(tmp_path, text="- 1\n- 2\n")


def test_unknown_profile_and_unknown_experiment():
    with pytest.raises(E2ELabError, match="has no profile 'slow'"):
        experiments.load("glasmachers").with_profile("slow")
    with pytest.raises(
        E2ELabError, match=r"unknown experiment 'nope'; choose one of: .*glasmachers"
    ):
        experiments.load("nope")


def test_shipped_glasmachers_has_quick_and_full_profiles():
    full = experiments.load("glasmachers")
    quick = full.with_profile("quick")
    assert full.seeds >= 5
    assert set(full.grid["m"]) == {10, 2} and max(full.grid["n"]) >= 6
    assert len(experiment_specs(quick)) < len(experiment_specs(full))
    assert {c.check for c in full.claims} >= {
        "ratio_grows_with_knob",
        "breakdown",
        "reaches_threshold",
    }


def test_a_suite_file_loads_its_parts_relative_to_itself(tmp_path):
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({**VALID, "name": "a"}))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({**VALID, "name": "b"}))
    suite = tmp_path / "both.yaml"
    suite.write_text(yaml.safe_dump({"name": "both", "suite": ["a.yaml", "b.yaml"]}))
    name, parts = experiments.load_all(suite)
    assert name == "both" and [p.name for p in parts] == ["a", "b"]
    suite.write_text(yaml.safe_dump({"name": "both", "suite": ["a.yaml", "a.yaml"]}))
    with pytest.raises(E2ELabError, match="names one experiment twice"):
        experiments.load_all(suite)
    suite.write_text(yaml.safe_dump({"name": "both", "suite": []}))
    with pytest.raises(E2ELabError, match="field 'suite'"):
        experiments.load_all(suite)


def test_snr_block_is_validated(tmp_path):
    message = _error(tmp_path, {**VALID, "snr": {"inits": 1}})
    assert "field 'snr.inits'" in message
    message = _error(tmp_path, {**VALID, "snr": {"strategies": ["nope"]}})
    assert "unknown strategy 'nope'" in message


def test_training_settings_are_written_once_in_settings():
    """The experiment file's training: block and e2elab run's flags come from Settings'
    fields: a setting added there appears in both."""
    import dataclasses

    from e2elab.cli import _build_parser
    from e2elab.experiment import Training
    from e2elab.records import Settings

    fields = dataclasses.fields(Settings)
    assert set(Training.model_fields) == {f.name for f in fields if f.metadata["training"]}
    run = next(a.choices["run"] for a in _build_parser()._actions if getattr(a, "choices", None))
    flags = {o for a in run._actions for o in a.option_strings}
    for f in fields:
        assert (f"--{f.name.replace('_', '-')}" in flags) == (
            f.metadata["flag"] or f.name in ("device", "save_modules", "oracle", "load")
        ), f.name
    # (--device, --save-modules, --oracle and --load are flags of their own, shared with
    # reproduce or taking another form); the limits travel too
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        Training(evaluations=0)
