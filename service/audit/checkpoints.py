"""Signed checkpoints of the ledger, kept outside the database.

A hash chain cannot stop someone with write access from rebuilding every hash after a change,
nor show that the newest entries were cut off. A checkpoint - entry count and head hash, signed
with an Ed25519 key that is not stored in the database - can: verification against it fails
if the chain no longer holds that entry with that hash at that position.

The key is made once, on purpose, by `benefits audit keygen` (`generate_key`); the server only
loads it (`load_private_key`) and auditors need only its public half (`load_public_key`).

A database restored from a backup holds an older ledger than the newest checkpoint; the key's
holder then appends a signed restore statement to the same file (`restore_statement.py`,
`restore.py`), which verification checks here like a checkpoint (docs/operations.md).
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from service.audit.canonical import canonical_json, sha256_hex
from service.audit.ledger import GENESIS_HASH, get_entry, head, ledger_entry
from service.audit.restore_statement import RESTORE_KIND, CheckpointRef, RestoreStatement, is_restore_line
from service.errors import LedgerKeyError

PUBLIC_KEY_SUFFIX = ".pub"


@dataclass(frozen=True)
class Checkpoint:
    """`entry_count` entries, the last with `head_hash`, as signed by key `key_id` at `signed_at`."""

    entry_count: int
    head_hash: str
    signed_at: str
    key_id: str  # SHA-256 of the raw public key, hex
    signature: str  # base64 Ed25519 signature over the canonical JSON of the other fields

    def signed_bytes(self) -> bytes:
        return canonical_json(
            {
                "entry_count": self.entry_count,
                "head_hash": self.head_hash,
                "signed_at": self.signed_at,
                "key_id": self.key_id,
            }
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        """Parse one line; ValueError saying what is wrong with it."""
        return cls.from_data(json.loads(text))

    @classmethod
    def from_data(cls, data: Any) -> Checkpoint:
        """A decoded line; ValueError saying what is wrong with it."""
        names = [f.name for f in fields(cls)]
        if not isinstance(data, dict) or sorted(data) != sorted(names):
            raise ValueError(f"expected an object with exactly {', '.join(names)}")
        if type(data["entry_count"]) is not int or data["entry_count"] < 0:  # bool is not a count
            raise ValueError("entry_count is not a count")
        wrong = [name for name in names[1:] if not isinstance(data[name], str)]
        if wrong:
            raise ValueError(f"{', '.join(wrong)} must be text")
        return cls(**data)


@dataclass(frozen=True)
class CheckpointCheck:
    """The verdict of `verify_checkpoints`."""

    valid: bool
    detail: str
    covered_entries: int = 0  # entries the newest checkpoint vouches for (when valid)
    uncovered_entries: int = 0  # entries appended after it, not signed yet (when valid)
    first_bad_entry: int = 0  # the ledger entry a failure is about; 0 when it is about the file
    abandoned_checkpoints: int = 0  # checkpoints set aside by signed restores (when valid)


# ---------------------------------------------------------------------------------------------
# The key.
def public_key_path(private_key_path: Path) -> Path:
    """Where `generate_key` writes the public half: beside the key, FILE.pub."""
    return private_key_path.with_name(private_key_path.name + PUBLIC_KEY_SUFFIX)


def generate_key(path: Path) -> Ed25519PrivateKey:
    """A new signing key in `path` (PEM, mode 0600 from its creation) and its public half in
    FILE.pub. Never overwrites: a replaced key could no longer verify the checkpoints it signed."""
    public_path = public_key_path(path)
    for existing in (path, public_path):
        if os.path.lexists(existing):
            raise LedgerKeyError(
                f"{existing} already exists; refusing to overwrite a ledger key "
                "(the checkpoints it signed could no longer be verified)"
            )
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    _create(
        path,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        0o600,
    )
    _create(
        public_path,
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        0o644,
    )
    return key


def _create(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL: fails on any existing file or symlink, so nothing is ever overwritten or followed;
    # the mode is set by the creation itself, never loosened first and tightened after.
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise LedgerKeyError(f"{path} already exists; refusing to overwrite it") from None
    except OSError as exc:
        raise LedgerKeyError(f"cannot create {path}: {exc.strerror or exc}") from None
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def _key_bytes(path: Path, what: str, remedy: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise LedgerKeyError(f"{what} {path} does not exist; {remedy}") from None
    except OSError as exc:
        raise LedgerKeyError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The signing key from its PEM file (made by `generate_key`); LedgerKeyError when it is
    missing, unreadable or not an unencrypted Ed25519 key."""
    try:
        key = serialization.load_pem_private_key(
            _key_bytes(path, "ledger key", f"make it once with `benefits audit keygen --out {path}`"), password=None
        )
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise LedgerKeyError(f"ledger key {path} is not an unencrypted Ed25519 private key (PEM)")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The public half (PEM, FILE.pub beside the key) that verifies checkpoints."""
    try:
        key = serialization.load_pem_public_key(
            _key_bytes(path, "public key", f"`benefits audit keygen --out FILE` writes it as FILE{PUBLIC_KEY_SUFFIX}")
        )
    except (ValueError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, Ed25519PublicKey):
        raise LedgerKeyError(f"public key {path} is not an Ed25519 public key (PEM)")
    return key


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return sha256_hex(raw)


# ---------------------------------------------------------------------------------------------
# Signing and writing.
def sign(key: Ed25519PrivateKey, entry_count: int, head_hash: str, signed_at: datetime | None = None) -> Checkpoint:
    moment = utc_stamp(signed_at)
    unsigned = Checkpoint(entry_count, head_hash, moment, key_id(key.public_key()), "")
    signature = base64.b64encode(key.sign(unsigned.signed_bytes())).decode()
    return Checkpoint(entry_count, head_hash, moment, unsigned.key_id, signature)


def utc_stamp(moment: datetime | None = None) -> str:
    """`moment` (default now) as the fixed-width UTC text checkpoints and restores are signed with."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def checkpoint_now(connection: Connection, key: Ed25519PrivateKey) -> Checkpoint:
    """Sign the ledger's current head."""
    newest = head(connection)
    return sign(key, newest.seq if newest else 0, newest.entry_hash if newest else GENESIS_HASH)


