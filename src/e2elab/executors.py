"""Executors turn RunSpecs into RunResults: in this process, in a pool of processes, or
on a Ray cluster.

Every run trains under ``numerics.fixed_numerics`` (one intra-op thread, fixed backend
flags), whichever executor runs it, so the same spec gives bit-identical results on all
of them; parallelism comes from running several runs at once. Specs that differ only by
seed are trained together, seed-batched (see ``replicas``), unless ``batch_seeds`` is
off; a batch is the unit of work, and a spec's result does not depend on its batch.
"""

from __future__ import annotations

import importlib.machinery
import multiprocessing
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, Protocol

from e2elab.errors import E2ELabError, choices
from e2elab.execution import execute_seeds
from e2elab.parentwatch import die_with_parent
from e2elab.records import RunResult, RunSpec

_QUIET_TRACKER = "ignore::UserWarning:multiprocessing.resource_tracker"
# The most seeds trained as one batch; a larger group is split into batches of this size.
MAX_SEEDS_PER_BATCH = 16


class Executor(Protocol):
    def map(self, specs: list[RunSpec]) -> Iterator[RunResult]:
        """Yield one result per spec, in order of completion."""
        ...


def seed_batches(
    specs: list[RunSpec], batch_seeds: bool = True, workers: int = 1
) -> list[list[RunSpec]]:
    """Group specs that differ only by seed (in order of first appearance), at most
    MAX_SEEDS_PER_BATCH to a batch; every spec alone when ``batch_seeds`` is off.

    On the CPU each batch trains in one process on one core, so with fewer batches than
    ``workers`` the largest are halved until every worker has one (16 seeds on 2 cores:
    two stacks of 8). A seed's numbers do not depend on how many seeds share its stack
    (stacking is used only where it is exact, see ``replicas.plan_seeds``), so this
    changes the wall time, not the results. A batch that trains on an accelerator is
    never split: the device is one, and one stack of all seeds keeps it busiest."""
    if not batch_seeds:
        return [[spec] for spec in specs]
    groups: dict[str, list[RunSpec]] = {}
    for spec in specs:
        groups.setdefault(spec.seed_group(), []).append(spec)
    batches = [
        group[i : i + MAX_SEEDS_PER_BATCH]
        for group in groups.values()
        for i in range(0, len(group), MAX_SEEDS_PER_BATCH)
    ]
    while len(batches) < workers:
        on_cpu = [i for i, b in enumerate(batches) if b[0].settings.device == "cpu"]
        largest = max(on_cpu, key=lambda i: len(batches[i]), default=None)
        if largest is None or len(batches[largest]) < 2:
            break
        batch = batches[largest]
        half = (len(batch) + 1) // 2
        batches[largest : largest + 1] = [batch[:half], batch[half:]]
    return batches


