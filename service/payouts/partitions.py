"""A running batch's partitions: the registry split by USCC into ranges, each evaluated chunk by
chunk with its own cursor and lease, in this thread, in worker processes or on a Dask cluster.

Exactly once. Each chunk commits its evaluation records, its candidates and the partition's new
cursor in ONE transaction, and only if (a) the partition's cursor is still the one the chunk
started from and its lease is this task's, and (b) the batch is RUNNING and held by the
coordinator that started the task. So a chunk committed twice, by a duplicate task or by a
worker whose coordinator lost the batch, is impossible; a crash loses at most the chunks in
flight, and a restart resumes every partition after its cursor.

Batches run together. Several batches of one period and evaluation date whose partitions are
laid out alike (`ensure_partitions` makes them so when they start together) run as one task per
partition: each chunk is read once, its enterprises decided once under every policy of the
batches (one fact per enterprise per packed ruleset), one facts snapshot per enterprise and fact
year is shared by them, and the chunk commits for every batch in one transaction - each batch's
records, candidates and cursor. The six batches of a period cost one pass over the registry.

`run_partition(task)` is the one function every kind of worker runs: it takes only plain data
(the database URL and the rule texts), so it can be pickled to another process or machine.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson
from sqlalchemy import exists, func, insert, or_, select
from sqlalchemy.engine import Connection, Engine
from sqlmodel import col

from enterprise_registry.db import DEFAULT_TIMEOUTS, DatabaseTimeouts, make_engine
from enterprise_registry.models import Enterprise
from rules.loader import LoadedPolicy, load_policy_text
from rules.values import Outcome
from service.audit.decision import Decision
from service.audit.ledger import ledger_transaction
from service.audit.records import Actor, PreparedRecord, prepare_decision, write_records
from service.catalogue import CATALOGUE
from service.evaluation.chunks import Chunk, next_usccs, read_chunk
from service.evaluation.decide import PolicyDecisions, decide_chunk, plan_for
from service.payouts.states import BatchState
from service.payouts.tables import grant, in_lists, payout_batch, payout_candidate, payout_partition

log = logging.getLogger("benefits.payouts")


@dataclass(frozen=True)
class RunSettings:
    chunk_size: int = 200  # enterprises per committed chunk
    lease_seconds: float = 30.0  # how long a silent worker keeps its batch or partition
    workers: int = 1  # worker processes evaluating partitions side by side (1: this thread)
    partitions: int = 0  # partitions of a new batch (0: one per worker)
    # The server's --db-*-timeout flags, for the engines worker processes make of their own: a
    # worker waits on the database no longer than the server would.
    db_timeouts: DatabaseTimeouts = DEFAULT_TIMEOUTS


DEFAULT_SETTINGS = RunSettings()


class LeaseLostError(Exception):
    """Another worker took the batch or partition over (this one was too slow to renew its lease),
    or the chunk was committed by a duplicate of this task."""


@dataclass(frozen=True)
class BatchTask:
    """One batch of a partition task, as plain data."""

    batch_id: str
    sources: tuple[str, ...]  # rule texts: the batch's policy, then its conflict group's rivals
    excluded: tuple[str, ...]  # policies whose standing grant bars the batch's policy


@dataclass(frozen=True)
class PartitionTask:
    """What a worker needs to run one partition of batches that run together, as plain data."""

    db_url: str
    batches: tuple[BatchTask, ...]
    partition_no: int
    coordinator: str  # the worker holding the batches; chunks commit only while it does
    settings: RunSettings

    @property
    def lease_holder(self) -> str:
        # The same for a task resubmitted by the same coordinator (after its worker died), so it
        # resumes at once; unique across coordinators.
        return f"{self.coordinator}/p{self.partition_no}"


def ensure_partitions(engine: Engine, batch_ids: Sequence[str], count: int) -> dict[str, list[Any]]:
    """Each batch's partitions. Those of a batch's first run are made here: `count` ranges of
    about equal numbers of registered enterprises (fewer when the registry is smaller), the same
    ranges for every batch started in this call, so that they can run together."""
    with engine.begin() as conn:
        found = {batch_id: _partitions(conn, batch_id) for batch_id in batch_ids}
        new = [batch_id for batch_id, rows in found.items() if not rows]
        if not new:
            return found
        total = int(conn.execute(select(func.count()).select_from(Enterprise)).scalar_one())
        count = max(1, min(count, total))
        bounds: list[str | None] = []
        for k in range(1, count):
            bounds.append(
                conn.execute(
                    select(col(Enterprise.uscc)).order_by(Enterprise.uscc).offset(k * total // count - 1).limit(1)
                ).scalar_one()
            )
        bounds.append(None)
        for batch_id in new:
            after = ""
            for number, last in enumerate(bounds):
                conn.execute(
                    insert(payout_partition).values(
                        batch_id=batch_id, partition_no=number, after_uscc=after, last_uscc=last, cursor=after
                    )
                )
                after = last or ""
            found[batch_id] = _partitions(conn, batch_id)
        return found


def layout(partitions: Sequence[Any]) -> tuple[tuple[Any, ...], ...]:
    """What batches must share to run together: their partitions' ranges, cursors and ends."""
    return tuple((p.partition_no, p.after_uscc, p.last_uscc, p.cursor, p.done) for p in partitions)