def write(checkpoint: Checkpoint | RestoreStatement, path: Path) -> None:
    """Add a checkpoint (or a restore statement) to a JSON-lines file (one a line, newest last), on disk
    before returning: a checkpoint lost in a crash is a gap an attacker could use. The file is
    rewritten beside itself and renamed over, so a write cut short (a full disk) leaves the old
    file whole instead of a torn line that would fail every later verification."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (checkpoint.to_json() + "\n").encode("utf-8")
    if path.exists() and not path.is_file():  # a device or a pipe: written to as it is
        with path.open("ab") as out:
            out.write(line)
            out.flush()
            os.fsync(out.fileno())
        return
    before = path.read_bytes() if path.exists() else b""
    if before and not before.endswith(b"\n"):
        before += b"\n"
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("wb") as out:
            out.write(before + line)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Verification: every rule in one place.
@dataclass(frozen=True)
class _Point:
    """What a checkpoint or a restore vouches for: the ledger's first `entry_count` entries."""

    entry_count: int
    head_hash: str
    name: str  # "the checkpoint signed at ...", "the restore signed at ..."


def verify_checkpoints(
    connection: Connection,
    checkpoint_file: Path | None,
    public_key: Ed25519PublicKey | None,
    *,
    lines_read: list[tuple[int, str]] | None = None,
) -> CheckpointCheck:
    """Does the ledger agree with the signed checkpoints?

    - Neither a file nor a key given: not checked, and the detail says so.
    - An empty ledger verifies without checkpoints; with them, they are checked like any other.
    - A ledger with entries but no checkpoint (file missing or empty) fails.
    - Every line must be a checkpoint or a restore statement whose signature verifies with
      `public_key`; the first that is not fails, named by its line number.
    - A restore statement (a database restored from a backup, signed by the key's holder) names
      exactly the checkpoints since the previous restore that cover more than the restored
      ledger: those are abandoned, reported and not checked. The ledger must hold the restore
      point (entry count and head hash) and, right after it, the statement sealed as an entry;
      a `ledger_restore` entry that no statement in the file names fails.
    - Entry counts never go down from one checkpoint to a later one (the ledger only grows); a
      later checkpoint covering fewer entries means the file was cut back or the ledger reset.
      After a restore, checkpoints must extend the restored ledger (its seal included).
    - Every checkpoint kept, and the newest point, must still hold: the ledger has at least its
      entry count, and the entry at that position has the signed hash (else entries were cut
      off or the chain rebuilt). Entries after it are valid but named as not yet covered.
    """
    if checkpoint_file is None and public_key is None:
        return CheckpointCheck(True, "checkpoints not checked (no public key and no checkpoints file given)")
    if public_key is None:
        return CheckpointCheck(
            False, f"the checkpoints in {checkpoint_file} cannot be checked without the ledger's public key"
        )
    # The file is read before the ledger is counted: a checkpoint written meanwhile covers only
    # entries committed before it, which the count then includes. A caller reading the ledger
    # in one snapshot reads the file before the snapshot's first query (`lines_read`).
    try:
        lines = lines_read if lines_read is not None else read_lines(checkpoint_file)
    except (OSError, UnicodeDecodeError) as exc:
        return CheckpointCheck(
            False, f"cannot read the checkpoints {checkpoint_file}: {getattr(exc, 'strerror', None) or exc}"
        )
    entries = connection.execute(select(func.count()).select_from(ledger_entry)).scalar_one()
    if not lines:
        if entries == 0:
            return CheckpointCheck(True, "the ledger is empty: nothing to checkpoint yet")
        where = (
            "no checkpoints file was given"
            if checkpoint_file is None
            else f"{checkpoint_file} does not exist"
            if not checkpoint_file.exists()
            else f"{checkpoint_file} holds no checkpoint"
        )
        return CheckpointCheck(
            False, f"the ledger holds {entries} entries but {where}: its checkpoints were removed or never written"
        )
    parsed: list[tuple[int, Checkpoint | RestoreStatement]] = []
    for number, text in lines:
        try:
            item = parse_line(text)
        except ValueError as exc:
            return CheckpointCheck(False, f"{checkpoint_file} line {number}: not a checkpoint ({exc})")
        problem = signature_problem(item, public_key)
        if problem:
            return CheckpointCheck(False, f"{checkpoint_file} line {number}: {problem}")
        parsed.append((number, item))
    abandoned = _abandoned_lines(parsed)
    if isinstance(abandoned, str):
        return CheckpointCheck(False, f"{checkpoint_file} {abandoned}")
    widest: tuple[int, int] | None = None  # (line number, entry count) covering the most since the last restore
    newest: _Point | None = None
    restores: list[RestoreStatement] = []
    checked: dict[int, str] = {}  # entry count -> head hash found in the ledger
    for number, item in parsed:
        if number in abandoned:
            continue
        if isinstance(item, RestoreStatement):
            seal = _restore_problem(connection, item, entries)
            if isinstance(seal, tuple):
                return CheckpointCheck(False, f"{checkpoint_file} line {number}: {seal[0]}", first_bad_entry=seal[1])
            widest, newest = (number, item.restore_entry_seq), _Point(item.restore_entry_seq, seal, _name(item))
            restores.append(item)
            continue
        checkpoint = item
        if widest is not None and checkpoint.entry_count < widest[1]:
            after = " (after a restore, checkpoints must extend the restored ledger)" if restores else ""
            return CheckpointCheck(
                False,
                f"{checkpoint_file} line {number}: the checkpoint of "
                f"{checkpoint.signed_at} covers {checkpoint.entry_count} entries, "
                f"fewer than the {widest[1]} of line {widest[0]}: "
                f"the file was cut back or the ledger reset{after}",
            )
        if widest is None or checkpoint.entry_count > widest[1]:
            widest = (number, checkpoint.entry_count)
        # Every checkpoint still holds, not only the newest: a history rewritten before an older
        # checkpoint and then vouched for by a newer one is caught by the older.
        if 0 < checkpoint.entry_count <= entries and checked.get(checkpoint.entry_count) != checkpoint.head_hash:
            entry = get_entry(connection, checkpoint.entry_count)
            if entry is None or entry.entry_hash != checkpoint.head_hash:
                return CheckpointCheck(
                    False,
                    f"{checkpoint_file} line {number}: entry {checkpoint.entry_count} "
                    f"does not have the hash signed at {checkpoint.signed_at}: the chain "
                    "was rebuilt",
                    first_bad_entry=checkpoint.entry_count,
                )
            checked[checkpoint.entry_count] = checkpoint.head_hash
        newest = _Point(checkpoint.entry_count, checkpoint.head_hash, _name(checkpoint))
    assert newest is not None  # the last line is never abandoned: only lines before a restore are
    named = {restore.restore_entry_seq for restore in restores}
    unnamed = [seq for seq in restore_seals(connection) if seq not in named]
    if unnamed:
        return CheckpointCheck(
            False,
            f"entry {unnamed[0]} is a {RESTORE_KIND} seal that no restore statement in "
            f"{checkpoint_file} names: forged, or a restore whose statement was never "
            "filed (`benefits audit restore` files it)",
            first_bad_entry=unnamed[0],
        )
    check = _against_ledger(connection, newest, entries)
    if not check.valid or not restores:
        return check
    said = "; ".join(
        f"{len(r.abandoned_checkpoints)} checkpoint(s) abandoned by the signed restore of "
        f"{r.restored_at} by {r.restored_by} to entry {r.restored_entry_count} ({r.reason})"
        for r in restores
    )
    return CheckpointCheck(
        True,
        f"{check.detail}; {said}",
        covered_entries=check.covered_entries,
        uncovered_entries=check.uncovered_entries,
        abandoned_checkpoints=len(abandoned),
    )


