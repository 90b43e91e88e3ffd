"""Red-team review of the sealed money path, in-process on SQLite and PostgreSQL.

The issue's promise: "the fen that leaves is the fen that was decided, approved and sealed", and
tampering with the money tables is detected and located. An attacker here has ordinary write
access to the database (INSERT/UPDATE, as any application account has); unless a test says so, no
trigger is dropped: `grant_award`, `payout_batch` and `payout_export` have none, and the
append-only triggers of `ledger_entry` and `payout_line_seal` refuse only UPDATE and DELETE.

Tests that fail show where the promise does not hold (see each docstring); the others show attacks
the service resists and that were not yet covered.
"""
from __future__ import annotations

import hashlib
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from lxml import etree
from money_fixtures import (
    APPROVER,
    GIANT,
    GIANT_FEN,
    OPERATOR,
    PAIN001_NS,
    PAYER,
    account_of,
    change_account,
    creditor_accounts,
    titled,
    uscc,
)
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from enterprise_registry.importer import load_records
from enterprise_registry.models import table_for
from rules.loader import PolicySet, load_policy_dir
from service.audit import checkpoints
from service.audit.ledger import ledger_entry, ledger_transaction
from service.audit.records import Actor
from service.audit.verification import verify_audit_log
from service.catalogue import CATALOGUE
from service.errors import ServiceError
from service.payouts.batches import BankResult, approve, create_payout_schema, get_batch, lines_of, record_results
from service.payouts.export import export
from service.payouts.runner import create_batch
from service.payouts.seals import MONEY_EVENT_KIND, MoneyEvent, read_lines, seal_event
from service.payouts.states import LineState
from service.payouts.tables import grant, payout_export

RULES = Path(__file__).resolve().parents[2] / "rules"
TODAY = date(2026, 1, 10)
E = [uscc(n, "MA4R") for n in (1, 2, 3)]          # little-giant 2025, accounts account_of(1..3)
ATTACKER_ACCOUNT = "6222777766665555444"


@pytest.fixture(scope="module")
def policies() -> PolicySet:
    return load_policy_dir(RULES / "policies", CATALOGUE)


def _approved(engine: Engine, policies: PolicySet, request_id: str = "review-sealed-0001") -> tuple[str, list[str]]:
    create_payout_schema(engine)
    load_records([r for n, code in enumerate(E, start=1) for r in titled(code, n, 2025)], engine)
    batch = create_batch(engine, policies, policy_id=GIANT, period=2025, request_id=request_id,
                         actor=OPERATOR, today=TODAY)
    assert (batch.state, batch.line_count, batch.total_fen) == ("DRAFT", 3, 3 * GIANT_FEN)
    approve(engine, batch.batch_id, APPROVER)
    with engine.connect() as conn:
        return batch.batch_id, [str(line["grant_id"]) for line in lines_of(conn, batch.batch_id)]


def _amounts(xml: bytes) -> dict[str, int]:
    document = etree.fromstring(xml)
    return {str(tx.findtext("p:PmtId/p:EndToEndId", namespaces=PAIN001_NS)):
            int(Decimal(tx.findtext("p:Amt/p:InstdAmt", namespaces=PAIN001_NS) or "0") * 100)
            for tx in document.iterfind(".//p:CdtTrfTxInf", PAIN001_NS)}


def _sealed_export(engine: Engine, batch_id: str) -> dict[str, str]:
    with engine.connect() as conn:
        for (payload,) in conn.execute(select(ledger_entry.c.payload).where(ledger_entry.c.kind == MONEY_EVENT_KIND)
                                       .order_by(ledger_entry.c.seq)):
            data = orjson.loads(payload)
            if data["batch_id"] == batch_id and data["event"] == MoneyEvent.EXPORT:
                return dict(data["export"])
    raise AssertionError(f"no export event for {batch_id}")


def _verdict(engine: Engine, **kw: Any) -> Any:
    with engine.connect() as conn:
        return verify_audit_log(conn, **kw)


# --------------------------------------------------------------------------------------------- export