def _partitions(conn: Connection, batch_id: str) -> list[Any]:
    return list(
        conn.execute(
            select(payout_partition)
            .where(payout_partition.c.batch_id == batch_id)
            .order_by(payout_partition.c.partition_no)
        ).all()
    )


def all_done(conn: Connection, batch_id: str) -> bool:
    """Whether every partition of the batch committed its last chunk."""
    open_partitions = conn.execute(
        select(func.count())
        .select_from(payout_partition)
        .where(payout_partition.c.batch_id == batch_id, payout_partition.c.done == 0)
    ).scalar_one()
    return int(open_partitions) == 0


@dataclass(frozen=True)
class PartitionResult:
    partition_no: int
    evaluated: int  # enterprises this run evaluated (not those of an earlier, crashed run)
    pid: int  # the process that ran it


def run_partition(task: PartitionTask) -> PartitionResult:
    """Run one partition to its end in a process of its own (a worker process or a Dask worker):
    its own database engine, its own engine state."""
    engine = partition_engine(task)
    try:
        evaluators = [_evaluator(engine, batch) for batch in task.batches]
        return PartitionResult(task.partition_no, run_partition_with(engine, evaluators, task), os.getpid())
    finally:
        engine.dispose()


def partition_engine(task: PartitionTask) -> Engine:
    """The engine a worker process makes for a task: the task's database, with its timeouts."""
    return make_engine(task.db_url, timeouts=task.settings.db_timeouts)


def _evaluator(engine: Engine, batch: BatchTask) -> ChunkEvaluator:
    policies = [
        load_policy_text(source.encode(), CATALOGUE, origin=f"batch {batch.batch_id}") for source in batch.sources
    ]
    with engine.connect() as conn:
        row = conn.execute(select(payout_batch).where(payout_batch.c.batch_id == batch.batch_id)).one()
    if policies[0].sha256 != row.rule_sha256:  # a task never decides under another text than its batch's
        raise LeaseLostError(
            f"{batch.batch_id}: the task's rule text {policies[0].sha256[:12]} is not the "
            f"batch's {row.rule_sha256[:12]}"
        )
    return ChunkEvaluator.for_batch(row, policies[0], policies[1:], batch.excluded)


def run_partition_with(
    engine: Engine, evaluators: Sequence[ChunkEvaluator], task: PartitionTask, stop: Callable[[], bool] = lambda: False
) -> int:
    """Run one partition of the task's batches (with `evaluators` in the same order) with a given
    database engine, in this thread; stops between chunks when `stop()` says so. The enterprises
    it evaluated."""
    if [e.batch_id for e in evaluators] != [b.batch_id for b in task.batches]:
        raise ValueError("one evaluator per batch of the task, in its order")
    settings = task.settings
    for batch in task.batches:
        if not _claim(engine, task, batch.batch_id, settings.lease_seconds):
            raise LeaseLostError(f"{batch.batch_id} partition {task.partition_no} is held by another worker")
    evaluated = 0
    while not stop():
        with engine.connect() as conn:
            parts = [
                conn.execute(
                    select(payout_partition).where(
                        payout_partition.c.batch_id == batch.batch_id,
                        payout_partition.c.partition_no == task.partition_no,
                    )
                ).one()
                for batch in task.batches
            ]
            if len({(p.after_uscc, p.last_uscc, p.cursor, p.done) for p in parts}) != 1:
                # they commit together, so only a partition changed by hand gets here
                raise LeaseLostError(
                    f"partition {task.partition_no} of {', '.join(b.batch_id for b in task.batches)} "
                    "is not at the same place in every batch"
                )
            part = parts[0]
            if part.done:
                return evaluated
            usccs = next_chunk(conn, part, settings.chunk_size)
        if not usccs:
            with ledger_transaction(engine) as conn:
                for batch in task.batches:
                    _advance(conn, task, batch.batch_id, part.cursor, part.cursor, done=True)
            return evaluated
        outcomes = evaluate_together(engine, evaluators, usccs)
        # Everything under the ledger lock, snapshots included: stored before the lock, a chunk's
        # uncommitted snapshot rows made a lookup (holding the lock, storing the same snapshot)
        # and the chunk wait for each other (tests/integration/payouts/test_batches_run_together.py).
        with ledger_transaction(engine) as conn:
            stored: set[str] = set()  # facts snapshots the batches share, stored once
            for evaluator, outcome in zip(evaluators, outcomes):
                _advance(conn, task, evaluator.batch_id, part.cursor, usccs[-1], done=False, outcome=outcome)
                outcome.write(conn, evaluator, stored)
        evaluated += len(usccs)
    return evaluated


