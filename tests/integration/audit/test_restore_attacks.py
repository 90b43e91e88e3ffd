"""Red-team review of the ledger restore (service/audit/restore.py, restore_statement.py and
checkpoints.verify_checkpoints), on SQLite and PostgreSQL: an insider who may write the database
and the checkpoints file but has no key tries to replay, move, copy or edit a restore statement,
or to hide tampering behind a legitimate restore; crashes between the seal and the file; two
restores; bad input to `benefits audit restore`. A passing test is a property that held; an
`xfail(strict=True)` test is a bug found (its reason says what)."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete, func, select, text
from sqlalchemy.engine import Connection, Engine
from testkit.database_backups import RestoredLedger as Restored
from testkit.database_backups import create_every_table, restored_ledger, write_checkpoint

from enterprise_registry.db import make_engine
from service.audit import checkpoints
from service.audit.ledger import APPEND_ONLY_TRIGGER_NAMES, append, get_entry, head, ledger_entry
from service.audit.restore import restore_ledger, sign_statement
from service.audit.restore_statement import RESTORE_KIND, RestoreStatement
from service.audit.verification import verify_audit_log
from service.cli import main
from service.errors import LedgerRestoreError

REASON = "disk of db-1 failed; restored the 02:00 backup"
START = datetime(2026, 1, 1, tzinfo=UTC)


# ------------------------------------------------------------------------------------------- setup
def _append(engine: Engine, labels: list[str]) -> None:
    """Entries whose hashes depend only on their labels and positions (their time is fixed)."""
    with engine.begin() as conn:
        for label in labels:
            last = head(conn)
            seq = (last.seq if last else 0) + 1
            append(conn, "evaluation", {"evaluation_id": label}, recorded_at=START + timedelta(seconds=seq))


BEFORE = [f"before{i}" for i in range(6)]
LOST = [f"lost{i}" for i in range(3)]


@pytest.fixture
def restored(db_url: str, tmp_path: Path) -> Iterator[Restored]:
    """A ledger of 6 entries checkpointed (`kept`, line 1), backed up, grown to 9 and checkpointed
    (`lost`, line 2), then restored from the real backup: it holds the 6 entries again. Entries
    carry fixed times, so the lost history can be written again entry for entry (`_regrow_lost`)."""
    with restored_ledger(
        db_url, tmp_path, before=lambda engine: _append(engine, BEFORE), lost=lambda engine: _append(engine, LOST)
    ) as ledger:
        yield ledger


def _restore(restored: Restored, reason: str = REASON, by: str = "ops-alice") -> RestoreStatement:
    return restore_ledger(restored.engine, restored.key, restored.file, reason=reason, restored_by=by)


def _verdict(restored: Restored) -> tuple[bool, str]:
    """The full verification an auditor runs (chain, records, money, checkpoints)."""
    with restored.engine.connect() as conn:
        verdict = verify_audit_log(conn, checkpoint_file=restored.file, public_key=restored.key.public_key())
    return verdict.valid, verdict.detail


def _entries(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(ledger_entry)).scalar_one())


def _kinds(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(ledger_entry.c.kind).order_by(ledger_entry.c.seq)).scalars())


def _lines(restored: Restored) -> list[str]:
    return restored.file.read_text().splitlines()


def _write_lines(restored: Restored, lines: list[str]) -> None:
    restored.file.write_text("".join(line + "\n" for line in lines))


# ----------------------------------------------------------------------------------------- insider
def _without_triggers(conn: Connection) -> None:
    """What an insider with write access does first."""
    dialect = conn.dialect.name
    for name in APPEND_ONLY_TRIGGER_NAMES[dialect]:
        trigger = name.format(table=ledger_entry.name)
        conn.execute(
            text(f"DROP TRIGGER IF EXISTS {trigger}" + (f" ON {ledger_entry.name}" if dialect == "postgresql" else ""))
        )


def _cut_to(engine: Engine, count: int) -> None:
    """The ledger cut back to its first `count` entries (what restoring a backup made then leaves)."""
    with engine.begin() as conn:
        _without_triggers(conn)
        conn.execute(delete(ledger_entry).where(ledger_entry.c.seq > count))


def _rebuild_from(engine: Engine, seq: int, items: list[tuple[str, dict[str, Any]]]) -> None:
    """Entries from `seq` on deleted and `items` appended in their place, the chain rebuilt."""
    _cut_to(engine, seq - 1)
    with engine.begin() as conn:
        for kind, payload in items:
            append(conn, kind, payload)


def _payloads_from(engine: Engine, seq: int) -> list[tuple[str, dict[str, Any]]]:
    with engine.connect() as conn:
        rows = (
            conn.execute(select(ledger_entry.c.seq).where(ledger_entry.c.seq >= seq).order_by(ledger_entry.c.seq))
            .scalars()
            .all()
        )
        return [(entry.kind, entry.data()) for entry in (get_entry(conn, n) for n in rows) if entry]


def _regrow_lost(engine: Engine) -> None:
    """The history the restore abandoned, written again: the same 9 entries the `lost` checkpoint signed
    (what a backup made after `lost` and before the restore holds)."""
    _cut_to(engine, len(BEFORE))
    _append(engine, LOST)


# ------------------------------------------------------------- replayed, moved, copied statements
def test_the_fixture_is_what_it_claims(restored: Restored) -> None:
    assert _entries(restored.engine) == 6
    valid, detail = _verdict(restored)
    assert not valid and "cut off" in detail
    _regrow_lost(restored.engine)  # the lost history, regrown, is the one the checkpoint signed
    assert _verdict(restored)[0]
    _cut_to(restored.engine, 6)


def test_a_replayed_statement_fails(restored: Restored) -> None:
    statement = _restore(restored)
    _append(restored.engine, ["after0", "after1", "after2", "after3"])
    write_checkpoint(restored.engine, restored.key, restored.file)
    assert _verdict(restored)[0]
    lines = _lines(restored)
    _write_lines(restored, [*lines, lines[2]])  # the statement again, as the newest line
    valid, detail = _verdict(restored)
    assert not valid and "line 5" in detail and "does not name the checkpoints it abandons" in detail
    _write_lines(restored, [*lines[:3], lines[2], *lines[3:]])  # twice in a row
    valid, detail = _verdict(restored)
    assert not valid and "line 4" in detail
    assert statement.restore_entry_seq == 7


def test_a_statement_moved_in_the_file_fails(restored: Restored) -> None:
    _restore(restored)
    _append(restored.engine, ["after0", "after1", "after2", "after3"])
    write_checkpoint(restored.engine, restored.key, restored.file)
    first, second, statement, later = _lines(restored)
    for order in (
        [first, statement, second, later],
        [statement, first, second, later],
        [first, second, later, statement],
    ):
        _write_lines(restored, order)
        valid, detail = _verdict(restored)
        assert not valid, order
        assert "does not name" in detail or "fewer than" in detail or "cut off" in detail, detail


def test_a_statement_copied_to_another_ledger_of_the_same_key_fails(restored: Restored, tmp_path: Path) -> None:
    """Another database of the same key (a staging copy) given the very same file and the seal: the
    statement names a restore point that ledger does not hold."""
    statement = _restore(restored)
    other = make_engine(f"sqlite:///{tmp_path / 'other.sqlite'}")
    try:
        create_every_table(other)
        _append(other, [f"other{i}" for i in range(6)])
        with other.begin() as conn:
            append(conn, RESTORE_KIND, statement.data())
        with other.connect() as conn:
            check = checkpoints.verify_checkpoints(conn, restored.file, restored.key.public_key())
        assert not check.valid
        assert "line 1: entry 6 does not have the hash" in check.detail, check.detail
        _write_lines(restored, _lines(restored)[1:])  # without the kept checkpoint, the statement is caught
        with other.connect() as conn:
            check = checkpoints.verify_checkpoints(conn, restored.file, restored.key.public_key())
        assert not check.valid and "does not name the newest checkpoint" in check.detail, check.detail
    finally:
        other.dispose()


# ----------------------------------------------------------------------------- edited statements
def _edit(data: dict[str, Any], field: str) -> None:
    if field == "restored_entry_count":
        data[field] = 5
    elif field in ("matches_checkpoint",):
        data[field] = None
    elif field == "abandoned_checkpoints":
        data[field] = []
    elif field == "restored_head_hash":
        data[field] = "0" * 64
    else:
        data[field] = data[field] + "x"


EDITABLE = [
    "restored_entry_count",
    "restored_head_hash",
    "matches_checkpoint",
    "abandoned_checkpoints",
    "restored_at",
    "restored_by",
    "reason",
    "key_id",
    "signature",
]


@pytest.mark.parametrize("field", EDITABLE)
def test_a_statement_edited_in_file_and_seal_alike_fails(restored: Restored, field: str) -> None:
    """The insider edits the line and rebuilds the seal to match (the seal is the newest entry)."""
    _restore(restored)
    lines = _lines(restored)
    data = json.loads(lines[2])
    _edit(data, field)
    _write_lines(restored, [*lines[:2], json.dumps(data)])
    _rebuild_from(restored.engine, 7, [(RESTORE_KIND, data)])
    valid, detail = _verdict(restored)
    assert not valid and "line 3" in detail, detail


def test_a_seal_swapped_for_another_entry_fails(restored: Restored) -> None:
    _restore(restored)
    _rebuild_from(restored.engine, 7, [("evaluation", {"evaluation_id": "instead-of-the-seal"})])
    valid, detail = _verdict(restored)
    assert not valid and "entry 7 is not the seal" in detail


def test_a_seal_moved_one_entry_later_fails(restored: Restored) -> None:
    statement = _restore(restored)
    _rebuild_from(
        restored.engine, 7, [("evaluation", {"evaluation_id": "pushed-in"}), (RESTORE_KIND, statement.data())]
    )
    valid, detail = _verdict(restored)
    assert not valid and "entry 7 is not the seal" in detail


def test_the_signature_text_cannot_be_edited(restored: Restored) -> None:
    _restore(restored)
    lines = _lines(restored)
    data = json.loads(lines[2])
    signature = data["signature"]  # 64 bytes: 86 characters and "==", the last 4 bits unused
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = signature[85]
    edited = signature[:85] + alphabet[alphabet.index(last) ^ 1] + signature[86:]
    assert edited != signature and base64.b64decode(edited) == base64.b64decode(signature)
    data["signature"] = edited
    _write_lines(restored, [*lines[:2], json.dumps(data)])
    _rebuild_from(restored.engine, 7, [(RESTORE_KIND, data)])
    assert not _verdict(restored)[0]


# ------------------------------------------------------------- hiding tampering behind a restore
def test_an_entry_edited_before_the_restore_point_fails(restored: Restored) -> None:
    _restore(restored)
    for seq in (3, 6):  # under the kept checkpoint, and at the restore point itself
        rest = _payloads_from(restored.engine, seq + 1)
        _rebuild_from(restored.engine, seq, [("evaluation", {"evaluation_id": "forged"}), *rest])
        valid, detail = _verdict(restored)
        assert not valid, seq
        assert "line 1" in detail or "line 3" in detail, detail
        _cut_to(restored.engine, 0)
        _append(restored.engine, BEFORE)
        with restored.engine.begin() as conn:
            append(conn, RESTORE_KIND, json.loads(_lines(restored)[2]))
        assert _verdict(restored)[0]


def test_entries_after_the_seal_edited_or_cut_fail(restored: Restored) -> None:
    _restore(restored)
    _append(restored.engine, ["after0", "after1", "after2", "after3"])
    later = write_checkpoint(restored.engine, restored.key, restored.file)
    assert later.entry_count == 11
    _append(restored.engine, ["after4"])
    assert _verdict(restored)[0]
    rest = _payloads_from(restored.engine, 9)
    _rebuild_from(restored.engine, 8, [("evaluation", {"evaluation_id": "forged"}), *rest])
    valid, detail = _verdict(restored)
    assert not valid and "entry 11" in detail
    _cut_to(restored.engine, 10)
    valid, detail = _verdict(restored)
    assert not valid and "cut off" in detail
    _cut_to(restored.engine, 6)  # back to the restore point: the seal is gone
    valid, detail = _verdict(restored)
    assert not valid and "sealed as entry 7, which the ledger does not hold" in detail, detail


def test_an_entry_between_the_kept_checkpoint_and_the_restore_point_edited_fails(restored: Restored) -> None:
    _append(restored.engine, ["early0"])  # entry 7: restored, after the kept checkpoint of 6
    _restore(restored)
    seal = _payloads_from(restored.engine, 8)
    _rebuild_from(restored.engine, 7, [("evaluation", {"evaluation_id": "forged"}), *seal])
    valid, detail = _verdict(restored)
    assert not valid and "line 3" in detail and "which the ledger does not hold" in detail, detail


def test_lines_removed_around_a_restore_fail(restored: Restored) -> None:
    _restore(restored)
    first, second, statement = _lines(restored)
    for remaining in ([first, statement], [second, statement], [first, second]):
        _write_lines(restored, remaining)
        assert not _verdict(restored)[0], remaining
    _write_lines(restored, [statement])  # only the statement: it still names what it abandons
    assert not _verdict(restored)[0]


def test_a_backup_older_than_every_checkpoint_abandons_them_all_and_says_so(restored: Restored) -> None:
    _cut_to(restored.engine, 4)
    statement = _restore(restored)
    assert statement.restored_entry_count == 4 and statement.matches_checkpoint is None
    assert [ref.entry_count for ref in statement.abandoned_checkpoints] == [6, 9]
    assert _verdict(restored)[0]


def test_limit_a_restore_vouches_for_edits_after_the_newest_keptwrite_checkpoint(restored: Restored) -> None:
    """LIMIT (docs/operations.md, "Backup and restore", Limits): an insider who rewrites the entries
    after the newest kept checkpoint (here none is kept: the backup is older than every checkpoint)
    and asks for a restore gets the rewritten history signed; nothing can tell it from the backup.
    The key holder must restore only a backup taken from its own storage."""
    _cut_to(restored.engine, 3)
    _append(restored.engine, ["forged3"])  # entry 4 never existed in the checkpointed ledger
    statement = _restore(restored)
    assert statement.restored_entry_count == 4
    assert _verdict(restored)[0]


# ------------------------------------------------------------------------- abandoned, two restores
def _entry_hash(conn: Connection, seq: int) -> str:
    entry = get_entry(conn, seq)
    assert entry is not None, f"no ledger entry {seq}"
    return entry.entry_hash


def test_checkpoints_after_the_restore_must_extend_it(restored: Restored) -> None:
    _restore(restored)
    _append(restored.engine, ["after0"])
    with restored.engine.connect() as conn:
        stale = checkpoints.sign(restored.key, 6, _entry_hash(conn, 6))  # a genuine signature, too short
    checkpoints.write(stale, restored.file)
    valid, detail = _verdict(restored)
    assert not valid and "must extend the restored ledger" in detail
    lines = _lines(restored)
    _write_lines(restored, lines[:-1])
    with restored.engine.connect() as conn:
        seal_only = checkpoints.sign(restored.key, 7, _entry_hash(conn, 7))
    checkpoints.write(seal_only, restored.file)
    valid, detail = _verdict(restored)
    assert valid and "1 checkpoint(s) abandoned" in detail, detail


def test_an_abandoned_history_cannot_come_back_after_the_restore(restored: Restored) -> None:
    """Once restored, putting the abandoned 9-entry history back (with the file unchanged) fails."""
    _restore(restored)
    _regrow_lost(restored.engine)
    valid, detail = _verdict(restored)
    assert not valid and "entry 7 is not the seal" in detail


def test_two_restores_in_a_row_verify(restored: Restored) -> None:
    first = _restore(restored)
    _append(restored.engine, ["after0", "after1"])
    write_checkpoint(restored.engine, restored.key, restored.file)  # 9 entries, on the new history
    _append(restored.engine, ["after2", "after3"])
    write_checkpoint(restored.engine, restored.key, restored.file)  # 11
    _cut_to(restored.engine, 9)  # a backup made at the 9
    second = _restore(restored, reason="second failure", by="ops-bob")
    assert (second.restored_entry_count, [r.entry_count for r in second.abandoned_checkpoints]) == (9, [11])
    assert second.matches_checkpoint is not None and second.matches_checkpoint.entry_count == 9
    valid, detail = _verdict(restored)
    assert valid, detail
    assert "by ops-alice" in detail and "by ops-bob" in detail
    assert first.restore_entry_seq == 7 and _kinds(restored.engine).count(RESTORE_KIND) == 2
    rest = _payloads_from(restored.engine, 4)  # checkpoints kept before the first restore still hold
    _rebuild_from(restored.engine, 3, [("evaluation", {"evaluation_id": "forged"}), *rest])
    valid, detail = _verdict(restored)
    assert not valid and "line 1: entry 6 does not have the hash" in detail, detail


def test_a_backup_older_than_an_earlier_restore_is_refused(restored: Restored) -> None:
    _restore(restored)
    _append(restored.engine, ["after0", "after1", "after2", "after3"])
    write_checkpoint(restored.engine, restored.key, restored.file)
    _cut_to(restored.engine, 6)
    before = restored.file.read_text()
    with pytest.raises(LedgerRestoreError, match="fewer than the restore signed at"):
        _restore(restored)
    assert restored.file.read_text() == before and _entries(restored.engine) == 6


def test_a_backup_of_the_abandoned_history_is_refused(restored: Restored) -> None:
    _restore(restored)
    _append(restored.engine, ["after0", "after1", "after2", "after3"])
    write_checkpoint(restored.engine, restored.key, restored.file)  # 11 entries after the restore
    _regrow_lost(restored.engine)  # the operator picks a backup made before the restore: 9 entries
    before = restored.file.read_text()
    with contextlib.suppress(LedgerRestoreError):  # refusing is the right answer
        _restore(restored, reason="wrong backup", by="ops-bob")
    assert restored.file.read_text() == before, "a statement was signed for a ledger that is not a backup"
    assert _entries(restored.engine) == 9


def test_a_second_restore_checks_what_the_first_kept(restored: Restored) -> None:
    _restore(restored)
    _append(restored.engine, ["after0", "after1"])
    write_checkpoint(restored.engine, restored.key, restored.file)  # 9 entries after the restore
    rest = _payloads_from(restored.engine, 4)[:4]  # a backup of 7 (the seal too), entry 3 rewritten
    _rebuild_from(restored.engine, 3, [("evaluation", {"evaluation_id": "forged"}), *rest])
    before = restored.file.read_text()
    with contextlib.suppress(LedgerRestoreError):
        _restore(restored, reason="rewritten backup", by="ops-bob")
    assert restored.file.read_text() == before, "a statement was signed for a rewritten ledger"


def test_a_ledger_grown_since_the_backup_is_restored_to_its_head(restored: Restored) -> None:
    """Entries written on the restored database before the restore are vouched for with it (docs:
    restore first); grown past the abandoned checkpoint, it is refused and nothing written."""
    _append(restored.engine, ["early0"])
    statement = _restore(restored)
    assert statement.restored_entry_count == 7 and _verdict(restored)[0]
    _cut_to(restored.engine, 6)
    _write_lines(restored, _lines(restored)[:2])
    _append(restored.engine, ["early0", "early1", "early2", "early3"])
    before = restored.file.read_text()
    with pytest.raises(LedgerRestoreError, match="not a backup of the checkpointed ledger"):
        _restore(restored)
    assert restored.file.read_text() == before and _entries(restored.engine) == 10


# ------------------------------------------------------------------------------ crash and re-run
def _seal_but_fail_the_file(restored: Restored, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(checkpoints, "write", disk_full)
        with pytest.raises(OSError):
            _restore(restored)


def test_sealed_but_not_filed_then_rerun_gives_one_statement(
    restored: Restored, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seal_but_fail_the_file(restored, monkeypatch)
    again = _restore(restored, reason="other", by="bob")
    assert again.reason == REASON and _kinds(restored.engine).count(RESTORE_KIND) == 1
    assert len(_lines(restored)) == 3 and _verdict(restored)[0]
    with pytest.raises(LedgerRestoreError, match="nothing to restore"):
        _restore(restored)
    assert len(_lines(restored)) == 3 and _entries(restored.engine) == 7


def test_sealed_not_filed_then_an_entry_then_rerun_gives_one_statement(
    restored: Restored, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seal_but_fail_the_file(restored, monkeypatch)
    _append(restored.engine, ["written-by-a-server-started-too-early"])
    with contextlib.suppress(LedgerRestoreError):  # filing the sealed statement or refusing: both fine
        _restore(restored, reason="other", by="bob")
    assert _kinds(restored.engine).count(RESTORE_KIND) == 1


def test_filed_but_seal_lost_then_rerun_seals_the_filed_statement(restored: Restored) -> None:
    statement = _restore(restored)
    _cut_to(restored.engine, 6)
    again = _restore(restored, reason="other", by="bob")
    assert again == statement and len(_lines(restored)) == 3
    assert _verdict(restored)[0]


def test_a_forged_seal_at_the_head_is_not_filed(restored: Restored) -> None:
    forged = sign_statement(
        Ed25519PrivateKey.generate(),
        restored_entry_count=6,
        restored_head_hash=restored.kept.head_hash,
        matches_checkpoint=checkpoints.reference(restored.kept),
        abandoned_checkpoints=(checkpoints.reference(restored.lost),),
        restored_by="insider",
        reason="forged",
    )
    data = forged.data() | {"key_id": checkpoints.key_id(restored.key.public_key())}
    with restored.engine.begin() as conn:
        append(conn, RESTORE_KIND, data)
    before = restored.file.read_text()
    with pytest.raises(LedgerRestoreError):
        _restore(restored)
    assert restored.file.read_text() == before


def test_a_malformed_seal_at_the_head_is_a_clear_error(restored: Restored) -> None:
    with restored.engine.begin() as conn:
        append(conn, RESTORE_KIND, {"kind": RESTORE_KIND, "note": "not a statement"})
    with pytest.raises(LedgerRestoreError):
        _restore(restored)


def test_a_restore_entry_the_file_does_not_name_fails_verification(restored: Restored) -> None:
    _restore(restored)
    forged = sign_statement(
        Ed25519PrivateKey.generate(),
        restored_entry_count=7,
        restored_head_hash="0" * 64,
        matches_checkpoint=None,
        abandoned_checkpoints=(),
        restored_by="insider",
        reason="forged",
    )
    with restored.engine.begin() as conn:
        append(conn, RESTORE_KIND, forged.data())
    assert not _verdict(restored)[0]


# --------------------------------------------------------------------------------- the command line
def _command(restored: Restored, **override: str) -> list[str]:
    options = {
        "--db": restored.url,
        "--ledger-key": str(restored.file.parent / "ledger-key.pem"),
        "--checkpoints": str(restored.file),
        "--reason": REASON,
        "--by": "ops-alice",
    } | override
    return ["audit", "restore", *[part for pair in options.items() for part in pair]]


@pytest.mark.parametrize(
    "case",
    [
        "blank reason",
        "blank name",
        "another key",
        "missing key",
        "missing file",
        "file is a directory",
        "file not UTF-8",
        "line not JSON",
    ],
)
def test_bad_input_to_the_command_is_a_clear_error_and_writes_nothing(
    restored: Restored, case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other_key = tmp_path / "other-key.pem"
    checkpoints.generate_key(other_key)
    directory = tmp_path / "a-directory"
    directory.mkdir()
    garbled = tmp_path / "garbled.jsonl"
    garbled.write_bytes(restored.file.read_bytes() + b"\xff\xfe\n")
    not_json = tmp_path / "not-json.jsonl"
    not_json.write_text(restored.file.read_text() + "{half a line\n")
    override, expected = {
        "blank reason": ({"--reason": "   "}, "needs a reason"),
        "blank name": ({"--by": " "}, "needs the name"),
        "another key": ({"--ledger-key": str(other_key)}, "line 1: checkpoint signed by another key"),
        "missing key": ({"--ledger-key": str(tmp_path / "nope.pem")}, "does not exist"),
        "missing file": ({"--checkpoints": str(tmp_path / "nope.jsonl")}, "holds no checkpoint"),
        "file is a directory": ({"--checkpoints": str(directory)}, "cannot read the checkpoints"),
        "file not UTF-8": ({"--checkpoints": str(garbled)}, "cannot read the checkpoints"),
        "line not JSON": ({"--checkpoints": str(not_json)}, "line 3: not a checkpoint"),
    }[case]
    files = {path: path.read_bytes() for path in (restored.file, garbled, not_json)}
    capsys.readouterr()
    assert main(_command(restored, **override)) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err, err
    assert _entries(restored.engine) == 6
    assert {path: path.read_bytes() for path in files} == files
    assert not (tmp_path / "nope.jsonl").exists()


def test_a_missing_database_is_an_error_not_a_restore_to_nothing(
    restored: Restored, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = restored.file.read_text()
    typo = tmp_path / "restord.sqlite"
    status = main(_command(restored, **{"--db": f"sqlite:///{typo}"}))
    assert status == 2 and restored.file.read_text() == before