def test_export_pays_an_amount_that_is_not_the_sealed_one(db_engine: Engine, policies: PolicySet) -> None:
    """FAILS. One UPDATE of an APPROVED line's amount (grant_award has no trigger) and the bank
    file pays it: `export.export` builds the transfers from the live rows (`lines_of`) and its
    `check` only compares the XML with those same rows; nothing compares a line with its seal
    before the money leaves (service/payouts/export.py:91 and 100 read the live rows, 113-114
    re-compare them with themselves). Verification names the line - but
    only after the file has gone to the bank."""
    batch_id, line_ids = _approved(db_engine, policies)
    victim = line_ids[1]
    with db_engine.begin() as conn:
        conn.execute(update(grant).where(grant.c.grant_id == victim).values(full_fen=99_999_999,
                                                                           amount_fen=99_999_999))
    try:
        _, xml = export(db_engine, batch_id, PAYER, OPERATOR)
    except ServiceError:
        return   # refusing to export a line that is not its seal is the right outcome
    paid = _amounts(xml)
    assert paid[victim] == GIANT_FEN, (
        f"the bank file pays line {victim} {paid[victim]} fen; the amount decided, approved and sealed "
        f"is {GIANT_FEN} fen (verify, run later, says: {_verdict(db_engine).detail})")


def test_export_pays_an_account_that_is_not_the_sealed_payee(db_engine: Engine, policies: PolicySet) -> None:
    """FAILS. The attacker rewrites an APPROVED line's payee (one UPDATE of grant_award) and gives
    the registry the same account (here by a feed import, as a market_regulation feed or a
    database writer can): the payee check of the export compares the live line with the registry,
    both the attacker's, and the bank file pays the attacker (service/payouts/export.py:91-92 and
    `payment_lines` at 125 read the live row, never the sealed leaf)."""
    batch_id, line_ids = _approved(db_engine, policies)
    victim, code = line_ids[0], E[0]
    with db_engine.begin() as conn:
        conn.execute(update(grant).where(grant.c.grant_id == victim).values(payee_account_no=ATTACKER_ACCOUNT))
    change_account(db_engine, code, ATTACKER_ACCOUNT)
    try:
        _, xml = export(db_engine, batch_id, PAYER, OPERATOR)
    except ServiceError:
        return
    paid_to = creditor_accounts(xml)[victim]
    assert paid_to == account_of(1), (
        f"the bank file pays line {victim} to {paid_to}, not to the payee sealed at DRAFT and approved "
        f"({account_of(1)})")


def test_a_re_export_hands_out_a_stored_bank_file_that_is_not_the_sealed_one(
        db_engine: Engine, policies: PolicySet) -> None:
    """FAILS. Re-exports are meant to be safe ("the first export is stored and re-exports return
    the same bytes"); the stored file is returned without checking it against the SHA-256 its
    export event sealed (service/payouts/export.py:84-86 `stored_export`). An UPDATE of
    payout_export.pain001 redirecting one transfer reaches the bank with the next re-export."""
    batch_id, line_ids = _approved(db_engine, policies)
    _, original = export(db_engine, batch_id, PAYER, OPERATOR)
    sealed = _sealed_export(db_engine, batch_id)
    assert hashlib.sha256(original).hexdigest() == sealed["pain001_sha256"]
    forged = original.replace(account_of(2).encode(), ATTACKER_ACCOUNT.encode())
    assert forged != original
    with db_engine.begin() as conn:
        conn.execute(update(payout_export).where(payout_export.c.batch_id == batch_id).values(pain001=forged))
    try:
        _, again = export(db_engine, batch_id, PAYER, OPERATOR)
    except ServiceError:
        return
    assert hashlib.sha256(again).hexdigest() == sealed["pain001_sha256"], (
        f"the re-export returned a bank file that is not the sealed one: line {line_ids[1]} now pays "
        f"{creditor_accounts(again)[line_ids[1]]}")


# --------------------------------------------------------------------------------------------- the ledger


def _settled(engine: Engine, policies: PolicySet) -> tuple[str, list[str]]:
    batch_id, line_ids = _approved(engine, policies)
    export(engine, batch_id, PAYER, OPERATOR)
    record_results(engine, batch_id, [BankResult(line, LineState.PAID) for line in line_ids], OPERATOR)
    assert get_batch(engine, batch_id).state == "SETTLED"
    return batch_id, line_ids


