"""Signed checkpoints catch what the hash chain alone cannot: a rebuilt chain and a cut tail.
One test per rule of `verify_checkpoints`, and the key's life: made once, private, never replaced."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from testkit.audit_checks import drop_append_only_triggers

from service.audit import checkpoints
from service.audit.canonical import canonical_json, sha256_hex
from service.audit.ledger import GENESIS_HASH, append, create_ledger_schema, entry_hash, ledger_entry, verify
from service.errors import LedgerKeyError


@pytest.fixture
def empty_ledger(db_engine: Engine) -> Engine:
    create_ledger_schema(db_engine)
    return db_engine


@pytest.fixture
def ledger(empty_ledger: Engine) -> Engine:
    """Ten entries."""
    with empty_ledger.begin() as conn:
        for i in range(1, 11):
            append(conn, "evaluation", {"evaluation_id": f"e{i}", "amount_fen": i * 100})
    return empty_ledger


@pytest.fixture
def key(tmp_path: Path) -> Ed25519PrivateKey:
    return checkpoints.generate_key(tmp_path / "keys" / "ledger-key.pem")


@pytest.fixture
def file(tmp_path: Path) -> Path:
    return tmp_path / "checkpoints.jsonl"


def _checkpoint(engine: Engine, key: Ed25519PrivateKey, file: Path) -> checkpoints.Checkpoint:
    """Sign the ledger's head now and append it to the file, as the server does."""
    with engine.connect() as conn:
        checkpoint = checkpoints.checkpoint_now(conn, key)
    checkpoints.write(checkpoint, file)
    return checkpoint


def _verify(engine: Engine, file: Path | None, key: Ed25519PrivateKey | None) -> checkpoints.CheckpointCheck:
    with engine.connect() as conn:
        return checkpoints.verify_checkpoints(conn, file, key.public_key() if key else None)


def _append(engine: Engine, count: int) -> None:
    with engine.begin() as conn:
        for i in range(count):
            append(conn, "evaluation", {"evaluation_id": f"later{i}"})


def _rebuild_from(conn: Connection, seq: int, payload: dict[str, object]) -> None:
    """What an attacker with write access does: change an entry, then re-hash every later one."""
    rows = conn.execute(
        text("SELECT seq, kind, payload, payload_sha256, recorded_at FROM ledger_entry ORDER BY seq")
    ).all()
    prev = GENESIS_HASH
    for row in rows:
        body, digest = row.payload, row.payload_sha256
        if row.seq == seq:
            body = canonical_json(payload).decode()
            digest = sha256_hex(body.encode())
        new_hash = entry_hash(row.seq, row.kind, digest, prev, row.recorded_at)
        conn.execute(
            text(
                "UPDATE ledger_entry SET payload = :p, payload_sha256 = :d, prev_hash = :prev, "
                "entry_hash = :h WHERE seq = :s"
            ),
            {"p": body, "d": digest, "prev": prev, "h": new_hash, "s": row.seq},
        )
        prev = new_hash