def read_lines(path: Path | None) -> list[tuple[int, str]]:
    """(line number, text) of every non-blank line; none when the file does not exist."""
    if path is None or not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    return [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]


def parse_line(text: str) -> Checkpoint | RestoreStatement:
    """One line of the checkpoints file; ValueError saying what is wrong with it."""
    data = json.loads(text)
    return RestoreStatement.from_data(data) if is_restore_line(data) else Checkpoint.from_data(data)


def signature_problem(item: Checkpoint | RestoreStatement, public_key: Ed25519PublicKey) -> str | None:
    what = "restore statement" if isinstance(item, RestoreStatement) else "checkpoint"
    if item.key_id != key_id(public_key):
        return f"{what} signed by another key"
    try:
        signature = base64.b64decode(item.signature, validate=True)
        # Strict: base64 leaves the last character's low bits unused, so a lenient decode would let
        # the text of a genuine signature be edited and still verify - the signed line not unique.
        if base64.b64encode(signature).decode() != item.signature:
            raise ValueError("not the canonical base64 of its bytes")
        public_key.verify(signature, item.signed_bytes())
    except (InvalidSignature, ValueError):
        return f"{what} signature does not verify"
    return None


def restore_seals(connection: Connection) -> list[int]:
    """The positions of the ledger's `RESTORE_KIND` entries, oldest first."""
    return list(
        connection.execute(
            select(ledger_entry.c.seq).where(ledger_entry.c.kind == RESTORE_KIND).order_by(ledger_entry.c.seq)
        ).scalars()
    )


