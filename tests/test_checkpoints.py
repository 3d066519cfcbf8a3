"""Saved modules: safetensors checkpoints in the store, loading by run id, and every
refusal (not a checkpoint, another module, another structure or shape, corrupt)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save as save_bytes

from e2elab import checkpoints
from e2elab.errors import E2ELabError
from e2elab.execution import execute, make_spec
from e2elab.modules import mlp
from e2elab.store import Store
from e2elab.tasks import make_task


def _recognizer(width: int = 8) -> torch.nn.Module:
    torch.manual_seed(0)
    return mlp(64, width, 10)


def test_a_checkpoint_round_trips_and_loads_into_a_module_of_the_same_structure():
    source = _recognizer()
    data = checkpoints.encode(source, "recognizer", {"run_id": "abc"})
    checkpoint = checkpoints.decode(data, "test")
    assert checkpoint.module == "recognizer"
    assert json.loads(checkpoint.meta["about"]) == {"run_id": "abc"}
    system = make_task("digit-chain", {"n": 1, "recognizer_width": 8}).build_system()
    assert not torch.equal(system.recognizer[0].weight, source[0].weight)
    checkpoints.load_into(system, "recognizer", checkpoint, "test")
    for a, b in zip(system.recognizer.state_dict().values(), source.state_dict().values()):
        assert torch.equal(a, b)


def test_bytes_that_are_not_a_checkpoint_are_refused_in_one_line():
    with pytest.raises(E2ELabError, match="not a module checkpoint"):
        checkpoints.decode(b"\x00" * 64, "junk.bin")
    with pytest.raises(E2ELabError, match="not a module checkpoint"):
        checkpoints.decode(b"", "empty.bin")
    plain = save_bytes({"w": torch.zeros(2)})  # safetensors, but not e2elab's
    with pytest.raises(E2ELabError, match="not an e2elab module checkpoint"):
        checkpoints.decode(plain, "plain.safetensors")
    other = save_bytes({"w": torch.zeros(2)}, metadata={"format": "e2elab-module"})
    with pytest.raises(E2ELabError, match="format version"):
        checkpoints.decode(other, "old.safetensors")


def test_a_corrupt_tensor_is_refused_by_its_hash():
    data = bytearray(checkpoints.encode(_recognizer(), "recognizer"))
    data[-5] ^= 0xFF  # a byte of the last tensor's data
    with pytest.raises(E2ELabError, match="corrupt"):
        checkpoints.decode(bytes(data), "flipped.safetensors")


def test_another_module_name_shape_or_structure_is_refused_with_what_differs():
    checkpoint = checkpoints.decode(checkpoints.encode(_recognizer(8), "recognizer"), "c")
    with pytest.raises(E2ELabError, match="holds module 'recognizer', not 'adder'"):
        checkpoints.check_fits(checkpoint, _recognizer(8), "adder", "c")
    with pytest.raises(E2ELabError, match=r"has shape \[8, 64\] in the checkpoint and \[16, 64\]"):
        checkpoints.check_fits(checkpoint, _recognizer(16), "recognizer", "c")
    tanh = _recognizer(8)
    tanh[3] = torch.nn.Tanh()  # the same tensors, another activation
    with pytest.raises(E2ELabError, match=r"ReLU\(\).*in the checkpoint.*Tanh\(\).*here"):
        checkpoints.check_fits(checkpoint, tanh, "recognizer", "c")
    doubled = _recognizer(8).double()
    with pytest.raises(E2ELabError, match=r"torch\.float32 in the checkpoint and torch\.float64"):
        checkpoints.check_fits(checkpoint, doubled, "recognizer", "c")
    broken = _recognizer(8)
    with torch.no_grad():
        broken[0].weight[0, 0] = float("nan")
    bad = checkpoints.decode(checkpoints.encode(broken, "recognizer"), "nan")
    with pytest.raises(E2ELabError, match="NaN or infinite"):
        checkpoints.check_fits(bad, _recognizer(8), "recognizer", "nan")
    extra = torch.nn.Sequential(torch.nn.Linear(64, 8))
    with pytest.raises(E2ELabError, match=r"checkpoint lacks|module lacks"):
        checkpoints.check_fits(checkpoint, extra, "recognizer", "c")


def test_a_run_saves_its_modules_in_the_store_and_another_run_loads_one(tmp_path):
    spec = make_spec(
        "digit-chain", "modular", knobs={"n": 2}, budget=2000, save_modules="recognizer"
    )
    source = execute(spec)
    assert "checkpoints" not in source.to_dict()  # the bytes never enter the result's JSON
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        store.put(source, "src")
        assert store.saved_modules() == {source.id: ["recognizer"]}
        with pytest.raises(E2ELabError, match=r"no saved module .adder_1.*saved: recognizer"):
            store.checkpoint(source.id, "adder_1")
        with pytest.raises(E2ELabError, match="no run with an id starting with"):
            store.checkpoint("ffffffff", "recognizer")
    load_from = f"recognizer={checkpoints.store_source(path, source.id)}"
    knobs = {"n": 2, "m": 7}
    target = make_spec(
        "digit-chain",
        "e2e:freeze=recognizer",
        knobs=knobs,
        budget=1000,
        load_from=load_from,
        save_modules="recognizer",
    )
    random = make_spec("digit-chain", "e2e:freeze=recognizer", knobs=knobs, budget=1000)
    assert target.id != random.id  # the loaded weights are part of the run's identity
    moved = tmp_path / "moved.safetensors"
    with Store(path, readonly=True) as store:
        moved.write_bytes(store.checkpoint(source.id, "recognizer"))
    same = make_spec(
        "digit-chain",
        "e2e:freeze=recognizer",
        knobs=knobs,
        budget=1000,
        load_from=f"recognizer={moved}",
        save_modules="recognizer",
    )
    assert same.id == target.id  # where the weights were read from is not
    result = execute(target)
    kept = checkpoints.decode(result.checkpoints["recognizer"], "target")
    loaded = checkpoints.decode(moved.read_bytes(), "source")
    assert kept.sha256 == loaded.sha256  # loaded, then frozen: unchanged by training
    assert result.probes_at_init["digit_1"] == pytest.approx(result.probes["digit_1"])


def test_loading_into_a_system_of_another_shape_is_refused_before_training(tmp_path):
    moved = tmp_path / "r.safetensors"
    moved.write_bytes(checkpoints.encode(_recognizer(8), "recognizer"))
    with pytest.raises(E2ELabError, match="shape"):
        make_spec("digit-chain", "e2e", knobs={"n": 1}, load_from=f"recognizer={moved}")
    with pytest.raises(E2ELabError, match="holds module 'recognizer', not 'adder_1'"):
        make_spec(
            "digit-chain",
            "e2e",
            knobs={"n": 1, "recognizer_width": 8},
            load_from=f"adder_1={moved}",
        )
    with pytest.raises(E2ELabError, match="does not exist"):
        make_spec("digit-chain", "e2e", knobs={"n": 1}, load_from="recognizer=/no/such.file")
    with pytest.raises(E2ELabError, match="MODULE=SOURCE"):
        make_spec("digit-chain", "e2e", knobs={"n": 1}, load_from="recognizer")
    with pytest.raises(E2ELabError, match="unknown module to save"):
        make_spec("digit-chain", "e2e", knobs={"n": 1}, save_modules="encoder")


def _one_line_error(capsys, argv: list[str], expected: str) -> None:
    from e2elab.cli import main

    capsys.readouterr()  # what earlier commands printed
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert expected in err, err


def test_the_command_line_saves_lists_exports_and_loads_modules(tmp_path, capsys):
    from e2elab.cli import main

    out = tmp_path / "out"
    base = ["run", "--task", "digit-chain", "--knob", "n=1", "--seeds", "1", "--budget", "640"]
    assert main([*base, "--strategy", "modular", "--save-modules", "--out", str(out)]) == 0
    store = out / "results.sqlite"
    with Store(store, readonly=True) as opened:
        ((run_id, names),) = opened.saved_modules().items()
    assert names == ["adder_1", "recognizer"]
    capsys.readouterr()
    assert main(["modules", "list", str(store)]) == 0
    assert run_id in capsys.readouterr().out
    file = tmp_path / "r.safetensors"
    assert main(["modules", "export", str(store), run_id[:6], "recognizer", "-o", str(file)]) == 0
    assert checkpoints.decode(file.read_bytes(), "f").module == "recognizer"
    compare = ["run", "--task", "digit-compare", "--seeds", "1", "--budget", "640"]
    frozen = ["--strategy", "e2e:freeze=recognizer"]
    for source in (run_id, str(file)):
        assert main([*compare, *frozen, "--load", f"recognizer={source}", "--out", str(out)]) == 0
    # refusals, one line each, before anything trains
    _one_line_error(
        capsys, [*compare, "--load", "recognizer=abc", "--out", str(tmp_path / "x")], "no store at"
    )
    _one_line_error(
        capsys,
        [*compare, "--load", "recognizer=ffff", "--out", str(out)],
        "no run with an id starting with 'ffff'",
    )
    _one_line_error(
        capsys,
        [*compare, "--load", "comparator=" + str(file), "--out", str(out)],
        "holds module 'recognizer', not 'comparator'",
    )
    wide = [*compare, "--knob", "recognizer_width=32", "--load", f"recognizer={file}"]
    _one_line_error(capsys, [*wide, "--out", str(out)], "shape")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint at all")
    _one_line_error(
        capsys,
        [*compare, "--load", f"recognizer={junk}", "--out", str(out)],
        "is not a module checkpoint",
    )
    _one_line_error(
        capsys,
        ["modules", "export", str(store), run_id, "encoder", "-o", str(file)],
        "has no saved module 'encoder'",
    )


def test_output_files_never_replace_a_store_and_run_ids_are_kept_whole(tmp_path, capsys):
    from e2elab.cli import main

    out = tmp_path / "out"
    base = ["run", "--task", "digit-chain", "--knob", "n=1", "--seeds", "1", "--budget", "640"]
    assert (
        main([*base, "--strategy", "modular", "--save-modules", "recognizer", "--out", str(out)])
        == 0
    )
    store = out / "results.sqlite"
    with Store(store, readonly=True) as opened:
        (run_id,) = opened.saved_modules()
    for argv in (
        ["modules", "export", str(store), run_id, "recognizer", "-o", str(store)],
        ["export", str(store), "-o", str(store)],
    ):
        _one_line_error(capsys, argv, "is the store being read")
    other = tmp_path / "other.sqlite"
    Store(other).close()
    _one_line_error(
        capsys,
        ["modules", "export", str(store), run_id, "recognizer", "-o", str(other)],
        "is a SQLite database",
    )
    with Store(store, readonly=True) as opened:
        assert opened.saved_modules() == {run_id: ["recognizer"]}  # nothing lost
    new = tmp_path / "new" / "deeper" / "r.safetensors"
    assert main(["modules", "export", str(store), run_id, "recognizer", "-o", str(new)]) == 0
    # a bare --save-modules (every module) retrains the run that kept one, to the same weights
    assert main([*base, "--strategy", "modular", "--save-modules", "--out", str(out)]) == 0
    with Store(store, readonly=True) as opened:
        assert opened.saved_modules() == {run_id: ["adder_1", "recognizer"]}
    # a black box keeps no module and is not retrained for it
    blackbox = [*base, "--strategy", "blackbox:model=logreg", "--save-modules", "--out", str(out)]
    assert main(blackbox) == 0
    capsys.readouterr()
    assert main(blackbox) == 0
    assert "1 already stored, 0 trained" in capsys.readouterr().out
    # --load keeps the whole run id, not the prefix typed
    load = [
        "run",
        "--task",
        "digit-compare",
        "--seeds",
        "1",
        "--budget",
        "640",
        "--strategy",
        "e2e:freeze=recognizer",
        "--load",
        f"recognizer={run_id[:5]}",
        "--out",
        str(out),
    ]
    assert main(load) == 0
    with Store(store, readonly=True) as opened:
        loaded = [r for r in opened.results() if r.spec.settings.load_from]
    assert loaded and loaded[0].spec.settings.load_from.endswith("#" + run_id)


def test_loading_leaves_the_callers_task_untouched(tmp_path):
    from e2elab.execution import run

    file = tmp_path / "r.safetensors"
    file.write_bytes(checkpoints.encode(_recognizer(64), "recognizer"))
    task = make_task("digit-chain", {"n": 1})
    plain = run(task, "e2e", budget=640)
    run(task, "e2e:freeze=recognizer", budget=640, load_from=f"recognizer={file}")
    again = run(task, "e2e", budget=640)
    assert again.id == plain.id and again.weights_sha256 == plain.weights_sha256


def test_loading_into_a_blackbox_or_freezing_frozen_others_own_module_is_refused(tmp_path):
    from e2elab import strategy as strategies
    from e2elab.execution import first_batch
    from e2elab.system import trace

    file = tmp_path / "r.safetensors"
    file.write_bytes(checkpoints.encode(_recognizer(64), "recognizer"))
    with pytest.raises(E2ELabError, match="blackbox trains no module"):
        make_spec("digit-chain", "blackbox", knobs={"n": 1}, load_from=f"recognizer={file}")
    task = make_task("digit-chain", {"n": 1})
    graph = trace(task.build_system(), first_batch(task), task.ports)
    with pytest.raises(E2ELabError, match="frozen_others trains recognizer alone"):
        strategies.build("frozen_others:module=recognizer,freeze=recognizer", graph, "sum_1")
