"""A checkpoint that cannot be written (disk full, database away, a path that is a directory) is
logged without secrets and retried; the server keeps SERVING and an export that succeeded is
reported as such (SQLite and PostgreSQL)."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

import pytest
from benefits.v1 import audit_service_pb2
from benefits.v1 import payout_service_pb2 as pb
from grpc_health.v1 import health_pb2
from testkit.api_fixtures import TOKENS, Stubs, as_role, finished_batch, registry_records, serving
from testkit.grpc_stubs import health_stub
from testkit.paths import REPO_ROOT

from enterprise_registry.db import make_engine
from service.audit import checkpoints
from service.audit.ledger import create_ledger_schema
from service.server import Checkpointer

SJR = "stable-jobs-refund"
RETRY_WITHIN = 10.0  # seconds a test waits for the retry that succeeds


def _key_text(path: Path) -> str:
    return path.read_text(encoding="utf-8").splitlines()[1]  # a line of the base64 body


def _no_secrets(log: str, key_file: Path) -> None:
    assert _key_text(key_file) not in log
    assert not any(token in log for token in TOKENS.values())


def _export_a_batch(stubs: Stubs) -> bytes:
    created = stubs.payout.CreatePayoutBatch(
        pb.CreatePayoutBatchRequest(policy_id=SJR, period=2025, request_id=str(uuid.uuid4())),
        metadata=as_role("finance_operator"),
        timeout=60,
    )
    batch = finished_batch(stubs, created.batch_id)
    assert batch.state == pb.BATCH_STATE_DRAFT and batch.line_count > 0
    stubs.payout.ApprovePayoutBatch(
        pb.ApprovePayoutBatchRequest(batch_id=batch.batch_id), metadata=as_role("finance_approver"), timeout=30
    )
    chunks = stubs.payout.ExportPayoutBatch(
        pb.ExportPayoutBatchRequest(batch_id=batch.batch_id, format=pb.EXPORT_FORMAT_CSV),
        metadata=as_role("finance_operator"),
        timeout=60,
    )
    return b"".join(chunk.data for chunk in chunks)


def test_a_failing_checkpoint_never_fails_an_export_nor_stops_the_server(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key_file = tmp_path / "ledger-key.pem"
    checkpoints.generate_key(key_file)
    checkpoint_file = tmp_path / "checkpoints.jsonl"
    checkpoint_file.mkdir()  # every append fails (IsADirectoryError) until it is removed
    caplog.set_level(logging.INFO, logger="benefits")
    with serving(
        db_url,
        registry_records(),
        tmp_path,
        ledger_key=key_file,
        checkpoint_file=checkpoint_file,
        payers_file=REPO_ROOT / "examples" / "payers.yaml",
        batch_chunk_size=2,
    ) as running:
        running.checkpoint.retry_seconds = (0.2,)  # the test need not wait the server's pauses
        stubs = Stubs.connect(running.port)
        try:
            data = _export_a_batch(stubs)
            assert data.startswith(b"end_to_end_id,")  # the export answered, whole
            health = health_stub(stubs.channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            assert running.checkpoint.failures >= 2  # at start and after the export, at least
            failed = [r for r in caplog.records if "checkpoint to" in r.getMessage() and "failed" in r.getMessage()]
            assert failed and all(r.levelno == logging.ERROR for r in failed)
            assert "IsADirectoryError" in failed[0].getMessage()
            assert not any(r.exc_info for r in failed)  # a sentence, not a traceback

            checkpoint_file.rmdir()  # the disk is back
            deadline = time.monotonic() + RETRY_WITHIN
            while not checkpoint_file.is_file() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert checkpoint_file.is_file(), "the checkpoint was not retried"
            time.sleep(0.3)  # the retry's write is complete once its log line is out
            assert running.checkpoint.failures == 0
            assert "written again after" in caplog.text
            verdict = stubs.audit.VerifyAuditLog(
                audit_service_pb2.VerifyAuditLogRequest(), metadata=as_role("auditor"), timeout=60
            )
            assert verdict.valid, verdict.detail
            assert "matches the checkpoint" in verdict.detail
        finally:
            stubs.channel.close()
    _no_secrets(caplog.text, key_file)


def test_disk_full_and_database_away_are_logged_and_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key_file = tmp_path / "ledger-key.pem"
    key = checkpoints.generate_key(key_file)
    caplog.set_level(logging.INFO, logger="benefits")
    engine = make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    create_ledger_schema(engine)
    if Path("/dev/full").exists():
        full = Checkpointer(engine, key, Path("/dev/full"))  # every write: ENOSPC
        assert full() is False
        assert "No space left on device" in caplog.text
        full.stop()  # the last attempt at shutdown fails too, and says so
        assert "at shutdown is not checkpointed" in caplog.text
    engine.dispose()
    away = make_engine("postgresql+psycopg://auditor:s3cret-password@127.0.0.1:1/benefits")  # nobody listens
    try:
        gone = Checkpointer(away, key, tmp_path / "checkpoints.jsonl")
        assert gone() is False and gone() is False
        assert gone.failures == 2
        assert "OperationalError" in caplog.text and "s3cret-password" not in caplog.text
        assert not (tmp_path / "checkpoints.jsonl").exists()
    finally:
        away.dispose()
    _no_secrets(caplog.text, key_file)


def test_without_a_ledger_key_the_server_warns_that_nothing_is_checkpointed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="benefits")
    with serving(f"sqlite:///{tmp_path / 'registry.db'}", registry_records(), tmp_path) as running:
        assert not running.checkpoint.enabled
    assert "no --ledger-key: the ledger is not checkpointed" in caplog.text
