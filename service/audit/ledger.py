"""The append-only, hash-chained audit ledger: table, locked appends and streaming verification.

Each entry hashes the previous entry's hash, so changing, removing, adding or moving any entry
breaks the chain from that point on, and `verify` names the first bad entry. What a hash chain
cannot catch alone is a writer who rebuilds every hash after a change, or who cuts the tail off:
signed checkpoints of the head hash (a separate module) exist for that.

Usage::

    with ledger_transaction(engine) as conn:      # chain-head lock held until commit
        append(conn, "evaluation", {"evaluation_id": "...", "outcome": "eligible"})
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson
from sqlalchemy import BigInteger, Column, Index, MetaData, String, Table, Text, insert, select, text
from sqlalchemy.engine import Connection, Engine

from service.audit.canonical import canonical_json, sha256_hex

GENESIS_HASH = "0" * 64
"""The `prev_hash` of entry 1."""

metadata = MetaData()

ledger_entry = Table(
    "ledger_entry",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("kind", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("payload_sha256", String(64), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False),
    Column("recorded_at", String(32), nullable=False),
    # Both looked up by hash when `verify` explains a fault; neither is unique on purpose, so an
    # attacker's duplicate row is stored and then reported rather than refused by a constraint.
    Index("ix_ledger_entry_entry_hash", "entry_hash"),
    Index("ix_ledger_entry_prev_hash", "prev_hash"),
)

_KIND = re.compile(r"[a-z][a-z0-9_]{0,63}")
# One constant key for the whole database: every writer of the chain waits on the same lock.
_PG_LOCK_KEY = 0x6C6564676572_01  # "ledger", 1
_VERIFY_PAGE = 1000
# How far `verify` looks for the position a moved entry's hash was computed for.
_SEQ_SEARCH_WINDOW = 64


# --------------------------------------------------------------------------------------------- schema

_PG_REFUSE_CHANGE_SQL = """
    CREATE OR REPLACE FUNCTION append_only_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION USING
            MESSAGE = TG_TABLE_NAME || ' is append-only: ' || TG_OP || ' refused',
            ERRCODE = 'restrict_violation';
    END
    $$
