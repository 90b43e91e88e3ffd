"""Lookups: one enterprise decided on request by the batches' own decide path, explained by the
reference evaluator, and recorded compactly through the group-commit recorder.

A lookup (ExplainEligibility, ListMatchedBenefits, `benefits evaluate`)
- reads the enterprise's rows once, as a row of a chunk (`service.evaluation.chunks`: one query
  per kind), and decides it with `decide_chunk` under the plan of every policy in force for the
  period (cached per process, so its packed rulesets stay registered and warm): the decision a
  batch would make;
- evaluates it with the reference evaluator (`rules.evaluator.evaluate`) on the same document,
  for the full trace the explanation shows. Outcome, amount and clause mask must be the
  decision's: a disagreement is an error (INTERNAL), logged, never answered;
- records the decision (`prepare_decision`) and answers only once the recorder has committed
  it, so the evaluation id it answers with is durable.

Concurrent lookups share all of it: a caller that finds nobody reading becomes the reader for
every lookup queued at that moment - one chunk (one query per kind), one `decide_chunk`, each
lookup explained and its records handed to the recorder together - then hands the reading to the
next caller queued and waits, like the others, for the commit. Alone, a lookup is a chunk of
one; no lookup waits for company. A chunk that cannot be read or decided is done again one
enterprise at a time, so an error belongs to the lookup that caused it.

Reuse: when a record of the same decision already exists - the same rule text on the same facts
snapshot on the same evaluation date (`find_recorded`) - the lookup answers with that record's
id instead of recording again, once the reference evaluator has decided as the record says
(otherwise the record is not faithful: DATA_LOSS, as `render_faithful` refuses it).
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection, Engine

from rules.errors import EngineDisagreementError
from rules.evaluator import Evaluation, evaluate
from rules.loader import LoadedPolicy, PolicySet
from service.audit.decision import DECISION_FIELDS, Decision
from service.audit.records import Actor, PreparedRecord, evaluation_record, find_recorded, prepare_decision
from service.errors import EnterpriseNotFoundError, RecordMismatchError
from service.evaluation.chunks import Chunk, read_chunk
from service.evaluation.decide import PolicyDecisions, decide_chunk, plan_for
from service.evaluation.recorder import Recorder

log = logging.getLogger("benefits.lookups")

# What a decision is, beyond the engine that made it (a record of another engine version that
# decided the same is the same decision, as replay judges it).
_COMPARED = tuple(name for name in DECISION_FIELDS if name != "engine")
# Which (facts, rule text) pairs have any record on a day: one probe of the reuse index for a
# whole chunk, so that `find_recorded` (which vouches for a record) runs only where one exists.
# By the enterprises first: that is the records' index (`ix_evaluation_record_enterprise`); by
# the facts alone the query read every record (1 lookup/s at 1,000,000 enterprises).
_RECORDED_PAIRS = select(evaluation_record.c.facts_sha256, evaluation_record.c.rule_sha256).where(
    evaluation_record.c.uscc.in_(bindparam("usccs", expanding=True)),
    evaluation_record.c.facts_sha256.in_(bindparam("facts", expanding=True)),
    evaluation_record.c.evaluated_on == bindparam("evaluated_on"),
)


@dataclass(frozen=True)
class Lookup:
    """One policy's answer for the enterprise: the reference evaluation (full trace), the id of
    the record that holds its decision, and whether that record was made before (reused)."""

    policy: LoadedPolicy
    evaluation: Evaluation
    evaluation_id: str
    reused: bool


@dataclass
class _Request:
    """One caller's lookup while it is queued, read and answered."""

    uscc: str
    policies: tuple[LoadedPolicy, ...]
    actor: Actor
    answers: list[Lookup] = field(default_factory=list)
    committed: Future[None] | None = None  # the recorder's, for the records of `answers`
    error: BaseException | None = None
    settled: bool = False
    wake: threading.Event = field(default_factory=threading.Event)  # settled, or its turn to read

    def settle(
        self,
        answers: list[Lookup] | None = None,
        committed: Future[None] | None = None,
        error: BaseException | None = None,
    ) -> None:
        self.answers, self.committed, self.error, self.settled = answers or [], committed, error, True
        self.wake.set()


@dataclass
class _Group:
    """Queued lookups that can share one chunk: the same policy set, period and day."""

    policies: PolicySet
    period: int
    today: date
    requests: list[_Request] = field(default_factory=list)


def in_force(policies: PolicySet, period: int) -> list[LoadedPolicy]:
    """The policies covering `period`, in the set's order (ListMatchedBenefits pages them)."""
    return [p for p in policies if p.covers(period)]