def test_a_confirmed_return_forged_by_appending_to_the_ledger_verifies_and_pays_twice(
        db_engine: Engine, policies: PolicySet, tmp_path: Path) -> None:
    """FAILS. Every line was PAID and a signed checkpoint covers the ledger. The attacker turns a
    PAID line into a confirmed return - one UPDATE of grant_award - and appends the matching money
    event: a ledger entry (INSERT: the append-only trigger allows it) and its seal row (INSERT),
    computed exactly as `seals.seal_event` does, naming a real approver. No trigger is dropped.
    The chain is intact, every line equals its newest seal, every seal gives its root, the batch
    equals its snapshot and the checkpoint still holds (the new entry is only "not yet covered"),
    so verification says VALID; the next batch pays the enterprise a second time, and the next
    checkpoint the server signs (after every export, every 5 minutes) vouches for the forgery.
    Nothing binds an appended entry to the server that wrote it (service/audit/ledger.py `append`
    needs no secret; service/audit/checkpoints.py `_against_ledger` accepts any entries after the
    newest checkpoint; service/server.py Checkpointer signs whatever head it finds)."""
    key_file = tmp_path / "ledger-key.pem"
    key = checkpoints.generate_key(key_file)
    check_file = tmp_path / "checkpoints.jsonl"
    batch_id, line_ids = _settled(db_engine, policies)
    with db_engine.connect() as conn:
        checkpoints.write(checkpoints.checkpoint_now(conn, key), check_file)
    public = checkpoints.load_public_key(checkpoints.public_key_path(key_file))
    assert _verdict(db_engine, checkpoint_file=check_file, public_key=public).valid

    victim = line_ids[0]
    with ledger_transaction(db_engine) as conn:   # the attacker's transaction
        conn.execute(update(grant).where(grant.c.grant_id == victim).values(
            state=LineState.RETURNED, return_reason="AC04 账户已销户", result_by=OPERATOR.principal,
            confirmed_by=APPROVER.principal, released=victim))
        seal_event(conn, MoneyEvent.CONFIRM_RETURNS, batch_id, Actor(APPROVER.principal, APPROVER.role),
                   lines=read_lines(conn, [victim]))
    verdict = _verdict(db_engine, checkpoint_file=check_file, public_key=public)
    again = create_batch(db_engine, policies, policy_id=GIANT, period=2025, request_id="review-sealed-0002",
                         actor=OPERATOR, today=TODAY)
    with db_engine.connect() as conn:
        checkpoints.write(checkpoints.checkpoint_now(conn, key), check_file)   # the server's next one
    later = _verdict(db_engine, checkpoint_file=check_file, public_key=public)
    assert not verdict.valid, (
        f"a forged confirmation of a return verifies: {verdict.detail}; batch {again.batch_id} then pays "
        f"{again.line_count} line(s), {again.total_fen} fen, to an enterprise already paid, and after the next "
        f"checkpoint verification still says valid={later.valid}")


def test_a_grant_released_by_a_bare_update_is_paid_again_by_the_next_batch(
        db_engine: Engine, policies: PolicySet) -> None:
    """FAILS. Simpler than the forgery above: a bare UPDATE of a PAID line to RETURNED/released
    (no ledger entry). Verification does name the line (asserted first, it passes) - but no step
    of the money path consults the seals: the next batch reads `grant_award.released` as it
    stands (service/payouts/runner.py `_granted` and `finish`) and pays the enterprise again,
    and that batch's own lines all match their seals, so its export goes through."""
    _, line_ids = _settled(db_engine, policies)
    victim = line_ids[0]
    with db_engine.begin() as conn:
        conn.execute(update(grant).where(grant.c.grant_id == victim).values(
            state=LineState.RETURNED, return_reason="AC04", confirmed_by="someone", released=victim))
    verdict = _verdict(db_engine)
    assert not verdict.valid and ("grant_award", victim) in {(p.table, p.row) for p in verdict.problems}
    again = create_batch(db_engine, policies, policy_id=GIANT, period=2025, request_id="review-sealed-0003",
                         actor=OPERATOR, today=TODAY)
    exported_to: dict[str, str] = {}
    if again.line_count:   # and the repay goes all the way to a bank file
        approve(db_engine, again.batch_id, APPROVER)
        exported_to = creditor_accounts(export(db_engine, again.batch_id, PAYER, OPERATOR)[1])
    assert again.line_count == 0, (
        f"batch {again.batch_id} pays {again.line_count} line(s) ({again.total_fen} fen) to an enterprise whose "
        f"paid line {victim} was released by an UPDATE its seal does not back; its exported bank file pays "
        f"{sorted(exported_to.values())}")


