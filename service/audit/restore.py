"""The restore procedure: after a database is restored from a backup, the ledger key's holder
signs what was restored and which checkpoints that abandons, seals it in the restored ledger and
appends it to the checkpoints file, so that verification accepts the restored ledger.

A backup's ledger is a prefix of the checkpointed one: every checkpoint covering no more than
the backup holds must still match it (else this is not a backup of that ledger but another
history, and nothing is signed). The newer checkpoints are abandoned by name in the signed
statement (`service/audit/restore_statement.py`); `checkpoints.verify_checkpoints` checks the
statement, its seal and every checkpoint after it - and the procedure runs that verification
on the sealed ledger before it commits, so it never signs a restore that would not verify. The
procedure and its limits are in docs/operations.md, "Backup and restore".
"""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, Engine

from service.audit import checkpoints
from service.audit.checkpoints import Checkpoint, reference, split_at_restore
from service.audit.ledger import LedgerEntry, append, get_entry, head, ledger_entry, ledger_transaction, verify
from service.audit.restore_statement import RESTORE_KIND, CheckpointRef, RestoreStatement
from service.errors import LedgerRestoreError


def sign_statement(
    key: Ed25519PrivateKey,
    *,
    restored_entry_count: int,
    restored_head_hash: str,
    matches_checkpoint: CheckpointRef | None,
    abandoned_checkpoints: tuple[CheckpointRef, ...],
    restored_by: str,
    reason: str,
    restored_at: datetime | None = None,
) -> RestoreStatement:
    """A restore statement signed with the ledger key (no check against any ledger: see `restore_ledger`)."""
    unsigned = RestoreStatement(
        restored_entry_count,
        restored_head_hash,
        matches_checkpoint,
        abandoned_checkpoints,
        checkpoints.utc_stamp(restored_at),
        restored_by,
        reason,
        checkpoints.key_id(key.public_key()),
        "",
    )
    return replace(unsigned, signature=base64.b64encode(key.sign(unsigned.signed_bytes())).decode())


def restore_ledger(
    engine: Engine,
    key: Ed25519PrivateKey,
    checkpoint_file: Path,
    *,
    reason: str,
    restored_by: str,
    restored_at: datetime | None = None,
) -> RestoreStatement:
    """Sign and seal the restore of the ledger `engine` now holds; LedgerRestoreError saying why not.

    Refused: no reason or no name; a database without ledger entries; a checkpoints file with a
    line that is not genuinely signed by `key`; a ledger whose chain is broken; a checkpoint the
    restored ledger should still hold but does not; a ledger older than an earlier restore; a
    ledger that contradicts no checkpoint (nothing to restore); any restore after which the ledger
    would not verify against the file (an earlier restore's point or seal missing, say). The
    statement is sealed first (one transaction, under the chain-head lock) and then appended to
    the file. Re-run after a crash between the two, it completes the restore begun instead of
    signing another: a sealed statement the file does not name is filed, and a filed statement
    whose seal was lost (the ledger holds exactly its restore point) is sealed again.
    """
    reason, restored_by = reason.strip(), restored_by.strip()
    if not reason:
        raise LedgerRestoreError("a restore needs a reason (--reason): it is signed and kept with the ledger")
    if not restored_by:
        raise LedgerRestoreError("a restore needs the name of whoever restores (--by)")
    lines = _readable_lines(checkpoint_file)
    parsed = _signed_lines(checkpoint_file, lines, key.public_key())
    if not inspect(engine).has_table(ledger_entry.name):
        raise LedgerRestoreError("the database holds no ledger: check --db names the restored database")
    with ledger_transaction(engine) as conn:
        chain = verify(conn)
        if not chain.valid:
            raise LedgerRestoreError(
                f"the ledger's chain is broken ({chain.detail}): a restore vouches for "
                "a whole backup, never for a damaged ledger"
            )
        top = head(conn)
        if top is None:
            raise LedgerRestoreError(
                "the database holds no ledger entries: check --db names the restored "
                "database (a restore to an empty ledger would abandon every checkpoint)"
            )
        unfiled = _sealed_not_filed(conn, checkpoint_file, parsed)
        lost_seal = None if unfiled else _filed_not_sealed(top, parsed)
        statement = (
            unfiled
            or lost_seal
            or _new_statement(
                conn, key, checkpoint_file, parsed, top, reason=reason, restored_by=restored_by, restored_at=restored_at
            )
        )
        if unfiled is None:
            append(conn, RESTORE_KIND, statement.data())
        to_file = lost_seal is None
        # The last word is verification's: whatever the path, the ledger must verify once filed.
        after = [*lines, (lines[-1][0] + 1, statement.to_json())] if to_file else lines
        check = checkpoints.verify_checkpoints(conn, checkpoint_file, key.public_key(), lines_read=after)
        if not check.valid:
            raise LedgerRestoreError(f"refused: after this restore the ledger would not verify ({check.detail})")
    if to_file:
        checkpoints.write(statement, checkpoint_file)
    return statement