class Lookups:
    """Lookups against one database, recorded by one recorder."""

    def __init__(self, engine: Engine, recorder: Recorder, *, reuse: bool = True) -> None:
        self.engine, self.recorder, self.reuse = engine, recorder, reuse
        self.chunks_read = 0  # chunks read and decided ...
        self.lookups_read = 0  # ... for this many lookups: how much they shared
        self._queue: list[tuple[_Request, PolicySet, int, date]] = []
        self._reading = False  # a caller is reading; the others queue
        self._lock = threading.Lock()

    @property
    def queued(self) -> int:
        """Lookups waiting for a reader (the next shared chunk)."""
        with self._lock:
            return len(self._queue)

    def explain(
        self, policies: PolicySet, *, uscc: str, policy_id: str, period: int, today: date, actor: Actor
    ) -> Lookup:
        """One enterprise under one policy."""
        return self.look_up(policies, uscc=uscc, policy_ids=[policy_id], period=period, today=today, actor=actor)[0]

    def look_up(
        self, policies: PolicySet, *, uscc: str, policy_ids: Sequence[str], period: int, today: date, actor: Actor
    ) -> list[Lookup]:
        """One enterprise under each of `policy_ids` (none: whether it is on record), in that
        order, every new record of the call committed before this returns. An unknown policy, or
        one not in force for the period, is refused before the database is read;
        EnterpriseNotFoundError when nothing at all is on record for the USCC."""
        chosen = tuple(policies.get(policy_id) for policy_id in policy_ids)
        for policy in chosen:
            policy.compiled(period)  # PeriodNotCoveredError names the period
        request = _Request(uscc, chosen, actor)
        with self._lock:
            self._queue.append((request, policies, period, today))
            reader, self._reading = not self._reading, True
        if not reader:
            request.wake.wait()  # settled by the reader, or handed the reading
        while not request.settled:  # this caller reads for everyone queued
            with self._lock:
                taken, self._queue = self._queue, []
            try:
                self._read_all(taken)
            finally:
                with self._lock:
                    if self._queue:  # one waiter wakes to read next: never all of them
                        self._queue[0][0].wake.set()
                    else:
                        self._reading = False
        if request.error is not None:
            raise request.error
        if request.committed is not None:
            request.committed.result()  # the ids answered are durable (or the database's error)
        return request.answers

    # ------------------------------------------------------------------------------ the reader
    def _read_all(self, taken: Sequence[tuple[_Request, PolicySet, int, date]]) -> None:
        """Settle every taken request (never raises while one is unsettled)."""
        groups: dict[tuple[int, int, date], _Group] = {}
        for request, policies, period, today in taken:
            groups.setdefault((id(policies), period, today), _Group(policies, period, today)).requests.append(request)
        try:
            for group in groups.values():
                try:
                    self._read(group, group.requests)
                except Exception as exc:
                    if len(group.requests) == 1:
                        group.requests[0].settle(error=exc)
                        continue
                    for request in group.requests:  # alone, each meets only its own error
                        if request.settled:
                            continue
                        try:
                            self._read(group, [request])
                        except Exception as own:
                            request.settle(error=own)
        finally:
            for request, *_ in taken:
                if not request.settled:
                    request.settle(error=RuntimeError("the lookup was interrupted"))

    def _read(self, group: _Group, requests: Sequence[_Request]) -> None:
        """Read and decide the requests' enterprises as one chunk, answer each, and hand all their
        new records to the recorder at once."""
        policies, period, today = group.policies, group.period, group.today
        usccs = list(dict.fromkeys(r.uscc for r in requests))
        rows = {uscc: row for row, uscc in enumerate(usccs)}
        with self.engine.connect() as conn:  # one round trip for every enterprise of the chunk
            chunk = read_chunk(conn, usccs, {p.fact_year(period) for r in requests for p in r.policies})
            present = [r for r in requests if chunk.on_record(rows[r.uscc])]
            recorded = self._recorded(conn, chunk, rows, present, period, today) if self.reuse else {}
        on_record = {r.uscc for r in present}
        fresh = sorted({p.id for r in present for p in r.policies if p.id not in recorded.get(r.uscc, {})})
        decisions = (
            decide_chunk(plan_for(in_force(policies, period), period), chunk.columns, today=today, only=fresh)
            if fresh
            else {}
        )
        self.chunks_read += 1
        self.lookups_read += len(requests)
        answered: list[tuple[_Request, list[Lookup]]] = []
        pending: list[tuple[LoadedPolicy, PreparedRecord]] = []
        for request in requests:
            if request.uscc not in on_record:
                request.settle(error=EnterpriseNotFoundError(request.uscc))
                continue
            try:  # an explanation that fails its checks fails that lookup alone
                answers, records = _answer(
                    chunk, rows[request.uscc], request, decisions, recorded.get(request.uscc, {}), period, today
                )
            except Exception as exc:
                request.settle(error=exc)
                continue
            answered.append((request, answers))
            pending += records
        committed = self.recorder.submit(pending)  # one ticket: the chunk's records commit together
        for request, answers in answered:
            request.settle(answers, committed)

    def _recorded(
        self,
        conn: Connection,
        chunk: Chunk,
        rows: Mapping[str, int],
        requests: Sequence[_Request],
        period: int,
        today: date,
    ) -> dict[str, dict[str, Mapping[str, Any]]]:
        """The records already made of the requested decisions: USCC -> policy id -> record."""
        wanted = {p.id: p for r in requests for p in r.policies}
        keys = {
            (r.uscc, p.id): chunk.snapshot(rows[r.uscc], p.fact_year(period))[1] for r in requests for p in r.policies
        }
        if not keys:
            return {}
        evaluated_on = today.isoformat()
        pairs = {
            (facts, rule)
            for facts, rule in conn.execute(
                _RECORDED_PAIRS,
                {
                    "usccs": sorted({uscc for uscc, _ in keys}),
                    "facts": sorted(set(keys.values())),
                    "evaluated_on": evaluated_on,
                },
            )
        }
        found: dict[str, dict[str, Mapping[str, Any]]] = defaultdict(dict)
        for (uscc, policy_id), facts_sha256 in keys.items():
            rule_sha256 = wanted[policy_id].sha256
            if (facts_sha256, rule_sha256) not in pairs:
                continue
            record = find_recorded(
                conn,
                rule_sha256=rule_sha256,
                facts_sha256=facts_sha256,
                evaluated_on=evaluated_on,
                uscc=uscc,
                policy_id=policy_id,
                period=period,
            )
            if record is not None:
                found[uscc][policy_id] = record
        return found