def next_chunk(conn: Connection, part: Any, limit: int) -> list[str]:
    """The partition's next chunk of USCCs after its cursor."""
    return next_usccs(conn, part.cursor, limit, last=part.last_uscc)


def _claim(engine: Engine, task: PartitionTask, batch_id: str, lease_seconds: float) -> bool:
    """Take the partition: free, ours, its lease ran out, or left by an earlier coordinator of
    the batch (whose tasks can no longer commit: the batch is not theirs)."""
    now = now_ms()
    holder = payout_partition.c.worker
    with engine.begin() as conn:
        changed = conn.execute(
            payout_partition.update()
            .where(
                payout_partition.c.batch_id == batch_id,
                payout_partition.c.partition_no == task.partition_no,
                or_(
                    holder.is_(None),
                    holder == task.lease_holder,
                    payout_partition.c.lease_until < now,
                    ~holder.startswith(f"{task.coordinator}/", autoescape=True),
                ),
                # only for the batch's current coordinator: a late task of an earlier one takes nothing
                exists().where(
                    payout_batch.c.batch_id == batch_id,
                    payout_batch.c.state == BatchState.RUNNING,
                    payout_batch.c.worker == task.coordinator,
                ),
            )
            .values(worker=task.lease_holder, lease_until=now + int(lease_seconds * 1000))
        )
    return changed.rowcount == 1


def _advance(
    conn: Connection,
    task: PartitionTask,
    batch_id: str,
    expected_cursor: str,
    cursor: str,
    *,
    done: bool,
    outcome: ChunkOutcome | None = None,
) -> None:
    # First statements of every chunk's transaction: prove the partition and the batch are still
    # ours, and that no duplicate committed this chunk (the cursor is where it was).
    lease = now_ms() + int(task.settings.lease_seconds * 1000)
    changed = conn.execute(
        payout_partition.update()
        .where(
            payout_partition.c.batch_id == batch_id,
            payout_partition.c.partition_no == task.partition_no,
            payout_partition.c.worker == task.lease_holder,
            payout_partition.c.cursor == expected_cursor,
            payout_partition.c.done == 0,
        )
        .values(cursor=cursor, lease_until=lease, done=int(done))
    )
    if changed.rowcount != 1:
        raise LeaseLostError(f"{batch_id} partition {task.partition_no}: lease lost or chunk already committed")
    counts: dict[str, Any] = {}
    if outcome is not None:
        counts = {
            "evaluated_count": payout_batch.c.evaluated_count + outcome.evaluated,
            "eligible_count": payout_batch.c.eligible_count + outcome.eligible,
            "eligible_fen": payout_batch.c.eligible_fen + outcome.eligible_fen,
            "error_count": payout_batch.c.error_count + outcome.errors,
        }
    batch = conn.execute(
        payout_batch.update()
        .where(
            payout_batch.c.batch_id == batch_id,
            payout_batch.c.state == BatchState.RUNNING,
            payout_batch.c.worker == task.coordinator,
        )
        .values(lease_until=lease, **counts)
    )
    if batch.rowcount != 1:
        raise LeaseLostError(f"{batch_id}: the batch is no longer held by {task.coordinator}")


