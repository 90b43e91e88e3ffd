"""Payout batches: starting one (idempotent on the client's request_id), reading it, and its
lifecycle after the run - RUNNING -> DRAFT -> APPROVED -> EXPORTED -> SETTLED, or CANCELLED
from DRAFT. Every transition is a compare-and-set on the state, so concurrent calls cannot
both succeed. The background run itself (evaluate, stack, pro-rate, grant, seal) is `runner`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from rules.loader import PolicySet
from service.audit.ledger import ledger_transaction
from service.audit.records import Actor, remember_policy
from service.errors import (
    BatchNotFoundError,
    BatchRunningError,
    BatchStateError,
    DuplicateBatchError,
    InvalidArgumentError,
    PermissionDeniedError,
)
from service.payouts.tables import create_payout_schema, grant, payout_batch

__all__ = ["Batch", "approve", "cancel", "create_payout_schema", "get_batch", "grant", "lines_of",
           "record_results", "start_batch"]


@dataclass(frozen=True)
class Batch:
    batch_id: str
    request_id: str
    policy_id: str
    period: int
    state: str
    line_count: int
    total_fen: int
    merkle_root: str
    created_by: str
    approved_by: str | None
    policy_version: str
    created_at: str
    enterprise_count: int = 0
    evaluated_count: int = 0
    eligible_count: int = 0
    eligible_fen: int = 0
    error_count: int = 0


def batch_id_for(request_id: str) -> str:
    """The batch id follows from the request id: a retried request names the same batch."""
    return "pb_" + hashlib.sha256(request_id.encode()).hexdigest()[:24]


def start_batch(engine: Engine, policies: PolicySet, *, policy_id: str, period: int, request_id: str,
                actor: Actor, today: date) -> Batch:
    """Create the RUNNING batch of a policy and period, or return the batch of a repeated
    request_id. Refused while another batch of the same policy and period is running."""
    existing = _by_request(engine, request_id)
    if existing is not None:
        return _same_request(existing, request_id, policy_id, period)
    policy = policies.get(policy_id)
    policy.compiled(period)  # refuses a period the policy does not cover, before anything is written
    from service.facts_documents import DocumentSource

    enterprise_count = DocumentSource(engine).count()
    try:
        # The batch and the exact rule text it runs under commit together: a resume after a
        # restart finds the text even if the rules were reloaded in between.
        with ledger_transaction(engine) as conn:
            remember_policy(conn, policy)
            conn.execute(insert(payout_batch).values(
                batch_id=batch_id_for(request_id), request_id=request_id, policy_id=policy.id,
                policy_version=policy.version, rule_sha256=policy.sha256, period=period, state="RUNNING",
                running_key=running_key(policy.id, period), created_by=actor.principal,
                created_role=actor.role, created_at=_now(), evaluated_on=today.isoformat(),
                enterprise_count=enterprise_count))
    except IntegrityError:
        existing = _by_request(engine, request_id)
        if existing is not None:  # the same request, made concurrently
            return _same_request(existing, request_id, policy_id, period)
        with engine.connect() as conn:
            running = conn.execute(select(payout_batch.c.batch_id).where(
                payout_batch.c.running_key == running_key(policy.id, period))).scalar()
        if running is None:
            raise BatchRunningError(f"a batch of {policy_id} {period} was running and has just finished: retry "
                                    "to pick up whoever it did not grant") from None
        raise BatchRunningError(f"batch {running} of {policy_id} {period} is running: watch it, and start "
                                "another when it is DRAFT (it picks up whoever this one did not grant)") from None
    return get_batch(engine, batch_id_for(request_id))


def running_key(policy_id: str, period: int) -> str:
    return f"{policy_id}/{period}"


def _same_request(existing: Batch, request_id: str, policy_id: str, period: int) -> Batch:
    if (existing.policy_id, existing.period) != (policy_id, period):
        raise DuplicateBatchError(f"request_id {request_id!r} was used for {existing.policy_id} {existing.period}")
    return existing


def _by_request(engine: Engine, request_id: str) -> Batch | None:
    with engine.connect() as conn:
        row = conn.execute(select(payout_batch).where(payout_batch.c.request_id == request_id)).first()
    return None if row is None else _batch(row)


def _batch(row: object) -> Batch:
    r = row._mapping  # type: ignore[attr-defined]
    return Batch(r["batch_id"], r["request_id"], r["policy_id"], r["period"], r["state"], r["line_count"],
                 r["total_fen"], r["merkle_root"], r["created_by"], r["approved_by"], r["policy_version"],
                 r["created_at"], r["enterprise_count"], r["evaluated_count"], r["eligible_count"],
                 r["eligible_fen"], r["error_count"])


def get_batch(engine: Engine, batch_id: str) -> Batch:
    with engine.connect() as conn:
        row = conn.execute(select(payout_batch).where(payout_batch.c.batch_id == batch_id)).first()
    if row is None:
        raise BatchNotFoundError(f"no payout batch {batch_id!r}")
    return _batch(row)


def lines_of(connection: Connection, batch_id: str, *, offset: int = 0,
             limit: int | None = None) -> list[dict[str, object]]:
    """A batch's lines (grants) in USCC order."""
    query = select(grant).where(grant.c.batch_id == batch_id).order_by(grant.c.uscc).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return [dict(r._mapping) for r in connection.execute(query)]