@contextmanager
def _workers_start_light() -> Iterator[None]:
    """Processes spawned in here do not import this process's ``__main__`` (the
    ``e2elab`` script imports the whole command line, seconds on a loaded machine) before
    their first line runs: what they run is importable by name, and a task defined in
    ``__main__`` is refused before any worker starts (runner._check_importable). The
    first line (``parentwatch.die_with_parent``) then ties each worker to this process
    within milliseconds of its start."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = main.__dict__.get("__spec__")
    # multiprocessing's spawn skips a main module whose name ends in '.__main__'
    main.__spec__ = importlib.machinery.ModuleSpec("e2elab.__main__", None)
    try:
        yield
    finally:
        main.__spec__ = saved


@contextmanager
def _workers_ignore_ctrl_c() -> Iterator[None]:
    """Processes started in here ignore SIGINT (an ignored signal stays ignored across
    exec, and Python then installs no handler of its own): Ctrl-C reaches the whole
    process group, and only the parent should act on it, by stopping its workers and
    keeping what is stored, without a traceback from a worker that was still starting."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_payload(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Train a seed batch given as dicts (what crosses a process boundary), with any
    saved modules' bytes beside the result's JSON fields."""
    results = execute_seeds([RunSpec.from_dict(spec) for spec in specs])
    return [{**r.to_dict(), "checkpoints": dict(r.checkpoints)} for r in results]


def _payload(batch: list[RunSpec]) -> list[dict[str, Any]]:
    return [spec.to_dict() for spec in batch]


class SerialExecutor:
    """Runs one seed batch after another in this process."""

    def __init__(self, batch_seeds: bool = True) -> None:
        self.batch_seeds = batch_seeds

    def map(self, specs: list[RunSpec]) -> Iterator[RunResult]:
        for batch in seed_batches(specs, self.batch_seeds):
            for result in run_payload(_payload(batch)):
                yield RunResult.from_dict(result)


class LocalPoolExecutor:
    """Runs seed batches in ``workers`` processes (default: the available cores)."""

    def __init__(self, workers: int | None = None, batch_seeds: bool = True) -> None:
        self.workers = workers or len(os.sched_getaffinity(0))
        self.batch_seeds = batch_seeds

    def map(self, specs: list[RunSpec]) -> Iterator[RunResult]:
        queue = seed_batches(specs, self.batch_seeds, self.workers)
        jobs = [(_payload(batch),) for batch in queue]
        for _, results in in_processes(run_payload, jobs, self.workers):
            for result in results:
                yield RunResult.from_dict(result)


def in_processes(
    function: Callable[..., Any], jobs: list[tuple[Any, ...]], workers: int
) -> Iterator[tuple[int, Any]]:
    """``function(*job)`` for every job, in at most ``workers`` spawned processes that
    end with this one; yields (index of the job, its value) in order of completion.

    At most 2 jobs per worker are in flight, so an interrupt loses little work; on an
    interrupt (Ctrl-C, SIGTERM, an error, the caller closing the iterator) the workers
    are stopped at once. ``function`` must be importable by name (module level)."""
    if not jobs:
        return
    # the resource tracker (a process that outlives a killed parent by a moment) cleans up
    # the pool's semaphores then, and warns of "leaked" ones: expected after a kill -9, so
    # not printed (it reads its warning filters from this process's -W options)
    if _QUIET_TRACKER not in sys.warnoptions:
        sys.warnoptions.append(_QUIET_TRACKER)
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=die_with_parent,  # from a module of the standard library's imports
        initargs=(os.getpid(),),
    )
    queue = list(enumerate(jobs))
    pending: dict[Future[Any], int] = {}
    finished = False
    try:
        while queue or pending:
            while queue and len(pending) < 2 * workers:
                index, job = queue.pop(0)
                with _workers_ignore_ctrl_c(), _workers_start_light():  # workers start here
                    pending[pool.submit(function, *job)] = index
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield pending.pop(future), future.result()
        finished = True
    finally:
        if not finished:  # interrupted: stop the workers now
            processes = list(getattr(pool, "_processes", {}).values())
            for process in processes:
                process.terminate()
            for process in processes:
                process.join(timeout=5)
                if process.is_alive():
                    process.kill()
        # wait for the pool's manager thread even when interrupted: left running, it can
        # close its wake-up pipe while the interpreter's exit hook writes to it, which
        # prints a traceback (OSError: Bad file descriptor) after the clean message
        pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """Runs specs as Ray tasks: on the cluster at ``address`` (``HOST:PORT`` or ``auto``),
    or on a local Ray instance started here when no address is given. Results come back
    to this process, which alone writes the store. On a cluster, every node needs e2elab
    and the packages of the user's tasks installed."""

    def __init__(
        self, address: str | None = None, workers: int | None = None, batch_seeds: bool = True
    ) -> None:
        try:
            import ray
        except ImportError:
            raise E2ELabError(
                "the Ray executor needs ray; install it with: pip install 'e2elab[ray]'"
            ) from None
        if address and address != "auto":
            _reachable(address)  # before anything is stored or trained
        self._ray = ray
        self.address = address
        self.workers = workers
        self.batch_seeds = batch_seeds

    def _connect(self) -> None:
        ray = self._ray
        if ray.is_initialized():
            return
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if self.address:
            options["address"] = self.address
        else:
            if self.workers:
                options["num_cpus"] = self.workers
            # a local instance's workers import what this process can: a user's task given
            # as module:Class from the current folder, or from a test package, included
            path = [p for p in sys.path if p and os.path.isdir(p)]
            options["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(path)}}
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
        cpus = int(ray.available_resources().get("CPU", 1))
        batches = seed_batches(specs, self.batch_seeds, cpus)
        pending = [remote.remote(_payload(batch)) for batch in batches]
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    for result in ray.get(ref):
                        yield RunResult.from_dict(result)
        finally:
            for ref in pending:
                ray.cancel(ref)

    def shutdown(self) -> None:
        if self._ray.is_initialized() and not self.address:
            self._ray.shutdown()


RAY_CONNECT_SECONDS = 5.0


def _reachable(address: str) -> None:
    """Fail fast, with one line, when nothing answers at a Ray head's HOST:PORT (ray.init
    itself retries for minutes in silence)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise E2ELabError(f"--address expects HOST:PORT (e.g. 10.0.0.5:6379), got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=RAY_CONNECT_SECONDS).close()
    except OSError as error:
        raise E2ELabError(
            f"no Ray head answers at {address} within {RAY_CONNECT_SECONDS:g} s ({error}); "
            "check the address and that 'ray start --head' runs there"
        ) from None


def make_executor(
    name: str, workers: int | None = None, address: str | None = None, batch_seeds: bool = True
) -> Executor:
    if name == "serial":
        return SerialExecutor(batch_seeds)
    if name == "local":
        return LocalPoolExecutor(workers, batch_seeds)
    if name == "ray":
        return RayExecutor(address, workers, batch_seeds)
    raise choices("executor", name, ["local", "ray", "serial"])