"""
_PG_TRIGGER_SQL = (
    """
    CREATE OR REPLACE TRIGGER {table}_append_only
        BEFORE UPDATE OR DELETE ON {table}
        FOR EACH STATEMENT EXECUTE FUNCTION append_only_refuse_change()
    """,
    """
    CREATE OR REPLACE TRIGGER {table}_no_truncate
        BEFORE TRUNCATE ON {table}
        FOR EACH STATEMENT EXECUTE FUNCTION append_only_refuse_change()
    """,
)

# SQLite has no TRUNCATE; an unqualified DELETE is not optimised into one while a trigger exists.
_SQLITE_TRIGGER_SQL = (
    """
    CREATE TRIGGER IF NOT EXISTS {table}_no_update BEFORE UPDATE ON {table}
    BEGIN SELECT RAISE(ABORT, '{table} is append-only: UPDATE refused'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS {table}_no_delete BEFORE DELETE ON {table}
    BEGIN SELECT RAISE(ABORT, '{table} is append-only: DELETE refused'); END
    """,
)
APPEND_ONLY_TRIGGER_NAMES = {
    "postgresql": ("{table}_append_only", "{table}_no_truncate"),
    "sqlite": ("{table}_no_update", "{table}_no_delete"),
}


def create_ledger_schema(engine: Engine) -> None:
    """Create `ledger_entry` and its triggers refusing UPDATE, DELETE (and TRUNCATE) (idempotent).

    The triggers stop mistakes and ordinary writers; anyone who may drop them can still tamper,
    which is what `verify` (and, beyond it, signed checkpoints) is for.
    """
    with engine.begin() as conn:
        metadata.create_all(conn)
        create_append_only_triggers(conn, ledger_entry.name)


def create_append_only_triggers(connection: Connection, table: str) -> None:
    """Triggers that refuse UPDATE, DELETE (and TRUNCATE) on `table` (idempotent)."""
    if _dialect(connection) == "postgresql":
        connection.execute(text(_PG_REFUSE_CHANGE_SQL))
        statements = _PG_TRIGGER_SQL
    else:
        statements = _SQLITE_TRIGGER_SQL
    for statement in statements:
        connection.execute(text(statement.format(table=table)))


# --------------------------------------------------------------------------------------------- append


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One ledger row as stored; `payload` is the canonical JSON text."""

    seq: int
    kind: str
    payload: str
    payload_sha256: str
    prev_hash: str
    entry_hash: str
    recorded_at: str

    def data(self) -> dict[str, Any]:
        """The payload decoded back into a dict."""
        decoded: dict[str, Any] = orjson.loads(self.payload)
        return decoded


def entry_hash(seq: int, kind: str, payload_sha256: str, prev_hash: str, recorded_at: str) -> str:
    """The hash chaining an entry: SHA-256 of the canonical JSON of its fields and `prev_hash`."""
    return sha256_hex(
        canonical_json(
            {
                "seq": seq,
                "kind": kind,
                "payload_sha256": payload_sha256,
                "prev_hash": prev_hash,
                "recorded_at": recorded_at,
            }
        )
    )


@contextmanager
def ledger_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that already holds the chain-head lock; commits on exit.

    SQLite: the transaction starts with `BEGIN IMMEDIATE` (the write lock is taken before any
    read, so the head cannot go stale). PostgreSQL: `pg_advisory_xact_lock` on a constant key,
    released at commit or rollback; use the default READ COMMITTED isolation so the head read
    after the lock sees the previous writer's commit. Rolls back if the block raises. Write
    nothing before the lock in such a transaction: a row it holds uncommitted while waiting for
    the lock may be one the lock's holder waits for.
    """
    with engine.connect() as conn:
        if _dialect(conn) == "sqlite":
            # pysqlite (legacy transaction control) passes an explicit BEGIN through and then
            # leaves the transaction to commit()/rollback(), which SQLAlchemy calls as usual.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            _lock_chain_head(conn)
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


@contextmanager
def read_snapshot(engine: Engine) -> Iterator[Connection]:
    """A connection whose every read sees one snapshot of the database (for verification while
    the server writes): REPEATABLE READ on PostgreSQL, one deferred read transaction on SQLite
    (WAL keeps its snapshot). Nothing is written; rolled back on exit."""
    with engine.connect() as conn:
        if _dialect(conn) == "sqlite":
            conn.exec_driver_sql("BEGIN")
        else:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        try:
            yield conn
        finally:
            conn.rollback()


def append(
    connection: Connection, kind: str, payload: dict[str, Any], *, recorded_at: datetime | None = None
) -> LedgerEntry:
    """Append one entry inside the caller's transaction (which commits it) and return it.

    Takes the chain-head lock first (a no-op if `ledger_transaction` already holds it), reads
    the head, computes the hashes and inserts. `recorded_at` defaults to now; it is stored in
    UTC and never earlier than the head's, so time runs forward along the chain.
    """
    return append_many(connection, [(kind, payload)], recorded_at=recorded_at)[0]


def append_many(
    connection: Connection, items: Iterable[tuple[str, dict[str, Any]]], *, recorded_at: datetime | None = None
) -> list[LedgerEntry]:
    """Append `(kind, payload)` items in order under one lock and one head read; see `append`.

    Every item is validated and encoded before anything is written.
    """
    prepared = [_prepare(kind, payload) for kind, payload in items]
    if not prepared:
        return []
    _lock_chain_head(connection)
    top = connection.execute(
        select(ledger_entry.c.seq, ledger_entry.c.entry_hash, ledger_entry.c.recorded_at)
        .order_by(ledger_entry.c.seq.desc())
        .limit(1)
    ).first()
    seq, prev_hash, floor = (top.seq, top.entry_hash, top.recorded_at) if top else (0, GENESIS_HASH, "")
    stamp = max(_utc_stamp(recorded_at), floor)
    entries: list[LedgerEntry] = []
    for kind, payload_text, payload_sha in prepared:
        seq += 1
        digest = entry_hash(seq, kind, payload_sha, prev_hash, stamp)
        entries.append(LedgerEntry(seq, kind, payload_text, payload_sha, prev_hash, digest, stamp))
        prev_hash = digest
    connection.execute(insert(ledger_entry), [_row(entry) for entry in entries])
    return entries


def head(connection: Connection) -> LedgerEntry | None:
    """The last entry, or None when the ledger is empty (no lock: a snapshot for reading)."""
    row = connection.execute(select(ledger_entry).order_by(ledger_entry.c.seq.desc()).limit(1)).first()
    return _entry(row) if row else None


def get_entry(connection: Connection, seq: int) -> LedgerEntry | None:
    """The entry stored at `seq`, or None."""
    row = connection.execute(select(ledger_entry).where(ledger_entry.c.seq == seq)).first()
    return _entry(row) if row else None


def _prepare(kind: str, payload: dict[str, Any]) -> tuple[str, str, str]:
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise ValueError(f"ledger kind must match {_KIND.pattern}, got {kind!r}")
    if not isinstance(payload, dict):
        raise TypeError(f"ledger payload must be a dict, got {type(payload).__name__}")
    encoded = canonical_json(payload)
    return kind, encoded.decode("utf-8"), sha256_hex(encoded)


def _lock_chain_head(connection: Connection) -> None:
    if _dialect(connection) == "postgresql":
        # Re-entrant within a transaction: taking it again under ledger_transaction is harmless.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    else:
        # A write that matches no row (so fires no trigger) still takes SQLite's write lock, so
        # the head read below cannot be stale even if the caller began a deferred transaction.
        # Under BEGIN IMMEDIATE the lock is already held and this costs nothing.
        connection.exec_driver_sql("DELETE FROM ledger_entry WHERE 0")


def _utc_stamp(moment: datetime | None) -> str:
    moment = datetime.now(UTC) if moment is None else moment
    if moment.tzinfo is None:
        raise ValueError("recorded_at must be timezone-aware")
    # Fixed width, so the stamps also sort correctly as strings.
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _row(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "kind": entry.kind,
        "payload": entry.payload,
        "payload_sha256": entry.payload_sha256,
        "prev_hash": entry.prev_hash,
        "entry_hash": entry.entry_hash,
        "recorded_at": entry.recorded_at,
    }


def _entry(row: Any) -> LedgerEntry:
    return LedgerEntry(
        row.seq, row.kind, row.payload, row.payload_sha256, row.prev_hash, row.entry_hash, row.recorded_at
    )


def _dialect(connection: Connection) -> str:
    return connection.dialect.name


# --------------------------------------------------------------------------------------------- verify


class Fault(StrEnum):
    """What `verify` found at the first bad entry; CHECKPOINT is found by the signed checkpoints
    (`service.audit.checkpoints`), never by `verify`."""

    NONE = "none"
    EDITED = "edited"  # payload or fields no longer match a hash
    DELETED = "deleted"  # an entry is missing: a gap in seq, or later entries renumbered over it
    INSERTED = "inserted"  # a self-consistent entry that does not chain onto its predecessor
    REORDERED = "reordered"  # genuine entries stored under each other's seq
    CHECKPOINT = "checkpoint"  # the newest signed checkpoint does not vouch for the chain


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of `verify`.

    entries_checked: rows read, including the bad one. head_hash: the entry_hash of the last
    entry trusted (the chain head when valid; GENESIS_HASH when none). first_bad_seq: the seq of
    the first bad entry (for a deletion, the seq that is missing), None when valid.
    """

    entries_checked: int
    head_hash: str
    valid: bool
    first_bad_seq: int | None
    fault: Fault
    detail: str


def verify(
    connection: Connection, *, page_size: int = _VERIFY_PAGE, progress: Callable[[int], None] | None = None
) -> VerifyResult:
    """Walk the chain in seq order, a page at a time, and stop at the first bad entry.

    Memory stays bounded by `page_size` whatever the ledger's length, and a valid chain costs one
    query per page; extra queries by hash run only once a fault is found, to tell its kind. Call
    inside a REPEATABLE READ transaction on PostgreSQL for one snapshot; otherwise entries
    appended meanwhile are simply checked too. `progress(entries checked)` after each page.
    """
    checked, expected, prev = 0, 1, GENESIS_HASH
    last_seq: int | None = None
    while True:
        query = select(ledger_entry).order_by(ledger_entry.c.seq).limit(page_size)
        if last_seq is not None:
            query = query.where(ledger_entry.c.seq > last_seq)
        rows = connection.execute(query).all()
        for row in rows:
            checked += 1
            fault = _check_row(connection, _entry(row), expected, prev)
            if fault is not None:
                kind, bad_seq, detail = fault
                if bad_seq < expected:  # the fault lies among entries already passed: trust less
                    prev = _trusted_hash_before(connection, bad_seq)
                return VerifyResult(checked, prev, False, bad_seq, kind, detail)
            expected, prev = row.seq + 1, row.entry_hash
        if progress is not None:
            progress(checked)
        if len(rows) < page_size:
            return VerifyResult(checked, prev, True, None, Fault.NONE, f"{checked} entries chain correctly")
        last_seq = rows[-1].seq


def _check_row(conn: Connection, entry: LedgerEntry, expected: int, prev: str) -> tuple[Fault, int, str] | None:
    """None if `entry` continues the trusted chain at `expected`, else (fault, first bad seq, detail)."""
    seq = entry.seq
    if seq < expected:  # only possible below 1: seq is the primary key and rows come in order
        return Fault.INSERTED, seq, f"entry {seq} lies before the first entry"
    if seq > expected:
        return Fault.DELETED, expected, f"entries {expected}..{seq - 1} are missing (gap in seq)"
    if sha256_hex(entry.payload.encode("utf-8")) != entry.payload_sha256:
        return Fault.EDITED, seq, f"entry {seq}: payload does not match payload_sha256"
    if _hash_of(entry, seq) != entry.entry_hash:
        return _explain_hash_mismatch(conn, entry, prev)
    if entry.prev_hash != prev:
        return _explain_broken_link(conn, entry, prev)
    return None


def _explain_hash_mismatch(conn: Connection, entry: LedgerEntry, prev: str) -> tuple[Fault, int, str]:
    """The entry's hash does not fit its seq: moved (seq changed), or edited."""
    seq = entry.seq
    genuine = _genuine_seq(conn, entry)
    if genuine is None:
        return Fault.EDITED, seq, f"entry {seq}: fields do not match entry_hash"
    if genuine < seq:
        # It was chained at an earlier position: the entries now in front of it were slipped in.
        return (
            Fault.INSERTED,
            genuine,
            (f"entries {genuine}..{seq - 1} were inserted: entry stored at {seq} was chained as {genuine}"),
        )
    # It belongs further on. If the entry that chained onto the trusted head still exists
    # somewhere, entries were swapped; if not, it is gone and the rest renumbered over it.
    if _successor_exists(conn, prev, excluding=entry.entry_hash):
        return Fault.REORDERED, seq, f"entry stored at {seq} was chained as {genuine} (seq order swapped)"
    return Fault.DELETED, seq, (f"entries {seq}..{genuine - 1} are missing: later entries were renumbered over them")


def _explain_broken_link(conn: Connection, entry: LedgerEntry, prev: str) -> tuple[Fault, int, str]:
    """The entry is self-consistent but does not point at the trusted previous entry."""
    seq = entry.seq
    if _successor_exists(conn, prev, excluding=entry.entry_hash):
        # The previous entry's genuine successor is elsewhere, so this one was slipped in.
        return Fault.INSERTED, seq, f"entry {seq} does not chain onto entry {seq - 1}; another entry does"
    if entry.prev_hash == GENESIS_HASH or _hash_exists(conn, entry.prev_hash):
        return Fault.INSERTED, seq, f"entry {seq} chains onto another entry than {seq - 1} (forged or forked)"
    # Nothing chains onto the previous entry as it now is, and this entry chains onto something
    # that no longer exists: the previous entry was rewritten (with its hashes recomputed).
    bad = max(seq - 1, 1)
    return Fault.EDITED, bad, f"entry {bad} was rewritten: entry {seq} was chained onto a different entry {bad}"


def _genuine_seq(conn: Connection, entry: LedgerEntry) -> int | None:
    """The seq, other than its stored one, for which the entry's hash is right; None if none found."""
    candidates: list[int] = []
    inferred = _seq_from_predecessors(conn, entry)
    if inferred is not None:
        candidates.append(inferred)
    for distance in range(1, _SEQ_SEARCH_WINDOW + 1):
        candidates += [entry.seq + distance, entry.seq - distance]
    for candidate in candidates:
        if candidate >= 1 and candidate != entry.seq and _hash_of(entry, candidate) == entry.entry_hash:
            return candidate
    return None


def _seq_from_predecessors(conn: Connection, entry: LedgerEntry) -> int | None:
    """Follow prev_hash back to an entry whose hash fits its stored seq (or to genesis) and count."""
    steps, current = 1, entry
    for _ in range(_SEQ_SEARCH_WINDOW):
        if current.prev_hash == GENESIS_HASH:
            return steps
        row = conn.execute(select(ledger_entry).where(ledger_entry.c.entry_hash == current.prev_hash).limit(1)).first()
        if row is None:
            return None
        current = _entry(row)
        if _hash_of(current, current.seq) == current.entry_hash:
            return current.seq + steps
        steps += 1
    return None


def _trusted_hash_before(conn: Connection, seq: int) -> str:
    if seq <= 1:
        return GENESIS_HASH
    digest = conn.execute(select(ledger_entry.c.entry_hash).where(ledger_entry.c.seq == seq - 1)).scalar_one()
    return str(digest)


def _successor_exists(conn: Connection, prev: str, *, excluding: str) -> bool:
    row = conn.execute(
        select(ledger_entry.c.seq)
        .where(ledger_entry.c.prev_hash == prev, ledger_entry.c.entry_hash != excluding)
        .limit(1)
    ).first()
    return row is not None


def _hash_exists(conn: Connection, digest: str) -> bool:
    row = conn.execute(select(ledger_entry.c.seq).where(ledger_entry.c.entry_hash == digest).limit(1)).first()
    return row is not None


def _hash_of(entry: LedgerEntry, seq: int) -> str:
    return entry_hash(seq, entry.kind, entry.payload_sha256, entry.prev_hash, entry.recorded_at)
