"""Fault injection: kill a small sweep at random moments, resume it, and check that no
run was lost or stored twice, that no traceback was printed, and that the resumed store
holds the same trained weights as an uninterrupted sweep.

    python benchmarks/faults.py [--tries 10] [--executor local|serial]

Prints one row per fault (tries, tracebacks, runs lost, runs duplicated, runs whose
weights differ from the uninterrupted sweep) and writes benchmarks/results/faults.json.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEEP = {
    "name": "faults",
    "task": "digit-chain",
    "sweep": "n",
    "grid": {"n": [1, 2]},
    "knobs": {"test_size": 200},
    "strategies": ["e2e", "modular"],
    "seeds": 2,
    "budget": 4000,
}
FAULTS = {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}


def _reproduce(spec: Path, out: Path, executor: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "e2elab.cli", "reproduce", str(spec), "--out", str(out)]
    return subprocess.Popen(
        [*argv, "--executor", executor], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _hashes(store: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT id, result FROM runs").fetchall()
    return [(run_id, json.loads(text)["weights_sha256"]) for run_id, text in rows]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tries", type=int, default=10)
    parser.add_argument("--executor", default="local")
    args = parser.parse_args()
    import yaml

    folder = Path(tempfile.mkdtemp(prefix="e2elab-faults-"))
    spec = folder / "sweep.yaml"
    spec.write_text(yaml.safe_dump(SWEEP))
    began = time.perf_counter()
    clean = _reproduce(spec, folder / "clean", args.executor)
    clean.communicate()
    full_seconds = time.perf_counter() - began
    reference = dict(_hashes(folder / "clean" / "results.sqlite"))
    rows = []
    rng = random.Random(0)
    for name, signum in FAULTS.items():
        tracebacks = lost = duplicated = differ = 0
        for attempt in range(args.tries):
            out = folder / f"{name}-{attempt}"
            process = _reproduce(spec, out, args.executor)
            time.sleep(rng.uniform(0.5, full_seconds))
            process.send_signal(signum)
            _, err = process.communicate()
            tracebacks += "Traceback" in err
            resumed = _reproduce(spec, out, args.executor)
            _, err = resumed.communicate()
            tracebacks += "Traceback" in err
            stored = _hashes(out / "results.sqlite")
            ids = [run_id for run_id, _ in stored]
            lost += len(set(reference) - set(ids))
            duplicated += len(ids) - len(set(ids))
            differ += sum(reference.get(run_id) != sha for run_id, sha in stored)
        rows.append(
            {
                "fault": name,
                "tries": args.tries,
                "tracebacks": tracebacks,
                "runs_lost": lost,
                "runs_duplicated": duplicated,
                "runs_differing": differ,
            }
        )
        print(rows[-1], flush=True)
    result = {"executor": args.executor, "runs_per_sweep": len(reference), "faults": rows}
    target = Path(__file__).parent / "results" / "faults.json"
    target.write_text(json.dumps(result, indent=1))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
