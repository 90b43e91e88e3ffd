"""Payout batches: starting one (idempotent on the client's request_id), reading it, and its
lifecycle after the run - RUNNING -> DRAFT -> APPROVED -> EXPORTED -> SETTLED, or CANCELLED
from DRAFT or APPROVED. Every transition is a compare-and-set on the state, so concurrent calls
cannot both succeed, and every change of money state is sealed in the ledger in the transaction
that makes it (`seals`). The background run itself (evaluate, stack, pro-rate, grant) is `runner`.

No single principal can cause a second payment: the creator may not approve; a return the bank
reported releases its grant only when a finance_approver who did not record it confirms it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import orjson
from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from rules.loader import LoadedPolicy, PolicySet
from service.audit.ledger import ledger_transaction
from service.audit.records import Actor, remember_policy
from service.errors import (
    BatchNotFoundError,
    BatchRunningError,
    BatchStateError,
    ConflictingResultError,
    DuplicateBatchError,
    InvalidArgumentError,
    PermissionDeniedError,
)
from service.payouts.seals import MoneyEvent, read_lines, seal_event
from service.payouts.states import COUNTED_LINE_STATES, OPEN_LINE_STATES, BatchState, LineState
from service.payouts.tables import (
    MAX_REASON_LENGTH,
    MAX_RETURN_REASON_LENGTH,
    create_payout_schema,
    grant,
    in_lists,
    payout_batch,
)

__all__ = [
    "BankResult",
    "Batch",
    "approve",
    "cancel",
    "confirm_returns",
    "create_payout_schema",
    "get_batch",
    "grant",
    "lines_of",
    "record_results",
    "start_batch",
    "withdraw",
]

APPROVER_ROLE = "finance_approver"
_ID = re.compile(r"[\x21-\x7e]{1,40}")  # what any line or batch id looks like (printable ASCII)


@dataclass(frozen=True)
class Batch:
    batch_id: str
    request_id: str
    policy_id: str
    period: int
    state: BatchState
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
    cancelled_by: str | None = None
    cancel_reason: str | None = None


@dataclass(frozen=True)
class BankResult:
    """One line's result as the bank gave it: PAID, or RETURNED with the bank's reason."""

    line_id: str
    state: LineState
    reason: str = ""
    where: str = ""  # how the caller names it in errors (`results[3]`, `TxInfAndSts[2]`)


def batch_id_for(request_id: str) -> str:
    """The batch id follows from the request id: a retried request names the same batch."""
    return "pb_" + hashlib.sha256(request_id.encode()).hexdigest()[:24]


def conflict_rivals(policies: PolicySet, policy: LoadedPolicy, period: int) -> list[LoadedPolicy]:
    """The policies of the conflict group whose awards a batch of `policy` stacks against
    (就高不重复), as loaded now: a batch pins their texts when it starts."""
    group = policy.model.conflict_group
    return [p for p in policies if group and p.id != policy.id and p.model.conflict_group == group and p.covers(period)]


def running_key(policies: PolicySet, policy_id: str, period: int) -> str:
    """One batch at a time per period for a policy and every policy it excludes (so that both
    cannot pay the same enterprise)."""
    return f"{'+'.join(policies.exclusion_family(policy_id))}/{period}"


def start_batch(
    engine: Engine, policies: PolicySet, *, policy_id: str, period: int, request_id: str, actor: Actor, today: date
) -> Batch:
    """Create the RUNNING batch of a policy and period, or return the batch of a repeated
    request_id. Refused while another batch of the same policy (or one it excludes) and period
    is running."""
    existing = _by_request(engine, request_id)
    if existing is not None:
        return _same_request(existing, request_id, policy_id, period)
    policy = policies.get(policy_id)
    policy.compiled(period)  # refuses a period the policy does not cover, before anything is written
    from service.facts_documents import DocumentSource

    enterprise_count = DocumentSource(engine).count()
    key = running_key(policies, policy.id, period)
    batch_id = batch_id_for(request_id)
    try:
        # The batch and the exact rule text it runs under commit together: a resume after a
        # restart finds the text even if the rules were reloaded in between.
        rivals = conflict_rivals(policies, policy, period)
        with ledger_transaction(engine) as conn:
            for loaded in (policy, *rivals):
                remember_policy(conn, loaded)
            conn.execute(
                insert(payout_batch).values(
                    batch_id=batch_id,
                    request_id=request_id,
                    policy_id=policy.id,
                    policy_version=policy.version,
                    rule_sha256=policy.sha256,
                    period=period,
                    state=BatchState.RUNNING,
                    running_key=key,
                    created_by=actor.principal,
                    created_role=actor.role,
                    created_at=_now(),
                    evaluated_on=today.isoformat(),
                    enterprise_count=enterprise_count,
                    rival_rules=orjson.dumps([[p.id, p.sha256] for p in rivals]).decode(),
                )
            )
            seal_event(conn, MoneyEvent.START, batch_id, actor)
    except IntegrityError:
        existing = _by_request(engine, request_id)
        if existing is not None:  # the same request, made concurrently
            return _same_request(existing, request_id, policy_id, period)
        with engine.connect() as conn:
            running = conn.execute(
                select(payout_batch.c.batch_id, payout_batch.c.policy_id).where(payout_batch.c.running_key == key)
            ).first()
        if running is None:
            raise BatchRunningError(
                f"a batch of {policy_id} {period} was running and has just finished: retry "
                "to pick up whoever it did not grant"
            ) from None
        raise BatchRunningError(
            f"batch {running.batch_id} of {running.policy_id} {period} is running: watch it, "
            "and start another when it is DRAFT (it picks up whoever this one did not grant)"
        ) from None
    return get_batch(engine, batch_id)


def _same_request(existing: Batch, request_id: str, policy_id: str, period: int) -> Batch:
    if (existing.policy_id, existing.period) != (policy_id, period):
        raise DuplicateBatchError(f"request_id {request_id!r} was used for {existing.policy_id} {existing.period}")
    return existing


def _by_request(engine: Engine, request_id: str) -> Batch | None:
    with engine.connect() as conn:
        row = conn.execute(select(payout_batch).where(payout_batch.c.request_id == request_id)).first()
    return None if row is None else _batch(row)


def _batch(row: Any) -> Batch:
    r = row._mapping
    return Batch(
        r["batch_id"],
        r["request_id"],
        r["policy_id"],
        r["period"],
        BatchState(r["state"]),
        r["line_count"],
        r["total_fen"],
        r["merkle_root"],
        r["created_by"],
        r["approved_by"],
        r["policy_version"],
        r["created_at"],
        r["enterprise_count"],
        r["evaluated_count"],
        r["eligible_count"],
        r["eligible_fen"],
        r["error_count"],
        r["cancelled_by"],
        r["cancel_reason"],
    )


def get_batch(engine: Engine, batch_id: str) -> Batch:
    with engine.connect() as conn:
        return batch_in(conn, batch_id)


def batch_in(connection: Connection, batch_id: str) -> Batch:
    row = connection.execute(select(payout_batch).where(payout_batch.c.batch_id == batch_id)).first()
    if row is None:
        raise BatchNotFoundError(f"no payout batch {batch_id!r}")
    return _batch(row)


def lines_of(
    connection: Connection, batch_id: str, *, offset: int = 0, limit: int | None = None
) -> list[dict[str, Any]]:
    """A batch's lines (grants) in line-id order, which is USCC order."""
    query = select(grant).where(grant.c.batch_id == batch_id).order_by(grant.c.grant_id).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return [dict(r._mapping) for r in connection.execute(query)]


