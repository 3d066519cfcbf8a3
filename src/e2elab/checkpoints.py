"""Saved modules: a trained module's parameters in safetensors, with what it is.

A checkpoint is one module of one run: its ``state_dict`` as safetensors bytes (never a
pickle: loading one cannot run code) and a text header that says what it holds: the
format, the module's name and structure (``repr``, e.g. the layer sizes), the run it
came from and a SHA-256 of the tensors. Runs that save modules (``--save-modules``,
``save_modules:`` in an experiment) keep them in the store beside the run; another
system loads one by run id and module name (``--load MODULE=RUN_ID``), or from a file
(``e2elab modules export``). Loading refuses, with one line that says what differs, a
file that is not an e2elab checkpoint, another module's checkpoint, one whose
structure or shapes do not match the module it is loaded into, and one whose tensors do
not hash to its header.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from e2elab.errors import E2ELabError

FORMAT = "e2elab-module"
FORMAT_VERSION = "1"
# a checkpoint larger than this is not a module of a system e2elab trains on a CPU
MAX_BYTES = 1 << 31


@dataclass(frozen=True)
class Checkpoint:
    """A decoded checkpoint: the module's tensors and its header."""

    module: str
    structure: str
    tensors: dict[str, torch.Tensor]
    meta: dict[str, str]

    @property
    def sha256(self) -> str:
        return self.meta["sha256"]

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self.tensors.items()}


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the tensors, by name, shape, dtype and bytes."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def structure_of(module: torch.nn.Module) -> str:
    """What a module is, for the refusal of a checkpoint of another: its class and
    layers with their sizes (``repr``), on one line."""
    return " ".join(repr(module).split())


def same_structure(theirs: str, ours: str) -> bool:
    """Whether two ``structure_of`` lines name the same network. A ReLU and the max-pool
    after it commute exactly (values and gradients), and ReLU's ``inplace`` changes no
    value, so checkpoints saved before e2elab put its pools first still load."""
    return _canonical(theirs) == _canonical(ours)


def _canonical(structure: str) -> str:
    structure = structure.replace("ReLU(inplace=True)", "ReLU()")
    return re.sub(
        r"\((\d+)\): ReLU\(\) \((\d+)\): (MaxPool2d\([^)]*\))",
        r"(\1): \3 (\2): ReLU()",
        structure,
    )


def encode(module: torch.nn.Module, name: str, about: dict[str, Any] | None = None) -> bytes:
    """``module``'s parameters and buffers as checkpoint bytes. ``about`` (the run id,
    task, knobs, strategy, seed, ...) goes into the header as JSON text."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "module": name,
        "structure": structure_of(module),
        "sha256": tensors_sha256(tensors),
        "about": json.dumps(about or {}, sort_keys=True, default=str),
    }
    return save_bytes(tensors, metadata=meta)


def decode(data: bytes, source: str) -> Checkpoint:
    """Checkpoint bytes -> Checkpoint, or one line saying why ``source`` is not one."""
    if len(data) > MAX_BYTES:
        raise E2ELabError(f"{source}: {len(data):,} bytes is too large for a module checkpoint")
    try:
        tensors = load_bytes(data)
        meta = _header(data)
    except (SafetensorError, ValueError, json.JSONDecodeError, UnicodeDecodeError) as error:
        why = " ".join(str(error).split())[:120]
        raise E2ELabError(
            f"{source} is not a module checkpoint ({why}); give a file written by "
            "'e2elab modules export' or a run saved with --save-modules"
        ) from None
    if meta.get("format") != FORMAT:
        raise E2ELabError(
            f"{source} is a safetensors file but not an e2elab module checkpoint (no "
            f"'format: {FORMAT}' in its header); export one with 'e2elab modules export'"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise E2ELabError(
            f"{source}: checkpoint format version {meta.get('format_version')!r}, this "
            f"e2elab reads version {FORMAT_VERSION}; export it again with this e2elab"
        )
    for key in ("module", "structure", "sha256"):
        if key not in meta:
            raise E2ELabError(f"{source}: the checkpoint's header lacks {key!r}; export it again")
    found = tensors_sha256(tensors)
    if found != meta["sha256"]:
        raise E2ELabError(
            f"{source}: the tensors hash to {found[:12]}, the header says "
            f"{meta['sha256'][:12]}; the file is corrupt: export it again"
        )
    return Checkpoint(meta["module"], meta["structure"], tensors, meta)


def _header(data: bytes) -> dict[str, str]:
    """The safetensors header's ``__metadata__`` (8-byte length, then JSON)."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size].decode("utf-8"))
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise ValueError("its metadata is not a mapping")
    return {str(k): str(v) for k, v in meta.items()}


