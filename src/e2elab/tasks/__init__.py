"""Where task families come from: name -> Task class.

A task is found by
- its name, for the tasks that ship and those registered in this process
  (``e2elab.register``);
- ``module:Class``, imported (``--task my_pkg.tasks:Fusion``, ``task: my_pkg.tasks:Fusion``
  in an experiment file);
- its name in the ``e2elab.tasks`` entry-point group, which installed packages use to
  publish tasks (``[project.entry-points."e2elab.tasks"] fusion = "my_pkg.tasks:Fusion"``).

A spec records ``module:Class`` for every task that is not shipped (``reference``), so the
process pool and Ray workers import the same class, and a fingerprint of its code
(``fingerprint``), so a changed task is never answered from a stale store.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import sys
import traceback
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from e2elab.errors import E2ELabError, choices
from e2elab.task import Task
from e2elab.tasks.captioning import Captioning
from e2elab.tasks.digit_chain import DigitChain
from e2elab.tasks.digit_compare import DigitCompare
from e2elab.tasks.driving import Driving
from e2elab.tasks.images import Images
from e2elab.tasks.line_parity import LineParity
from e2elab.tasks.parity import Parity
from e2elab.tasks.pentomino import Pentomino
from e2elab.tasks.sequence_copy import SequenceCopy
from e2elab.tasks.speech import Speech
from e2elab.tasks.stocks import Stocks
from e2elab.tasks.translation import Translation

ENTRY_POINT_GROUP = "e2elab.tasks"
SHIPPED: tuple[type[Task], ...] = (
    Captioning,
    DigitChain,
    DigitCompare,
    Driving,
    Images,
    LineParity,
    Parity,
    Pentomino,
    SequenceCopy,
    Speech,
    Stocks,
    Translation,
)
TASKS: dict[str, type[Task]] = {}


def register(task: type[Task]) -> type[Task]:
    """Make a Task class available by its ``name`` in this process (to ``make_task``,
    ``make_spec`` and experiments run from Python). The command line runs in its own
    process: there, name it as ``module:Class`` or publish it as an entry point."""
    if not (isinstance(task, type) and issubclass(task, Task)):
        raise E2ELabError(f"register expects a Task subclass, got {task!r}")
    if not getattr(task, "name", None):
        raise E2ELabError(f"task class {task.__qualname__} has no 'name'; set name = '...'")
    TASKS[task.name] = task
    return task


def published() -> dict[str, str]:
    """Tasks that installed packages publish: entry-point name -> ``module:Class``."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def task_class(name: str) -> type[Task]:
    """The Task class for a registered name, ``module:Class`` or a published name."""
    if name in TASKS:
        return TASKS[name]
    if ":" in name:
        return _import(name)
    found = published()
    if name in found:
        return _import(found[name], f"entry point {name!r} of group {ENTRY_POINT_GROUP}")
    raise choices("task", name, [*TASKS, *found], hint="or give module:Class of your own task")


def make_task(name: str, knobs: dict[str, Any] | None = None) -> Task:
    """Instantiate a task (see ``task_class``) with checked knobs."""
    return task_class(name)(**(knobs or {}))


def reference(task: type[Task]) -> str | None:
    """``module:Class`` for a task that is not shipped (None for shipped ones, and for
    classes that no other process can import, such as those defined in ``__main__``)."""
    if task in SHIPPED:
        return None
    module = task.__module__
    if module == "__main__" or "<locals>" in task.__qualname__:
        return None
    return f"{module}:{task.__qualname__}"


# how e2elab lays out a system's tensors (numerics.conv_layout), which changes the order
# of a convolution's sums; a user's task gets new run ids when it changes
LAYOUT = "cpu-conv2d-channels-last"


@cache
def fingerprint(task: type[Task], system: type) -> str:
    """A hash of the code that defines ``task`` and its ``system``: for shipped tasks the
    e2elab version; else every source file of the packages that hold the two classes (and
    their bases outside e2elab), so a change to a helper module of the user's package
    counts too. A class in a top-level module brings that file and the modules beside it
    that it imports."""
    from e2elab import __version__

    if task in SHIPPED:
        return f"e2elab-{__version__}" + (f"-r{task.revision}" if task.revision else "")
    digest = hashlib.sha256(__version__.encode())
    digest.update(LAYOUT.encode())
    files: set[Path] = set()
    for cls in (*task.__mro__, *system.__mro__):
        module = inspect.getmodule(cls)
        if module is None or module.__name__.split(".")[0] in {"e2elab", "torch", "builtins"}:
            continue
        files |= _source_files(module)
    for path in sorted(files):
        digest.update(str(path.name).encode())
        digest.update(path.read_bytes())
    if not files:  # no source at all (an interactive session): the class names at least
        digest.update(f"{task.__qualname__}:{system.__qualname__}".encode())
    return digest.hexdigest()[:16]


def _source_files(module: ModuleType) -> set[Path]:
    top = sys.modules.get(module.__name__.split(".")[0], module)
    folders = [Path(p) for p in getattr(top, "__path__", [])]
    if folders:  # a package: all of it
        return {f for folder in folders for f in folder.rglob("*.py")}
    own = getattr(module, "__file__", None)
    if own is None:
        return set()
    here = Path(own).resolve()
    found = {here}
    for value in vars(module).values():  # modules beside it that it imports
        other = value if isinstance(value, ModuleType) else inspect.getmodule(value)
        path = getattr(other, "__file__", None)
        if path and Path(path).resolve().parent == here.parent:
            found.add(Path(path).resolve())
    return found


def _import_failed(where: str, module_name: str, error: BaseException) -> str:
    """One line for a task module whose own code raised while it was imported: the file
    and line in that code, and what was raised."""
    if isinstance(error, SyntaxError):
        at = f"{error.filename}:{error.lineno}"
    else:
        frames = traceback.extract_tb(error.__traceback__)
        user = [f for f in frames if "importlib" not in f.filename]
        last = (user or frames)[-1] if frames else None
        at = f"{last.filename}:{last.lineno}" if last is not None else module_name
    text = " ".join(str(error).split())[:300]
    return (
        f"{where}: your task module raised at {at} while being imported: "
        f"{type(error).__name__}: {text}; fix it there (E2ELAB_DEBUG=1 shows the traceback)"
    )


def _import(ref: str, what: str | None = None) -> type[Task]:
    module_name, _, qualname = ref.partition(":")
    where = what or f"task {ref!r}"
    if not module_name or not qualname:
        raise E2ELabError(f"{where}: expected module:Class, e.g. my_pkg.tasks:Fusion")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is None or not module_name.startswith(error.name):
            raise E2ELabError(_import_failed(where, module_name, error)) from None
        raise E2ELabError(
            f"{where}: cannot import module {module_name!r} ({error}); install the package "
            "or run from the folder that holds it"
        ) from None
    except SystemExit as error:
        raise E2ELabError(
            f"{where}: module {module_name!r} called sys.exit({error.code!r}) while being "
            "imported; a task module must not exit (guard it with if __name__ == '__main__')"
        ) from None
    except Exception as error:  # the module's own code raised: the user's bug, in one line
        if os.environ.get("E2ELAB_DEBUG"):
            raise
        raise E2ELabError(_import_failed(where, module_name, error)) from None
    target: Any = module
    for part in qualname.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise E2ELabError(f"{where}: module {module_name!r} has no {qualname!r}")
    if not (isinstance(target, type) and issubclass(target, Task)):
        raise E2ELabError(f"{where}: {qualname} is not an e2elab.Task subclass")
    return target


for _shipped in SHIPPED:
    register(_shipped)
