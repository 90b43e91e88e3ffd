"""Group commit of evaluation records: lookups queue their prepared records, one writer thread
seals everything queued in ONE ledger transaction, then wakes the callers.

The ledger has one head, so every transaction that appends to it holds one global lock
(`ledger_transaction`); with a transaction (and on SQLite an fsync) per lookup, concurrent
lookups queue on that lock one by one. Here a caller hands its records over and waits: while
the writer commits one group, the next one gathers, and a group costs one lock, one head read,
one commit and one ledger entry per policy (`write_records`), whatever its size.

A caller returns only once its records are committed, so the evaluation ids it answers with are
durable. When the transaction fails (the database is down, a constraint refuses a row), every
call of that group gets the database's own error - the API maps it as any other - and the writer
goes on with the next group. The queue is bounded (in records): when it is full, callers wait for
room. `stop` writes what is queued and ends the writer; nothing is left unanswered.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import TracebackType

from sqlalchemy.engine import Engine

from enterprise_registry.db import error_text
from rules.loader import LoadedPolicy
from service.audit.ledger import ledger_transaction
from service.audit.records import PreparedRecord, write_records

log = logging.getLogger("benefits.recorder")

DEFAULT_CAPACITY = 4096  # records queued at most; a call's records are never split between groups


class RecorderStoppedError(RuntimeError):
    """Raised to a caller handing records to a recorder that is stopped (a bug: the server stops
    the recorder only after its calls have finished)."""


@dataclass
class _Ticket:
    """One call's records, and how the call learns that they are committed (or why not)."""

    records: Sequence[tuple[LoadedPolicy, PreparedRecord]]
    done: Future[None] = field(default_factory=Future)


class Recorder:
    """The group-commit writer of evaluation records (see the module docstring)."""

    def __init__(self, engine: Engine, *, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.engine, self.capacity = engine, capacity
        self.transactions = 0  # groups committed
        self.failed_groups = 0  # groups whose transaction failed
        self.records_written = 0
        self._queue: list[_Ticket] = []
        self._queued = 0  # records in `_queue`
        self._writing = 0  # records of the group being written
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # the writer waits on it for work
        self._room = threading.Condition(lock)  # callers wait on it for room in the queue
        self._stopping = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------ lifecycle
    def start(self) -> Recorder:
        with self._cond:
            if self._stopping:
                raise RecorderStoppedError("a stopped recorder does not start again")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
                self._thread.start()
        return self

    def stop(self) -> None:
        """Write every record already queued, then end the writer thread (idempotent)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
            self._room.notify_all()
        if self._thread is not None:
            self._thread.join()
            log.info(
                "recorder stopped: %d records in %d transactions, %d failed",
                self.records_written,
                self.transactions,
                self.failed_groups,
            )

    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    @property
    def queued(self) -> int:
        """Records waiting for the next group."""
        with self._cond:
            return self._queued

    @property
    def outstanding(self) -> int:
        """Records handed over and not yet committed or failed: queued, or being written."""
        with self._cond:
            return self._queued + self._writing

    # ------------------------------------------------------------------------------ callers
    def record(self, records: Sequence[tuple[LoadedPolicy, PreparedRecord]]) -> None:
        """Queue one call's records and wait until they are committed, all of them in the same
        transaction; raises the database's error when that transaction failed."""
        self.submit(records).result()

    def submit(self, records: Sequence[tuple[LoadedPolicy, PreparedRecord]]) -> Future[None]:
        """Queue records to be committed together (waiting while the queue is full); the future
        is settled once they are committed, or with the database's error. Whoever answers with
        their ids must wait for it."""
        ticket = _Ticket(tuple(records))
        if not records:
            ticket.done.set_result(None)
            return ticket.done
        with self._cond:
            # A call larger than the whole queue still goes in, alone, rather than wait forever.
            while not self._stopping and self._queued and self._queued + len(records) > self.capacity:
                self._room.wait()
            if self._stopping or self._thread is None:
                raise RecorderStoppedError("the recorder is not running")
            self._queue.append(ticket)
            self._queued += len(records)
            self._cond.notify()  # the writer
        return ticket.done  # the writer always settles it: committed, or the group's error

    # ------------------------------------------------------------------------------ the writer
    def _run(self) -> None:
        group: list[_Ticket] = []
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._stopping:
                        self._cond.wait()
                    if not self._queue:  # stopping, and everything written
                        return
                    group, self._queue, self._writing, self._queued = self._queue, [], self._queued, 0
                    self._room.notify_all()  # callers waiting for room in the queue
                self._commit(group)
                with self._cond:
                    self._writing = 0
                group = []
        finally:
            # Only an error beyond Exception gets here with a group in hand (or with callers
            # queued behind it): none of them may wait forever.
            with self._cond:
                self._stopping = True
                stranded, self._queue = [*group, *self._queue], []
            for ticket in stranded:
                if not ticket.done.done():
                    ticket.done.set_exception(RecorderStoppedError("the recorder stopped"))

    def _commit(self, group: Sequence[_Ticket]) -> None:
        by_rule: dict[str, tuple[LoadedPolicy, list[PreparedRecord]]] = {}
        for ticket in group:
            for policy, prepared in ticket.records:
                by_rule.setdefault(policy.sha256, (policy, []))[1].append(prepared)
        count = sum(len(records) for _, records in by_rule.values())
        try:
            with ledger_transaction(self.engine) as conn:
                for policy, records in by_rule.values():
                    write_records(conn, policy, records)  # one ledger entry per policy
        except Exception as exc:
            self.failed_groups += 1
            # The class and primary message only: a database error's detail carries row values.
            log.error("recording %d evaluations of %d calls failed: %s", count, len(group), error_text(exc))
            for ticket in group:
                ticket.done.set_exception(exc)
            return
        self.transactions += 1
        self.records_written += count
        for ticket in group:
            ticket.done.set_result(None)