def count_lines(connection: Connection, batch_id: str) -> int:
    return int(
        connection.execute(select(func.count()).select_from(grant).where(grant.c.batch_id == batch_id)).scalar_one()
    )


# --------------------------------------------------------------------------------------------- lifecycle


def approve(engine: Engine, batch_id: str, approver: Actor) -> Batch:
    """DRAFT -> APPROVED by a second principal (four eyes): the lines and their payees as sealed."""
    with ledger_transaction(engine) as conn:
        if approver.principal == batch_in(conn, batch_id).created_by:
            raise PermissionDeniedError("the creator of a batch may not approve it")
        _transition_in(conn, batch_id, (BatchState.DRAFT,), BatchState.APPROVED, approved_by=approver.principal)
        seal_event(conn, MoneyEvent.APPROVE, batch_id, approver)
    return get_batch(engine, batch_id)


def withdraw(engine: Engine, batch_id: str, line_ids: Sequence[str], reason: str, actor: Actor) -> Batch:
    """Take pending lines out of a DRAFT or APPROVED batch (a payee changed, say): they are never
    paid by it, their grants are released for a later batch, and the batch's new line count and
    total are sealed."""
    reason = _reason(reason, "reason")
    if not line_ids:
        raise InvalidArgumentError([("line_ids", "at least one line")])
    with ledger_transaction(engine) as conn:
        batch = batch_in(conn, batch_id)
        if batch.state not in (BatchState.DRAFT, BatchState.APPROVED):
            raise BatchStateError(
                f"batch {batch_id} is {batch.state}: lines are withdrawn from a DRAFT or APPROVED batch, before export"
            )
        lines = _lines_named(conn, batch_id, line_ids, "line_ids")
        for index, line_id in enumerate(line_ids):
            if lines[line_id]["state"] != LineState.PENDING:
                raise InvalidArgumentError(
                    [(f"line_ids[{index}]", f"{line_id} is {lines[line_id]['state']}, not a pending line")]
                )
        unique = sorted(set(line_ids))
        _set_lines(conn, unique, state=LineState.WITHDRAWN, withdraw_reason=reason, release=True)
        _recount(conn, batch_id)
        seal_event(conn, MoneyEvent.WITHDRAW, batch_id, actor, lines=read_lines(conn, unique), reason=reason)
    return get_batch(engine, batch_id)


