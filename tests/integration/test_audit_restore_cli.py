"""`benefits audit restore` end to end (SQLite and PostgreSQL): real evaluations recorded, a
checkpoint, a backup, more evaluations and a checkpoint, the backup restored; `benefits audit
verify` fails until the key holder runs the restore, then passes and reports the abandoned
checkpoint."""
from __future__ import annotations

from pathlib import Path

import pytest
from api_fixtures import A, enterprise_record, load_registry, si_record
from database_backups import backed_up, create_every_table

from enterprise_registry.db import make_engine
from service.audit import checkpoints
from service.cli import main


def _evaluate(db_url: str, as_of: str) -> None:
    # Another evaluation date: another record, sealed in another ledger entry.
    assert main(["evaluate", "--db", db_url, "--uscc", A, "--policy", "stable-jobs-refund", "--period", "2025",
                 "--as-of", as_of, "--json"]) == 0


def _checkpoint(db_url: str, key_file: Path, checkpoint_file: Path) -> checkpoints.Checkpoint:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            checkpoint = checkpoints.checkpoint_now(conn, checkpoints.load_private_key(key_file))
    finally:
        engine.dispose()
    checkpoints.write(checkpoint, checkpoint_file)
    return checkpoint


def test_restore_from_the_command_line(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
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
    capsys.readouterr()
    verify = ["audit", "verify", "--db", db_url, "--checkpoints", str(checkpoint_file),
              "--public-key", str(checkpoints.public_key_path(key_file))]

    assert main(verify) == 1
    out = capsys.readouterr().out
    assert out.startswith("INVALID (checkpoint")
    assert f"holds {kept.entry_count} entries" in out and "cut off" in out

    restore = ["audit", "restore", "--db", db_url, "--ledger-key", str(key_file),
               "--checkpoints", str(checkpoint_file), "--reason", "restored the nightly backup", "--by", "ops-alice"]
    assert main(restore) == 0
    out = capsys.readouterr().out
    assert f"restored to entry {kept.entry_count} (head {kept.head_hash}), sealed as entry " \
           f"{kept.entry_count + 1}; 1 checkpoint(s) abandoned:" in out
    assert f"  {lost.entry_count} entries, signed at {lost.signed_at}" in out
    assert "VALID: " in out and "abandoned by the signed restore" in out

    assert main(verify) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"VALID: {kept.entry_count + 1} entries checked")
    assert "by ops-alice" in out and "(restored the nightly backup)" in out

    assert main(restore) == 2   # a second run has nothing to restore
    assert "there is nothing to restore" in capsys.readouterr().err

    _evaluate(db_url, "2026-04-02")   # the service goes on: new entries after the restore verify
    _checkpoint(db_url, key_file, checkpoint_file)
    assert main(verify) == 0


def test_restore_needs_the_private_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_file = tmp_path / "ledger-key.pem"
    checkpoints.generate_key(key_file)
    public = checkpoints.public_key_path(key_file)
    assert main(["audit", "restore", "--db", f"sqlite:///{tmp_path / 'db.sqlite'}", "--ledger-key", str(public),
                 "--checkpoints", str(tmp_path / "checkpoints.jsonl"), "--reason", "r"]) == 2
    assert "is not an unencrypted Ed25519 private key" in capsys.readouterr().err