def test_history_rewritten_before_a_checkpoint_verifies_once_the_server_signs_the_next(
        db_engine: Engine, policies: PolicySet, tmp_path: Path) -> None:
    """FAILS. The attacker may drop triggers this time. A checkpoint covers the settled batch.
    The attacker rewrites history: a PAID line becomes a confirmed return (grant_award UPDATE),
    its seal row in the results event is recomputed, that event's Merkle root with it, and every
    ledger hash from there on (same number of entries). Right after, verification fails - the
    checkpoint no longer matches. But the server signs the ledger head every 5 minutes (and at
    start, and after every export) whatever it holds, and `verify_checkpoints` compares only the
    NEWEST checkpoint with the ledger; older ones are checked for their signature and that their
    counts never go down, not for their hashes (service/audit/checkpoints.py:219-238: only
    `newest` reaches `_against_ledger`). So after the next checkpoint the rewritten history verifies VALID, and the
    next batch pays the enterprise a second time."""
    from money_fixtures import drop_append_only_triggers

    from service.audit.canonical import canonical_json, sha256_hex
    from service.audit.ledger import entry_hash
    from service.audit.merkle import RootBuilder
    from service.payouts.seals import line_leaf
    from service.payouts.tables import payout_line_seal

    key_file = tmp_path / "ledger-key.pem"
    key = checkpoints.generate_key(key_file)
    check_file = tmp_path / "checkpoints.jsonl"
    public = checkpoints.load_public_key(checkpoints.public_key_path(key_file))
    _, line_ids = _settled(db_engine, policies)
    with db_engine.connect() as conn:
        checkpoints.write(checkpoints.checkpoint_now(conn, key), check_file)
    victim = line_ids[0]
    with db_engine.begin() as conn:     # the attacker, committed
        for table in (ledger_entry.name, payout_line_seal.name):
            drop_append_only_triggers(conn, table)
        conn.execute(update(grant).where(grant.c.grant_id == victim).values(
            state=LineState.RETURNED, return_reason="AC04 账户已销户", result_by=OPERATOR.principal,
            confirmed_by=APPROVER.principal, released=victim))
        seq = conn.execute(select(payout_line_seal.c.ledger_seq).where(payout_line_seal.c.line_id == victim)
                           .order_by(payout_line_seal.c.ledger_seq.desc()).limit(1)).scalar_one()
        leaf = line_leaf(read_lines(conn, [victim])[0]).decode()
        conn.execute(update(payout_line_seal).where(payout_line_seal.c.ledger_seq == seq,
                                                    payout_line_seal.c.line_id == victim).values(leaf=leaf))
        builder = RootBuilder()
        for (row_leaf,) in conn.execute(select(payout_line_seal.c.leaf).where(payout_line_seal.c.ledger_seq == seq)
                                        .order_by(payout_line_seal.c.leaf_index)):
            builder.add(row_leaf.encode())
        rows = conn.execute(select(ledger_entry).where(ledger_entry.c.seq >= seq).order_by(ledger_entry.c.seq)).all()
        prev = rows[0].prev_hash
        for row in rows:
            payload = row.payload
            if row.seq == seq:
                data = orjson.loads(payload)
                data["lines"]["root"] = builder.root().hex()
                payload = canonical_json(data).decode()
            digest = sha256_hex(payload.encode())
            new_hash = entry_hash(row.seq, row.kind, digest, prev, row.recorded_at)
            conn.execute(update(ledger_entry).where(ledger_entry.c.seq == row.seq).values(
                payload=payload, payload_sha256=digest, prev_hash=prev, entry_hash=new_hash))
            prev = new_hash
    right_after = _verdict(db_engine, checkpoint_file=check_file, public_key=public)
    assert not right_after.valid and right_after.fault == "checkpoint", right_after.detail   # caught, for now
    with db_engine.connect() as conn:    # the server's next periodic checkpoint
        checkpoints.write(checkpoints.checkpoint_now(conn, key), check_file)
    later = _verdict(db_engine, checkpoint_file=check_file, public_key=public)
    again = create_batch(db_engine, policies, policy_id=GIANT, period=2025, request_id="review-sealed-0004",
                         actor=OPERATOR, today=TODAY)
    assert not later.valid, (
        f"the rewritten history verifies once the next checkpoint is signed: {later.detail}; batch "
        f"{again.batch_id} pays {again.line_count} line(s), {again.total_fen} fen, to an enterprise already "
        f"paid (of {check_file.read_text().count(chr(10))} checkpoints, only the newest is checked against the ledger)")