def _answer(
    chunk: Chunk,
    row: int,
    request: _Request,
    decisions: Mapping[str, PolicyDecisions],
    recorded: Mapping[str, Mapping[str, Any]],
    period: int,
    today: date,
) -> tuple[list[Lookup], list[tuple[LoadedPolicy, PreparedRecord]]]:
    """Explain one row under each of the request's policies with the reference evaluator, check
    it against the decision or the reused record; the answers and the records to make."""
    answers: list[Lookup] = []
    pending: list[tuple[LoadedPolicy, PreparedRecord]] = []
    for policy in request.policies:
        fact_year = policy.fact_year(period)
        evaluation = evaluate(policy.compiled(period), chunk.document(row, fact_year), today=today)
        record = recorded.get(policy.id)
        if record is not None:
            _check_record(record, Decision.of(evaluation))
            answers.append(Lookup(policy, evaluation, str(record["evaluation_id"]), True))
            continue
        decision = _decision(decisions[policy.id], row, period, today)
        _check_agreement(policy, request.uscc, decisions[policy.id], row, decision, Decision.of(evaluation))
        facts_json, facts_sha256 = chunk.snapshot(row, fact_year)
        prepared = prepare_decision(decision, facts_json, facts_sha256, request.actor)
        pending.append((policy, prepared))
        answers.append(Lookup(policy, evaluation, prepared.evaluation_id, False))
    return answers, pending


def _decision(decisions: PolicyDecisions, row: int, period: int, today: date) -> Decision:
    """The decide path's decision of one row, as its record stores it."""
    policy = decisions.policy
    return Decision(
        policy.id,
        policy.version,
        policy.sha256,
        period,
        policy.fact_year(period),
        decisions.columns.usccs[row],
        today.isoformat(),
        decisions.outcome(row),
        decisions.amount_fen(row),
        decisions.mask(row),
    )


def _check_agreement(
    policy: LoadedPolicy, uscc: str, decisions: PolicyDecisions, row: int, decided: Decision, explained: Decision
) -> None:
    """The decide path (vectorised trace and packed rulesets, cross-checked) and the reference
    evaluator must reach the same decision; else neither is answered."""
    problems = []
    if row in decisions.errors:
        problems.append(f"decide path: {decisions.errors[row]}")
    problems += [
        f"{name}: decide path {decided.shown(name)}, reference evaluator {explained.shown(name)}"
        for name in _COMPARED
        if getattr(decided, name) != getattr(explained, name)
    ]
    if problems:
        log.error("lookup %s %s: %s", policy.id, uscc, "; ".join(problems))
        raise EngineDisagreementError(policy.id, uscc, problems)


def _check_record(record: Mapping[str, Any], explained: Decision) -> None:
    """A reused record must hold the decision the reference evaluator makes of the same inputs."""
    evaluation_id = str(record.get("evaluation_id"))
    try:
        stored = Decision.from_record(record)
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordMismatchError(evaluation_id, [f"the record is malformed: {exc}"]) from exc
    differences = [
        f"{name}: stored {stored.shown(name)}, evaluated {explained.shown(name)}"
        for name in _COMPARED
        if getattr(stored, name) != getattr(explained, name)
    ]
    if differences:
        log.error("recorded evaluation %s does not decide as its inputs do: %s", evaluation_id, "; ".join(differences))
        raise RecordMismatchError(evaluation_id, differences)
