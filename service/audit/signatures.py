"""Signatures of ledger entries by the ledger key, written with the entry.

The hash chain and the signed checkpoints catch an entry edited, removed or rebuilt, but anyone
who can write the database can still append a well-chained entry after the newest checkpoint
(and the server's next checkpoint would vouch for it). The entries that move money are
therefore signed, in their own transaction, with the Ed25519 key the database never holds;
verification with the public key refuses a money event without a valid signature. The key is
registered for an engine (the server's), so whatever writes through that engine signs.
"""

from __future__ import annotations

import base64
import weakref

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import BigInteger, Column, MetaData, String, Table, insert
from sqlalchemy.engine import Connection, Engine

from service.audit.canonical import canonical_json
from service.audit.checkpoints import key_id
from service.audit.ledger import LedgerEntry, create_append_only_triggers

metadata = MetaData()

ledger_signature = Table(
    "ledger_signature",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("key_id", String(64), nullable=False),
    Column("signature", String(100), nullable=False),
)

_KEYS: weakref.WeakKeyDictionary[Engine, Ed25519PrivateKey] = weakref.WeakKeyDictionary()


def create_signature_schema(engine: Engine) -> None:
    metadata.create_all(engine)
    with engine.begin() as conn:
        create_append_only_triggers(conn, ledger_signature.name)


def sign_with(engine: Engine, key: Ed25519PrivateKey | None) -> None:
    """Entries that `sign` is asked for, written through `engine`, are signed with `key` from now
    on (None: no longer signed)."""
    if key is None:
        _KEYS.pop(engine, None)
    else:
        _KEYS[engine] = key


def sign(connection: Connection, entry: LedgerEntry) -> None:
    """Sign one entry in the caller's transaction, if its engine has a key."""
    key = _KEYS.get(connection.engine)
    if key is None:
        return
    signature = base64.b64encode(key.sign(signed_bytes(entry.seq, entry.entry_hash))).decode()
    connection.execute(
        insert(ledger_signature).values(seq=entry.seq, key_id=key_id(key.public_key()), signature=signature)
    )


def signed_bytes(seq: int, entry_hash: str) -> bytes:
    return canonical_json({"seq": seq, "entry_hash": entry_hash})


def valid(
    public_key: Ed25519PublicKey, seq: int, entry_hash: str, stored_key_id: str | None, signature: str | None
) -> bool:
    if signature is None or stored_key_id != key_id(public_key):
        return False
    try:
        public_key.verify(base64.b64decode(signature, validate=True), signed_bytes(seq, entry_hash))
    except (InvalidSignature, ValueError):
        return False
    return True
