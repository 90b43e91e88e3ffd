"""`benefits audit restore` end to end (SQLite and PostgreSQL): real evaluations recorded, a
checkpoint, a backup, more evaluations and a checkpoint, the backup restored; `benefits audit
verify` fails until the key holder runs the restore, then passes and reports the abandoned
checkpoint; so does the VerifyAuditLog RPC of a server started on the restored database."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from benefits.v1 import audit_service_pb2
from testkit.api_fixtures import A, Stubs, as_role, enterprise_record, load_registry, serving, si_record
from testkit.cli_commands import evaluate_command
from testkit.database_backups import backed_up, create_every_table

from enterprise_registry.db import make_engine
from service.audit import checkpoints
from service.cli import main


def _evaluate(db_url: str, as_of: str) -> None:
    # Another evaluation date: another record, sealed in another ledger entry.
    assert main(evaluate_command(db_url, A, as_of=as_of)) == 0


def _checkpoint(db_url: str, key_file: Path, checkpoint_file: Path) -> checkpoints.Checkpoint:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            checkpoint = checkpoints.checkpoint_now(conn, checkpoints.load_private_key(key_file))
    finally:
        engine.dispose()
    checkpoints.write(checkpoint, checkpoint_file)
    return checkpoint


@dataclass
class Restored:
    """Two evaluations checkpointed (`kept`), a backup, a third evaluation checkpointed (`lost`),
    the backup restored."""

    key_file: Path
    checkpoint_file: Path
    kept: checkpoints.Checkpoint
    lost: checkpoints.Checkpoint


@pytest.fixture
def restored(db_url: str, tmp_path: Path) -> Restored:
    load_registry(db_url, [enterprise_record(A), si_record(A)])
    engine = make_engine(db_url)
    create_every_table(engine)
    engine.dispose()
    key_file, checkpoint_file = tmp_path / "ledger-key.pem", tmp_path / "checkpoints.jsonl"
    checkpoints.generate_key(key_file)
    _evaluate(db_url, "2026-03-30")
    _evaluate(db_url, "2026-03-31")
    kept = _checkpoint(db_url, key_file, checkpoint_file)
    with backed_up(db_url) as restore_backup:
        _evaluate(db_url, "2026-04-01")
        lost = _checkpoint(db_url, key_file, checkpoint_file)
        assert lost.entry_count > kept.entry_count
        restore_backup()
    return Restored(key_file, checkpoint_file, kept, lost)


def _restore_command(db_url: str, restored: Restored) -> list[str]:
    return [
        "audit",
        "restore",
        "--db",
        db_url,
        "--ledger-key",
        str(restored.key_file),
        "--checkpoints",
        str(restored.checkpoint_file),
        "--reason",
        "restored the nightly backup",
        "--by",
        "ops-alice",
    ]


def test_restore_from_the_command_line(db_url: str, restored: Restored, capsys: pytest.CaptureFixture[str]) -> None:
    key_file, checkpoint_file, kept, lost = restored.key_file, restored.checkpoint_file, restored.kept, restored.lost
    capsys.readouterr()
    verify = [
        "audit",
        "verify",
        "--db",
        db_url,
        "--checkpoints",
        str(checkpoint_file),
        "--public-key",
        str(checkpoints.public_key_path(key_file)),
    ]

    assert main(verify) == 1
    out = capsys.readouterr().out
    assert out.startswith("INVALID (checkpoint")
    assert f"holds {kept.entry_count} entries" in out and "cut off" in out

    restore = _restore_command(db_url, restored)
    assert main(restore) == 0
    out = capsys.readouterr().out
    assert (
        f"restored to entry {kept.entry_count} (head {kept.head_hash}), sealed as entry "
        f"{kept.entry_count + 1}; 1 checkpoint(s) abandoned:" in out
    )
    assert f"  {lost.entry_count} entries, signed at {lost.signed_at}" in out
    assert "VALID: " in out and "abandoned by the signed restore" in out

    assert main(verify) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"VALID: {kept.entry_count + 1} entries checked")
    assert "by ops-alice" in out and "(restored the nightly backup)" in out

    assert main(restore) == 2  # a second run has nothing to restore
    assert "there is nothing to restore" in capsys.readouterr().err

    _evaluate(db_url, "2026-04-02")  # the service goes on: new entries after the restore verify
    _checkpoint(db_url, key_file, checkpoint_file)
    assert main(verify) == 0


def test_the_server_verifies_the_restored_ledger_over_grpc(
    db_url: str, restored: Restored, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_restore_command(db_url, restored)) == 0
    with serving(
        db_url, [], tmp_path, ledger_key=restored.key_file, checkpoint_file=restored.checkpoint_file
    ) as running:  # its first checkpoint: the restored ledger
        stubs = Stubs.connect(running.port)
        try:
            verdict = stubs.audit.VerifyAuditLog(
                audit_service_pb2.VerifyAuditLogRequest(), metadata=as_role("auditor"), timeout=60
            )
        finally:
            stubs.channel.close()
    assert verdict.valid, verdict.detail
    assert f"entry {restored.kept.entry_count + 1} matches the checkpoint signed at" in verdict.detail
    assert "1 checkpoint(s) abandoned by the signed restore" in verdict.detail and "by ops-alice" in verdict.detail


def test_restore_needs_the_private_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_file = tmp_path / "ledger-key.pem"
    checkpoints.generate_key(key_file)
    public = checkpoints.public_key_path(key_file)
    assert (
        main(
            [
                "audit",
                "restore",
                "--db",
                f"sqlite:///{tmp_path / 'db.sqlite'}",
                "--ledger-key",
                str(public),
                "--checkpoints",
                str(tmp_path / "checkpoints.jsonl"),
                "--reason",
                "r",
            ]
        )
        == 2
    )
    assert "is not an unencrypted Ed25519 private key" in capsys.readouterr().err