def split_at_restore(
    segment: list[tuple[int, Checkpoint]], restored_entry_count: int
) -> tuple[list[tuple[int, Checkpoint]], list[tuple[int, Checkpoint]]]:
    """The checkpoints since the previous restore that a ledger restored to `restored_entry_count`
    entries still holds (kept), and those covering more (abandoned), each in file order."""
    kept = [(n, c) for n, c in segment if c.entry_count <= restored_entry_count]
    dropped = [(n, c) for n, c in segment if c.entry_count > restored_entry_count]
    return kept, dropped


def reference(checkpoint: Checkpoint) -> CheckpointRef:
    return CheckpointRef(checkpoint.entry_count, checkpoint.head_hash, checkpoint.signed_at)


def _abandoned_lines(parsed: list[tuple[int, Checkpoint | RestoreStatement]]) -> set[int] | str:
    """The line numbers of the checkpoints the restore statements abandon, or what is wrong."""
    abandoned: set[int] = set()
    segment: list[tuple[int, Checkpoint]] = []
    for number, item in parsed:
        if isinstance(item, Checkpoint):
            segment.append((number, item))
            continue
        kept, dropped = split_at_restore(segment, item.restored_entry_count)
        if item.abandoned_checkpoints != tuple(reference(c) for _, c in dropped):
            lines = ", ".join(str(n) for n, _ in dropped) or "none"
            return (
                f"line {number}: {_name(item)} does not name the checkpoints it abandons: those before it "
                f"covering more than its {item.restored_entry_count} entries are on lines {lines}"
            )
        if item.matches_checkpoint != (reference(kept[-1][1]) if kept else None):
            return f"line {number}: {_name(item)} does not name the newest checkpoint before it that it keeps"
        abandoned.update(n for n, _ in dropped)
        segment = []
    return abandoned


