"""Payees sealed at DRAFT, through gRPC on SQLite and PostgreSQL.

After a batch reaches DRAFT the registry is re-imported with a newer as_of: one enterprise gets
another account number, one another bank, one loses its account; one keeps the same account,
one has it written with full-width digits and spaces (and its name in full-width letters). Export is then
FAILED_PRECONDITION naming the count (3) and the first changed line, and changes nothing;
ListPayoutLines(payee_changed=true) lists exactly the three; an approver withdraws them
(WITHDRAWN, batch count and total drop by their amounts); the export then succeeds without them
and the bank files pay the payees sealed at DRAFT. A later batch pays the withdrawn enterprises
that still have an account, to their new account, once. PayoutLine.payee is masked but for the
last four digits and no response carries a full account number.
"""

from __future__ import annotations

import csv
import io

import grpc
import pytest
from benefits.v1 import audit_service_pb2
from benefits.v1 import payout_service_pb2 as pb
from sqlalchemy import select, update
from testkit.api_fixtures import as_role
from testkit.money_fixtures import (
    GIANT,
    GIANT_FEN,
    Money,
    account_of,
    api_server,
    change_account,
    creditor_accounts,
    enterprise,
    money,
    money_snapshot,
    rpc_code,
    titled,
    uscc,
)

from enterprise_registry.importer import load_records
from service.payouts.tables import grant, payout_export
from service.server import RunningServer

__all__ = ["api_server", "money"]  # fixtures (tests/testkit/money_fixtures.py)

P = [uscc(n, "MA4G") for n in range(1, 7)]  # little-giant 2025, accounts account_of(1..6)
NEW_NUMBER, OTHER_BANK, REMOVED, SAME, FULL_WIDTH, UNTOUCHED = P
NEW_ACCOUNT = account_of(1, version=5)
CHANGED = sorted([NEW_NUMBER, OTHER_BANK, REMOVED])


def _full_width(text: str) -> str:
    """ASCII letters and digits as their full-width forms (NFKC maps them back)."""
    return "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalnum() else c for c in text)


@pytest.fixture(scope="module")
def money_records() -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for n, code in enumerate(P, start=1):
        out += titled(code, n, 2025)
    return out


def _masked(number: str) -> str:
    return "*" * (len(number) - 4) + number[-4:]


def _no_full_number(response: object, numbers: list[str]) -> None:
    text = str(response)
    for number in numbers:
        assert number not in text, f"account number {number} in a response"


def test_a_changed_payee_blocks_export_until_withdrawn_and_is_paid_later_to_its_new_account(
    money: Money, api_server: RunningServer
) -> None:
    engine = api_server.engine
    batch = money.create(GIANT, 2025, "payee-change-0001")
    assert (batch.state, batch.line_count, batch.total_fen) == (pb.BATCH_STATE_DRAFT, 6, 6 * GIANT_FEN)
    lines = {line.uscc: line for line in money.lines(batch.batch_id)}
    assert sorted(lines) == sorted(P)
    sealed = {code: account_of(n) for n, code in enumerate(P, start=1)}

    # The registry changes after DRAFT (all with a newer as_of).
    change_account(engine, NEW_NUMBER, NEW_ACCOUNT)
    change_account(engine, OTHER_BANK, account_of(2), bank_name="中国农业银行襄阳分行")
    change_account(engine, REMOVED, None)
    change_account(engine, SAME, account_of(4))
    name = enterprise(FULL_WIDTH, account_of(5))["name"]
    assert isinstance(name, str)
    change_account(
        engine,
        FULL_WIDTH,
        " ".join(_full_width(account_of(5))[i : i + 4] for i in range(0, 19, 4)),
        account_name=_full_width(name),
    )
    money.approve(batch.batch_id)

    # Export refused: the count and the first changed line, nothing written.
    before = money_snapshot(engine)
    code, details = rpc_code(lambda: money.export(batch.batch_id))
    assert code == grpc.StatusCode.FAILED_PRECONDITION, details
    assert "3 line(s)" in details, details
    first = lines[CHANGED[0]].line_id
    assert first in details, details
    assert all(lines[u].line_id not in details for u in (SAME, FULL_WIDTH, UNTOUCHED)), details
    assert money_snapshot(engine) == before
    assert money.get(batch.batch_id).state == pb.BATCH_STATE_APPROVED

    # Exactly the changed ones are listed, and flagged.
    changed = money.lines(batch.batch_id, payee_changed=True)
    assert sorted(line.line_id for line in changed) == sorted(lines[u].line_id for u in CHANGED)
    assert all(line.payee_changed for line in changed)
    flags = {line.uscc: line.payee_changed for line in money.lines(batch.batch_id)}
    assert flags == {u: u in CHANGED for u in P}

    # Payees masked but for the last four digits; never the whole number.
    for line in money.lines(batch.batch_id):
        assert line.payee.account_number_masked == _masked(sealed[line.uscc])
        _no_full_number(line, [*sealed.values(), NEW_ACCOUNT])

    # An operator may not withdraw; an approver may. Lines of nobody else are touched.
    before = money_snapshot(engine)
    operator = as_role("finance_operator")
    code, _ = rpc_code(lambda: money.withdraw(batch.batch_id, [first], "账户变更", metadata=operator))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert money_snapshot(engine) == before
    withdrawn = money.withdraw(batch.batch_id, [line.line_id for line in changed], "账户变更")
    assert (withdrawn.state, withdrawn.line_count, withdrawn.total_fen) == (pb.BATCH_STATE_APPROVED, 3, 3 * GIANT_FEN)
    states = {line.uscc: (line.state, line.withdraw_reason) for line in money.lines(batch.batch_id)}
    assert states == {
        u: (pb.LINE_STATE_WITHDRAWN, "账户变更") if u in CHANGED else (pb.LINE_STATE_PENDING, "") for u in P
    }
    assert money.lines(batch.batch_id, payee_changed=True) == []

    # The export now succeeds without them and pays the payees sealed at DRAFT.
    xml = money.export(batch.batch_id)
    paying = [u for u in P if u not in CHANGED]
    assert creditor_accounts(xml) == {lines[u].line_id: sealed[u] for u in paying}
    table = list(csv.DictReader(io.StringIO(money.export(batch.batch_id, "csv").decode())))
    assert {row["end_to_end_id"]: row["account_no"] for row in table} == {lines[u].line_id: sealed[u] for u in paying}
    assert NEW_ACCOUNT.encode() not in xml
    with engine.connect() as conn:
        stored = conn.execute(
            select(payout_export.c.pain001).where(payout_export.c.batch_id == batch.batch_id)
        ).scalar_one()
    assert bytes(stored) == xml
    settled = money.results(batch.batch_id, [(lines[u].line_id, "PAID", "") for u in paying])
    assert settled.state == pb.BATCH_STATE_SETTLED

    # A later batch pays the withdrawn enterprises that still have an account, to the new one, once.
    later = money.create(GIANT, 2025, "payee-change-0002")
    again = {line.uscc: line for line in money.lines(later.batch_id)}
    assert sorted(again) == sorted([NEW_NUMBER, OTHER_BANK])  # REMOVED has no account: not payable
    assert (later.line_count, later.total_fen) == (2, 2 * GIANT_FEN)
    assert again[NEW_NUMBER].payee.account_number_masked == _masked(NEW_ACCOUNT)
    assert again[OTHER_BANK].payee.bank_name == "中国农业银行襄阳分行"
    with engine.connect() as conn:
        assert (
            conn.execute(
                select(grant.c.payee_account_no).where(grant.c.grant_id == again[NEW_NUMBER].line_id)
            ).scalar_one()
            == NEW_ACCOUNT
        )
    money.approve(later.batch_id)
    assert creditor_accounts(money.export(later.batch_id)) == {
        again[NEW_NUMBER].line_id: NEW_ACCOUNT,
        again[OTHER_BANK].line_id: account_of(2),
    }
    assert money.create(GIANT, 2025, "payee-change-0003").line_count == 0
    assert money.verify().valid