def _sealed_not_filed(
    conn: Connection, path: Path, parsed: list[tuple[int, Checkpoint | RestoreStatement]]
) -> RestoreStatement | None:
    """The statement of a seal no line of the file names (its append failed), if there is one."""
    filed = {item.restore_entry_seq for _, item in parsed if isinstance(item, RestoreStatement)}
    unfiled = [seq for seq in checkpoints.restore_seals(conn) if seq not in filed]
    if not unfiled:
        return None
    entry = get_entry(conn, unfiled[0])
    assert entry is not None  # restore_seals lists existing entries
    try:
        return RestoreStatement.from_data(entry.data())
    except ValueError as exc:
        raise LedgerRestoreError(
            f"ledger entry {entry.seq} is a {RESTORE_KIND} seal that {path} does not name, "
            f"and not a restore statement ({exc}): the ledger was tampered with"
        ) from None


def _filed_not_sealed(
    top: LedgerEntry, parsed: list[tuple[int, Checkpoint | RestoreStatement]]
) -> RestoreStatement | None:
    """The file's newest line, when it is a restore statement whose restore point the ledger's
    head is (its seal lost: the database restored again from the same backup)."""
    newest = parsed[-1][1]
    if isinstance(newest, RestoreStatement) and (newest.restored_entry_count, newest.restored_head_hash) == (
        top.seq,
        top.entry_hash,
    ):
        return newest
    return None


def _new_statement(
    conn: Connection,
    key: Ed25519PrivateKey,
    path: Path,
    parsed: list[tuple[int, Checkpoint | RestoreStatement]],
    top: LedgerEntry,
    *,
    reason: str,
    restored_by: str,
    restored_at: datetime | None,
) -> RestoreStatement:
    """A statement for the ledger ending in `top`, once it is shown to be a backup of the checkpointed one."""
    count, head_hash = top.seq, top.entry_hash
    segment, earlier = _since_last_restore(parsed)
    if earlier is not None and count < earlier.restore_entry_seq:
        raise LedgerRestoreError(
            f"the ledger holds {count} entries, fewer than the restore signed at {earlier.restored_at} "
            f"sealed (entry {earlier.restore_entry_seq}): a backup older than an earlier restore cannot be "
            "restored; restore a backup made after it"
        )
    kept, abandoned = split_at_restore(segment, count)
    for number, checkpoint in kept:
        entry = get_entry(conn, checkpoint.entry_count) if checkpoint.entry_count else None
        if checkpoint.entry_count and (entry is None or entry.entry_hash != checkpoint.head_hash):
            raise LedgerRestoreError(
                f"{path} line {number}: entry {checkpoint.entry_count} does not have the hash "
                f"signed at {checkpoint.signed_at}: this database is not a backup of the checkpointed ledger"
            )
    if not abandoned:
        raise LedgerRestoreError(
            f"the ledger ({count} entries) contradicts no checkpoint in {path}: there is nothing to restore"
        )
    return sign_statement(
        key,
        restored_entry_count=count,
        restored_head_hash=head_hash,
        matches_checkpoint=reference(kept[-1][1]) if kept else None,
        abandoned_checkpoints=tuple(reference(c) for _, c in abandoned),
        restored_by=restored_by,
        reason=reason,
        restored_at=restored_at,
    )


def _readable_lines(path: Path) -> list[tuple[int, str]]:
    try:
        lines = checkpoints.read_lines(path)
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise LedgerRestoreError(f"cannot read the checkpoints {path}: {reason}") from None
    if not lines:
        raise LedgerRestoreError(f"{path} holds no checkpoint: there is nothing a restore could abandon")
    return lines


def _signed_lines(
    path: Path, lines: list[tuple[int, str]], public_key: Ed25519PublicKey
) -> list[tuple[int, Checkpoint | RestoreStatement]]:
    parsed: list[tuple[int, Checkpoint | RestoreStatement]] = []
    for number, text in lines:
        try:
            item = checkpoints.parse_line(text)
        except ValueError as exc:
            raise LedgerRestoreError(f"{path} line {number}: not a checkpoint ({exc})") from None
        problem = checkpoints.signature_problem(item, public_key)
        if problem:
            raise LedgerRestoreError(f"{path} line {number}: {problem}")
        parsed.append((number, item))
    return parsed


def _since_last_restore(
    parsed: list[tuple[int, Checkpoint | RestoreStatement]],
) -> tuple[list[tuple[int, Checkpoint]], RestoreStatement | None]:
    """The checkpoints after the last restore statement, and that statement (None: no restore yet)."""
    segment: list[tuple[int, Checkpoint]] = []
    last: RestoreStatement | None = None
    for number, item in parsed:
        if isinstance(item, RestoreStatement):
            segment, last = [], item
        else:
            segment.append((number, item))
    return segment, last
