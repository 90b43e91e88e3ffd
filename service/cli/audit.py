"""`benefits audit ...`: the audit trail's commands on a local database and key files - verify the
ledger and every record, make the checkpoint signing key, prove a line or a record, seal a restore."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Never

if TYPE_CHECKING:
    from tqdm import tqdm

from service.cli.defaults import DEFAULT_DB_URL, open_database


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser("audit", help="the audit trail").add_subparsers(title="audit")
    verify = audit.add_parser("verify", help="verify the ledger, every record, and the newest checkpoint")
    verify.add_argument("--db", default=DEFAULT_DB_URL)
    key_source = verify.add_mutually_exclusive_group()
    key_source.add_argument(
        "--public-key",
        type=Path,
        default=None,
        help="the ledger key's public half (PEM, FILE.pub of `benefits audit keygen`)",
    )
    key_source.add_argument(
        "--ledger-key", type=Path, default=None, help="or the private key itself, for its public half"
    )
    verify.add_argument("--checkpoints", type=Path, default=None, help="the signed checkpoints (JSON lines)")
    verify.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress bar on stderr (default: only when stderr is a terminal)",
    )
    verify.set_defaults(run=_verify)
    keygen = audit.add_parser("keygen", help="make the Ed25519 key that signs ledger checkpoints (once)")
    keygen.add_argument(
        "--out",
        type=Path,
        required=True,
        help="private key file (created with mode 0600, never overwritten); the public key goes to FILE.pub",
    )
    keygen.set_defaults(run=_keygen)
    prove = audit.add_parser(
        "prove",
        help="prove a payout line is in its batch, or an evaluation record in the ledger (Merkle inclusion proofs)",
    )
    prove.add_argument("--db", default=DEFAULT_DB_URL)
    prove.add_argument(
        "line_id", help="the line's id (its end-to-end id in the bank file), or an evaluation id (ev_...)"
    )
    prove.set_defaults(run=_prove)
    restore = audit.add_parser(
        "restore",
        help="after restoring a database backup: sign and seal the restore, abandoning the "
        "checkpoints newer than the backup (docs/operations.md, Backup and restore)",
    )
    restore.add_argument("--db", default=DEFAULT_DB_URL, help="the restored database")
    restore.add_argument(
        "--ledger-key", type=Path, required=True, help="the ledger's private key (PEM): only its holder can restore"
    )
    restore.add_argument(
        "--checkpoints",
        type=Path,
        required=True,
        help="the signed checkpoints (JSON lines); the restore statement is appended",
    )
    restore.add_argument("--reason", required=True, help="why the database was restored (signed, kept)")
    restore.add_argument("--by", default=None, help="who restores (default: the login name)")
    restore.set_defaults(run=_restore)


def _verify(args: argparse.Namespace) -> int:
    from service.audit import checkpoints
    from service.audit.ledger import read_snapshot
    from service.audit.verification import verify_audit_log
    from service.payouts.tables import create_payout_schema

    public_key = (
        checkpoints.load_public_key(args.public_key)
        if args.public_key
        else checkpoints.load_private_key(args.ledger_key).public_key()
        if args.ledger_key
        else None
    )
    with open_database(args.db) as engine:
        create_payout_schema(engine)  # the audit trail's tables included
        show = sys.stderr.isatty() if args.progress is None else args.progress
        with read_snapshot(engine) as conn, _ProgressBars() as bars:
            verdict = verify_audit_log(
                conn, checkpoint_file=args.checkpoints, public_key=public_key, progress=bars.update if show else None
            )
    where = f" at entry {verdict.first_bad_entry}" if verdict.first_bad_entry else ""  # 0: the checkpoints file
    state = "VALID" if verdict.valid else f"INVALID ({verdict.fault}{where})"
    print(f"{state}: {verdict.entries_checked} entries checked, head {verdict.head_hash}")
    print(verdict.detail)
    for problem in verdict.problems:  # each altered row, named
        print(f"  {problem.fault} {problem}")
    return 0 if verdict.valid else 1


class _ProgressBars:
    """One bar on stderr per part of the check, each closed when the next begins."""

    def __init__(self) -> None:
        self.what: str | None = None
        self.bar: tqdm[Never] | None = None

    def update(self, what: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if what != self.what:
            self.close()
            self.what = what
            self.bar = tqdm(total=total, desc=what, unit=" rows", file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
        assert self.bar is not None
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> _ProgressBars:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


def _keygen(args: argparse.Namespace) -> int:
    from service.audit import checkpoints

    key = checkpoints.generate_key(args.out)
    print(
        f"wrote {args.out} (private, mode 0600: give it to `benefits serve --ledger-key`, keep it out of "
        f"the database and its backups) and {checkpoints.public_key_path(args.out)} (public: for "
        "`benefits audit verify --public-key`)"
    )
    print(f"key id {checkpoints.key_id(key.public_key())}")
    return 0


def _prove(args: argparse.Namespace) -> int:
    from service.audit.record_proofs import RecordProof, prove_record
    from service.errors import EvaluationNotFoundError
    from service.payouts.proofs import prove_line

    def show_record(proof: RecordProof) -> None:
        print(
            f"  record {proof.evaluation_id}: leaf {proof.leaf_index} of {proof.tree_size}, "
            f"sha256 {proof.record_sha256}"
        )
        for sibling in proof.path:
            print(f"    sibling {sibling}")
        print(f"    sealed root {proof.sealed_root} (ledger entry {proof.ledger_seq})")

    with open_database(args.db) as engine, engine.connect() as conn:
        if args.line_id.startswith("ev_"):
            record = prove_record(conn, args.line_id)
            if record is None:
                raise EvaluationNotFoundError(args.line_id)
            show_record(record)
            print(
                "VERIFIED: the record is sealed in the ledger" if record.verified else f"NOT VERIFIED: {record.problem}"
            )
            return 0 if record.verified else 1
        proof = prove_line(conn, args.line_id)
    print(f"line {proof.line_id} of batch {proof.batch_id}: evaluation {proof.evaluation_id}")
    print(f"  leaf {proof.leaf_index} of {proof.tree_size}, record sha256 {proof.record_sha256}")
    for sibling in proof.proof:
        print(f"  sibling {sibling}")
    print(f"  sealed root {proof.sealed_root} (ledger entry {proof.ledger_seq})")
    if proof.record is not None:
        show_record(proof.record)
    print("VERIFIED: the line is in its batch" if proof.verified else f"NOT VERIFIED: {proof.problem}")
    return 0 if proof.verified else 1


def _restore(args: argparse.Namespace) -> int:
    import getpass

    from enterprise_registry.db import make_engine
    from service.audit import checkpoints
    from service.audit.ledger import read_snapshot
    from service.audit.restore import restore_ledger
    from service.audit.verification import verify_audit_log
    from service.payouts.tables import create_payout_schema

    key = checkpoints.load_private_key(args.ledger_key)
    _require_existing_sqlite_file(args.db)
    engine = make_engine(args.db)  # not open_database: a mistyped --db must not become an empty database
    try:
        statement = restore_ledger(
            engine, key, args.checkpoints, reason=args.reason, restored_by=args.by or getpass.getuser()
        )
        create_payout_schema(engine)  # tables a backup of an older version lacks, for the verification
        with read_snapshot(engine) as conn:
            verdict = verify_audit_log(conn, checkpoint_file=args.checkpoints, public_key=key.public_key())
    finally:
        engine.dispose()
    print(
        f"restored to entry {statement.restored_entry_count} (head {statement.restored_head_hash}), sealed as "
        f"entry {statement.restore_entry_seq}; {len(statement.abandoned_checkpoints)} checkpoint(s) abandoned:"
    )
    for abandoned in statement.abandoned_checkpoints:
        print(f"  {abandoned.entry_count} entries, signed at {abandoned.signed_at}")
    print(f"{'VALID' if verdict.valid else 'INVALID'}: {verdict.detail}")
    return 0 if verdict.valid else 1


def _require_existing_sqlite_file(url: str) -> None:
    """SQLite creates a missing database file on connecting; a restore must name an existing one."""
    from sqlalchemy.engine import make_url

    from service.errors import LedgerRestoreError

    parsed = make_url(url)
    if (
        parsed.get_backend_name() == "sqlite"
        and parsed.database not in (None, "", ":memory:")
        and not Path(parsed.database).exists()
    ):
        raise LedgerRestoreError(f"the database {parsed.database} does not exist: --db must name the restored database")
