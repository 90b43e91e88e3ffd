"""No single principal can cause a second payment, on SQLite and PostgreSQL.

A return recorded by one principal releases nothing until a finance_approver who did not record
it confirms it: until then the next batch pays the enterprise nothing (0 lines). After the
confirmation the next batch pays it exactly once and the one after pays nobody. A late return of
a PAID line goes the same way (its SETTLED batch goes back to EXPORTED until confirmed). Through
gRPC the operator's token is PERMISSION_DENIED; in-process, a principal that recorded a return
may not confirm it even when it acts as a finance_approver.
"""

from __future__ import annotations

from datetime import date

import grpc
import pytest
from benefits.v1 import payout_service_pb2 as pb
from testkit.api_fixtures import as_role
from testkit.money_fixtures import (
    GIANT,
    GIANT_FEN,
    OPERATOR,
    PAYER,
    Money,
    api_server,
    money,
    money_snapshot,
    rpc_code,
    standing_grants,
    titled,
    uscc,
)
from testkit.paths import RULES_DIR

from rules.loader import load_policy_dir
from service.audit.records import Actor
from service.catalogue import CATALOGUE
from service.errors import PermissionDeniedError
from service.payouts.batches import BankResult, approve, confirm_returns, get_batch, lines_of, record_results
from service.payouts.export import export
from service.payouts.runner import create_batch
from service.payouts.states import LineState
from service.server import RunningServer

__all__ = ["api_server", "money"]  # fixtures (tests/testkit/money_fixtures.py)

RETURNS = [uscc(n, "MA4F") for n in (1, 2, 3)]  # little-giant 2025: a return before PAID
LATE = [uscc(n, "MA4F") for n in (4, 5)]  # little-giant 2024: a return after PAID
SAME = [uscc(n, "MA4F") for n in (6, 7)]  # little-giant 2023: in-process, one principal
RETURN_REASON = "AC04 账户已销户"


@pytest.fixture(scope="module")
def money_records() -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for n, code in enumerate(RETURNS, start=1):
        out += titled(code, n, 2025)
    for n, code in enumerate(LATE, start=4):
        out += titled(code, n, 2024)
    for n, code in enumerate(SAME, start=6):
        out += titled(code, n, 2023)
    return out


def _exported(money: Money, period: int, request_id: str) -> tuple[pb.PayoutBatch, list[pb.PayoutLine]]:
    batch = money.create(GIANT, period, request_id)
    assert batch.state == pb.BATCH_STATE_DRAFT
    money.approve(batch.batch_id)
    money.export(batch.batch_id)
    return money.get(batch.batch_id), money.lines(batch.batch_id)


def test_a_return_pays_nobody_again_until_a_second_principal_confirms_it(
    money: Money, api_server: RunningServer
) -> None:
    batch, lines = _exported(money, 2025, "four-eyes-2025-0001")
    assert [line.uscc for line in lines] == sorted(RETURNS)
    returned, paid = lines[0], lines[1:]
    after = money.results(
        batch.batch_id, [(returned.line_id, "RETURNED", RETURN_REASON)] + [(line.line_id, "PAID", "") for line in paid]
    )
    assert after.state == pb.BATCH_STATE_EXPORTED  # a return waits: the batch is not SETTLED
    state = {line.line_id: line for line in money.lines(batch.batch_id)}[returned.line_id]
    assert (state.state, state.return_reason, state.result_recorded_by, state.return_confirmed_by) == (
        pb.LINE_STATE_RETURN_PENDING,
        RETURN_REASON,
        "test-finance_operator",
        "",
    )
    assert len(standing_grants(api_server.engine, returned.uscc, GIANT, 2025)) == 1  # not released

    meanwhile = money.create(GIANT, 2025, "four-eyes-2025-0002")
    assert (meanwhile.line_count, meanwhile.total_fen) == (0, 0), "paid again before the return was confirmed"

    # The operator (who recorded it) may not confirm it: refused, and nothing changes.
    before = money_snapshot(api_server.engine)
    code, _ = rpc_code(lambda: money.confirm(batch.batch_id, [returned.line_id], metadata=as_role("finance_operator")))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert money_snapshot(api_server.engine) == before

    confirmed = money.confirm(batch.batch_id, [returned.line_id])
    assert confirmed.state == pb.BATCH_STATE_SETTLED
    state = {line.line_id: line for line in money.lines(batch.batch_id)}[returned.line_id]
    assert (state.state, state.return_confirmed_by) == (pb.LINE_STATE_RETURNED, "test-finance_approver")
    assert money.confirm(batch.batch_id, [returned.line_id]).state == pb.BATCH_STATE_SETTLED  # a retry: no-op

    repay = money.create(GIANT, 2025, "four-eyes-2025-0003")
    assert [(line.uscc, line.amount_fen) for line in money.lines(repay.batch_id)] == [(returned.uscc, GIANT_FEN)]
    assert (repay.line_count, repay.total_fen) == (1, GIANT_FEN)
    again = money.create(GIANT, 2025, "four-eyes-2025-0004")
    assert (again.line_count, again.total_fen) == (0, 0), "paid a third time"
    assert money.verify().valid


