"""Where a batch's partitions run when not in the coordinator's thread: local worker processes, or
the workers of a Dask `distributed` cluster. Both run the same function (`run_partition`) on the
same plain-data tasks; neither is a scheduler of ours.

Each worker process has its own durable-rules state (the engine is process-global C state), so a
Dask worker must run one task at a time (`--nthreads 1`).
"""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from service.payouts.partitions import PartitionResult, PartitionTask, run_partition

PARENT_POLL_SECONDS = 0.5


class PartitionPool(Protocol):
    def run(
        self,
        tasks: Sequence[PartitionTask],
        *,
        heartbeat: Callable[[], None],
        stopped: Callable[[], bool],
        interval: float,
    ) -> list[PartitionResult] | None:
        """Run every task to its end, calling `heartbeat` every `interval` seconds meanwhile;
        None when `stopped()` became true first. A task's failure is raised."""
        ...


def _die_with_parent(parent: int) -> None:
    """Run in each worker process: end it when its server (`parent`) is gone - also when that
    happened while the worker was starting. (Not PR_SET_PDEATHSIG: that follows the thread that
    happened to start the process, which ends with its batch.)"""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)  # its chunks could not commit anyway: the batch's lease is the server's

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class ProcessPool:
    """Local worker processes, started once (spawned: never a fork of a threaded server)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor: futures.ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _pool(self) -> futures.ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = futures.ProcessPoolExecutor(
                    self.workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_die_with_parent,
                    initargs=(os.getpid(),),
                )
            return self._executor

    def run(
        self,
        tasks: Sequence[PartitionTask],
        *,
        heartbeat: Callable[[], None],
        stopped: Callable[[], bool],
        interval: float,
    ) -> list[PartitionResult] | None:
        pending = {self._pool().submit(run_partition, task) for task in tasks}
        try:
            return _wait(
                pending,
                heartbeat,
                stopped,
                interval,
                lambda ps: futures.wait(ps, timeout=interval, return_when=futures.FIRST_EXCEPTION),
            )
        except futures.process.BrokenProcessPool:
            self.close()  # a worker died: the next run starts fresh processes
            raise

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


class DaskPool:
    """The workers of a Dask `distributed` cluster (`Client(address)`), one thread each."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def run(
        self,
        tasks: Sequence[PartitionTask],
        *,
        heartbeat: Callable[[], None],
        stopped: Callable[[], bool],
        interval: float,
    ) -> list[PartitionResult] | None:
        from distributed import wait

        submitted = self.client.map(run_partition, list(tasks), pure=False)

        def step(ps: set[Any]) -> tuple[set[Any], set[Any]]:
            with contextlib.suppress(TimeoutError):  # the heartbeat is due
                wait(list(ps), timeout=interval, return_when="FIRST_COMPLETED")
            done = {p for p in ps if p.done()}
            return done, ps - done

        return _wait(set(submitted), heartbeat, stopped, interval, step)


def _wait(
    pending: set[Any],
    heartbeat: Callable[[], None],
    stopped: Callable[[], bool],
    interval: float,
    step: Callable[[set[Any]], tuple[Any, Any]],
) -> list[PartitionResult] | None:
    results: list[PartitionResult] = []
    try:
        while pending:
            done, pending = step(pending)
            pending = set(pending)
            for finished in done:
                results.append(finished.result())  # a failed partition fails the run (retried later)
            if stopped():
                return None
            heartbeat()
    finally:
        for task in pending:  # never started late, after this run gave up
            task.cancel()
    return sorted(results, key=lambda r: r.partition_no)


def dask_pool(address: str) -> DaskPool:
    """A pool on the Dask cluster whose scheduler is at `address` (needs the `cluster` extra)."""
    from distributed import Client

    return DaskPool(Client(address))


_shared: dict[int, ProcessPool] = {}
_shared_lock = threading.Lock()


def shared_process_pool(workers: int) -> ProcessPool:
    """One pool of `workers` processes per process, reused by every batch."""
    with _shared_lock:
        if workers not in _shared:
            _shared[workers] = ProcessPool(workers)
        return _shared[workers]


def close_shared_pools() -> None:
    """Shut the shared pools down (the server stops); their processes end with their tasks."""
    with _shared_lock:
        pools = list(_shared.values())
        _shared.clear()
    for pool in pools:
        pool.close()
