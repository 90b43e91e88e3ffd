"""Red-team review: a period's budget spent, in-process on SQLite and PostgreSQL.

A copy of the little-giant reward (`lg-budget`, outside any conflict group) with `budget: 100万元`
- two awards of 50万元. Two enterprises are paid by a first batch, which spends the budget; a third
is named later. What the second batch must not do is grant it a line of 0 fen: approved and
exported, the bank file carries a 0.00 CNY transfer, and because the grant stands ("exactly
once") the enterprise is never paid - not even when a returned line gives budget back.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from testkit.money_fixtures import (
    APPROVER,
    BUDGET_POLICY,
    OPERATOR,
    PAYER,
    SECOND_APPROVER,
    budget_policies,
    titled,
    uscc,
)

from enterprise_registry.importer import load_records
from rules.loader import PolicySet
from service.errors import ServiceError
from service.payouts.batches import (
    BankResult,
    Batch,
    approve,
    confirm_returns,
    create_payout_schema,
    lines_of,
    record_results,
)
from service.payouts.export import export
from service.payouts.runner import create_batch
from service.payouts.states import LineState

TODAY = date(2026, 1, 10)
FIRST, LATE = [uscc(n, "MA4Y") for n in (1, 2)], uscc(3, "MA4Y")


@pytest.fixture
def policies(tmp_path: Path) -> PolicySet:
    return budget_policies(tmp_path / "rules")


def _run(engine: Engine, policies: PolicySet, request_id: str) -> Batch:
    return create_batch(
        engine, policies, policy_id=BUDGET_POLICY, period=2025, request_id=request_id, actor=OPERATOR, today=TODAY
    )


def test_a_spent_budget_grants_no_zero_fen_line(db_engine: Engine, policies: PolicySet) -> None:
    """FAILS. `runner._Run.finish` pro-rates the payable amounts to what is left of the budget
    (`_budget_left`, 0 here) and writes a line for every share, 0 fen included
    (service/payouts/runner.py:297-300; allocation.prorate gives every share 0). The 0-fen grant
    stands, so `_granted` skips the enterprise in every later batch: when the budget comes back
    (a returned line), it is still never paid. Expected: no line for a share of 0 fen (the
    enterprise left for a batch with budget), and no 0.00 transfer in any bank file."""
    create_payout_schema(db_engine)
    load_records([r for n, code in enumerate(FIRST, start=1) for r in titled(code, n, 2025)], db_engine)
    first = _run(db_engine, policies, "review-budget-0001")
    assert (first.line_count, first.total_fen) == (2, 100_000_000)
    load_records(titled(LATE, 3, 2025), db_engine)
    second = _run(db_engine, policies, "review-budget-0002")
    with db_engine.connect() as conn:
        zero = [(line["uscc"], line["amount_fen"]) for line in lines_of(conn, second.batch_id)]
    exported = b""
    if zero:  # see where it goes: approved and exported, and then the budget comes back
        approve(db_engine, second.batch_id, APPROVER)
        try:
            exported = export(db_engine, second.batch_id, PAYER, OPERATOR)[1]
        except ServiceError:
            exported = b""
        approve(db_engine, first.batch_id, APPROVER)
        export(db_engine, first.batch_id, PAYER, OPERATOR)
        with db_engine.connect() as conn:
            paid = [str(line["grant_id"]) for line in lines_of(conn, first.batch_id)]
        record_results(
            db_engine,
            first.batch_id,
            [BankResult(paid[0], LineState.RETURNED, "AC04"), BankResult(paid[1], LineState.PAID)],
            OPERATOR,
        )
        confirm_returns(db_engine, first.batch_id, [paid[0]], SECOND_APPROVER)
    third = _run(db_engine, policies, "review-budget-0003")
    with db_engine.connect() as conn:
        third_lines = [(line["uscc"], line["amount_fen"]) for line in lines_of(conn, third.batch_id)]
    zero_transfers = exported.count(b'<InstdAmt Ccy="CNY">0.00</InstdAmt>')
    assert zero == [], (
        f"batch {second.batch_id} grants {zero} with the budget spent; "
        f"its bank file carries {zero_transfers} transfer(s) of 0.00 CNY; after a 50万元 line was "
        f"returned the next batch pays {third_lines} - {LATE} is never paid"
    )