def approve(engine: Engine, batch_id: str, approver: Actor) -> Batch:
    """DRAFT -> APPROVED by a second principal (four eyes)."""
    batch = get_batch(engine, batch_id)
    if approver.principal == batch.created_by:
        raise PermissionDeniedError("the creator of a batch may not approve it")
    return _transition(engine, batch_id, "DRAFT", "APPROVED", approved_by=approver.principal)


def cancel(engine: Engine, batch_id: str) -> Batch:
    """DRAFT -> CANCELLED; its grants are released, so a later batch can grant them."""
    with engine.begin() as conn:
        _transition_in(conn, batch_id, "DRAFT", "CANCELLED")
        conn.execute(grant.delete().where(grant.c.batch_id == batch_id))
    return get_batch(engine, batch_id)


def mark_exported(conn: Connection, batch_id: str) -> None:
    _transition_in(conn, batch_id, "APPROVED", "EXPORTED")


def _transition(engine: Engine, batch_id: str, expected: str, new: str, **values: object) -> Batch:
    with engine.begin() as conn:
        _transition_in(conn, batch_id, expected, new, **values)
    return get_batch(engine, batch_id)


def _transition_in(conn: Connection, batch_id: str, expected: str, new: str, **values: object) -> None:
    # Compare-and-set on the state: concurrent transitions cannot both succeed.
    changed = conn.execute(payout_batch.update().where(
        payout_batch.c.batch_id == batch_id, payout_batch.c.state == expected).values(state=new, **values))
    if changed.rowcount != 1:
        state = conn.execute(select(payout_batch.c.state).where(payout_batch.c.batch_id == batch_id)).scalar()
        if state is None:
            raise BatchNotFoundError(f"no payout batch {batch_id!r}")
        raise BatchStateError(f"batch {batch_id} is {state}: only a {expected} batch can become {new}")


def record_results(engine: Engine, batch_id: str, results: list[tuple[str, str, str]]) -> Batch:
    """Bank results (line id, PAID or RETURNED, reason) for an EXPORTED batch; SETTLED once every
    line has one. A returned line is released: a later batch may pay it once more."""
    with engine.begin() as conn:
        state = conn.execute(select(payout_batch.c.state).where(payout_batch.c.batch_id == batch_id)).scalar()
        if state is None:
            raise BatchNotFoundError(f"no payout batch {batch_id!r}")
        if state != "EXPORTED":
            raise BatchStateError(f"batch {batch_id} is {state}: results are recorded for an EXPORTED batch")
        for index, (line_id, outcome, reason) in enumerate(results):
            if outcome not in ("PAID", "RETURNED"):
                raise InvalidArgumentError([(f"results[{index}].state", "PAID or RETURNED")])
            if outcome == "RETURNED" and not reason:
                raise InvalidArgumentError([(f"results[{index}].return_reason", "the bank's reason is required")])
            changed = conn.execute(grant.update().where(
                grant.c.grant_id == line_id, grant.c.batch_id == batch_id, grant.c.state == "PENDING").values(
                state=outcome, return_reason=reason or None,
                released=line_id if outcome == "RETURNED" else ""))
            if changed.rowcount != 1:
                raise InvalidArgumentError([(f"results[{index}].line_id",
                                             f"{line_id} is not a pending line of this batch")])
        pending = conn.execute(select(grant.c.grant_id).where(grant.c.batch_id == batch_id,
                                                              grant.c.state == "PENDING")).first()
        if pending is None:
            _transition_in(conn, batch_id, "EXPORTED", "SETTLED")
    return get_batch(engine, batch_id)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