def cancel(engine: Engine, batch_id: str, actor: Actor, reason: str) -> Batch:
    """DRAFT -> CANCELLED, or APPROVED -> CANCELLED by a finance_approver (a batch that was not
    exported); its grants are released, so a later batch can grant them. An EXPORTED batch can
    only be settled: its bank file may already be paid."""
    reason = _reason(reason, "reason")
    with ledger_transaction(engine) as conn:
        state = batch_in(conn, batch_id).state
        allowed = (BatchState.DRAFT, BatchState.APPROVED) if actor.role == APPROVER_ROLE else (BatchState.DRAFT,)
        if state == BatchState.APPROVED and state not in allowed:
            raise PermissionDeniedError("only a finance_approver may cancel an APPROVED batch")
        _transition_in(
            conn, batch_id, allowed, BatchState.CANCELLED, cancelled_by=actor.principal, cancel_reason=reason
        )
        pending = [
            str(r)
            for r in conn.execute(
                select(grant.c.grant_id).where(grant.c.batch_id == batch_id, grant.c.state == LineState.PENDING)
            ).scalars()
        ]
        _set_lines(conn, pending, state=LineState.CANCELLED, release=True)
        seal_event(conn, MoneyEvent.CANCEL, batch_id, actor, lines=read_lines(conn, pending), reason=reason)
    return get_batch(engine, batch_id)


def mark_exported(conn: Connection, batch_id: str) -> None:
    _transition_in(conn, batch_id, (BatchState.APPROVED,), BatchState.EXPORTED)


def record_results(engine: Engine, batch_id: str, results: Sequence[BankResult], actor: Actor) -> Batch:
    """The bank's results for lines of an EXPORTED (or, for a late return, SETTLED) batch.

    PAID takes effect at once. RETURNED makes the line RETURN_PENDING: its grant stays standing
    (no batch pays the enterprise) until a finance_approver who did not record it confirms it
    (`confirm_returns`). A paid line the bank returns later goes the same way. Repeating a
    result a line already has is a harmless no-op (a client retrying); a different one is
    refused. All or nothing: one refused result changes nothing. SETTLED once no line is open.
    """
    if not results:
        raise InvalidArgumentError([("results", "at least one result")])
    with ledger_transaction(engine) as conn:
        state = batch_in(conn, batch_id).state
        if state not in (BatchState.EXPORTED, BatchState.SETTLED):
            raise BatchStateError(f"batch {batch_id} is {state}: results are recorded for an EXPORTED batch")
        lines = _lines_named(
            conn,
            batch_id,
            [r.line_id for r in results],
            "results",
            where=[r.where or f"results[{i}]" for i, r in enumerate(results)],
        )
        changes: dict[str, dict[str, Any]] = {}
        for index, result in enumerate(results):
            where = result.where or f"results[{index}]"
            change = _result_change(lines[result.line_id], result, where, actor)
            if change is None:
                continue
            if result.line_id in changes and changes[result.line_id] != change:
                raise InvalidArgumentError([(f"{where}.line_id", f"{result.line_id} is given two different results")])
            changes[result.line_id] = change
        if changes:
            by_change: dict[tuple[tuple[str, Any], ...], list[str]] = {}
            for line_id, change in changes.items():  # one UPDATE per distinct change, not per line
                by_change.setdefault(tuple(sorted(change.items())), []).append(line_id)
            for columns, ids in by_change.items():
                _set_lines(conn, ids, **dict(columns))
            _settle_or_reopen(conn, batch_id)
            seal_event(conn, MoneyEvent.RESULTS, batch_id, actor, lines=read_lines(conn, changes))
    return get_batch(engine, batch_id)


