"""Signed checkpoints catch what the hash chain alone cannot: a rebuilt chain and a cut tail."""
from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from service.audit import checkpoints
from service.audit.canonical import canonical_json, sha256_hex
from service.audit.ledger import GENESIS_HASH, append, create_ledger_schema, entry_hash, verify


@pytest.fixture
def ledger(db_engine: Engine) -> Engine:
    create_ledger_schema(db_engine)
    with db_engine.begin() as conn:
        for i in range(1, 11):
            append(conn, "evaluation", {"evaluation_id": f"e{i}", "amount_fen": i * 100})
    return db_engine


def _drop_triggers(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("DROP TRIGGER ledger_entry_append_only ON ledger_entry"))
        conn.execute(text("DROP TRIGGER ledger_entry_no_truncate ON ledger_entry"))
    else:
        conn.execute(text("DROP TRIGGER ledger_entry_no_update"))
        conn.execute(text("DROP TRIGGER ledger_entry_no_delete"))


def _rebuild_from(conn: Connection, seq: int, payload: dict[str, object]) -> None:
    """What an attacker with write access does: change an entry, then re-hash every later one."""
    rows = conn.execute(text("SELECT seq, kind, payload, payload_sha256, recorded_at FROM ledger_entry "
                             "ORDER BY seq")).all()
    prev = GENESIS_HASH
    for row in rows:
        body, digest = row.payload, row.payload_sha256
        if row.seq == seq:
            body = canonical_json(payload).decode()
            digest = sha256_hex(body.encode())
        new_hash = entry_hash(row.seq, row.kind, digest, prev, row.recorded_at)
        conn.execute(text("UPDATE ledger_entry SET payload = :p, payload_sha256 = :d, prev_hash = :prev, "
                          "entry_hash = :h WHERE seq = :s"),
                     {"p": body, "d": digest, "prev": prev, "h": new_hash, "s": row.seq})
        prev = new_hash


def test_a_fresh_checkpoint_verifies(ledger: Engine, tmp_path: Path) -> None:
    key = checkpoints.load_or_create_key(tmp_path / "ledger-key.pem")
    with ledger.connect() as conn:
        checkpoint = checkpoints.checkpoint_now(conn, key)
        assert checkpoint.entry_count == 10
        assert checkpoints.check(conn, checkpoint, key.public_key()).valid


def test_the_key_file_is_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "ledger.pem"
    first = checkpoints.load_or_create_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert checkpoints.key_id(checkpoints.load_or_create_key(path).public_key()) == \
        checkpoints.key_id(first.public_key())


def test_a_rebuilt_chain_passes_the_chain_check_but_not_the_checkpoint(ledger: Engine, tmp_path: Path) -> None:
    key = checkpoints.load_or_create_key(tmp_path / "k.pem")
    with ledger.connect() as conn:
        checkpoint = checkpoints.checkpoint_now(conn, key)
    with ledger.begin() as conn:
        _drop_triggers(conn)
        _rebuild_from(conn, 4, {"evaluation_id": "e4", "amount_fen": 999_999})
    with ledger.connect() as conn:
        assert verify(conn).valid  # the chain alone cannot see it
        result = checkpoints.check(conn, checkpoint, key.public_key())
    assert not result.valid
    assert "entry 10" in result.detail and "rebuilt" in result.detail


def test_a_cut_tail_is_caught(ledger: Engine, tmp_path: Path) -> None:
    key = checkpoints.load_or_create_key(tmp_path / "k.pem")
    with ledger.connect() as conn:
        checkpoint = checkpoints.checkpoint_now(conn, key)
    with ledger.begin() as conn:
        _drop_triggers(conn)
        conn.execute(text("DELETE FROM ledger_entry WHERE seq > 7"))
    with ledger.connect() as conn:
        assert verify(conn).valid
        result = checkpoints.check(conn, checkpoint, key.public_key())
    assert not result.valid
    assert "holds 7 entries" in result.detail and "cut off" in result.detail


def test_entries_appended_after_a_checkpoint_are_fine(ledger: Engine, tmp_path: Path) -> None:
    key = checkpoints.load_or_create_key(tmp_path / "k.pem")
    with ledger.connect() as conn:
        checkpoint = checkpoints.checkpoint_now(conn, key)
    with ledger.begin() as conn:
        append(conn, "evaluation", {"evaluation_id": "e11"})
    with ledger.connect() as conn:
        assert checkpoints.check(conn, checkpoint, key.public_key()).valid


def test_a_forged_or_foreign_checkpoint_is_refused(ledger: Engine, tmp_path: Path) -> None:
    key = checkpoints.load_or_create_key(tmp_path / "k.pem")
    other = Ed25519PrivateKey.generate()
    with ledger.connect() as conn:
        genuine = checkpoints.checkpoint_now(conn, key)
        forged = checkpoints.Checkpoint(5, genuine.head_hash, genuine.signed_at, genuine.key_id,
                                        genuine.signature)
        assert checkpoints.check(conn, forged, key.public_key()).detail == \
            "checkpoint signature does not verify"
        foreign = checkpoints.checkpoint_now(conn, other)
        assert checkpoints.check(conn, foreign, key.public_key()).detail == \
            "checkpoint signed by another key"


def test_checkpoints_round_trip_through_their_file(ledger: Engine, tmp_path: Path) -> None:
    key = checkpoints.load_or_create_key(tmp_path / "k.pem")
    path = tmp_path / "checkpoints.jsonl"
    assert checkpoints.newest(path) is None
    with ledger.connect() as conn:
        first = checkpoints.checkpoint_now(conn, key)
    checkpoints.write(first, path)
    with ledger.begin() as conn:
        append(conn, "evaluation", {"evaluation_id": "e11"})
    with ledger.connect() as conn:
        second = checkpoints.checkpoint_now(conn, key)
    checkpoints.write(second, path)
    assert checkpoints.newest(path) == second
    with ledger.connect() as conn:
        assert checkpoints.check(conn, checkpoints.newest(path), key.public_key()).valid  # type: ignore[arg-type]
