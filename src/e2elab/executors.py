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

from e2elab.errors import E2ELabError, choices
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


class RayExecutor:
    """Runs specs as Ray tasks: on the cluster at ``address`` (``HOST:PORT`` or ``auto``),
    or on a local Ray instance started here when no address is given. Results come back
    to this process, which alone writes the store."""

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise E2ELabError(
                "the Ray executor needs ray; install it with: pip install 'e2elab[ray]'"
            ) from None
        self._ray = ray
        self.address = address
        self.workers = workers

    def _connect(self) -> None:
        ray = self._ray
        if ray.is_initialized():
            return
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if self.address:
            options["address"] = self.address
        elif self.workers:
            options["num_cpus"] = self.workers
        try:
            ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError) as error:
            where = self.address or "a local instance"
            raise E2ELabError(
                f"could not connect to Ray at {where} ({error}); check --address HOST:PORT "
                "and that 'ray start --head' runs there"
            ) from None

    def map(self, specs: list[RunSpec]) -> Iterator[RunResult]:
        if not specs:
            return
        self._connect()
        ray = self._ray
        remote = ray.remote(num_cpus=1)(run_payload)
        pending = [remote.remote(spec.to_dict()) for spec in specs]
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    yield RunResult.from_dict(ray.get(ref))
        finally:
            for ref in pending:
                ray.cancel(ref)

    def shutdown(self) -> None:
        if self._ray.is_initialized() and not self.address:
            self._ray.shutdown()


def make_executor(name: str, workers: int | None = None, address: str | None = None) -> Executor:
    if name == "serial":
        return SerialExecutor()
    if name == "local":
        return LocalPoolExecutor(workers)
    if name == "ray":
        return RayExecutor(address, workers)
    raise choices("executor", name, ["local", "ray", "serial"])