def test_a_late_return_of_a_paid_line_waits_for_a_second_principal_too(money: Money, api_server: RunningServer) -> None:
    batch, lines = _exported(money, 2024, "four-eyes-2024-0001")
    assert [line.uscc for line in lines] == sorted(LATE)
    settled = money.results(batch.batch_id, [(line.line_id, "PAID", "") for line in lines])
    assert settled.state == pb.BATCH_STATE_SETTLED
    late = lines[0]
    reopened = money.results(batch.batch_id, [(late.line_id, "RETURNED", RETURN_REASON)])
    assert reopened.state == pb.BATCH_STATE_EXPORTED  # a SETTLED batch goes back to EXPORTED
    assert {line.line_id: line.state for line in money.lines(batch.batch_id)}[
        late.line_id
    ] == pb.LINE_STATE_RETURN_PENDING
    assert money.create(GIANT, 2024, "four-eyes-2024-0002").line_count == 0

    before = money_snapshot(api_server.engine)
    code, _ = rpc_code(lambda: money.confirm(batch.batch_id, [late.line_id], metadata=as_role("finance_operator")))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert money_snapshot(api_server.engine) == before

    assert money.confirm(batch.batch_id, [late.line_id]).state == pb.BATCH_STATE_SETTLED
    repay = money.create(GIANT, 2024, "four-eyes-2024-0003")
    assert [line.uscc for line in money.lines(repay.batch_id)] == [late.uscc]
    assert money.create(GIANT, 2024, "four-eyes-2024-0004").line_count == 0
    assert money.verify().valid


def test_the_recorder_of_a_return_may_not_confirm_it_even_as_an_approver(api_server: RunningServer) -> None:
    """In-process: the same principal records the return and then tries to confirm it with the
    finance_approver role; a second approver may."""
    engine = api_server.engine
    policies = load_policy_dir(RULES_DIR / "policies", CATALOGUE)
    batch = create_batch(
        engine,
        policies,
        policy_id=GIANT,
        period=2023,
        request_id="four-eyes-2023-0001",
        actor=OPERATOR,
        today=date.today(),
    )
    approve(engine, batch.batch_id, Actor("approver-a", "finance_approver"))
    export(engine, batch.batch_id, PAYER, OPERATOR)
    with engine.connect() as conn:
        line_ids = [str(line["grant_id"]) for line in lines_of(conn, batch.batch_id)]
    same = Actor("mallory", "finance_approver")
    record_results(engine, batch.batch_id, [BankResult(line_ids[0], LineState.RETURNED, RETURN_REASON)], same)
    before = money_snapshot(engine)
    with pytest.raises(PermissionDeniedError):
        confirm_returns(engine, batch.batch_id, [line_ids[0]], same)
    with pytest.raises(PermissionDeniedError):  # nor under another role: the principal is the same
        confirm_returns(engine, batch.batch_id, [line_ids[0]], Actor("mallory", "finance_operator"))
    assert money_snapshot(engine) == before
    assert (
        create_batch(
            engine,
            policies,
            policy_id=GIANT,
            period=2023,
            request_id="four-eyes-2023-0002",
            actor=OPERATOR,
            today=date.today(),
        ).line_count
        == 0
    )
    confirmed = confirm_returns(engine, batch.batch_id, [line_ids[0]], Actor("approver-b", "finance_approver"))
    assert confirmed.state == "EXPORTED"  # the other line is still PENDING
    assert get_batch(engine, batch.batch_id).state == "EXPORTED"
    repay = create_batch(
        engine,
        policies,
        policy_id=GIANT,
        period=2023,
        request_id="four-eyes-2023-0003",
        actor=OPERATOR,
        today=date.today(),
    )
    assert repay.line_count == 1
