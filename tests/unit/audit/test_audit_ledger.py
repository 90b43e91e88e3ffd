"""The hash-chained ledger on SQLite and PostgreSQL: appends, locking, triggers, tamper detection."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from testkit.audit_checks import drop_append_only_triggers

from enterprise_registry.db import make_engine
from service.audit.canonical import canonical_json, sha256_hex
from service.audit.ledger import (
    GENESIS_HASH,
    Fault,
    LedgerEntry,
    VerifyResult,
    append,
    append_many,
    create_ledger_schema,
    entry_hash,
    get_entry,
    head,
    ledger_entry,
    ledger_transaction,
    verify,
)

KINDS = ("evaluation", "policy_version", "batch_seal", "checkpoint")
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


@pytest.fixture
def ledger(db_engine: Engine) -> Engine:
    """An engine whose database has the ledger table and its triggers."""
    create_ledger_schema(db_engine)
    return db_engine


def fill(engine: Engine, n: int = 10) -> list[LedgerEntry]:
    entries = []
    for i in range(1, n + 1):
        with ledger_transaction(engine) as conn:
            entries.append(append(conn, KINDS[i % len(KINDS)], {"n": i, "text": f"第{i}条"}))
    return entries


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(ledger_entry)).scalar_one())


def rows(engine: Engine) -> list[LedgerEntry]:
    with engine.connect() as conn:
        return [LedgerEntry(*row) for row in conn.execute(select(ledger_entry).order_by(ledger_entry.c.seq))]


def check(engine: Engine, **kwargs: Any) -> VerifyResult:
    with engine.connect() as conn:
        return verify(conn, **kwargs)


# ------------------------------------------------------------------------------------------- appending


def test_an_empty_ledger_is_valid(ledger: Engine) -> None:
    result = check(ledger)
    assert (result.valid, result.entries_checked, result.head_hash, result.fault) == (True, 0, GENESIS_HASH, "none")
    assert result.first_bad_seq is None
    with ledger.connect() as conn:
        assert head(conn) is None


def test_entries_are_numbered_from_one_and_chained(ledger: Engine) -> None:
    entries = fill(ledger, 3)
    assert [e.seq for e in entries] == [1, 2, 3]
    assert entries[0].prev_hash == GENESIS_HASH
    assert [e.prev_hash for e in entries[1:]] == [e.entry_hash for e in entries[:-1]]
    for e in entries:
        assert e.payload.encode() == canonical_json(e.data())
        assert e.payload_sha256 == sha256_hex(e.payload.encode())
        assert e.entry_hash == sha256_hex(
            canonical_json(
                {
                    "seq": e.seq,
                    "kind": e.kind,
                    "payload_sha256": e.payload_sha256,
                    "prev_hash": e.prev_hash,
                    "recorded_at": e.recorded_at,
                }
            )
        )
        assert STAMP.fullmatch(e.recorded_at)
    assert rows(ledger) == entries
    result = check(ledger)
    assert (result.valid, result.entries_checked, result.head_hash) == (True, 3, entries[-1].entry_hash)
    with ledger.connect() as conn:
        assert head(conn) == entries[-1]
        assert get_entry(conn, 2) == entries[1]
        assert get_entry(conn, 4) is None


def test_payload_is_stored_as_canonical_json(ledger: Engine) -> None:
    with ledger_transaction(ledger) as conn:
        entry = append(conn, "evaluation", {"b": [1, {"y": 2, "x": 1}], "a": "稳岗"})
    assert entry.payload == '{"a":"稳岗","b":[1,{"x":1,"y":2}]}'
    assert entry.data() == {"a": "稳岗", "b": [1, {"x": 1, "y": 2}]}


def test_append_many_chains_in_order_under_one_lock(ledger: Engine) -> None:
    fill(ledger, 2)
    with ledger_transaction(ledger) as conn:
        entries = append_many(conn, [("batch_seal", {"i": i}) for i in range(5)])
        assert append_many(conn, []) == []
    assert [e.seq for e in entries] == [3, 4, 5, 6, 7]
    assert [e.data()["i"] for e in entries] == [0, 1, 2, 3, 4]
    assert check(ledger).valid


def test_recorded_at_is_utc_and_never_runs_backwards(ledger: Engine) -> None:
    later = datetime(2026, 3, 1, 8, 0, 0, 123, tzinfo=timezone(timedelta(hours=8)))
    with ledger_transaction(ledger) as conn:
        first = append(conn, "evaluation", {"n": 1}, recorded_at=later)
        second = append(conn, "evaluation", {"n": 2}, recorded_at=later - timedelta(days=1))
    assert first.recorded_at == "2026-03-01T00:00:00.000123Z"
    assert second.recorded_at == first.recorded_at  # clamped to the head's time
    with ledger_transaction(ledger) as conn, pytest.raises(ValueError, match="timezone-aware"):
        append(conn, "evaluation", {"n": 3}, recorded_at=datetime(2026, 3, 1))


@pytest.mark.parametrize(
    ("kind", "payload", "error"),
    [
        ("Evaluation", {}, ValueError),
        ("", {}, ValueError),
        ("evaluation", {"ratio": 0.5}, TypeError),
        ("evaluation", [1], TypeError),
    ],
)
def test_bad_items_are_refused_before_anything_is_written(
    ledger: Engine, kind: str, payload: Any, error: type[Exception]
) -> None:
    with pytest.raises(error), ledger_transaction(ledger) as conn:
        append_many(conn, [("evaluation", {"ok": 1}), (kind, payload)])
    assert count(ledger) == 0


def test_a_failed_transaction_appends_nothing(ledger: Engine) -> None:
    fill(ledger, 2)
    with pytest.raises(RuntimeError), ledger_transaction(ledger) as conn:
        append(conn, "evaluation", {"n": 3})
        raise RuntimeError("the evaluation failed after its ledger entry")
    assert count(ledger) == 2
    with ledger_transaction(ledger) as conn:
        assert append(conn, "evaluation", {"n": 3}).seq == 3


def test_append_in_a_plain_transaction_takes_the_lock_itself(ledger: Engine) -> None:
    fill(ledger, 1)
    with ledger.begin() as conn:
        conn.execute(select(func.count()).select_from(ledger_entry))
        assert append(conn, "policy_version", {"policy": "stable-jobs-refund", "version": 2}).seq == 2
    assert check(ledger).valid


# ------------------------------------------------------------------------------------------- concurrency


@pytest.mark.parametrize("via", ["ledger_transaction", "plain_transaction"])
def test_32_concurrent_writers_never_fork_or_break_the_chain(db_url: str, via: str) -> None:
    engine = make_engine(db_url, pool_size=32, max_overflow=0)
    try:
        create_ledger_schema(engine)
        threads, rounds = 32, 3
        start = threading.Barrier(threads)
        errors: list[BaseException] = []

        def transaction() -> AbstractContextManager[Connection]:
            return ledger_transaction(engine) if via == "ledger_transaction" else engine.begin()

        def writer(worker: int) -> None:
            try:
                start.wait()
                for r in range(rounds):
                    with transaction() as conn:
                        if r % 2:
                            append_many(conn, [("evaluation", {"w": worker, "r": r, "i": i}) for i in range(2)])
                        else:
                            append(conn, "evaluation", {"w": worker, "r": r})
            except BaseException as exc:  # reported below, with the thread's failure
                errors.append(exc)

        pool = [threading.Thread(target=writer, args=(w,)) for w in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        assert errors == []
        expected = threads * (rounds + rounds // 2)
        stored = rows(engine)
        assert [e.seq for e in stored] == list(range(1, expected + 1))
        assert len({e.prev_hash for e in stored}) == expected  # no two entries share a predecessor
        result = check(engine)
        assert (result.valid, result.entries_checked, result.head_hash) == (True, expected, stored[-1].entry_hash)
        assert sorted((e.data()["w"], e.data()["r"], e.data().get("i")) for e in stored) == sorted(
            (w, r, i) for w in range(threads) for r in range(rounds) for i in ([0, 1] if r % 2 else [None])
        )
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------------------- triggers


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_entry SET payload = '{}' WHERE seq = 2",
        "UPDATE ledger_entry SET seq = seq + 10",
        "DELETE FROM ledger_entry WHERE seq = 2",
        "DELETE FROM ledger_entry",
    ],
)
def test_updates_and_deletes_are_refused(ledger: Engine, statement: str) -> None:
    fill(ledger, 3)
    before = rows(ledger)
    with pytest.raises(DBAPIError, match="ledger_entry is append-only"), ledger.begin() as conn:
        conn.execute(text(statement))
    assert rows(ledger) == before


def test_emptying_the_table_is_refused(ledger: Engine) -> None:
    # PostgreSQL has TRUNCATE (its own trigger); SQLite has only the unqualified DELETE, which it
    # does not turn into a truncation while a DELETE trigger exists.
    postgres = ledger.dialect.name == "postgresql"
    create_ledger_schema(ledger)  # idempotent, triggers included
    fill(ledger, 3)
    statement = "TRUNCATE ledger_entry" if postgres else "DELETE FROM ledger_entry"
    refused = "TRUNCATE refused" if postgres else "DELETE refused"
    with pytest.raises(DBAPIError, match=f"append-only: {refused}"), ledger.begin() as conn:
        conn.execute(text(statement))
    assert count(ledger) == 3


# ------------------------------------------------------------------------------------------- tampering
# Each attacker has write access: they drop the triggers first, then change rows with plain SQL.


def set_field(conn: Connection, seq: int, **values: Any) -> None:
    assignments = ", ".join(f"{column} = :{column}" for column in values)
    conn.execute(text(f"UPDATE ledger_entry SET {assignments} WHERE seq = :seq"), {**values, "seq": seq})


def move(conn: Connection, old: int, new: int) -> None:
    conn.execute(text("UPDATE ledger_entry SET seq = :new WHERE seq = :old"), {"old": old, "new": new})


def forge(seq: int, prev_hash: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A self-consistent row: the attacker knows the hashing rules."""
    body = canonical_json(payload)
    sha = sha256_hex(body)
    stamp = "2026-01-01T00:00:00.000000Z"
    return {
        "seq": seq,
        "kind": "evaluation",
        "payload": body.decode(),
        "payload_sha256": sha,
        "prev_hash": prev_hash,
        "recorded_at": stamp,
        "entry_hash": entry_hash(seq, "evaluation", sha, prev_hash, stamp),
    }