# --------------------------------------------------------------------------------------------- resisted


def test_a_checkpoint_catches_a_ledger_rewritten_before_it(db_engine: Engine, policies: PolicySet,
                                                           tmp_path: Path) -> None:
    """PASSES. The same forgery, but squeezed in before the newest checkpoint's head (the
    attacker rewrites a covered money entry, triggers on the ledger dropped, and rebuilds every
    hash after it): the signed checkpoint no longer matches and verification fails."""
    from money_fixtures import drop_append_only_triggers
    from sqlalchemy import text

    from service.audit.canonical import sha256_hex
    from service.audit.ledger import entry_hash

    key_file = tmp_path / "ledger-key.pem"
    key = checkpoints.generate_key(key_file)
    check_file = tmp_path / "checkpoints.jsonl"
    _settled(db_engine, policies)
    with db_engine.connect() as conn:
        checkpoints.write(checkpoints.checkpoint_now(conn, key), check_file)
    public = checkpoints.load_public_key(checkpoints.public_key_path(key_file))
    with db_engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN")
        drop_append_only_triggers(conn, ledger_entry.name)
        rows = conn.execute(select(ledger_entry).order_by(ledger_entry.c.seq)).all()
        prev = "0" * 64
        for row in rows:
            payload = row.payload
            if row.kind == MONEY_EVENT_KIND and '"event":"results"' in payload:
                payload = payload.replace('"actor":{"principal":"test-finance_operator"',
                                          '"actor":{"principal":"someone-else"')
            digest = sha256_hex(payload.encode())
            entry = entry_hash(row.seq, row.kind, digest, prev, row.recorded_at)
            conn.execute(text("UPDATE ledger_entry SET payload = :p, payload_sha256 = :d, prev_hash = :h, "
                              "entry_hash = :e WHERE seq = :s"),
                         {"p": payload, "d": digest, "h": prev, "e": entry, "s": row.seq})
            prev = entry
        try:
            verdict = verify_audit_log(conn, checkpoint_file=check_file, public_key=public)
        finally:
            conn.rollback()
    assert not verdict.valid and verdict.fault == "checkpoint", verdict.detail


def test_registry_change_of_account_after_draft_does_not_redirect_an_untampered_line(
        db_engine: Engine, policies: PolicySet) -> None:
    """PASSES. Without touching grant_award, the registry alone cannot redirect money: a changed
    account blocks the export, and the bank file never carries the registry's new number."""
    batch_id, line_ids = _approved(db_engine, policies)
    change_account(db_engine, E[2], ATTACKER_ACCOUNT)
    with pytest.raises(ServiceError, match="1 line"):
        export(db_engine, batch_id, PAYER, OPERATOR)
    change_account(db_engine, E[2], account_of(3), as_of="2026-01-16")   # put back: no change any more
    _, xml = export(db_engine, batch_id, PAYER, OPERATOR)
    assert ATTACKER_ACCOUNT.encode() not in xml
    assert creditor_accounts(xml) == dict(zip(line_ids, (account_of(1), account_of(2), account_of(3))))
    with db_engine.connect() as conn:
        row = conn.execute(select(table_for("enterprise").c.bank_account_no)
                           .where(table_for("enterprise").c.uscc == E[2])).scalar_one()
    assert row == account_of(3)
