"""Signed checkpoints of the ledger, kept outside the database.

A hash chain cannot stop someone with write access from rebuilding every hash after a change,
nor show that the newest entries were cut off. A checkpoint - entry count and head hash, signed
with an Ed25519 key that is not stored in the database - can: verification against it fails
if the chain no longer holds that entry with that hash at that position.
"""
from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from service.audit.canonical import canonical_json, sha256_hex
from service.audit.ledger import GENESIS_HASH, get_entry, head, ledger_entry

CHECKPOINT_FAULT = "checkpoint"


@dataclass(frozen=True)
class Checkpoint:
    """`entry_count` entries, the last with `head_hash`, as signed by key `key_id` at `signed_at`."""
    entry_count: int
    head_hash: str
    signed_at: str
    key_id: str        # SHA-256 of the raw public key, hex
    signature: str     # base64 Ed25519 signature over the canonical JSON of the other fields

    def signed_bytes(self) -> bytes:
        return canonical_json({"entry_count": self.entry_count, "head_hash": self.head_hash,
                               "signed_at": self.signed_at, "key_id": self.key_id})

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class CheckpointCheck:
    valid: bool
    detail: str


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The signing key from a PEM file (created with mode 0600 on first use)."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 private key")
        return key
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return key


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return sha256_hex(raw)


def sign(key: Ed25519PrivateKey, entry_count: int, head_hash: str,
         signed_at: datetime | None = None) -> Checkpoint:
    moment = (signed_at or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    unsigned = Checkpoint(entry_count, head_hash, moment, key_id(key.public_key()), "")
    signature = base64.b64encode(key.sign(unsigned.signed_bytes())).decode()
    return Checkpoint(entry_count, head_hash, moment, unsigned.key_id, signature)


def checkpoint_now(connection: Connection, key: Ed25519PrivateKey) -> Checkpoint:
    """Sign the ledger's current head."""
    newest = head(connection)
    return sign(key, newest.seq if newest else 0, newest.entry_hash if newest else GENESIS_HASH)


def write(checkpoint: Checkpoint, path: Path) -> None:
    """Append a checkpoint to a JSON-lines file (one checkpoint a line, newest last)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(checkpoint.to_json() + "\n")


def newest(path: Path) -> Checkpoint | None:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] \
        if path.exists() else []
    return Checkpoint.from_json(lines[-1]) if lines else None


def check(connection: Connection, checkpoint: Checkpoint, public_key: Ed25519PublicKey) -> CheckpointCheck:
    """Does the ledger still hold what the checkpoint says? Signature first, then the entry."""
    if checkpoint.key_id != key_id(public_key):
        return CheckpointCheck(False, "checkpoint signed by another key")
    try:
        public_key.verify(base64.b64decode(checkpoint.signature), checkpoint.signed_bytes())
    except (InvalidSignature, ValueError):
        return CheckpointCheck(False, "checkpoint signature does not verify")
    if checkpoint.entry_count == 0:
        return CheckpointCheck(True, "empty checkpoint")
    count = connection.execute(select(func.count()).select_from(ledger_entry)).scalar_one()
    if count < checkpoint.entry_count:
        return CheckpointCheck(False, f"the ledger holds {count} entries but a checkpoint signed at "
                                      f"{checkpoint.signed_at} covers {checkpoint.entry_count}: "
                                      "entries were cut off")
    entry = get_entry(connection, checkpoint.entry_count)
    if entry is None or entry.entry_hash != checkpoint.head_hash:
        return CheckpointCheck(False, f"entry {checkpoint.entry_count} does not have the hash signed at "
                                      f"{checkpoint.signed_at}: the chain was rebuilt")
    return CheckpointCheck(True, f"entry {checkpoint.entry_count} matches the checkpoint of "
                                 f"{checkpoint.signed_at}")