@dataclass
class ChunkOutcome:
    """A chunk's evaluation, ready to be committed: records by policy, candidates and counts."""

    records: dict[str, list[PreparedRecord]]
    candidates: list[dict[str, Any]]
    evaluated: int

    @property
    def eligible(self) -> int:
        return sum(1 for c in self.candidates if not c.get("error"))

    @property
    def eligible_fen(self) -> int:
        return sum(int(c["full_fen"]) for c in self.candidates if not c.get("error"))

    @property
    def errors(self) -> int:
        return len(self.candidates) - self.eligible

    def write(self, conn: Connection, evaluator: ChunkEvaluator, stored: set[str]) -> None:
        """Inside the chunk's transaction; `stored`: the facts snapshots it already wrote."""
        for policy_id, prepared in self.records.items():
            write_records(conn, evaluator.policy_by_id(policy_id), prepared, stored=stored)
        if self.candidates:
            conn.execute(insert(payout_candidate), self.candidates)


class ChunkEvaluator:
    """Evaluates a chunk of enterprises for one batch: its policy, and its conflict group's rivals
    for stacking (就高不重复); outside any transaction."""

    def __init__(
        self,
        batch_id: str,
        period: int,
        today: date,
        actor: Actor,
        policy: LoadedPolicy,
        rivals: Sequence[LoadedPolicy],
        excluded: Sequence[str],
    ) -> None:
        self.batch_id, self.period, self.today, self.actor = batch_id, period, today, actor
        self.policy, self.rivals, self.excluded = policy, list(rivals), sorted(excluded)

    @classmethod
    def for_batch(
        cls, row: Any, policy: LoadedPolicy, rivals: Sequence[LoadedPolicy], excluded: Sequence[str]
    ) -> ChunkEvaluator:
        return cls(
            row.batch_id,
            row.period,
            date.fromisoformat(row.evaluated_on),
            Actor(row.created_by, row.created_role),
            policy,
            rivals,
            excluded,
        )

    def policy_by_id(self, policy_id: str) -> LoadedPolicy:
        return next(p for p in (self.policy, *self.rivals) if p.id == policy_id)

    def outcome(
        self, chunk: Chunk, decisions: Mapping[str, PolicyDecisions], standing: Mapping[str, Mapping[str, str]]
    ) -> ChunkOutcome:
        """The batch's part of a decided chunk: the records of its policy and, where that is
        eligible, its rivals; a candidate per enterprise to pay (or in error). `standing`: the
        chunk's standing grants of the period (`standing_grants`)."""
        own = decisions[self.policy.id]
        granted = {uscc for uscc, grants in standing.items() if self.policy.id in grants}
        barred = {
            uscc: f"grant {grants[policy_id]} of {policy_id}"
            for uscc, grants in standing.items()
            for policy_id in reversed(self.excluded)
            if policy_id in grants
        }  # the first excluded one named
        records: dict[str, list[PreparedRecord]] = defaultdict(list)
        candidates: list[dict[str, Any]] = []
        mine = [self.policy.id, *(rival.id for rival in self.rivals)]
        for row, uscc in enumerate(chunk.usccs):
            if uscc in granted:
                continue  # never twice: an earlier batch granted it
            failed = next(
                (
                    f"{policy_id}: {decisions[policy_id].errors[row]}"
                    for policy_id in mine
                    if row in decisions[policy_id].errors
                ),
                None,
            )
            if row in own.errors or (failed and own.outcome(row) == Outcome.ELIGIBLE):
                # counted, logged, not paid; a later batch may pay it
                log.error("batch %s: %s could not be evaluated: %s", self.batch_id, uscc, failed)
                candidates.append(
                    {
                        "batch_id": self.batch_id,
                        "uscc": uscc,
                        "full_fen": 0,
                        "group_awards": "{}",
                        "evaluation_id": None,
                        "record_sha256": None,
                        "error": failed,
                    }
                )
                continue
            barred_by = barred.get(uscc)
            note = f"not paid: holds {barred_by}, which {self.policy.id} excludes" if barred_by else None
            record = self._record(own, chunk, row, records, note)
            if own.outcome(row) != Outcome.ELIGIBLE or barred_by:
                continue
            awards = {}
            for rival in self.rivals:  # 就高不重复: what the group's other policies would award
                theirs = decisions[rival.id]
                self._record(theirs, chunk, row, records, None)
                if theirs.outcome(row) == Outcome.ELIGIBLE:
                    awards[rival.id] = theirs.amount_fen(row)
            candidates.append(
                {
                    "batch_id": self.batch_id,
                    "uscc": uscc,
                    "full_fen": own.amount_fen(row),
                    "group_awards": orjson.dumps(awards, option=orjson.OPT_SORT_KEYS).decode(),
                    "evaluation_id": record.evaluation_id,
                    "record_sha256": record.record_sha256,
                    "error": None,
                }
            )
        return ChunkOutcome(dict(records), candidates, len(chunk.usccs))

    def _record(
        self,
        decisions: PolicyDecisions,
        chunk: Chunk,
        row: int,
        records: dict[str, list[PreparedRecord]],
        note: str | None,
    ) -> PreparedRecord:
        policy = decisions.policy
        fact_year = policy.fact_year(self.period)
        facts_json, facts_sha256 = chunk.snapshot(row, fact_year)
        decision = Decision(
            policy.id,
            policy.version,
            policy.sha256,
            self.period,
            fact_year,
            chunk.usccs[row],
            self.today.isoformat(),
            decisions.outcome(row),
            decisions.amount_fen(row),
            decisions.mask(row),
        )
        record = prepare_decision(
            decision, facts_json, facts_sha256, self.actor, self.batch_id, note, recorded_at=chunk.recorded_at
        )
        records[policy.id].append(record)
        return record