# ---------------------------------------------------------------------------------------------
# The key.
def test_keygen_writes_a_private_key_0600_from_its_creation_and_the_public_key_beside(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "ledger.pem"
    old_umask = os.umask(0)  # a permissive umask: the mode can come only from the creation itself
    try:
        key = checkpoints.generate_key(path)
    finally:
        os.umask(old_umask)
    assert path.stat().st_mode & 0o777 == 0o600
    public = checkpoints.public_key_path(path)
    assert public == tmp_path / "keys" / "ledger.pem.pub"
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert "PRIVATE" not in public.read_text()
    expected = checkpoints.key_id(key.public_key())
    assert checkpoints.key_id(checkpoints.load_private_key(path).public_key()) == expected
    assert checkpoints.key_id(checkpoints.load_public_key(public)) == expected


def test_keygen_never_overwrites_a_key_or_its_public_half(tmp_path: Path) -> None:
    path = tmp_path / "ledger.pem"
    checkpoints.generate_key(path)
    before = path.read_bytes(), checkpoints.public_key_path(path).read_bytes()
    with pytest.raises(LedgerKeyError, match="already exists; refusing to overwrite"):
        checkpoints.generate_key(path)
    assert (path.read_bytes(), checkpoints.public_key_path(path).read_bytes()) == before
    lone_public = tmp_path / "other.pem"
    checkpoints.public_key_path(lone_public).write_text("someone's public key\n")
    with pytest.raises(LedgerKeyError, match=r"other\.pem\.pub already exists"):
        checkpoints.generate_key(lone_public)
    assert not lone_public.exists()  # nothing half-made
    link = tmp_path / "link.pem"
    link.symlink_to(tmp_path / "nowhere.pem")  # a dangling link is not followed either
    with pytest.raises(LedgerKeyError, match="already exists"):
        checkpoints.generate_key(link)
    assert not (tmp_path / "nowhere.pem").exists()


def test_a_missing_key_is_never_made_on_loading(tmp_path: Path) -> None:
    path = tmp_path / "absent.pem"
    with pytest.raises(LedgerKeyError, match=r"does not exist; make it once with `benefits audit keygen --out \S+"):
        checkpoints.load_private_key(path)
    assert not path.exists()
    with pytest.raises(LedgerKeyError, match=r"public key \S+ does not exist"):
        checkpoints.load_public_key(tmp_path / "absent.pem.pub")


def test_a_key_file_of_another_kind_is_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    with pytest.raises(LedgerKeyError, match="is not an unencrypted Ed25519 private key"):
        checkpoints.load_private_key(garbage)
    public = tmp_path / "keys" / "ledger-key.pem.pub"
    with pytest.raises(LedgerKeyError, match="is not an unencrypted Ed25519 private key"):
        checkpoints.load_private_key(public)  # the public half where the private key belongs
    with pytest.raises(LedgerKeyError, match="is not an Ed25519 public key"):
        checkpoints.load_public_key(tmp_path / "keys" / "ledger-key.pem")


# ---------------------------------------------------------------------------------------------
# The rules of verify_checkpoints.
def test_a_fresh_checkpoint_verifies(ledger: Engine, key: Ed25519PrivateKey, file: Path) -> None:
    checkpoint = _checkpoint(ledger, key, file)
    assert checkpoint.entry_count == 10
    result = _verify(ledger, file, key)
    assert result.valid, result.detail
    assert (result.covered_entries, result.uncovered_entries) == (10, 0)
    assert "entry 10 matches" in result.detail and "not yet covered" not in result.detail


def test_nothing_given_is_not_checked_and_says_so(ledger: Engine) -> None:
    result = _verify(ledger, None, None)
    assert result.valid and "not checked" in result.detail


def test_an_empty_ledger_verifies_with_or_without_checkpoints(
    empty_ledger: Engine, key: Ed25519PrivateKey, file: Path
) -> None:
    assert _verify(empty_ledger, file, key).valid  # the file does not exist yet
    assert _verify(empty_ledger, None, key).valid
    file.write_text("")
    assert _verify(empty_ledger, file, key).valid
    _checkpoint(empty_ledger, key, file)
    result = _verify(empty_ledger, file, key)
    assert result.valid and (result.covered_entries, result.uncovered_entries) == (0, 0)


def test_an_emptied_ledger_contradicts_its_checkpoints(ledger: Engine, key: Ed25519PrivateKey, file: Path) -> None:
    _checkpoint(ledger, key, file)
    with ledger.begin() as conn:
        drop_append_only_triggers(conn, ledger_entry.name)
        conn.execute(text("DELETE FROM ledger_entry"))
    with ledger.connect() as conn:
        assert verify(conn).valid  # an empty chain is a valid chain
    result = _verify(ledger, file, key)
    assert not result.valid and "holds 0 entries" in result.detail and "cut off" in result.detail


def test_entries_without_any_checkpoint_fail(ledger: Engine, key: Ed25519PrivateKey, file: Path) -> None:
    missing = _verify(ledger, file, key)
    assert not missing.valid
    assert f"{file} does not exist" in missing.detail and "holds 10 entries" in missing.detail
    assert "no checkpoints file was given" in _verify(ledger, None, key).detail
    assert not _verify(ledger, None, key).valid
    _checkpoint(ledger, key, file)
    file.write_text("\n")  # emptied
    emptied = _verify(ledger, file, key)
    assert not emptied.valid and "holds no checkpoint" in emptied.detail


def test_checkpoints_without_the_public_key_cannot_pass(ledger: Engine, key: Ed25519PrivateKey, file: Path) -> None:
    _checkpoint(ledger, key, file)
    result = _verify(ledger, file, None)
    assert not result.valid and "without the ledger's public key" in result.detail


def test_a_rebuilt_chain_passes_the_chain_check_but_not_the_checkpoint(
    ledger: Engine, key: Ed25519PrivateKey, file: Path
) -> None:
    _checkpoint(ledger, key, file)
    with ledger.begin() as conn:
        drop_append_only_triggers(conn, ledger_entry.name)
        _rebuild_from(conn, 4, {"evaluation_id": "e4", "amount_fen": 999_999})
    with ledger.connect() as conn:
        assert verify(conn).valid  # the chain alone cannot see it
    result = _verify(ledger, file, key)
    assert not result.valid
    assert "entry 10" in result.detail and "rebuilt" in result.detail
    assert result.first_bad_entry == 10


def test_a_cut_tail_is_caught(ledger: Engine, key: Ed25519PrivateKey, file: Path) -> None:
    _checkpoint(ledger, key, file)
    with ledger.begin() as conn:
        drop_append_only_triggers(conn, ledger_entry.name)
        conn.execute(text("DELETE FROM ledger_entry WHERE seq > 7"))
    with ledger.connect() as conn:
        assert verify(conn).valid
    result = _verify(ledger, file, key)
    assert not result.valid
    assert "holds 7 entries" in result.detail and "cut off" in result.detail
    assert result.first_bad_entry == 10


def test_entries_after_the_newest_checkpoint_are_valid_and_said(
    ledger: Engine, key: Ed25519PrivateKey, file: Path
) -> None:
    _checkpoint(ledger, key, file)
    _append(ledger, 3)
    result = _verify(ledger, file, key)
    assert result.valid, result.detail
    assert (result.covered_entries, result.uncovered_entries) == (10, 3)
    assert "3 entries after the newest checkpoint are not yet covered" in result.detail


def test_the_newest_checkpoint_is_the_one_checked(ledger: Engine, key: Ed25519PrivateKey, file: Path) -> None:
    _checkpoint(ledger, key, file)
    _append(ledger, 1)
    _checkpoint(ledger, key, file)
    result = _verify(ledger, file, key)
    assert result.valid and (result.covered_entries, result.uncovered_entries) == (11, 0)
    with ledger.begin() as conn:  # cut the entry only the second checkpoint covers
        drop_append_only_triggers(conn, ledger_entry.name)
        conn.execute(text("DELETE FROM ledger_entry WHERE seq = 11"))
    result = _verify(ledger, file, key)
    assert not result.valid and "holds 10 entries" in result.detail and "covers 11" in result.detail


def test_a_file_cut_back_to_an_older_checkpoint_fails(ledger: Engine, key: Ed25519PrivateKey, file: Path) -> None:
    first = _checkpoint(ledger, key, file)
    _append(ledger, 2)
    _checkpoint(ledger, key, file)
    checkpoints.write(first, file)  # an older, genuinely signed checkpoint appended as the newest
    result = _verify(ledger, file, key)
    assert not result.valid
    assert f"{file} line 3:" in result.detail
    assert "covers 10 entries, fewer than the 12 of line 2" in result.detail


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "not a checkpoint"),
        ("[1, 2]", "not a checkpoint (expected an object"),
        (
            '{"entry_count": "10", "head_hash": "x", "signed_at": "x", "key_id": "x", "signature": "x"}',
            "not a checkpoint (entry_count is not a count)",
        ),
    ],
    ids=["not-json", "not-an-object", "count-as-text"],
)
def test_a_line_that_is_not_a_checkpoint_is_named(
    ledger: Engine, key: Ed25519PrivateKey, file: Path, line: str, reason: str
) -> None:
    _checkpoint(ledger, key, file)
    with file.open("a") as out:
        out.write(line + "\n")
    _checkpoint(ledger, key, file)
    result = _verify(ledger, file, key)
    assert not result.valid
    assert f"{file} line 2: {reason}" in result.detail


