"""Red-team review: a checkpoint write that the disk cuts short, on SQLite and PostgreSQL.

When the disk fills up in the middle of `checkpoints.write`, the part of the line that fit stays
in the file (a write to a nearly full disk writes what fits, then fails with ENOSPC). The
server logs the failure and retries (that much is promised and tested). The retry appends its
line right after the torn one - `write` opens the file in append mode and writes
`<json>\\n` without first ending a torn last line (service/audit/checkpoints.py:169-176) - so
the torn part and the good checkpoint become one line that is no checkpoint, and from then on
`verify_checkpoints` fails at that line for ever, with nothing tampered with
(service/audit/checkpoints.py:222-225).
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from service.audit import checkpoints
from service.audit.ledger import append, ledger_transaction
from service.audit.verification import verify_audit_log
from service.payouts.tables import create_payout_schema
from service.server import Checkpointer


class _DiskFillsUp:
    """`Path.open` of a file beside the checkpoints (the file itself, or what the writer writes
    before renaming it over), once: the write stores its first half, then ENOSPC."""

    def __init__(self, target: Path) -> None:
        self.target, self.done = target, False
        self.real_open = Path.open

    def __call__(self, path: Path, *args: Any, **kwargs: Any) -> Any:
        handle = self.real_open(path, *args, **kwargs)
        if path.parent != self.target.parent or self.done or "w" not in str(args[:1]) + str(kwargs):
            return handle
        self.done = True
        real_write = handle.write

        def write(text: str) -> int:
            real_write(text[: len(text) // 2])
            handle.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

        handle.write = write
        return handle


def test_a_checkpoint_cut_short_by_a_full_disk_does_not_fail_verification_for_ever(
    db_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """FAILS. Expected: once the disk has room again and the retry succeeds, the untampered
    ledger verifies (the torn line ignored or ended, the next checkpoint readable)."""
    caplog.set_level(logging.INFO, logger="benefits")
    create_payout_schema(db_engine)
    key_file = tmp_path / "ledger-key.pem"
    key = checkpoints.generate_key(key_file)
    public = checkpoints.load_public_key(checkpoints.public_key_path(key_file))
    file = tmp_path / "checkpoints.jsonl"
    checkpointer = Checkpointer(db_engine, key, file, retry_seconds=(0.0,))
    with ledger_transaction(db_engine) as conn:
        append(conn, "note", {"n": 1})
    assert checkpointer() is True
    with ledger_transaction(db_engine) as conn:
        append(conn, "note", {"n": 2})
    fills_up = _DiskFillsUp(file)
    monkeypatch.setattr(Path, "open", lambda path, *a, **kw: fills_up(path, *a, **kw))
    assert checkpointer() is False and "No space left on device" in caplog.text
    monkeypatch.undo()
    assert checkpointer() is True  # the disk has room again: the retry succeeds
    with db_engine.connect() as conn:
        verdict = verify_audit_log(conn, checkpoint_file=file, public_key=public)
    assert verdict.valid, (
        f"nothing was tampered with, yet: {verdict.detail} (the file: "
        f"{[line[:60] for line in file.read_text().splitlines()]})"
    )
