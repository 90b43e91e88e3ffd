"""The auditor's whole check: the ledger chain, every stored evaluation record and every money
table (batches, lines, bank files) against it, and the newest signed checkpoint (which catches a
rebuilt chain or a cut tail)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Table, func, select
from sqlalchemy.engine import Connection

from service.audit import checkpoints
from service.audit.ledger import Fault, ledger_entry, verify
from service.audit.problems import AuditProblem
from service.audit.record_tables import evaluation_record
from service.audit.record_verification import verify_records
from service.payouts.tables import grant
from service.payouts.verification import verify_payouts

MAX_PROBLEMS = 100  # rows reported; the first is the verdict's

Progress = Callable[[str, int, int], None]
"""`progress(what, done, total)`: `done` of the `total` rows of `what` ("ledger entries",
"evaluation records", "payout lines") checked so far; called a page at a time, each part in turn."""


@dataclass(frozen=True)
class AuditVerdict:
    entries_checked: int
    head_hash: str
    valid: bool
    first_bad_entry: int
    fault: Fault
    detail: str
    problems: list[AuditProblem] = field(default_factory=list)  # each altered row, named


def verify_audit_log(
    connection: Connection,
    *,
    checkpoint_file: Path | None = None,
    public_key: Ed25519PublicKey | None = None,
    progress: Progress | None = None,
) -> AuditVerdict:
    """The whole check, streamed: a fixed number of queries whatever the ledger's size (13 on a
    valid ledger, and a BEGIN on SQLite: tests/unit/audit/test_audit_verification_scale.py), each
    read a page at a time: the chain 1,000 entries a query, the records, texts and money rows
    2,000 a fetch of a streamed query, bank files one at a time. Memory: a page, plus the money
    events' batch snapshots and roots (a few per batch). With `progress`, each part's total is
    counted first (one query each)."""
    try:  # before the first query: in a snapshot, a checkpoint written later would cover too much
        lines_read: list[tuple[int, str]] | None = checkpoints.read_lines(checkpoint_file)
    except (OSError, UnicodeDecodeError):
        lines_read = None  # verify_checkpoints reads it again and reports why it cannot
    chain = verify(connection, progress=_part(connection, progress, "ledger entries", ledger_entry))
    if not chain.valid:
        return AuditVerdict(
            chain.entries_checked, chain.head_hash, False, chain.first_bad_seq or 0, chain.fault, chain.detail
        )
    problems = verify_records(
        connection,
        limit=MAX_PROBLEMS,
        progress=_part(connection, progress, "evaluation records", evaluation_record),
    )
    altered = frozenset(p.row for p in problems if p.table == evaluation_record.name)
    problems += verify_payouts(
        connection,
        limit=MAX_PROBLEMS - len(problems),
        suspect_evaluations=altered,
        public_key=public_key,
        progress=_part(connection, progress, "payout lines", grant),
    )
    if problems:
        first = problems[0]
        return AuditVerdict(
            chain.entries_checked,
            chain.head_hash,
            False,
            first.ledger_seq,
            first.fault,
            f"{len(problems)} row(s) differ from the ledger, first {first.table} {first.row}",
            problems,
        )
    detail = (
        f"{chain.entries_checked} entries chain correctly; every stored record and every batch, line and "
        "bank file matches the ledger"
    )
    check = checkpoints.verify_checkpoints(connection, checkpoint_file, public_key, lines_read=lines_read)
    if not check.valid:
        return AuditVerdict(
            chain.entries_checked, chain.head_hash, False, check.first_bad_entry, Fault.CHECKPOINT, check.detail
        )
    detail += f"; {check.detail}"
    return AuditVerdict(chain.entries_checked, chain.head_hash, True, 0, Fault.NONE, detail)


def _part(connection: Connection, progress: Progress | None, what: str, table: Table) -> Callable[[int], None] | None:
    """One part's progress, `done` of the rows `table` holds (counted once, in the snapshot)."""
    if progress is None:
        return None
    total = int(connection.execute(select(func.count()).select_from(table)).scalar_one())
    progress(what, 0, total)

    def report(done: int) -> None:
        progress(what, done, total)

    return report