def read_file(path: Path | str) -> bytes:
    """A checkpoint file's bytes, or one line saying why it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise E2ELabError(f"checkpoint file {path} does not exist; give the path of a file")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise E2ELabError(f"{path}: {size:,} bytes is too large for a module checkpoint")
    return path.read_bytes()


def check_fits(checkpoint: Checkpoint, module: torch.nn.Module, name: str, source: str) -> None:
    """Refuse a checkpoint that is not for ``module`` (named ``name``): another module's
    name, another structure, or other tensor names or shapes."""
    if checkpoint.module != name:
        raise E2ELabError(
            f"{source} holds module {checkpoint.module!r}, not {name!r}; load it into "
            f"{checkpoint.module} (--load {checkpoint.module}=...) or save {name} instead"
        )
    wanted = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    have = checkpoint.shapes
    missing, extra = sorted(set(wanted) - set(have)), sorted(set(have) - set(wanted))
    if missing or extra:
        raise E2ELabError(
            f"{source}: module {name!r} has tensors the checkpoint lacks ({_few(missing)}) "
            f"or the checkpoint has tensors the module lacks ({_few(extra)}); "
            "save the checkpoint from a module of the same structure"
        )
    for key, tensor in module.state_dict().items():
        theirs = checkpoint.tensors[key]
        if theirs.dtype != tensor.dtype:
            raise E2ELabError(
                f"{source}: {name}.{key} is {theirs.dtype} in the checkpoint and "
                f"{tensor.dtype} in this system; save the checkpoint from a module of the "
                "same dtype"
            )
        if theirs.is_floating_point() and not bool(torch.isfinite(theirs).all()):
            raise E2ELabError(
                f"{source}: {name}.{key} holds NaN or infinite values (from a run that "
                "diverged?); load the module of a run that finished"
            )
    for key, shape in wanted.items():
        if have[key] != shape:
            raise E2ELabError(
                f"{source}: {name}.{key} has shape {list(have[key])} in the checkpoint and "
                f"{list(shape)} in this system; build the system with the knobs the "
                "checkpoint's run had (its header's 'about')"
            )
    here = structure_of(module)
    if not same_structure(checkpoint.structure, here):
        theirs, ours = _difference(checkpoint.structure, here)
        raise E2ELabError(
            f"{source}: module {name!r} differs in structure: {theirs} in the checkpoint, "
            f"{ours} here; load it into a module of the same structure"
        )


def module_of(system: torch.nn.Module, name: str, source: str) -> torch.nn.Module:
    """``system``'s module ``name``, or one line listing the modules it has."""
    module = getattr(system, name, None)
    if not isinstance(module, torch.nn.Module):
        modules = [n for n, _ in system.named_children()]
        raise E2ELabError(
            f"{source}: this system has no module {name!r}; its modules are: {', '.join(modules)}"
        )
    return module


def load_into(system: torch.nn.Module, name: str, checkpoint: Checkpoint, source: str) -> None:
    """Copy the checkpoint's tensors into ``system``'s module ``name`` (checked first)."""
    module = module_of(system, name, source)
    check_fits(checkpoint, module, name, source)
    with torch.no_grad():
        module.load_state_dict(checkpoint.tensors, strict=True)


