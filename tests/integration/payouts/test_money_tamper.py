"""The tamper matrix of the sealed money path, on SQLite and PostgreSQL.

A small registry goes through every money event in-process: a batch is drafted, approved, one
line withdrawn (its payee changed), exported, answered by the bank (one line returned and
confirmed, one returned and awaiting confirmation, the rest paid); a repay batch stays DRAFT, a
third batch is cancelled, a fourth settled and a fifth approved - so every line state and every
batch state after RUNNING occurs. The audit log verifies VALID.

Then an attacker with write access (the append-only triggers of the seals dropped) changes the
money tables one way at a time, and `verify_audit_log` must be INVALID and name exactly the
table and row concerned, never printing an account number: every column of `grant_award` on a
line of every state, every sealed column of `payout_batch` on a batch of every state, every
column of `payout_export`, a row of each deleted, a forged row of each inserted, the seal rows
edited, deleted, inserted, moved, relabelled, and a line and its seal edited together; the
evaluation records deleted (named by their chunk), forged, rewritten and their filter columns
edited. Each attack runs in a transaction that is rolled back, so the cases are independent.
Part of the matrix runs through the real CLI (`benefits audit verify --db URL` via
`service.cli.main`), with the attack committed and undone afterwards.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import orjson
import pytest
from sqlalchemy import Column, Table, delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from testkit.audit_checks import drop_append_only_triggers
from testkit.money_fixtures import (
    APPROVER,
    GIANT,
    OPERATOR,
    PAYER,
    account_of,
    attacker,
    change_account,
    enterprise,
    titled,
    uscc,
)

from enterprise_registry.db import create_schema, make_engine
from enterprise_registry.importer import load_records
from rules.loader import PolicySet
from service import cli
from service.audit.ledger import Fault, create_append_only_triggers
from service.audit.records import evaluation_record
from service.audit.verification import AuditVerdict, verify_audit_log
from service.payouts.batches import BankResult, approve, cancel, confirm_returns, record_results, withdraw
from service.payouts.export import export
from service.payouts.runner import RunSettings, create_batch
from service.payouts.states import BatchState, LineState
from service.payouts.tables import (
    SEALED_BATCH_COLUMNS,
    create_payout_schema,
    grant,
    payout_batch,
    payout_export,
    payout_line_seal,
)

TODAY = date(2026, 1, 10)
SETTINGS = RunSettings(chunk_size=3)
FORGED_ACCOUNT = "6222999988887777666"
NEW_ACCOUNT_OF_1 = account_of(1, version=7)

# The registry: enterprise n has account account_of(n) and a little-giant title of one year.
MAIN = [uscc(n) for n in range(1, 6)]  # 2025: the main batch
CANCELLED_USCCS = [uscc(6), uscc(7)]  # 2024: a cancelled batch
SETTLED_USCC = uscc(8)  # 2023: a settled batch
APPROVED_USCC = uscc(9)  # 2022: an approved batch, not exported
UNTITLED = uscc(10)  # eligible for nothing: INELIGIBLE records


def _registry() -> list[dict[str, object]]:
    records: list[dict[str, object]] = []
    for n, code in enumerate(MAIN, start=1):
        records += titled(code, n, 2025)
    for n, code in zip((6, 7), CANCELLED_USCCS):
        records += titled(code, n, 2024)
    records += titled(SETTLED_USCC, 8, 2023) + titled(APPROVED_USCC, 9, 2022)
    records.append(enterprise(UNTITLED, account_of(10)))
    return records


# Every account number the database ever held (none may appear in a verification report).
SECRETS = [account_of(n) for n in range(1, 11)] + [NEW_ACCOUNT_OF_1, FORGED_ACCOUNT, PAYER.account_no]


@dataclass
class World:
    url: str
    engine: Engine
    batches: dict[str, str]  # batch state -> batch id
    lines: dict[str, str]  # line state -> line id
    line_of: dict[str, str] = field(default_factory=dict)  # "main:<uscc>" -> line id


@pytest.fixture(scope="module")
def world(api_db_url: str, policies: PolicySet) -> Iterator[World]:
    engine = make_engine(api_db_url)
    create_schema(engine)
    create_payout_schema(engine)
    load_records(_registry(), engine)

    def run(period: int, request_id: str) -> str:
        batch = create_batch(
            engine,
            policies,
            policy_id=GIANT,
            period=period,
            request_id=request_id,
            actor=OPERATOR,
            today=TODAY,
            settings=SETTINGS,
        )
        assert batch.state == BatchState.DRAFT
        return batch.batch_id

    def line_ids(batch_id: str) -> dict[str, str]:
        with engine.connect() as conn:
            return {
                r.uscc: r.grant_id
                for r in conn.execute(select(grant.c.uscc, grant.c.grant_id).where(grant.c.batch_id == batch_id))
            }

    main = run(2025, "tamper-main-0001")
    main_lines = line_ids(main)
    assert sorted(main_lines) == sorted(MAIN)
    change_account(engine, MAIN[0], NEW_ACCOUNT_OF_1)  # E1's payee changed after DRAFT
    approve(engine, main, APPROVER)
    withdraw(engine, main, [main_lines[MAIN[0]]], "账户变更", APPROVER)
    export(engine, main, PAYER, OPERATOR)
    record_results(
        engine,
        main,
        [
            BankResult(main_lines[MAIN[1]], LineState.RETURNED, "AC04 账户已销户"),
            BankResult(main_lines[MAIN[2]], LineState.RETURNED, "AC01 账号错误"),
            BankResult(main_lines[MAIN[3]], LineState.PAID),
            BankResult(main_lines[MAIN[4]], LineState.PAID),
        ],
        OPERATOR,
    )
    confirm_returns(engine, main, [main_lines[MAIN[1]]], APPROVER)  # MAIN[2] stays RETURN_PENDING

    repay = run(2025, "tamper-repay-0001")  # E1 (new account) and E2 again: PENDING
    repay_lines = line_ids(repay)
    assert sorted(repay_lines) == sorted(MAIN[:2])

    cancelled = run(2024, "tamper-cancel-0001")
    cancel(engine, cancelled, OPERATOR, "预算调整")

    settled = run(2023, "tamper-settle-0001")
    approve(engine, settled, APPROVER)
    export(engine, settled, PAYER, OPERATOR)
    record_results(engine, settled, [BankResult(line_ids(settled)[SETTLED_USCC], LineState.PAID)], OPERATOR)

    approved = run(2022, "tamper-approve-0001")
    approve(engine, approved, APPROVER)

    world = World(
        api_db_url,
        engine,
        batches={"DRAFT": repay, "APPROVED": approved, "EXPORTED": main, "SETTLED": settled, "CANCELLED": cancelled},
        lines={
            "PENDING": repay_lines[MAIN[0]],
            "WITHDRAWN": main_lines[MAIN[0]],
            "RETURNED": main_lines[MAIN[1]],
            "RETURN_PENDING": main_lines[MAIN[2]],
            "PAID": main_lines[MAIN[3]],
            "CANCELLED": line_ids(cancelled)[CANCELLED_USCCS[0]],
        },
        line_of={
            **{f"main:{u}": i for u, i in main_lines.items()},
            **{f"repay:{u}": i for u, i in repay_lines.items()},
        },
    )
    yield world
    engine.dispose()


def _verdict(conn: Connection) -> AuditVerdict:
    return verify_audit_log(conn)


def _report_text(verdict: AuditVerdict) -> str:
    return "\n".join(
        [verdict.detail, *(f"{p.table} {p.row} {p.fault} {p.ledger_seq} {p.detail}" for p in verdict.problems)]
    )


def assert_caught(
    verdict: AuditVerdict,
    required: set[tuple[str, str]],
    allowed: set[tuple[str, str]] | None = None,
    *,
    fault: Fault | None = None,
) -> None:
    """INVALID; every (table, row) in `required` named; nothing named outside `allowed`
    (default: exactly `required`); no account number anywhere in the report."""
    named = {(p.table, p.row) for p in verdict.problems}
    assert not verdict.valid, f"tampering was not detected: {verdict.detail}"
    assert required <= named, f"expected {sorted(required)} to be named; the report names {sorted(named)}"
    assert named <= (allowed if allowed is not None else required), (
        f"the report names rows that were not touched: {sorted(named - (allowed or required))}"
    )
    if fault is not None:
        faults = {p.fault for p in verdict.problems if (p.table, p.row) in required}
        assert faults == {fault}, f"faults {faults}, expected {fault}"
    report = _report_text(verdict)
    for secret in SECRETS:
        assert secret not in report, f"account number {secret} printed in the verification report"


def _row(conn: Connection, table: Any, key_column: Any, key: str) -> dict[str, Any]:
    return dict(conn.execute(select(table).where(key_column == key)).one()._mapping)


def _other(value: str) -> str:
    """A different string of the same length (fits every VARCHAR it came from)."""
    if not value:
        return "forged"
    return value[:-1] + ("0" if value[-1] != "0" else "1")


def _edited(
    world: World,
    table: Table,
    key_column: Column[Any],
    key: str,
    column: str,
    forge: Callable[[Connection, dict[str, Any]], Any],
) -> tuple[Any, AuditVerdict]:
    """(forged value, verdict) after `column` of the row keyed `key` is set to what `forge` makes
    of that row (on the attacker's connection)."""
    with attacker(world.engine) as conn:
        forged = forge(conn, _row(conn, table, key_column, key))
        conn.execute(update(table).where(key_column == key).values({column: forged}))
        return forged, _verdict(conn)


def _deleted(world: World, table: Table, key_column: Column[Any], key: str) -> AuditVerdict:
    with attacker(world.engine) as conn:
        conn.execute(delete(table).where(key_column == key))
        return _verdict(conn)


def _inserted(
    world: World, table: Table, key_column: Column[Any], copied: str, changes: dict[str, Any]
) -> tuple[dict[str, Any], AuditVerdict]:
    """(forged row, verdict) after a copy of the row keyed `copied`, with `changes`, is inserted."""
    with attacker(world.engine) as conn:
        forged = {**_row(conn, table, key_column, copied), **changes}
        conn.execute(insert(table).values(forged))
        return forged, _verdict(conn)


def _assert_rekeyed_caught(verdict: AuditVerdict, table: str, old: str, new: str) -> None:
    """A row's key edited: the old row reads as deleted, the new one as inserted."""
    assert_caught(verdict, {(table, old), (table, new)})
    assert {p.fault for p in verdict.problems} == {Fault.DELETED, Fault.INSERTED}


# --------------------------------------------------------------------------------------------- baseline


def test_the_world_verifies_and_every_line_state_occurs(world: World) -> None:
    with world.engine.connect() as conn:
        verdict = _verdict(conn)
        states = set(conn.execute(select(grant.c.state).distinct()).scalars())
        batch_states = set(conn.execute(select(payout_batch.c.state).distinct()).scalars())
    assert verdict.valid, verdict.detail
    assert set(LINE_COLUMNS) >= MONEY_LINE_COLUMNS  # the matrix below covers every money column
    assert states == {s.value for s in LineState}
    assert batch_states == {"DRAFT", "APPROVED", "EXPORTED", "SETTLED", "CANCELLED"}


def test_the_cli_says_valid_first(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["audit", "verify", "--db", world.url]) == 0
    out = capsys.readouterr().out
    assert out.startswith("VALID"), out


# --------------------------------------------------------------------------------------------- grant_award

LINE_COLUMNS = [c.name for c in grant.columns]
MONEY_LINE_COLUMNS = {
    "amount_fen",
    "full_fen",
    "payee_name",
    "payee_account_no",
    "payee_bank",
    "state",
    "return_reason",
    "result_by",
    "confirmed_by",
    "withdraw_reason",
    "released",
    "uscc",
}


def _forged_line_value(world: World, column: str, line: dict[str, Any]) -> Any:
    value = line[column]
    if column == "state":
        return LineState.PAID.value if value != LineState.PAID else LineState.PENDING.value
    if column == "released":
        return line["grant_id"] if value == "" else ""
    if column == "uscc":
        return uscc(99)
    if column == "payee_account_no":
        return FORGED_ACCOUNT
    if column == "batch_id":
        return world.batches["APPROVED"] if value != world.batches["APPROVED"] else world.batches["DRAFT"]
    if isinstance(value, int):
        return value + 1
    if value is None:
        return "forged"
    return _other(value)


@pytest.mark.parametrize("state", [s.value for s in LineState])
@pytest.mark.parametrize("column", LINE_COLUMNS)
def test_an_edited_line_column_is_named(world: World, column: str, state: str) -> None:
    line_id = world.lines[state]

    def forge(conn: Connection, line: dict[str, Any]) -> Any:
        forged = _forged_line_value(world, column, line)
        if column == "released" and forged == "":
            # Un-releasing a released line collides with the enterprise's new standing grant
            # (the database's exactly-once constraint stops that attack by itself).
            others = conn.execute(
                select(func.count())
                .select_from(grant)
                .where(
                    grant.c.uscc == line["uscc"],
                    grant.c.policy_id == line["policy_id"],
                    grant.c.period == line["period"],
                    grant.c.released == "",
                )
            ).scalar_one()
            if others:
                forged = _other(line["grant_id"])
        return forged

    forged, verdict = _edited(world, grant, grant.c.grant_id, line_id, column, forge)
    if column == "grant_id":
        _assert_rekeyed_caught(verdict, "grant_award", line_id, forged)
    else:
        assert_caught(verdict, {("grant_award", line_id)}, fault=Fault.EDITED)
        if column not in ("payee_account_no", "payee_name"):
            assert column in verdict.problems[0].detail


@pytest.mark.parametrize("state", [s.value for s in LineState])
def test_a_deleted_line_is_named(world: World, state: str) -> None:
    line_id = world.lines[state]
    verdict = _deleted(world, grant, grant.c.grant_id, line_id)
    assert_caught(verdict, {("grant_award", line_id)}, fault=Fault.DELETED)


def test_a_forged_line_is_named(world: World) -> None:
    paid = world.lines["PAID"]
    forged, verdict = _inserted(
        world,
        grant,
        grant.c.grant_id,
        paid,
        {"grant_id": paid[:-6] + "999999", "uscc": uscc(98), "payee_account_no": FORGED_ACCOUNT},
    )
    assert_caught(verdict, {("grant_award", forged["grant_id"])}, fault=Fault.INSERTED)


# --------------------------------------------------------------------------------------------- payout_batch

BATCH_STATES = ["DRAFT", "APPROVED", "EXPORTED", "SETTLED", "CANCELLED"]


def _forged_batch_value(column: str, value: Any) -> Any:
    if column == "state":
        return "EXPORTED" if value != "EXPORTED" else "SETTLED"
    if column in ("approved_by", "cancelled_by", "created_by"):
        return "mallory" if value != "mallory" else "eve"
    if isinstance(value, int):
        return value + 1
    if value is None:
        return "forged"
    return _other(value)


@pytest.mark.parametrize("state", BATCH_STATES)
@pytest.mark.parametrize("column", SEALED_BATCH_COLUMNS)
def test_an_edited_sealed_batch_column_is_named(world: World, column: str, state: str) -> None:
    batch_id = world.batches[state]
    forged, verdict = _edited(
        world,
        payout_batch,
        payout_batch.c.batch_id,
        batch_id,
        column,
        lambda _, batch: _forged_batch_value(column, batch[column]),
    )
    if column == "batch_id":
        _assert_rekeyed_caught(verdict, "payout_batch", batch_id, forged)
    else:
        assert_caught(verdict, {("payout_batch", batch_id)}, fault=Fault.EDITED)
        assert column in verdict.problems[0].detail


@pytest.mark.parametrize("state", BATCH_STATES)
def test_a_deleted_batch_is_named(world: World, state: str) -> None:
    batch_id = world.batches[state]
    verdict = _deleted(world, payout_batch, payout_batch.c.batch_id, batch_id)
    assert_caught(verdict, {("payout_batch", batch_id)}, fault=Fault.DELETED)


def test_a_forged_batch_is_named(world: World) -> None:
    forged, verdict = _inserted(
        world,
        payout_batch,
        payout_batch.c.batch_id,
        world.batches["SETTLED"],
        {"batch_id": "pb_" + "f" * 24, "request_id": "forged-request"},
    )
    assert_caught(verdict, {("payout_batch", forged["batch_id"])}, fault=Fault.INSERTED)


# --------------------------------------------------------------------------------------------- payout_export

EXPORT_COLUMNS = [c.name for c in payout_export.columns]


@pytest.mark.parametrize("state", ["EXPORTED", "SETTLED"])
@pytest.mark.parametrize("column", EXPORT_COLUMNS)
def test_an_edited_bank_file_is_named(world: World, column: str, state: str) -> None:
    batch_id = world.batches[state]

    def forge(conn: Connection, stored: dict[str, Any]) -> Any:
        if column in ("csv", "pain001"):  # the attack that matters: pay one transfer elsewhere
            paid = conn.execute(
                select(grant.c.payee_account_no)
                .where(grant.c.batch_id == batch_id, grant.c.state == LineState.PAID)
                .limit(1)
            ).scalar_one()
            content = bytes(stored[column])
            assert paid.encode() in content
            return content.replace(paid.encode(), FORGED_ACCOUNT.encode())
        if column == "batch_id":
            return world.batches["APPROVED"]  # the file passed off as another batch's
        return _other(stored[column])

    forged, verdict = _edited(world, payout_export, payout_export.c.batch_id, batch_id, column, forge)
    if column == "batch_id":
        assert_caught(verdict, {("payout_export", batch_id), ("payout_export", forged)})
    else:
        assert_caught(verdict, {("payout_export", batch_id)}, fault=Fault.EDITED)


@pytest.mark.parametrize("state", ["EXPORTED", "SETTLED"])
def test_a_deleted_bank_file_is_named(world: World, state: str) -> None:
    batch_id = world.batches[state]
    verdict = _deleted(world, payout_export, payout_export.c.batch_id, batch_id)
    assert_caught(verdict, {("payout_export", batch_id)}, fault=Fault.DELETED)


def test_a_forged_bank_file_is_named(world: World) -> None:
    approved = world.batches["APPROVED"]
    _, verdict = _inserted(
        world,
        payout_export,
        payout_export.c.batch_id,
        world.batches["SETTLED"],
        {"batch_id": approved, "message_id": "MSGforged0000000000000001"},
    )
    assert_caught(verdict, {("payout_export", approved)}, fault=Fault.INSERTED)


# --------------------------------------------------------------------------------------------- payout_line_seal


def _newest_seal(conn: Connection, line_id: str) -> dict[str, Any]:
    return dict(
        conn.execute(
            select(payout_line_seal)
            .where(payout_line_seal.c.line_id == line_id)
            .order_by(payout_line_seal.c.ledger_seq.desc())
            .limit(1)
        )
        .one()
        ._mapping
    )


def _seals_of(conn: Connection, line_id: str) -> list[dict[str, Any]]:
    return [
        dict(r._mapping)
        for r in conn.execute(
            select(payout_line_seal)
            .where(payout_line_seal.c.line_id == line_id)
            .order_by(payout_line_seal.c.ledger_seq)
        )
    ]


def _set_seal(conn: Connection, seal: dict[str, Any], **values: Any) -> None:
    conn.execute(
        update(payout_line_seal)
        .where(payout_line_seal.c.ledger_seq == seal["ledger_seq"], payout_line_seal.c.leaf_index == seal["leaf_index"])
        .values(**values)
    )


def _entry(seal: dict[str, Any]) -> tuple[str, str]:
    return ("payout_line_seal", f"entry {seal['ledger_seq']}")


@pytest.mark.parametrize("state", [s.value for s in LineState])
def test_an_edited_seal_row_is_named(world: World, state: str) -> None:
    line_id = world.lines[state]
    with attacker(world.engine) as conn:
        seal = _newest_seal(conn, line_id)
        leaf = orjson.loads(seal["leaf"])
        leaf["amount_fen"] += 1
        _set_seal(conn, seal, leaf=orjson.dumps(leaf, option=orjson.OPT_SORT_KEYS).decode())
        verdict = _verdict(conn)
    # The seals of the entry no longer give its root; the line no longer equals its newest seal.
    assert_caught(verdict, {_entry(seal)}, {_entry(seal), ("grant_award", line_id)})


@pytest.mark.parametrize("state", [s.value for s in LineState])
def test_a_deleted_seal_row_is_named(world: World, state: str) -> None:
    line_id = world.lines[state]
    with attacker(world.engine) as conn:
        seal = _newest_seal(conn, line_id)
        conn.execute(
            delete(payout_line_seal).where(
                payout_line_seal.c.ledger_seq == seal["ledger_seq"], payout_line_seal.c.leaf_index == seal["leaf_index"]
            )
        )
        verdict = _verdict(conn)
    assert_caught(verdict, {_entry(seal)}, {_entry(seal), ("grant_award", line_id)})
    assert [p.fault for p in verdict.problems if (p.table, p.row) == _entry(seal)] == [Fault.DELETED]


def test_all_seal_rows_of_a_line_deleted_are_named(world: World) -> None:
    line_id = world.lines["PAID"]
    with attacker(world.engine) as conn:
        seals = _seals_of(conn, line_id)
        conn.execute(delete(payout_line_seal).where(payout_line_seal.c.line_id == line_id))
        verdict = _verdict(conn)
    required = {_entry(s) for s in seals}
    assert_caught(verdict, required, required | {("grant_award", line_id)})


def test_a_forged_seal_row_in_an_entry_is_named(world: World) -> None:
    line_id = world.lines["PAID"]
    with attacker(world.engine) as conn:
        seal = _newest_seal(conn, line_id)
        count = conn.execute(
            select(func.count())
            .select_from(payout_line_seal)
            .where(payout_line_seal.c.ledger_seq == seal["ledger_seq"])
        ).scalar_one()
        conn.execute(insert(payout_line_seal).values({**seal, "leaf_index": count}))
        verdict = _verdict(conn)
    assert_caught(verdict, {_entry(seal)}, fault=Fault.INSERTED)


def test_a_forged_line_with_a_forged_seal_of_its_own_is_named(world: World) -> None:
    """A new line and a seal row (under an entry that sealed no lines) that matches it exactly."""
    from service.payouts.seals import line_leaf

    with attacker(world.engine) as conn:
        line = _row(conn, grant, grant.c.grant_id, world.lines["PAID"])
        forged = {**line, "grant_id": line["grant_id"][:-6] + "999999", "uscc": uscc(97)}
        conn.execute(insert(grant).values(forged))
        stored = _row(conn, grant, grant.c.grant_id, forged["grant_id"])
        head = conn.execute(select(func.max(payout_line_seal.c.ledger_seq))).scalar_one()
        seq = head + 1000
        conn.execute(
            insert(payout_line_seal).values(
                ledger_seq=seq,
                leaf_index=0,
                batch_id=line["batch_id"],
                line_id=forged["grant_id"],
                leaf=line_leaf(stored).decode(),
            )
        )
        verdict = _verdict(conn)
    assert_caught(
        verdict,
        {("payout_line_seal", f"entry {seq}")},
        {("payout_line_seal", f"entry {seq}"), ("grant_award", forged["grant_id"])},
    )


def test_a_seal_row_moved_to_another_batch_is_named(world: World) -> None:
    line_id = world.lines["PAID"]
    with attacker(world.engine) as conn:
        seal = _newest_seal(conn, line_id)
        _set_seal(conn, seal, batch_id=world.batches["APPROVED"])
        verdict = _verdict(conn)
    assert_caught(verdict, {_entry(seal)}, fault=Fault.EDITED)


def test_seal_rows_swapped_within_their_entry_are_named(world: World) -> None:
    """The DRAFT entry of the main batch sealed five leaves: two of them change places."""
    line_id = world.lines["WITHDRAWN"]
    with attacker(world.engine) as conn:
        first = _seals_of(conn, line_id)[0]
        seq = first["ledger_seq"]
        other = dict(
            conn.execute(
                select(payout_line_seal)
                .where(payout_line_seal.c.ledger_seq == seq, payout_line_seal.c.leaf_index != first["leaf_index"])
                .limit(1)
            )
            .one()
            ._mapping
        )
        _set_seal(conn, first, leaf_index=-1)
        _set_seal(conn, other, leaf_index=first["leaf_index"])
        _set_seal(conn, {**first, "leaf_index": -1}, leaf_index=other["leaf_index"])
        verdict = _verdict(conn)
    assert_caught(verdict, {_entry(first)}, fault=Fault.EDITED)


@pytest.mark.parametrize("state", [s.value for s in LineState])
def test_a_line_edited_together_with_its_newest_seal_is_still_caught(world: World, state: str) -> None:
    """The combined attack: the amount raised in the line AND in its newest seal row, so that the
    two match again - the seal rows no longer give the root the ledger entry holds."""
    from service.payouts.seals import line_leaf

    line_id = world.lines[state]
    with attacker(world.engine) as conn:
        line = _row(conn, grant, grant.c.grant_id, line_id)
        conn.execute(
            update(grant)
            .where(grant.c.grant_id == line_id)
            .values(amount_fen=line["amount_fen"] * 10, payee_account_no=FORGED_ACCOUNT)
        )
        seal = _newest_seal(conn, line_id)
        _set_seal(conn, seal, leaf=line_leaf(_row(conn, grant, grant.c.grant_id, line_id)).decode())
        verdict = _verdict(conn)
    assert_caught(verdict, {_entry(seal)}, {_entry(seal), ("grant_award", line_id)})


def test_a_paid_line_rolled_back_by_relabelling_its_newest_seal_is_caught(world: World) -> None:
    """Roll a PAID line back to PENDING (as the DRAFT event sealed it) and hide its RESULTS seal
    by writing another line's id into that seal row's `line_id` - a line sealed later, so that
    line's own newest seal stays its newest. No leaf, position or batch of any seal row changes,
    so every entry's root still matches; but the seal row now claims a line its leaf is not."""
    paid, later = world.lines["PAID"], world.lines["PENDING"]  # PENDING: the repay batch, sealed later
    with attacker(world.engine) as conn:
        seals = _seals_of(conn, paid)
        assert len(seals) == 2, seals  # DRAFT (PENDING) and RESULTS (PAID)
        draft_leaf = orjson.loads(seals[0]["leaf"])
        assert draft_leaf["state"] == "PENDING"
        assert _newest_seal(conn, later)["ledger_seq"] > seals[1]["ledger_seq"]
        conn.execute(
            update(grant)
            .where(grant.c.grant_id == paid)
            .values(state=draft_leaf["state"], result_by=draft_leaf["result_by"])
        )
        _set_seal(conn, seals[1], line_id=later)
        verdict = _verdict(conn)
    assert_caught(verdict, {_entry(seals[1])}, {_entry(seals[1]), ("grant_award", paid), ("grant_award", later)})


def test_a_deleted_line_whose_seals_were_relabelled_is_caught(world: World) -> None:
    """Delete a PAID line - which frees its (enterprise, policy, period) for a second grant -
    and write a later-sealed line's id into the deleted line's seal rows."""
    paid, later = world.lines["PAID"], world.lines["PENDING"]
    with attacker(world.engine) as conn:
        seals = _seals_of(conn, paid)
        conn.execute(delete(grant).where(grant.c.grant_id == paid))
        conn.execute(update(payout_line_seal).where(payout_line_seal.c.line_id == paid).values(line_id=later))
        verdict = _verdict(conn)
    allowed = {("grant_award", paid), ("grant_award", later)} | {_entry(s) for s in seals}
    named = {(p.table, p.row) for p in verdict.problems}
    assert not verdict.valid and named & allowed, (
        f"a PAID line ({paid}) was deleted and went unnoticed: {verdict.detail}"
    )
    assert_caught(verdict, set(), allowed)


# --------------------------------------------------------------------------------------------- evaluation_record


def _record_of_paid_line(conn: Connection, world: World) -> dict[str, Any]:
    evaluation_id = _row(conn, grant, grant.c.grant_id, world.lines["PAID"])["evaluation_id"]
    return _row(conn, evaluation_record, evaluation_record.c.evaluation_id, evaluation_id)


def test_a_deleted_evaluation_record_is_named(world: World) -> None:
    """The ledger seals a chunk of records by its root: a deleted record names its chunk (and its
    place in it); the line citing it names the evaluation that is gone."""
    with attacker(world.engine) as conn:
        record = _record_of_paid_line(conn, world)
        conn.execute(delete(evaluation_record).where(evaluation_record.c.evaluation_id == record["evaluation_id"]))
        verdict = _verdict(conn)
    chunk = ("evaluation_record", f"entry {record['ledger_seq']}")
    assert_caught(verdict, {chunk}, {chunk, ("grant_award", world.lines["PAID"])}, fault=Fault.DELETED)
    assert f"leaf {record['leaf_index']} missing" in _report_text(verdict)
    line_problem = next(p for p in verdict.problems if p.table == "grant_award")
    assert record["evaluation_id"] in line_problem.detail and "not stored" in line_problem.detail


def test_a_deleted_ineligible_evaluation_record_is_named(world: World) -> None:
    with attacker(world.engine) as conn:
        record = conn.execute(select(evaluation_record).where(evaluation_record.c.uscc == UNTITLED).limit(1)).one()
        conn.execute(delete(evaluation_record).where(evaluation_record.c.evaluation_id == record.evaluation_id))
        verdict = _verdict(conn)
    assert_caught(verdict, {("evaluation_record", f"entry {record.ledger_seq}")}, fault=Fault.DELETED)


RECORD_EDITS: dict[str, Callable[[World, dict[str, Any]], Any]] = {
    "uscc": lambda w, r: UNTITLED,
    "policy_id": lambda w, r: "single-champion-reward",
    "period": lambda w, r: r["period"] - 1,
    "outcome": lambda w, r: "INELIGIBLE",
    "batch_id": lambda w, r: w.batches["DRAFT"],
    "amount_fen": lambda w, r: r["amount_fen"] * 2,
    "record_sha256": lambda w, r: _other(r["record_sha256"]),
}


@pytest.mark.parametrize("column", sorted(RECORD_EDITS))
def test_an_edited_evaluation_record_filter_column_is_named(world: World, column: str) -> None:
    with attacker(world.engine) as conn:
        record = _record_of_paid_line(conn, world)
        conn.execute(
            update(evaluation_record)
            .where(evaluation_record.c.evaluation_id == record["evaluation_id"])
            .values({column: RECORD_EDITS[column](world, record)})
        )
        verdict = _verdict(conn)
    assert_caught(verdict, {("evaluation_record", record["evaluation_id"])}, fault=Fault.EDITED)


def test_a_batch_id_removed_from_an_evaluation_record_is_named(world: World) -> None:
    with attacker(world.engine) as conn:
        record = _record_of_paid_line(conn, world)
        conn.execute(
            update(evaluation_record)
            .where(evaluation_record.c.evaluation_id == record["evaluation_id"])
            .values(batch_id=None)
        )
        verdict = _verdict(conn)
    assert_caught(verdict, {("evaluation_record", record["evaluation_id"])}, fault=Fault.EDITED)


def test_an_evaluation_record_rewritten_with_its_hash_recomputed_is_named(world: World) -> None:
    with attacker(world.engine) as conn:
        record = _record_of_paid_line(conn, world)
        body = orjson.loads(record["record"])
        body["amount_fen"] *= 2
        text = orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode()
        conn.execute(
            update(evaluation_record)
            .where(evaluation_record.c.evaluation_id == record["evaluation_id"])
            .values(record=text, record_sha256=hashlib.sha256(text.encode()).hexdigest(), amount_fen=body["amount_fen"])
        )
        verdict = _verdict(conn)
    assert_caught(verdict, {("evaluation_record", record["evaluation_id"])}, fault=Fault.EDITED)


def test_a_forged_evaluation_record_is_named(world: World) -> None:
    with attacker(world.engine) as conn:
        record = _record_of_paid_line(conn, world)
        head = conn.execute(select(func.max(evaluation_record.c.ledger_seq))).scalar_one()
        forged = {**record, "evaluation_id": "ev_" + "f" * 32, "ledger_seq": head + 1000}
        conn.execute(insert(evaluation_record).values(forged))
        verdict = _verdict(conn)
    assert_caught(verdict, {("evaluation_record", forged["evaluation_id"])}, fault=Fault.INSERTED)


# --------------------------------------------------------------------------------------------- the CLI


Undo = Callable[[Connection], object]  # puts back what an attack changed (a statement: its result is unused)


@dataclass(frozen=True)
class CommittedAttack:
    name: str
    table: str
    do: Callable[[Connection, World], tuple[str, Undo]]  # -> (row named, undo)


def _edit_line(column: str, value: Any) -> Callable[[Connection, World], tuple[str, Undo]]:
    def do(conn: Connection, world: World) -> tuple[str, Undo]:
        line_id = world.lines["PAID"]
        before = _row(conn, grant, grant.c.grant_id, line_id)[column]
        conn.execute(update(grant).where(grant.c.grant_id == line_id).values({column: value}))
        return line_id, lambda c: c.execute(update(grant).where(grant.c.grant_id == line_id).values({column: before}))

    return do


def _delete_line(conn: Connection, world: World) -> tuple[str, Undo]:
    line = _row(conn, grant, grant.c.grant_id, world.lines["RETURNED"])
    conn.execute(delete(grant).where(grant.c.grant_id == line["grant_id"]))
    return line["grant_id"], lambda c: c.execute(insert(grant).values(line))


def _edit_batch_total(conn: Connection, world: World) -> tuple[str, Undo]:
    batch_id = world.batches["EXPORTED"]
    total = _row(conn, payout_batch, payout_batch.c.batch_id, batch_id)["total_fen"]
    conn.execute(update(payout_batch).where(payout_batch.c.batch_id == batch_id).values(total_fen=total * 2))
    return batch_id, lambda c: c.execute(
        update(payout_batch).where(payout_batch.c.batch_id == batch_id).values(total_fen=total)
    )


def _reroute_bank_file(conn: Connection, world: World) -> tuple[str, Undo]:
    batch_id = world.batches["SETTLED"]
    xml = bytes(_row(conn, payout_export, payout_export.c.batch_id, batch_id)["pain001"])
    assert account_of(8).encode() in xml
    conn.execute(
        update(payout_export)
        .where(payout_export.c.batch_id == batch_id)
        .values(pain001=xml.replace(account_of(8).encode(), FORGED_ACCOUNT.encode()))
    )
    return batch_id, lambda c: c.execute(
        update(payout_export).where(payout_export.c.batch_id == batch_id).values(pain001=xml)
    )


def _delete_seal(conn: Connection, world: World) -> tuple[str, Undo]:
    seal = _newest_seal(conn, world.lines["CANCELLED"])
    conn.execute(
        delete(payout_line_seal).where(
            payout_line_seal.c.ledger_seq == seal["ledger_seq"], payout_line_seal.c.leaf_index == seal["leaf_index"]
        )
    )
    return f"entry {seal['ledger_seq']}", lambda c: c.execute(insert(payout_line_seal).values(seal))


def _delete_record(conn: Connection, world: World) -> tuple[str, Undo]:
    record = _record_of_paid_line(conn, world)
    conn.execute(delete(evaluation_record).where(evaluation_record.c.evaluation_id == record["evaluation_id"]))
    # Named by its chunk: the ledger holds the chunk's root, not each record's id.
    return f"entry {record['ledger_seq']}", lambda c: c.execute(insert(evaluation_record).values(record))


def _edit_record_outcome(conn: Connection, world: World) -> tuple[str, Undo]:
    record = _record_of_paid_line(conn, world)
    key = evaluation_record.c.evaluation_id == record["evaluation_id"]
    conn.execute(update(evaluation_record).where(key).values(outcome="INELIGIBLE"))
    return record["evaluation_id"], lambda c: c.execute(
        update(evaluation_record).where(key).values(outcome=record["outcome"])
    )


COMMITTED_ATTACKS = [
    CommittedAttack("line amount raised", "grant_award", _edit_line("amount_fen", 99_999_999)),
    CommittedAttack("line payee account swapped", "grant_award", _edit_line("payee_account_no", FORGED_ACCOUNT)),
    CommittedAttack("paid line released", "grant_award", _edit_line("released", "x")),
    CommittedAttack("returned line deleted", "grant_award", _delete_line),
    CommittedAttack("batch total doubled", "payout_batch", _edit_batch_total),
    CommittedAttack("bank file rerouted", "payout_export", _reroute_bank_file),
    CommittedAttack("seal row deleted", "payout_line_seal", _delete_seal),
    CommittedAttack("evaluation record deleted", "evaluation_record", _delete_record),
    CommittedAttack("evaluation record outcome edited", "evaluation_record", _edit_record_outcome),
]


@pytest.mark.parametrize("attack", COMMITTED_ATTACKS, ids=[a.name for a in COMMITTED_ATTACKS])
def test_benefits_audit_verify_names_the_altered_row(
    world: World, attack: CommittedAttack, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = world.engine
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        drop_append_only_triggers(conn, payout_line_seal.name)
        row, undo = attack.do(conn, world)
    try:
        capsys.readouterr()
        code = cli.main(["audit", "verify", "--db", world.url])
        out = capsys.readouterr().out
    finally:
        with engine.begin() as conn:  # undo the attack (the CLI re-created the triggers)
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            drop_append_only_triggers(conn, payout_line_seal.name)
            undo(conn)
            create_append_only_triggers(conn, payout_line_seal.name)
    assert code == 1, out
    assert out.startswith("INVALID"), out
    assert any(f"{attack.table} {row}:" in line for line in out.splitlines()), (
        f"{attack.table} {row} not named in:\n{out}"
    )
    for secret in SECRETS:
        assert secret not in out, f"account number {secret} printed by benefits audit verify"
    # Undone, it verifies again: the cases stay independent.
    assert cli.main(["audit", "verify", "--db", world.url]) == 0, capsys.readouterr().out


def test_the_world_still_verifies_after_the_matrix(world: World) -> None:
    with world.engine.connect() as conn:
        assert _verdict(conn).valid


# --------------------------------------------------------------------------------------------- before DRAFT


class _StopAfter(threading.Event):
    """A stop event that is set from its (n+1)-th look on: the run stops between its last chunk
    and the end, so an attacker gets the gap before the lines are written (a run only asks
    `is_set`)."""

    def __init__(self, looks: int) -> None:
        super().__init__()
        self.looks, self.seen = looks, 0

    def is_set(self) -> bool:
        self.seen += 1
        return self.seen > self.looks


CANDIDATE_ATTACKS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "amount inflated": lambda c: {"full_fen": c.full_fen * 10},
    "enterprise swapped for an ineligible one": lambda c: {"uscc": UNTITLED},
}


def _draft_with_a_tampered_candidate(db_engine: Engine, policies: PolicySet, attack: str) -> Any:
    """Run a batch to its last chunk, alter one candidate as an attacker would, then let it turn
    DRAFT; the altered candidate row (as it was before the attack)."""
    from service.payouts.batches import start_batch
    from service.payouts.runner import new_worker_id, run_batch
    from service.payouts.tables import payout_candidate

    create_payout_schema(db_engine)
    load_records(
        titled(MAIN[0], 1, 2025) + titled(MAIN[1], 2, 2025) + [enterprise(UNTITLED, account_of(10))], db_engine
    )
    batch = start_batch(
        db_engine, policies, policy_id=GIANT, period=2025, request_id="tamper-candidate-1", actor=OPERATOR, today=TODAY
    )
    stop = _StopAfter(1)
    assert not run_batch(
        db_engine, policies, batch.batch_id, worker=new_worker_id(), settings=RunSettings(chunk_size=10), stop=stop
    )
    with db_engine.begin() as conn:
        candidate = conn.execute(
            select(payout_candidate).where(
                payout_candidate.c.batch_id == batch.batch_id, payout_candidate.c.uscc == MAIN[0]
            )
        ).one()
        conn.execute(
            update(payout_candidate)
            .where(payout_candidate.c.batch_id == batch.batch_id, payout_candidate.c.uscc == MAIN[0])
            .values(CANDIDATE_ATTACKS[attack](candidate))
        )
    assert run_batch(db_engine, policies, batch.batch_id, worker=new_worker_id(), settings=RunSettings(chunk_size=10))
    return candidate


@pytest.mark.parametrize("attack", sorted(CANDIDATE_ATTACKS))
def test_a_tampered_candidate_is_not_drafted(db_engine: Engine, policies: PolicySet, attack: str) -> None:
    """While a batch runs, what it found is kept in `payout_candidate` (not sealed). An attacker
    edits a candidate between the last chunk and DRAFT: the DRAFT transaction checks every
    candidate against the (sealed) evaluation record it cites and pays none that contradicts it."""
    candidate = _draft_with_a_tampered_candidate(db_engine, policies, attack)
    with db_engine.connect() as conn:
        assert conn.execute(select(grant).where(grant.c.evaluation_id == candidate.evaluation_id)).first() is None
        assert [line.uscc for line in conn.execute(select(grant))] == [MAIN[1]]  # the untouched one is paid
        assert _verdict(conn).valid


@pytest.mark.parametrize("attack", sorted(CANDIDATE_ATTACKS))
def test_a_line_drafted_from_a_tampered_candidate_is_caught(
    db_engine: Engine, policies: PolicySet, attack: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should a writer draft such a line anyway (here: the DRAFT check switched off), the sealed
    line contradicts the evaluation record it cites, whose hash the ledger holds: the amount,
    or the enterprise. Verification must not call that VALID."""
    from service.payouts import runner
    from service.payouts.tables import payout_candidate

    def unchecked(run: Any, conn: Any) -> Iterator[list[Any]]:  # one page, unchecked
        yield list(
            conn.execute(
                select(payout_candidate)
                .where(payout_candidate.c.batch_id == run.batch_id)
                .order_by(payout_candidate.c.uscc)
            )
        )

    monkeypatch.setattr(runner._Run, "_founded_candidates", unchecked)
    candidate = _draft_with_a_tampered_candidate(db_engine, policies, attack)
    with db_engine.connect() as conn:
        line = conn.execute(select(grant).where(grant.c.evaluation_id == candidate.evaluation_id)).one()
        record = conn.execute(
            select(evaluation_record).where(evaluation_record.c.evaluation_id == candidate.evaluation_id)
        ).one()
        assert (line.uscc, line.full_fen) != (record.uscc, record.amount_fen)  # the attack took effect
        verdict = _verdict(conn)
    assert not verdict.valid, (
        f"line {line.grant_id} pays {line.uscc} {line.full_fen} fen citing evaluation "
        f"{record.evaluation_id} of {record.uscc} for {record.amount_fen} fen, and "
        f"verification says: {verdict.detail}"
    )
    assert ("grant_award", line.grant_id) in {(p.table, p.row) for p in verdict.problems}