def test_a_forged_or_foreign_checkpoint_is_refused_by_its_line(
    ledger: Engine, key: Ed25519PrivateKey, file: Path
) -> None:
    genuine = _checkpoint(ledger, key, file)
    forged = checkpoints.Checkpoint(5, genuine.head_hash, genuine.signed_at, genuine.key_id, genuine.signature)
    checkpoints.write(forged, file)
    result = _verify(ledger, file, key)
    assert not result.valid and result.detail == f"{file} line 2: checkpoint signature does not verify"

    file.unlink()
    _checkpoint(ledger, key, file)
    _checkpoint(ledger, Ed25519PrivateKey.generate(), file)
    result = _verify(ledger, file, key)
    assert not result.valid and result.detail == f"{file} line 2: checkpoint signed by another key"


def test_the_signature_text_of_a_checkpoint_cannot_be_edited(
    ledger: Engine, key: Ed25519PrivateKey, file: Path
) -> None:
    """The last base64 character of a 64-byte signature carries 4 unused bits: flipping one leaves
    the decoded bytes as they were, but the line is no longer the one signed."""
    genuine = _checkpoint(ledger, key, file)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = genuine.signature[85]
    edited = genuine.signature[:85] + alphabet[alphabet.index(last) ^ 1] + genuine.signature[86:]
    assert edited != genuine.signature and base64.b64decode(edited) == base64.b64decode(genuine.signature)
    file.write_text(
        checkpoints.Checkpoint(
            genuine.entry_count, genuine.head_hash, genuine.signed_at, genuine.key_id, edited
        ).to_json()
        + "\n"
    )
    result = _verify(ledger, file, key)
    assert not result.valid and result.detail == f"{file} line 1: checkpoint signature does not verify"


def test_a_bad_signature_anywhere_fails_not_only_the_newest(ledger: Engine, key: Ed25519PrivateKey, file: Path) -> None:
    _checkpoint(ledger, key, file)
    _checkpoint(ledger, key, file)
    lines = file.read_text().splitlines()
    first = json.loads(lines[0])
    first["signed_at"] = "2000-01-01T00:00:00.000000Z"  # changed after signing
    file.write_text(json.dumps(first) + "\n" + lines[1] + "\n")
    result = _verify(ledger, file, key)
    assert not result.valid and result.detail == f"{file} line 1: checkpoint signature does not verify"


def test_an_unreadable_checkpoints_file_fails(ledger: Engine, key: Ed25519PrivateKey, file: Path) -> None:
    file.mkdir()
    result = _verify(ledger, file, key)
    assert not result.valid and "cannot read the checkpoints" in result.detail
