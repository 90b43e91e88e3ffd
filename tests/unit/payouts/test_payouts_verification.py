"""The money tables verified against the ledger: a change is named by table and row, and the
report never holds an account number."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from enterprise_registry.importer import load_records
from enterprise_registry.uscc import make
from rules.loader import PolicySet
from service.audit.records import Actor
from service.payouts.batches import lines_of, withdraw
from service.payouts.runner import create_batch
from service.payouts.tables import create_payout_schema
from service.payouts.verification import verify_payouts

ACCOUNT = "1804000109200012345"
GIANT, OTHER = make("91420600MA4P00002"), make("91420600MA4P00004")


def _records(uscc: str, number: str) -> list[dict[str, object]]:
    return [
        {
            "kind": "enterprise",
            "uscc": uscc,
            "source": "market_regulation",
            "as_of": "2025-12-31",
            "name": f"襄阳示例{uscc[-4:]}有限公司",
            "org_type": "enterprise",
            "region_code": "420606",
            "industry_code": "C3670",
            "established_on": "2010-01-01",
            "status": "active",
            "labor_dispatch": False,
            "bank_account": {
                "bank_name": "中国工商银行襄阳分行",
                "account_no": ACCOUNT,
                "account_name": f"襄阳示例{uscc[-4:]}有限公司",
            },
        },
        {
            "kind": "qualification",
            "uscc": uscc,
            "source": "industry_it",
            "as_of": "2025-12-31",
            "type": "little_giant",
            "level": "national",
            "first_time": True,
            "granted_on": "2025-07-01",
            "certificate_no": number,
        },
    ]


@pytest.fixture
def batch_lines(db_engine: Engine, policies: PolicySet) -> tuple[Engine, list[dict[str, object]]]:
    create_payout_schema(db_engine)
    load_records(_records(GIANT, "LG-2") + _records(OTHER, "LG-4"), db_engine)
    batch = create_batch(
        db_engine,
        policies,
        policy_id="little-giant-reward",
        period=2025,
        request_id="req-verify",
        actor=Actor("finance-op", "finance_operator"),
        today=date(2026, 3, 31),
    )
    with db_engine.connect() as conn:
        assert verify_payouts(conn) == []
        return db_engine, lines_of(conn, batch.batch_id)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("amount_fen", 500_000_000),
        ("payee_account_no", "6222000000000000"),
        ("payee_name", "某某"),
        ("state", "RETURNED"),
        ("released", "x"),
    ],
)
def test_an_edited_line_is_named_without_its_account(
    batch_lines: tuple[Engine, list[dict[str, object]]], column: str, value: object
) -> None:
    engine, lines = batch_lines
    line_id = str(lines[1]["grant_id"])
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE grant_award SET {column} = :v WHERE grant_id = :id"), {"v": value, "id": line_id})
    with engine.connect() as conn:
        problems = verify_payouts(conn)
    assert [(p.table, p.row, p.fault) for p in problems] == [("grant_award", line_id, "edited")]
    assert column in problems[0].detail
    assert ACCOUNT not in str(problems) and "6222000000000000" not in str(problems) and "某某" not in str(problems)


def test_the_queries_do_not_grow_with_the_money_events(batch_lines: tuple[Engine, list[dict[str, object]]]) -> None:
    """The seal rows of every event are read in one streamed query, not one per event."""
    from sqlalchemy import event

    engine, lines = batch_lines

    def queries() -> int:
        count = [0]

        def tick(*_: object) -> None:
            count[0] += 1

        event.listen(engine, "before_cursor_execute", tick)
        try:
            with engine.connect() as conn:
                assert verify_payouts(conn) == []
        finally:
            event.remove(engine, "before_cursor_execute", tick)
        return count[0]

    one_event = queries()  # the DRAFT, sealing both lines
    withdraw(
        engine, str(lines[0]["batch_id"]), [str(lines[0]["grant_id"])], "账户变更", Actor("op", "finance_operator")
    )
    assert queries() == one_event  # a second event sealing a line
