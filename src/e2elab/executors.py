"""Executors turn RunSpecs into RunResults: in this process, or in a pool of processes.

Every run trains with one intra-op thread, whichever executor runs it, so the same spec
gives bit-identical results on both; parallelism comes from running several runs at once.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, Protocol

import torch

from e2elab.errors import choices
from e2elab.run import RunResult, RunSpec, execute


class Executor(Protocol):
    def map(self, specs: list[RunSpec]) -> Iterator[RunResult]:
        """Yield one result per spec, in order of completion."""
        ...


@contextmanager
def one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_payload(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one spec given as a dict (what crosses a process boundary) with one thread."""
    with one_thread():
        return execute(RunSpec(**spec)).to_dict()


class SerialExecutor:
    """Runs one spec after another in this process."""

    def map(self, specs: list[RunSpec]) -> Iterator[RunResult]:
        for spec in specs:
            yield RunResult.from_dict(run_payload(spec.to_dict()))


class LocalPoolExecutor:
    """Runs specs in ``workers`` processes (default: the available cores)."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or len(os.sched_getaffinity(0))

    def map(self, specs: list[RunSpec]) -> Iterator[RunResult]:
        if not specs:
            return
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(max_workers=min(self.workers, len(specs)), mp_context=context)
        pending: set[Future[dict[str, Any]]] = set()
        queue = list(specs)
        try:
            # keep at most 2 runs per worker in flight so an interrupt loses little work
            while queue or pending:
                while queue and len(pending) < 2 * self.workers:
                    pending.add(pool.submit(run_payload, queue.pop(0).to_dict()))
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield RunResult.from_dict(future.result())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def make_executor(name: str, workers: int | None = None) -> Executor:
    if name == "serial":
        return SerialExecutor()
    if name == "local":
        return LocalPoolExecutor(workers)
    raise choices("executor", name, ["local", "serial"])
