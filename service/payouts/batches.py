"""Creating a payout batch: evaluate, stack, pro-rate, grant exactly once, seal - in one
transaction, so that a crash leaves either no batch or a complete DRAFT one.

A grant is unique per (enterprise, policy, period), enforced by the database; a second batch
for a policy and period picks up only the enterprises not granted yet. Creating is idempotent
on the client's request_id: a repeat returns the same batch, the same id with other arguments
is refused.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    insert,
    select,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from rules.evaluator import ELIGIBLE, evaluate
from rules.loader import PolicySet
from service.audit.ledger import ledger_transaction
from service.audit.records import Actor, create_audit_schema, record_with_hash, seal_decisions
from service.errors import BatchNotFoundError, BatchStateError, DuplicateBatchError, PermissionDeniedError
from service.facts_documents import DocumentSource, build_document
from service.payouts.allocation import prorate, stack

metadata = MetaData()

payout_batch = Table(
    "payout_batch", metadata,
    Column("batch_id", String(40), primary_key=True),
    Column("request_id", String(100), nullable=False, unique=True),
    Column("policy_id", String(100), nullable=False),
    Column("policy_version", String(50), nullable=False),
    Column("rule_sha256", String(64), nullable=False),
    Column("period", Integer, nullable=False),
    Column("state", String(20), nullable=False),
    Column("line_count", BigInteger, nullable=False),
    Column("total_fen", BigInteger, nullable=False),
    Column("created_by", String(100), nullable=False),
    Column("approved_by", String(100), nullable=True),
    Column("created_at", String(40), nullable=False),
    Column("merkle_root", String(64), nullable=False))

grant = Table(
    "grant_award", metadata,
    Column("grant_id", String(40), primary_key=True),
    Column("uscc", String(18), nullable=False),
    Column("policy_id", String(100), nullable=False),
    Column("period", Integer, nullable=False),
    Column("conflict_group", String(100), nullable=True),
    Column("batch_id", String(40), nullable=False),
    Column("full_fen", BigInteger, nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("tops_up", String(100), nullable=True),
    Column("evaluation_id", String(40), nullable=False),
    Column("record_sha256", String(64), nullable=False),
    Column("state", String(12), nullable=False, server_default="PENDING"),   # PENDING, PAID, RETURNED
    Column("return_reason", String(200), nullable=True),
    # '' while the grant stands; its own id once the bank returned it, which frees the
    # (enterprise, policy, period) for one new grant after the account is corrected.
    Column("released", String(40), nullable=False, server_default=""),
    # Exactly once: whatever retries, restarts or concurrent calls do.
    UniqueConstraint("uscc", "policy_id", "period", "released", name="one_grant_per_enterprise_policy_period"))


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


def create_payout_schema(engine: Engine) -> None:
    from service.payouts.export import create_export_schema

    create_audit_schema(engine)
    metadata.create_all(engine)
    create_export_schema(engine)


def create_batch(engine: Engine, policies: PolicySet, *, policy_id: str, period: int, request_id: str,
                 actor: Actor, today: date) -> Batch:
    """Create (or return, for a repeated request_id) the DRAFT batch of a policy and period."""
    existing = _by_request(engine, request_id)
    if existing is not None:
        if (existing.policy_id, existing.period) != (policy_id, period):
            raise DuplicateBatchError(f"request_id {request_id!r} was used for {existing.policy_id} "
                                      f"{existing.period}")
        return existing
    policy = policies.get(policy_id)
    compiled = policy.compiled(period)
    group = policy.model.conflict_group
    rivals = [p for p in policies if group and p.id != policy.id and p.model.conflict_group == group
              and p.covers(period)]
    batch_id = "pb_" + hashlib.sha256(request_id.encode()).hexdigest()[:24]
    source = DocumentSource(engine)
    with engine.connect() as conn:
        granted = {row.uscc for row in conn.execute(
            select(grant.c.uscc).where(grant.c.policy_id == policy_id, grant.c.period == period,
                                       grant.c.released == ""))}
    eligible: dict[str, tuple[int, int, str | None, str, str]] = {}
    for rows in source.all_rows():
        if rows.uscc in granted:
            continue  # never twice
        document = build_document(rows, policy.fact_year(period))
        result = evaluate(compiled, document, today=today)
        if result.outcome != ELIGIBLE:
            continue
        awards = {policy.id: result.amount_fen}
        for rival in rivals:
            rival_result = evaluate(rival.compiled(period), build_document(rows, rival.fact_year(period)),
                                    today=today)
            if rival_result.outcome == ELIGIBLE:
                awards[rival.id] = rival_result.amount_fen
        paid = _group_grants(engine, rows.uscc, group, period) if group else {}
        award = stack(awards, paid)[policy.id]
        if award.payable_fen <= 0:
            continue
        evaluation_id, record_sha = record_with_hash(engine, result, document, policy, actor, batch_id=batch_id)
        eligible[rows.uscc] = (result.amount_fen, award.payable_fen, award.tops_up, evaluation_id, record_sha)
    shares = prorate({u: v[1] for u, v in eligible.items()}, policy.budget_fen)
    try:
        _write_batch(engine, batch_id, request_id, policy, period, group, eligible, shares, actor)
    except IntegrityError:
        # Another call made this batch (same request_id) or granted these enterprises first.
        existing = _by_request(engine, request_id)
        if existing is not None and (existing.policy_id, existing.period) == (policy_id, period):
            return existing
        raise BatchStateError(f"another batch for {policy_id} {period} was created at the same time; "
                              "retry to pick up whoever it did not grant") from None
    batch = _by_request(engine, request_id)
    assert batch is not None
    return batch


def _write_batch(engine: Engine, batch_id: str, request_id: str, policy: Any, period: int,
                 group: str | None, eligible: dict[str, tuple[int, int, str | None, str, str]],
                 shares: list[Any], actor: Actor) -> None:
    policy_id = policy.id
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with ledger_transaction(engine) as conn:
        lines = [{"grant_id": f"{batch_id}-{i:06d}", "uscc": s.uscc, "policy_id": policy_id, "period": period,
                  "conflict_group": group, "batch_id": batch_id, "full_fen": eligible[s.uscc][0],
                  "amount_fen": s.paid_fen, "tops_up": eligible[s.uscc][2],
                  "evaluation_id": eligible[s.uscc][3], "record_sha256": eligible[s.uscc][4]}
                 for i, s in enumerate(shares, start=1)]
        if lines:
            conn.execute(insert(grant), lines)
        seal = seal_decisions(conn, batch_id, [line["record_sha256"] for line in lines])
        conn.execute(insert(payout_batch).values(
            batch_id=batch_id, request_id=request_id, policy_id=policy_id, policy_version=policy.version,
            rule_sha256=policy.sha256, period=period, state="DRAFT", line_count=len(lines),
            total_fen=sum(line["amount_fen"] for line in lines), created_by=actor.principal,
            created_at=now, merkle_root=seal["merkle_root"]))


def _by_request(engine: Engine, request_id: str) -> Batch | None:
    with engine.connect() as conn:
        row = conn.execute(select(payout_batch).where(payout_batch.c.request_id == request_id)).first()
    if row is None:
        return None
    return _batch(row)


def _batch(row: object) -> Batch:
    r = row  # a Row of payout_batch
    return Batch(r.batch_id, r.request_id, r.policy_id, r.period, r.state, r.line_count,  # type: ignore[attr-defined]
                 r.total_fen, r.merkle_root, r.created_by, r.approved_by, r.policy_version,  # type: ignore[attr-defined]
                 r.created_at)  # type: ignore[attr-defined]


def _group_grants(engine: Engine, uscc: str, group: str, period: int) -> dict[str, int]:
    with engine.connect() as conn:
        return {r.policy_id: r.amount_fen for r in conn.execute(
            select(grant.c.policy_id, grant.c.amount_fen).where(
                grant.c.uscc == uscc, grant.c.conflict_group == group, grant.c.period == period,
                grant.c.released == ""))}


def lines_of(connection: Connection, batch_id: str) -> list[dict[str, object]]:
    rows = connection.execute(select(grant).where(grant.c.batch_id == batch_id).order_by(grant.c.uscc))
    return [dict(r._mapping) for r in rows]


def get_batch(engine: Engine, batch_id: str) -> Batch:
    with engine.connect() as conn:
        row = conn.execute(select(payout_batch).where(payout_batch.c.batch_id == batch_id)).first()
    if row is None:
        raise BatchNotFoundError(f"no payout batch {batch_id!r}")
    return _batch(row)


def approve(engine: Engine, batch_id: str, approver: Actor) -> Batch:
    """DRAFT -> APPROVED by a second principal (four eyes)."""
    batch = get_batch(engine, batch_id)
    if approver.principal == batch.created_by:
        raise PermissionDeniedError("the creator of a batch may not approve it")
    return _transition(engine, batch_id, "DRAFT", "APPROVED", approved_by=approver.principal)


def cancel(engine: Engine, batch_id: str) -> Batch:
    """DRAFT -> CANCELLED; its grants are released, so a later batch can grant them."""
    with engine.begin() as conn:
        conn.execute(grant.delete().where(grant.c.batch_id == batch_id))
        _transition_in(conn, batch_id, "DRAFT", "CANCELLED")
    return get_batch(engine, batch_id)


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
    from service.errors import InvalidArgumentError

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