def _restore_problem(connection: Connection, statement: RestoreStatement, entries: int) -> str | tuple[str, int]:
    """The hash of the restore's sealed entry, or (what is wrong, the ledger entry concerned)."""
    count, seal_seq = statement.restored_entry_count, statement.restore_entry_seq
    held = GENESIS_HASH if count == 0 else getattr(get_entry(connection, count), "entry_hash", None)
    if held != statement.restored_head_hash:
        return (
            f"{_name(statement)} claims a restored ledger of {count} entries ending in "
            f"{statement.restored_head_hash}, which the ledger does not hold",
            max(count, 1),
        )
    seal = get_entry(connection, seal_seq) if seal_seq <= entries else None
    if seal is None:
        return f"{_name(statement)} was sealed as entry {seal_seq}, which the ledger does not hold", seal_seq
    if seal.kind != RESTORE_KIND or seal.data() != statement.data():
        return f"entry {seal_seq} is not the seal of {_name(statement)}", seal_seq
    return seal.entry_hash


def _name(item: Checkpoint | RestoreStatement) -> str:
    if isinstance(item, RestoreStatement):
        return f"the restore signed at {item.restored_at}"
    return f"the checkpoint signed at {item.signed_at}"


def _against_ledger(connection: Connection, newest: _Point, entries: int) -> CheckpointCheck:
    covered = newest.entry_count
    if entries < covered:
        return CheckpointCheck(
            False,
            f"the ledger holds {entries} entries but {newest.name} covers {covered}: entries were cut off",
            first_bad_entry=covered,
        )
    if covered:
        entry = get_entry(connection, covered)
        if entry is None or entry.entry_hash != newest.head_hash:
            return CheckpointCheck(
                False,
                f"entry {covered} does not have the hash of {newest.name}: the chain was rebuilt",
                first_bad_entry=covered,
            )
    detail = f"entry {covered} matches {newest.name}" if covered else f"{newest.name} covers the empty ledger"
    uncovered = entries - covered
    if uncovered:
        detail += f"; {uncovered} entries after the newest checkpoint are not yet covered"
    return CheckpointCheck(True, detail, covered_entries=covered, uncovered_entries=uncovered)