def _few(names: Iterable[str]) -> str:
    names = list(names)
    return (
        ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "") or "none"
    )


def _difference(a: str, b: str, before: int = 30, after: int = 40) -> tuple[str, str]:
    """The two texts around where they first differ ("...(1): ReLU() (2)..." against
    "...(1): Tanh() (2)...")."""
    at = next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )
    start = max(0, at - before)

    def cut(text: str) -> str:
        head = "..." if start else ""
        tail = "..." if len(text) > at + after else ""
        return repr(head + text[start : at + after] + tail)

    return cut(a), cut(b)


# --- checkpoints named in a run's settings (Settings.load, Settings.load_from) --------


def parse_pairs(text: str, what: str) -> dict[str, str]:
    """``"a=x,b=y"`` -> ``{"a": "x", "b": "y"}`` (a module named twice is refused)."""
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, eq, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not eq or not name or not value:
            raise E2ELabError(f"{what} expects MODULE=SOURCE, got {item!r}")
        if name in pairs:
            raise E2ELabError(f"{what} names module {name!r} twice; give it once")
        pairs[name] = value
    return pairs


def store_source(store: Path | str, run_id: str) -> str:
    """The ``load_from`` source text of a module saved with run ``run_id`` in ``store``."""
    return f"{Path(store).resolve()}#{run_id}"


def fetch(source: str, module: str) -> bytes:
    """The checkpoint bytes a source names: a file, or ``STORE#RUN_ID`` (the module
    ``module`` saved with that run)."""
    path, hashmark, run_id = source.rpartition("#")
    if hashmark and Path(path).suffix in {".sqlite", ".db", ".sqlite3"}:
        from e2elab.store import Store

        with Store(path, create=False, readonly=True) as store:
            return store.checkpoint(run_id, module)
    return read_file(source)


def resolve(load_from: str, system: torch.nn.Module) -> tuple[str, dict[str, Checkpoint]]:
    """Read, decode and check every checkpoint ``load_from`` names against ``system``:
    returns ``Settings.load`` ("MODULE=SHA256,...", the weights' identity) and the
    checkpoints. Everything is refused here, before anything trains."""
    found: dict[str, Checkpoint] = {}
    for module, source in sorted(parse_pairs(load_from, "load").items()):
        label = f"checkpoint {source}" if "#" not in source else f"run {source}"
        checkpoint = decode(fetch(source, module), label)
        check_fits(checkpoint, module_of(system, module, "load"), module, label)
        found[module] = checkpoint
    load = ",".join(f"{m}={c.sha256}" for m, c in found.items())
    return load, found


def preload(task: Any, load: str, load_from: str) -> Any:
    """``task`` whose ``build_system`` loads the checkpoints ``load_from`` names into
    every system it builds (each seed's, each ensemble member's, the untrained one the
    probes start from), after checking they are still the weights ``load`` names."""
    if not load:
        return task
    task = copy.copy(task)  # the caller's task object keeps building untouched systems
    build = task.build_system
    first = build()
    resolved, checkpoints = resolve(load_from, first)
    if resolved != load:
        raise E2ELabError(
            f"load: the checkpoints at {load_from} are not the weights this run was made "
            "with (their SHA-256 differs); the source changed since: make the run again"
        )

    def built() -> torch.nn.Module:
        system = build()
        for module, checkpoint in checkpoints.items():
            load_into(system, module, checkpoint, module)
        return system

    task.build_system = built  # this instance only: the task class is untouched
    return task


def saved(system: torch.nn.Module, names: str, about: dict[str, Any]) -> dict[str, bytes]:
    """Checkpoint bytes of the modules ``names`` lists ("a,b" or "*") of ``system``."""
    if not names:
        return {}
    children = dict(system.named_children())
    wanted = list(children) if names.strip() == "*" else [n.strip() for n in names.split(",")]
    return {n: encode(children[n], n, about) for n in wanted if n and n in children}
