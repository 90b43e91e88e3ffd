"""A database restored from a backup holds a ledger older than the newest checkpoint: verification
calls that a cut tail until the ledger key's holder signs and seals the restore. Then the
restored ledger verifies, the abandoned checkpoints are reported as such, checkpoints after the
restore must extend it, and a restore statement that is forged, tampered with, or claims what
the ledger does not hold fails (SQLite and PostgreSQL, real backups, real keys)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from testkit.database_backups import RestoredLedger as Restored
from testkit.database_backups import create_every_table, restored_ledger, write_checkpoint

from enterprise_registry.db import make_engine
from service.audit import checkpoints
from service.audit.checkpoints import reference
from service.audit.ledger import append, get_entry, ledger_entry, verify
from service.audit.restore import restore_ledger, sign_statement
from service.audit.restore_statement import RESTORE_KIND
from service.audit.verification import verify_audit_log
from service.errors import LedgerRestoreError

REASON = "disk of db-1 failed; restored the 02:00 backup"


def _append(engine: Engine, count: int, label: str) -> None:
    with engine.begin() as conn:
        for i in range(count):
            append(conn, "evaluation", {"evaluation_id": f"{label}{i}"})


def _verify(restored: Restored) -> checkpoints.CheckpointCheck:
    with restored.engine.connect() as conn:
        return checkpoints.verify_checkpoints(conn, restored.file, restored.key.public_key())


def _entries(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(ledger_entry)).scalar_one())


@pytest.fixture
def restored(db_url: str, tmp_path: Path) -> Iterator[Restored]:
    """A ledger of 6 entries checkpointed (`kept`, line 1), backed up, grown to 9 and checkpointed
    (`lost`, line 2), then restored from the backup: it holds 6 entries again."""
    with restored_ledger(
        db_url,
        tmp_path,
        before=lambda engine: _append(engine, 6, "before"),
        lost=lambda engine: _append(engine, 3, "lost"),
    ) as ledger:
        assert ledger.lost.entry_count == 9
        yield ledger


def test_a_restored_backup_fails_verification_as_a_cut_tail(restored: Restored) -> None:
    assert _entries(restored.engine) == 6
    with restored.engine.connect() as conn:
        assert verify(conn).valid  # the chain of the backup is whole
    check = _verify(restored)
    assert not check.valid
    assert "holds 6 entries" in check.detail and "covers 9" in check.detail and "cut off" in check.detail


def test_the_signed_restore_makes_the_restored_ledger_verify(restored: Restored) -> None:
    statement = restore_ledger(restored.engine, restored.key, restored.file, reason=REASON, restored_by="ops-alice")
    assert (statement.restored_entry_count, statement.restore_entry_seq) == (6, 7)
    assert statement.matches_checkpoint == reference(restored.kept)
    assert statement.abandoned_checkpoints == (reference(restored.lost),)
    assert (statement.restored_by, statement.reason) == ("ops-alice", REASON)

    check = _verify(restored)
    assert check.valid, check.detail
    assert (check.covered_entries, check.uncovered_entries, check.abandoned_checkpoints) == (7, 0, 1)
    assert "entry 7 matches the restore signed at" in check.detail
    assert (
        f"1 checkpoint(s) abandoned by the signed restore of {statement.restored_at} by ops-alice to entry 6 ({REASON})"
    ) in check.detail

    # The restore itself is in the chain: entry 7, holding the whole statement.
    with restored.engine.connect() as conn:
        chain = verify(conn)
        seal = get_entry(conn, 7)
        verdict = verify_audit_log(conn, checkpoint_file=restored.file, public_key=restored.key.public_key())
    assert chain.valid and chain.entries_checked == 7
    assert seal is not None and seal.kind == RESTORE_KIND and seal.data() == statement.data()
    assert verdict.valid, verdict.detail
    assert "abandoned by the signed restore" in verdict.detail
    lines = restored.file.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2]) == statement.data()


def test_checkpoints_after_the_restore_extend_the_restored_ledger(restored: Restored) -> None:
    restore_ledger(restored.engine, restored.key, restored.file, reason=REASON, restored_by="ops-alice")
    _append(restored.engine, 4, "after")
    later = write_checkpoint(restored.engine, restored.key, restored.file)
    assert later.entry_count == 11  # 6 restored, the seal, 4 new: more than the abandoned 9, on another history
    check = _verify(restored)
    assert check.valid, check.detail
    assert (check.covered_entries, check.abandoned_checkpoints) == (11, 1)

    checkpoints.write(restored.kept, restored.file)  # a genuine older checkpoint appended as the newest
    check = _verify(restored)
    assert not check.valid
    assert f"{restored.file} line 5:" in check.detail
    assert "covers 6 entries, fewer than the 11 of line 4" in check.detail
    assert "after a restore, checkpoints must extend the restored ledger" in check.detail


def test_a_tampered_restore_statement_fails(restored: Restored) -> None:
    restore_ledger(restored.engine, restored.key, restored.file, reason=REASON, restored_by="ops-alice")
    lines = restored.file.read_text().splitlines()
    statement = json.loads(lines[2])
    statement["abandoned_checkpoints"] = []  # as if the newer checkpoint had never been dropped
    restored.file.write_text("\n".join([*lines[:2], json.dumps(statement)]) + "\n")
    check = _verify(restored)
    assert not check.valid
    assert check.detail == f"{restored.file} line 3: restore statement signature does not verify"


def test_a_restore_signed_by_another_key_fails(restored: Restored) -> None:
    other = Ed25519PrivateKey.generate()
    forged = sign_statement(
        other,
        restored_entry_count=6,
        restored_head_hash=restored.kept.head_hash,
        matches_checkpoint=reference(restored.kept),
        abandoned_checkpoints=(reference(restored.lost),),
        restored_by="mallory",
        reason="x",
    )
    with restored.engine.begin() as conn:  # whoever writes the database can seal it, but cannot sign it
        append(conn, RESTORE_KIND, forged.data())
    checkpoints.write(forged, restored.file)
    check = _verify(restored)
    assert not check.valid
    assert check.detail == f"{restored.file} line 3: restore statement signed by another key"


@pytest.mark.parametrize("claim", ["more-entries-than-held", "another-head-hash", "no-seal"])
def test_a_restore_claiming_what_the_ledger_does_not_hold_fails(restored: Restored, claim: str) -> None:
    count, head_hash = 6, restored.kept.head_hash
    if claim == "more-entries-than-held":
        count = 8
    elif claim == "another-head-hash":
        head_hash = "ab" * 32
    statement = sign_statement(
        restored.key,
        restored_entry_count=count,
        restored_head_hash=head_hash,
        matches_checkpoint=reference(restored.kept),
        abandoned_checkpoints=(reference(restored.lost),),
        restored_by="ops-alice",
        reason=REASON,
    )
    if claim != "no-seal":
        with restored.engine.begin() as conn:
            append(conn, RESTORE_KIND, statement.data())
    checkpoints.write(statement, restored.file)
    check = _verify(restored)
    assert not check.valid
    if claim == "no-seal":
        assert (
            f"line 3: the restore signed at {statement.restored_at} was sealed as entry 7, which the ledger "
            "does not hold" in check.detail
        )
        assert check.first_bad_entry == 7
    else:
        assert (
            f"line 3: the restore signed at {statement.restored_at} claims a restored ledger of {count} "
            f"entries ending in {head_hash}, which the ledger does not hold" in check.detail
        )


def test_a_seal_that_is_not_the_statement_fails(restored: Restored) -> None:
    statement = sign_statement(
        restored.key,
        restored_entry_count=6,
        restored_head_hash=restored.kept.head_hash,
        matches_checkpoint=reference(restored.kept),
        abandoned_checkpoints=(reference(restored.lost),),
        restored_by="ops-alice",
        reason=REASON,
    )
    _append(restored.engine, 1, "not-the-seal")  # entry 7 is something else
    checkpoints.write(statement, restored.file)
    check = _verify(restored)
    assert not check.valid
    assert f"line 3: entry 7 is not the seal of the restore signed at {statement.restored_at}" in check.detail


def test_a_restore_must_name_every_checkpoint_it_abandons(restored: Restored) -> None:
    statement = sign_statement(
        restored.key,
        restored_entry_count=6,
        restored_head_hash=restored.kept.head_hash,
        matches_checkpoint=reference(restored.kept),
        abandoned_checkpoints=(),
        restored_by="ops-alice",
        reason=REASON,
    )
    with restored.engine.begin() as conn:
        append(conn, RESTORE_KIND, statement.data())
    checkpoints.write(statement, restored.file)
    check = _verify(restored)
    assert not check.valid
    assert "does not name the checkpoints it abandons" in check.detail and "lines 2" in check.detail


# ---------------------------------------------------------------------------------------------
# What the procedure refuses to sign: nothing is sealed, nothing written.
def _unchanged(restored: Restored, entries: int, text_before: str) -> None:
    assert _entries(restored.engine) == entries
    assert restored.file.read_text() == text_before


def test_no_reason_no_restore(restored: Restored) -> None:
    before = restored.file.read_text()
    with pytest.raises(LedgerRestoreError, match=r"a restore needs a reason \(--reason\)"):
        restore_ledger(restored.engine, restored.key, restored.file, reason="  ", restored_by="ops-alice")
    _unchanged(restored, 6, before)


def test_a_ledger_that_contradicts_no_checkpoint_has_nothing_to_restore(restored: Restored) -> None:
    restore_ledger(restored.engine, restored.key, restored.file, reason=REASON, restored_by="ops-alice")
    before = restored.file.read_text()
    with pytest.raises(
        LedgerRestoreError,
        match=r"the ledger \(7 entries\) contradicts no checkpoint .*nothing to "
        "restore",
    ):
        restore_ledger(restored.engine, restored.key, restored.file, reason=REASON, restored_by="ops-alice")
    _unchanged(restored, 7, before)


def test_another_history_is_not_a_backup(restored: Restored) -> None:
    with restored.engine.begin() as conn:  # entry 6 rewritten: the checkpoint it still should match fails
        if conn.dialect.name == "postgresql":
            conn.execute(text("DROP TRIGGER ledger_entry_append_only ON ledger_entry"))
        else:
            conn.execute(text("DROP TRIGGER ledger_entry_no_delete"))
        conn.execute(text("DELETE FROM ledger_entry WHERE seq = 6"))
        append(conn, "evaluation", {"evaluation_id": "forged"})
    before = restored.file.read_text()
    with pytest.raises(
        LedgerRestoreError,
        match=f"line 1: entry 6 does not have the hash signed at "
        f"{restored.kept.signed_at}: this database is not a backup",
    ):
        restore_ledger(restored.engine, restored.key, restored.file, reason=REASON, restored_by="ops-alice")
    _unchanged(restored, 6, before)


def test_a_database_without_ledger_entries_is_refused(restored: Restored, tmp_path: Path) -> None:
    before = restored.file.read_text()
    empty = make_engine(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    try:
        with pytest.raises(LedgerRestoreError, match="the database holds no ledger: check --db"):
            restore_ledger(empty, restored.key, restored.file, reason=REASON, restored_by="ops-alice")
        create_every_table(empty)
        with pytest.raises(LedgerRestoreError, match="the database holds no ledger entries"):
            restore_ledger(empty, restored.key, restored.file, reason=REASON, restored_by="ops-alice")
        assert _entries(empty) == 0
    finally:
        empty.dispose()
    _unchanged(restored, 6, before)


def test_a_restore_that_would_not_verify_is_refused_and_nothing_sealed(restored: Restored) -> None:
    """A backup made before an earlier restore, of the history it abandoned: the count check passes
    but the earlier restore's seal is missing, which the final verification catches."""
    restore_ledger(restored.engine, restored.key, restored.file, reason=REASON, restored_by="ops-alice")
    _append(restored.engine, 4, "after")
    write_checkpoint(restored.engine, restored.key, restored.file)
    with restored.engine.begin() as conn:  # the abandoned history, as a backup made before the restore holds it
        if conn.dialect.name == "postgresql":
            conn.execute(text("DROP TRIGGER ledger_entry_append_only ON ledger_entry"))
        else:
            conn.execute(text("DROP TRIGGER ledger_entry_no_delete"))
        conn.execute(text("DELETE FROM ledger_entry WHERE seq > 6"))
    _append(restored.engine, 3, "other")
    before = restored.file.read_text()
    with pytest.raises(
        LedgerRestoreError,
        match=r"after this restore the ledger would not verify .*line 3: entry 7 "
        r"is not the seal",
    ):
        restore_ledger(restored.engine, restored.key, restored.file, reason=REASON, restored_by="ops-bob")
    _unchanged(restored, 9, before)