def evaluate_together(engine: Engine, evaluators: Sequence[ChunkEvaluator], usccs: Sequence[str]) -> list[ChunkOutcome]:
    """Decide a chunk for batches of one period and evaluation date at once: read once, every
    enterprise decided once under all their policies, each facts snapshot made once; each
    batch's outcome, in the order of `evaluators`."""
    first = evaluators[0]
    if any((e.period, e.today) != (first.period, first.today) for e in evaluators):
        raise ValueError("batches run together share their period and evaluation date")
    plan = plan_for(policies_of(evaluators), first.period)
    with engine.connect() as conn:
        chunk = read_chunk(conn, usccs, plan.fact_years)
        standing = standing_grants(conn, first.period, usccs)
    decisions = decide_chunk(plan, chunk.columns, today=first.today)
    return [e.outcome(chunk, decisions, standing) for e in evaluators]


def standing_grants(conn: Connection, period: int, usccs: Sequence[str]) -> dict[str, dict[str, str]]:
    """The standing grants of the period held by `usccs`: USCC -> {policy id: grant id}. One
    query over the USCC range the chunk spans (a batch's chunk is a range; thousands of values in
    an IN list cost more to bind than the query to run), filtered to the chunk here."""
    if not usccs:
        return {}
    wanted = set(usccs)
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for row in conn.execute(
        select(grant.c.uscc, grant.c.policy_id, grant.c.grant_id).where(
            grant.c.period == period, grant.c.released == "", grant.c.uscc.between(min(wanted), max(wanted))
        )
    ):
        if row.uscc in wanted:
            out[row.uscc][row.policy_id] = row.grant_id
    return dict(out)


def policies_of(evaluators: Sequence[ChunkEvaluator]) -> list[LoadedPolicy]:
    """Every policy the batches decide under (theirs and their rivals), once each, by id. Two
    texts of one policy cannot be decided in one pass: such batches do not run together."""
    by_id: dict[str, LoadedPolicy] = {}
    for evaluator in evaluators:
        for policy in (evaluator.policy, *evaluator.rivals):
            known = by_id.setdefault(policy.id, policy)
            if known.sha256 != policy.sha256:
                raise ValueError(
                    f"{policy.id}: two rule texts ({known.sha256[:12]}, {policy.sha256[:12]}) in batches run together"
                )
    return [by_id[policy_id] for policy_id in sorted(by_id)]


def excluded_grants(conn: Connection, excluded: Sequence[str], period: int, usccs: set[str]) -> dict[str, str]:
    """Enterprises holding a standing grant of a policy in `excluded`, in the period:
    USCC -> "grant <id> of <policy>"."""
    if not excluded or not usccs:
        return {}
    out: dict[str, str] = {}
    for part in in_lists(sorted(usccs)):
        query = select(grant.c.uscc, grant.c.grant_id, grant.c.policy_id).where(
            grant.c.policy_id.in_(sorted(excluded)),
            grant.c.period == period,
            grant.c.released == "",
            grant.c.uscc.in_(part),
        )
        out.update({r.uscc: f"grant {r.grant_id} of {r.policy_id}" for r in conn.execute(query).all()})
    return out


def now_ms() -> int:
    return int(time.time() * 1000)


def new_worker_id() -> str:
    import socket

    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