def insert_row(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(ledger_entry.insert(), row)


def alter_payload(conn: Connection, chain: list[LedgerEntry]) -> None:
    set_field(conn, 4, payload='{"n":4,"text":"第4条","amount_fen":999999}')


def alter_payload_and_rehash_the_entry(conn: Connection, chain: list[LedgerEntry]) -> None:
    # A careful attacker also fixes payload_sha256 and entry_hash of the entry, but not entry 5's link.
    old = chain[3]
    body = '{"n":4,"amount_fen":999999}'
    sha = sha256_hex(body.encode())
    set_field(
        conn,
        4,
        payload=body,
        payload_sha256=sha,
        entry_hash=entry_hash(4, old.kind, sha, old.prev_hash, old.recorded_at),
    )


def alter_entry_hash(conn: Connection, chain: list[LedgerEntry]) -> None:
    set_field(conn, 6, entry_hash="f" * 64)


def alter_kind(conn: Connection, chain: list[LedgerEntry]) -> None:
    set_field(conn, 3, kind="checkpoint" if chain[2].kind != "checkpoint" else "evaluation")


def alter_recorded_at(conn: Connection, chain: list[LedgerEntry]) -> None:
    set_field(conn, 7, recorded_at="2000-01-01T00:00:00.000000Z")


def delete_middle_row(conn: Connection, chain: list[LedgerEntry]) -> None:
    conn.execute(text("DELETE FROM ledger_entry WHERE seq = 5"))


def delete_first_row(conn: Connection, chain: list[LedgerEntry]) -> None:
    conn.execute(text("DELETE FROM ledger_entry WHERE seq = 1"))


def delete_row_and_renumber(conn: Connection, chain: list[LedgerEntry]) -> None:
    conn.execute(text("DELETE FROM ledger_entry WHERE seq = 5"))
    for seq in range(6, len(chain) + 1):
        move(conn, seq, seq - 1)


def insert_forged_row_mid_chain(conn: Connection, chain: list[LedgerEntry]) -> None:
    # Make room at 4 and slip in a row correctly chained onto entry 3.
    for seq in range(len(chain), 3, -1):
        move(conn, seq, seq + 1)
    insert_row(conn, forge(4, chain[2].entry_hash, {"forged": True}))


def insert_unlinked_row_mid_chain(conn: Connection, chain: list[LedgerEntry]) -> None:
    for seq in range(len(chain), 3, -1):
        move(conn, seq, seq + 1)
    insert_row(conn, forge(4, "ab" * 32, {"forged": True}))


def insert_forked_row_at_the_tail(conn: Connection, chain: list[LedgerEntry]) -> None:
    # An extra row chained onto entry 9 (a fork beside entry 10), placed at 11.
    insert_row(conn, forge(11, chain[8].entry_hash, {"forged": True}))


def insert_row_before_the_first(conn: Connection, chain: list[LedgerEntry]) -> None:
    insert_row(conn, forge(0, GENESIS_HASH, {"forged": True}))


def swap_two_rows(conn: Connection, chain: list[LedgerEntry]) -> None:
    move(conn, 3, -1)
    move(conn, 7, 3)
    move(conn, -1, 7)


def swap_adjacent_rows(conn: Connection, chain: list[LedgerEntry]) -> None:
    move(conn, 5, -1)
    move(conn, 6, 5)
    move(conn, -1, 6)


def swap_the_last_two_rows(conn: Connection, chain: list[LedgerEntry]) -> None:
    move(conn, 9, -1)
    move(conn, 10, 9)
    move(conn, -1, 10)


Tamper = Callable[[Connection, list[LedgerEntry]], None]


@pytest.mark.parametrize(
    ("tamper", "fault", "first_bad_seq"),
    [
        (alter_payload, "edited", 4),
        (alter_payload_and_rehash_the_entry, "edited", 4),
        (alter_entry_hash, "edited", 6),
        (alter_kind, "edited", 3),
        (alter_recorded_at, "edited", 7),
        (delete_middle_row, "deleted", 5),
        (delete_first_row, "deleted", 1),
        (delete_row_and_renumber, "deleted", 5),
        (insert_forged_row_mid_chain, "inserted", 4),
        (insert_unlinked_row_mid_chain, "inserted", 4),
        (insert_forked_row_at_the_tail, "inserted", 11),
        (insert_row_before_the_first, "inserted", 0),
        (swap_two_rows, "reordered", 3),
        (swap_adjacent_rows, "reordered", 5),
        (swap_the_last_two_rows, "reordered", 9),
    ],
    ids=lambda value: value.__name__ if callable(value) else None,
)
@pytest.mark.parametrize("page_size", [1000, 3])
def test_verify_names_the_first_bad_entry_and_the_fault(
    ledger: Engine, tamper: Tamper, fault: str, first_bad_seq: int, page_size: int
) -> None:
    chain = fill(ledger, 10)
    with ledger.begin() as conn:
        drop_append_only_triggers(conn, ledger_entry.name)
        tamper(conn, chain)
    result = check(ledger, page_size=page_size)
    assert (result.valid, result.fault, result.first_bad_seq) == (False, fault, first_bad_seq), result.detail
    assert isinstance(result.fault, Fault)
    trusted = [e for e in chain if e.seq < first_bad_seq]
    assert result.head_hash == (trusted[-1].entry_hash if trusted else GENESIS_HASH)


def test_verify_reads_the_ledger_a_page_at_a_time(ledger: Engine) -> None:
    fill(ledger, 10)
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "FROM ledger_entry" in statement:
            statements.append(statement)

    event.listen(ledger, "before_cursor_execute", record)
    try:
        result = check(ledger, page_size=4)
    finally:
        event.remove(ledger, "before_cursor_execute", record)
    assert (result.valid, result.entries_checked) == (True, 10)
    assert len(statements) == 3  # 4 + 4 + 2 rows, never the whole table at once
    assert all("LIMIT" in statement for statement in statements)


# ------------------------------------------------------------------------------------------- beyond the chain
# What a hash chain alone cannot catch. Signed checkpoints (a later module) must: a checkpoint
# signs (seq, entry_hash) of the head at some moment, and verification then compares it with
# the stored entry at that seq.


def test_rebuilding_every_hash_after_an_edit_passes_verify(ledger: Engine) -> None:
    chain = fill(ledger, 10)
    with ledger.begin() as conn:
        drop_append_only_triggers(conn, ledger_entry.name)
        prev = chain[2].entry_hash
        for old in chain[3:]:
            body = '{"n":4,"amount_fen":999999}' if old.seq == 4 else old.payload
            sha = sha256_hex(body.encode())
            digest = entry_hash(old.seq, old.kind, sha, prev, old.recorded_at)
            set_field(conn, old.seq, payload=body, payload_sha256=sha, prev_hash=prev, entry_hash=digest)
            prev = digest
    result = check(ledger)
    # The chain is internally consistent again: verify cannot tell. This is exactly what a signed
    # checkpoint of the old head (seq 10, chain[-1].entry_hash) must catch: the hash differs now.
    assert (result.valid, result.entries_checked) == (True, 10)
    assert result.head_hash != chain[-1].entry_hash


def test_cutting_the_tail_passes_verify(ledger: Engine) -> None:
    chain = fill(ledger, 10)
    with ledger.begin() as conn:
        drop_append_only_triggers(conn, ledger_entry.name)
        conn.execute(text("DELETE FROM ledger_entry WHERE seq > 7"))
    result = check(ledger)
    # A shorter chain is still a valid chain. A signed checkpoint at seq 10 (or any head count kept
    # outside the database) must catch the missing entries 8..10.
    assert (result.valid, result.entries_checked, result.head_hash) == (True, 7, chain[6].entry_hash)


def test_appending_at_the_tail_with_write_access_passes_verify(ledger: Engine) -> None:
    chain = fill(ledger, 3)
    with ledger.begin() as conn:
        insert_row(conn, forge(4, chain[-1].entry_hash, {"forged": True}))
    # Insert needs no trigger dropped: a correctly chained row at the tail is indistinguishable
    # from a genuine append. Only database permissions (and checkpoints signed by the writer) help.
    assert check(ledger).valid