def test_a_checkpoints_file_with_a_forged_line_is_refused(restored: Restored) -> None:
    lines = restored.file.read_text().splitlines()
    second = json.loads(lines[1])
    second["entry_count"] = 5
    restored.file.write_text(lines[0] + "\n" + json.dumps(second) + "\n")
    before = restored.file.read_text()
    with pytest.raises(LedgerRestoreError, match="line 2: checkpoint signature does not verify"):
        restore_ledger(restored.engine, restored.key, restored.file, reason=REASON, restored_by="ops-alice")
    _unchanged(restored, 6, before)


def test_a_restore_sealed_but_not_written_is_written_on_the_next_run(
    restored: Restored, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(checkpoints, "write", disk_full)
        with pytest.raises(OSError, match="No space left"):
            restore_ledger(restored.engine, restored.key, restored.file, reason=REASON, restored_by="ops-alice")
    assert _entries(restored.engine) == 7  # sealed
    check = _verify(restored)  # but the file does not say so yet
    assert not check.valid and check.first_bad_entry == 7
    assert "entry 7 is a ledger_restore seal that no restore statement" in check.detail, check.detail
    again = restore_ledger(restored.engine, restored.key, restored.file, reason="another reason", restored_by="bob")
    assert again.reason == REASON  # the sealed statement, not a second one
    assert _entries(restored.engine) == 7
    assert _verify(restored).valid
