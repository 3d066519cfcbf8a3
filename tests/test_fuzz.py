"""Property-based tests over experiment files and command-line arguments. Whatever comes
in, e2elab exits 0, or exits 2 with one line and no traceback, and a refusal leaves the
bytes of an existing store unchanged. Sizes are kept small enough for CI (about a minute)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from e2elab.cli import main
from e2elab.records import SPEC_VERSION
from e2elab.store import SCHEMA_VERSION

BASE = {
    "name": "fuzz",
    "task": "digit-chain",
    "grid": {"n": [1]},
    "knobs": {"test_size": 100},
    "strategies": ["e2e"],
    "seeds": 1,
    "budget": 200,
}
FIELDS = [
    "name",
    "task",
    "sweep",
    "knobs",
    "grid",
    "strategies",
    "seeds",
    "budget",
    "training",
    "claims",
    "profiles",
    "snr",
    "suite",
    "bogus",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["e2e", "n", "digit-chain", "hinted:weight=-1", "frozen_others", "nope"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
# E2ELAB_FUZZ_EXAMPLES raises the count for a long local search; CI runs the default
FUZZ = settings(
    max_examples=int(os.environ.get("E2ELAB_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _store(folder: Path) -> Path:
    """A small existing store, made once and copied in for every example."""
    # made by this version of e2elab (a store of another schema would be refused)
    version = f"{SCHEMA_VERSION}-{SPEC_VERSION}"
    cached = Path(tempfile.gettempdir()) / f"e2elab-fuzz-store-{version}" / "results.sqlite"
    if not cached.exists():
        argv = ["run", "--knob", "n=1", "--knob", "test_size=100", "--strategy", "e2e"]
        argv += ["--seeds", "1", "--budget", "200", "--executor", "serial"]
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert main([*argv, "--out", str(cached.parent)]) == 0
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(cached, folder / "results.sqlite")
    return folder / "results.sqlite"


def _check(argv: list[str], store: Path | None = None) -> None:
    before = store.read_bytes() if store is not None else None
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(argv)
    text = err.getvalue()
    assert "Traceback" not in text, text
    assert code in (0, 2), (argv, code, text)
    if code == 2:
        lines = [line for line in text.splitlines() if line.startswith("e2elab: error:")]
        assert len(lines) == 1, text
        if store is not None:
            assert store.read_bytes() == before, "a refused command changed the store"


@pytest.mark.slow
@FUZZ
@given(changes=st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=3))
def test_any_experiment_file_gives_exit_0_or_one_line(changes):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        path = root / "fuzz.yaml"
        path.write_text(yaml.safe_dump({**BASE, **changes}))
        store = _store(root / "out")
        argv = ["reproduce", str(path), "--executor", "serial", "--max-hours", "0.002"]
        _check([*argv, "--out", str(root / "out")], store)


@FUZZ
@given(text=st.text(max_size=200))
def test_any_text_as_an_experiment_file_gives_exit_0_or_one_line(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.yaml"
        path.write_text(text)
        argv = ["reproduce", str(path), "--executor", "serial", "--max-hours", "0.002"]
        _check([*argv, "--out", str(Path(folder) / "out")])


WORDS = st.sampled_from(
    [
        "-1",
        "0",
        "1",
        "2",
        "3",
        "abc",
        "nan",
        "inf",
        "1e20",
        "n=1",
        "n=0",
        "n=x",
        "m=2",
        "e2e",
        "modular",
        "hinted:weight=x",
        "ensemble:members=0",
        "cpu",
        "tpu",
        "csv",
        "json",
        "xml",
        "runs",
        "curves",
        "nope",
        "digit-chain",
        "os:path",
        "x:Y",
        "",
    ]
)
FLAGS = st.sampled_from(
    [
        "--knob",
        "--strategy",
        "--seeds",
        "--budget",
        "--batch-size",
        "--lr",
        "--threshold",
        "--device",
        "--executor",
        "--workers",
        "--format",
        "--table",
        "--task",
        "--sweep",
        "--inits",
        "--batches",
        "--optimizer",
        "--bogus",
    ]
)
COMMANDS = st.sampled_from(["run", "report", "export", "diagnose snr", "rerun", "list", "x"])


@FUZZ
@given(command=COMMANDS, pairs=st.lists(st.tuples(FLAGS, WORDS), max_size=4))
def test_any_command_line_gives_exit_0_or_one_line(command, pairs):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        store = _store(root / "s")
        argv = command.split()
        if command in ("report", "export", "rerun"):
            argv.append(str(store))
        if command == "rerun":
            argv.append("0")
        for flag, word in pairs:
            argv += [flag, word]
        if command in ("report", "export"):
            argv += ["-o", str(root / ("page" if command == "report" else "t.csv"))]
        if command == "run":
            argv += ["--budget", "200", "--seeds", "1", "--max-hours", "0.002"]
            argv += ["--executor", "serial", "--out", str(root / "s")]
        if command == "diagnose snr":
            argv += ["--inits", "2", "--batches", "3", "--out", str(root / "snr")]
        _check(argv, store if command != "run" else None)