def _result_change(line: dict[str, Any], result: BankResult, where: str, actor: Actor) -> dict[str, Any] | None:
    """The columns a result changes on a line; None when the line already has exactly this result."""
    current, reason = LineState(line["state"]), result.reason.strip()
    if result.state not in (LineState.PAID, LineState.RETURNED):
        raise InvalidArgumentError([(f"{where}.state", "PAID or RETURNED")])
    if result.state == LineState.RETURNED and not reason:
        raise InvalidArgumentError([(f"{where}.return_reason", "the bank's reason is required")])
    _reason(reason, f"{where}.return_reason", required=False, max_length=MAX_RETURN_REASON_LENGTH)
    if current not in (LineState.PENDING, LineState.PAID, LineState.RETURN_PENDING, LineState.RETURNED):
        raise ConflictingResultError(f"{where}: line {result.line_id} is {current} and was not sent to the bank")
    if result.state == LineState.PAID:
        if current == LineState.PAID:
            return None
        if current == LineState.PENDING:
            return {"state": LineState.PAID, "result_by": actor.principal}
        raise ConflictingResultError(
            f"{where}: line {result.line_id} was returned ({line['return_reason']}); a different result is refused"
        )
    if current in (LineState.RETURN_PENDING, LineState.RETURNED):
        if line["return_reason"] == reason:
            return None
        raise ConflictingResultError(
            f"{where}: line {result.line_id} was already returned with another reason ({line['return_reason']})"
        )
    # PENDING, or PAID and returned by the bank days later: both wait for a second principal.
    return {"state": LineState.RETURN_PENDING, "return_reason": reason, "result_by": actor.principal}


def confirm_returns(engine: Engine, batch_id: str, line_ids: Sequence[str], actor: Actor) -> Batch:
    """RETURN_PENDING -> RETURNED, confirmed by a finance_approver who did not record the return:
    only now is the grant released, so a later batch may pay the enterprise (once). Confirming a
    line already RETURNED is a no-op."""
    if not line_ids:
        raise InvalidArgumentError([("line_ids", "at least one line")])
    with ledger_transaction(engine) as conn:
        state = batch_in(conn, batch_id).state
        if state not in (BatchState.EXPORTED, BatchState.SETTLED):
            raise BatchStateError(f"batch {batch_id} is {state}: returns are confirmed in an EXPORTED batch")
        lines = _lines_named(conn, batch_id, line_ids, "line_ids")
        confirm: list[str] = []
        for index, line_id in enumerate(line_ids):
            line = lines[line_id]
            if line["state"] == LineState.RETURNED:
                continue
            if line["state"] != LineState.RETURN_PENDING:
                raise InvalidArgumentError(
                    [(f"line_ids[{index}]", f"{line_id} is {line['state']}, not a return awaiting confirmation")]
                )
            if line["result_by"] == actor.principal:
                raise PermissionDeniedError(
                    f"line_ids[{index}]: {actor.principal} recorded the return of "
                    f"{line_id} and may not confirm it (four eyes)"
                )
            confirm.append(line_id)
        if confirm:
            _set_lines(conn, confirm, state=LineState.RETURNED, confirmed_by=actor.principal, release=True)
            _settle_or_reopen(conn, batch_id)
            seal_event(conn, MoneyEvent.CONFIRM_RETURNS, batch_id, actor, lines=read_lines(conn, confirm))
    return get_batch(engine, batch_id)


