"""A gradient-SNR sweep over one knob (``e2elab diagnose snr``): its experiment, built
from the command's choices, measured into a store and written as JSON beside it."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from e2elab import strategy as strategies
from e2elab.errors import E2ELabError
from e2elab.experiment import Experiment, digest_name
from e2elab.records import SNRResult
from e2elab.runner import measure_snr
from e2elab.store import Store


def snr_experiment(
    task: str,
    knob: str,
    values: list[Any],
    fixed: dict[str, Any],
    names: list[str],
    inits: int = 3,
    batches: int = 32,
    batch_size: int | None = None,
) -> Experiment:
    """The experiment that measures the gradient SNR of every module under each of
    ``names`` at each value of ``knob`` (the other knobs ``fixed``). Its name is a
    digest of these choices, so the same ones add to the same store's measurements."""
    if batch_size is not None and batch_size < 1:
        raise E2ELabError(f"--batch-size must be a positive integer, got {batch_size}")
    if inits < 2 or batches < 3:
        raise E2ELabError(
            "--inits must be at least 2 and --batches at least 3 to estimate a mean and spread"
        )
    for name in names:
        strategies.parse_strategy(name)
    definition = {
        "task": task,
        "sweep": knob,
        "knobs": fixed,
        "grid": {knob: values},
        "strategies": names,
        "snr": {"strategies": names, "inits": inits, "batches": batches, "batch_size": batch_size},
    }
    name = digest_name("snr", task, definition)
    return Experiment.model_validate({"name": name, **definition})


def sweep_snr(
    experiment: Experiment,
    out: Path,
    on_done: Callable[[], None] | None = None,
    force: bool = False,
) -> list[SNRResult]:
    """Measure ``experiment`` (see ``snr_experiment``) into ``out/results.sqlite``
    (what is stored is read back unless ``force``) and write ``out/snr.json``."""
    with Store(out / "results.sqlite") as store:
        store.put_experiment(experiment.name, experiment.model_dump())
        results = measure_snr(experiment, store, on_done, force=force)
    (out / "snr.json").write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=1))
    return results