def test_a_newer_as_of_with_the_same_account_is_no_change(money: Money, api_server: RunningServer) -> None:
    """Checked directly on a fresh DRAFT batch of 2024: the same account, then full-width digits
    with spaces and hyphens: no line is flagged and the export goes through."""
    engine = api_server.engine
    code = uscc(7, "MA4G")
    load_records(titled(code, 7, 2024), engine)
    batch = money.create(GIANT, 2024, "payee-same-0001")
    (line,) = money.lines(batch.batch_id)
    number = account_of(7)
    change_account(engine, code, number, as_of="2026-02-01")
    assert money.lines(batch.batch_id, payee_changed=True) == []
    spaced = "-".join(_full_width(number)[i : i + 5] for i in range(0, len(number), 5))
    change_account(engine, code, spaced, as_of="2026-02-02")
    assert money.lines(batch.batch_id, payee_changed=True) == []
    assert not money.lines(batch.batch_id)[0].payee_changed
    money.approve(batch.batch_id)
    assert creditor_accounts(money.export(batch.batch_id)) == {line.line_id: number}


def test_verify_audit_log_names_a_rerouted_line_without_printing_account_numbers(
    money: Money, api_server: RunningServer
) -> None:
    """Through AuditService.VerifyAuditLog: an attacker points a PENDING line at another account;
    the verdict is INVALID, names grant_award and the line, and holds no account number."""
    engine = api_server.engine
    batch = money.create(GIANT, 2023, "payee-verify-0001")
    assert batch.line_count == 0  # nobody holds a 2023 title yet
    code = uscc(8, "MA4G")
    load_records(titled(code, 8, 2023), engine)
    batch = money.create(GIANT, 2023, "payee-verify-0002")
    (line,) = money.lines(batch.batch_id)
    forged = "6222999988887777666"
    with engine.begin() as conn:
        conn.execute(update(grant).where(grant.c.grant_id == line.line_id).values(payee_account_no=forged))
    try:
        verdict = money.verify()
    finally:
        with engine.begin() as conn:
            conn.execute(update(grant).where(grant.c.grant_id == line.line_id).values(payee_account_no=account_of(8)))
    assert not verdict.valid and verdict.fault == audit_service_pb2.LEDGER_FAULT_EDITED
    assert [(p.table, p.row, p.fault) for p in verdict.problems] == [
        ("grant_award", line.line_id, audit_service_pb2.LEDGER_FAULT_EDITED)
    ]
    text = str(verdict)
    for number in (forged, account_of(8), NEW_ACCOUNT, *(account_of(n) for n in range(1, 8))):
        assert number not in text, f"account number {number} in the VerifyAuditLog response"
    assert money.verify().valid
