"""The import layers hold by structure: no import circle among e2elab's modules (every
import counts, those inside functions too), and the results half (records, store,
query, claims, summary, experiment, report) reaches neither torch nor the training half
through its module-level imports, nor at run time when it reports on a store."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "e2elab"
RESULTS_HALF = (
    "e2elab.records",
    "e2elab.store",
    "e2elab.query",
    "e2elab.claims",
    "e2elab.stability",
    "e2elab.summary",
    "e2elab.experiment",
    "e2elab.versions",
    "e2elab.report",
)
TRAINING_HALF = (
    "e2elab.execution",
    "e2elab.train",
    "e2elab.replicas",
    "e2elab.objective",
    "e2elab.system",
    "e2elab.task",
    "e2elab.tasks",
    "e2elab.strategy",
    "e2elab.runner",
    "e2elab.executors",
    "e2elab.diagnostics",
    "e2elab.oracle",
)


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, top_level_only: bool) -> set[str]:
    """Modules ``name`` imports (e2elab's own resolved to module names; others by their
    top package), at module level only or everywhere."""
    tree = ast.parse(MODULES[name].read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # module level, including inside if/try blocks there
        nodes = [n for top in tree.body for n in ast.walk(top) if not _in_def(top)]
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".")
                if MODULES[name].name != "__init__.py":
                    package = package[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            if target in MODULES:
                out.add(target)
            elif not target.startswith("e2elab"):
                out.add(target.split(".")[0])
    out.discard(name)
    return out


def _in_def(node: ast.AST) -> bool:
    return isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as a path that comes back to its start, or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = 1, path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        state[node], _ = 2, path.pop()
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def test_no_import_circle_among_e2elabs_modules():
    edges = {m: {t for t in _imports(m, top_level_only=False) if t in MODULES} for m in MODULES}
    # a package's __init__ that names its members lazily (PEP 562) is not an edge back
    for package in ("e2elab",):
        edges[package] = set()
    circle = _cycle(edges)
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _closure(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += (
            [t for t in _imports(name, top_level_only=True) if t in MODULES]
            if (name in MODULES)
            else []
        )
        seen |= {t for t in _imports(name, True) if t not in MODULES} if name in MODULES else set()
    return seen - {start}


def test_the_results_half_reaches_neither_torch_nor_training_at_module_level():
    for start in [m for m in MODULES if m.startswith(RESULTS_HALF)]:
        reached = _closure(start)
        bad = sorted(
            r for r in reached if r == "torch" or any(r.startswith(t) for t in TRAINING_HALF)
        )
        assert not bad, f"{start} imports {', '.join(bad)} at module level"


def test_reporting_on_a_store_loads_no_torch(tmp_path):
    from synthetic import cell_result

    from e2elab.store import Store

    definition = {"name": "exp", "task": "digit-chain", "strategies": ["e2e"], "seeds": 2}
    with Store(tmp_path / "results.sqlite") as store:
        store.put_experiment("exp", definition)
        for seed in (0, 1):
            store.put(cell_result("e2e", seed, 0.9, 10, knobs={"n": 1}), "exp")
    code = (
        "import sys\n"
        "from e2elab.cli import main\n"
        f"assert main(['report', r'{tmp_path / 'results.sqlite'}', '-o', r'{tmp_path / 'r'}']) == 0\n"
        f"assert main(['export', r'{tmp_path / 'results.sqlite'}', '-o', r'{tmp_path / 'x.csv'}']) == 0\n"
        "from e2elab import load_frame\n"
        f"load_frame(r'{tmp_path / 'results.sqlite'}')\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith("
        f"{TRAINING_HALF!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