def _lines_named(
    conn: Connection, batch_id: str, line_ids: Sequence[str], field: str, *, where: Sequence[str] | None = None
) -> dict[str, dict[str, Any]]:
    """The batch's lines by the ids a caller named; a name that is not a line of this batch is
    refused with its place."""
    for index, line_id in enumerate(line_ids):
        check_id(line_id, f"{where[index]}.line_id" if where else f"{field}[{index}]")
    found = {str(line["grant_id"]): line for line in read_lines(conn, line_ids)}
    for index, line_id in enumerate(line_ids):
        line = found.get(line_id)
        if line is None or line["batch_id"] != batch_id:
            place = f"{where[index]}.line_id" if where else f"{field}[{index}]"
            raise InvalidArgumentError([(place, f"{line_id!r} is not a line of batch {batch_id}")])
    return found


def _set_lines(conn: Connection, line_ids: Sequence[str], *, release: bool = False, **values: Any) -> None:
    """Set the same columns on many lines, a chunk of ids per statement; `release` also frees
    each line's grant (released = its own id)."""
    extra = {"released": grant.c.grant_id} if release else {}
    for chunk in in_lists(line_ids):
        conn.execute(grant.update().where(grant.c.grant_id.in_(chunk)).values(**values, **extra))


def _recount(conn: Connection, batch_id: str) -> None:
    count, total = conn.execute(
        select(func.count(), func.coalesce(func.sum(grant.c.amount_fen), 0)).where(
            grant.c.batch_id == batch_id, grant.c.state.in_(sorted(COUNTED_LINE_STATES))
        )
    ).one()
    conn.execute(
        payout_batch.update()
        .where(payout_batch.c.batch_id == batch_id)
        .values(line_count=int(count), total_fen=int(total))
    )


def _settle_or_reopen(conn: Connection, batch_id: str) -> None:
    """SETTLED when no line is open; a late return reopens a SETTLED batch until it is confirmed."""
    still_open = conn.execute(
        select(grant.c.grant_id)
        .where(grant.c.batch_id == batch_id, grant.c.state.in_(sorted(OPEN_LINE_STATES)))
        .limit(1)
    ).first()
    state = batch_in(conn, batch_id).state
    if still_open is None and state == BatchState.EXPORTED:
        _transition_in(conn, batch_id, (BatchState.EXPORTED,), BatchState.SETTLED)
    elif still_open is not None and state == BatchState.SETTLED:
        _transition_in(conn, batch_id, (BatchState.SETTLED,), BatchState.EXPORTED)


def _transition_in(
    conn: Connection, batch_id: str, expected: Sequence[BatchState], new: BatchState, **values: object
) -> None:
    # Compare-and-set on the state: concurrent transitions cannot both succeed.
    changed = conn.execute(
        payout_batch.update()
        .where(payout_batch.c.batch_id == batch_id, payout_batch.c.state.in_([s.value for s in expected]))
        .values(state=new, **values)
    )
    if changed.rowcount != 1:
        state = conn.execute(select(payout_batch.c.state).where(payout_batch.c.batch_id == batch_id)).scalar()
        if state is None:
            raise BatchNotFoundError(f"no payout batch {batch_id!r}")
        raise BatchStateError(f"batch {batch_id} is {state}: only a {' or '.join(expected)} batch can become {new}")


def _reason(reason: str, field: str, *, required: bool = True, max_length: int = MAX_REASON_LENGTH) -> str:
    reason = reason.strip()
    if required and not reason:
        raise InvalidArgumentError([(field, "required: say why")])
    if len(reason) > max_length or any(ord(c) < 32 and c not in "\t" for c in reason):
        raise InvalidArgumentError([(field, f"at most {max_length} characters, no control characters")])
    return reason


def check_id(value: str, field: str) -> str:
    """A batch or line id as a caller gave it: printable ASCII of at most 40 characters (anything
    else could be no id of ours, and some databases refuse it outright, NUL for one)."""
    if not _ID.fullmatch(value):
        raise InvalidArgumentError([(field, "not an id: 1-40 printable ASCII characters")])
    return value


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
