"""The tables of evaluation records: rule texts and facts snapshots by their SHA-256, and the
compact records, each sealed as one leaf of its chunk's ledger entry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, String, Table, Text, UniqueConstraint
from sqlalchemy.engine import Engine

from service.audit.ledger import create_ledger_schema
from service.audit.merkle import root

RECORDS_KIND = "evaluations"
"""The ledger kind of a chunk of evaluation records: {count, merkle_root, policy_id, rule_sha256}."""

metadata = MetaData()

policy_version = Table(
    "policy_version",
    metadata,
    Column("rule_sha256", String(64), primary_key=True),
    Column("policy_id", String(100), nullable=False),
    Column("version", String(50), nullable=False),
    Column("source", Text, nullable=False),
    Column("first_seen", String(40), nullable=False),
)

facts_snapshot = Table(
    "facts_snapshot",
    metadata,
    Column("facts_sha256", String(64), primary_key=True),
    Column("document", Text, nullable=False),
)

# Every column but `record`, `record_sha256` and the seal's place repeats a field of the record
# (verification checks they still do): they are what lookups filter on.
evaluation_record = Table(
    "evaluation_record",
    metadata,
    Column("evaluation_id", String(40), primary_key=True),
    Column("uscc", String(18), nullable=False),
    Column("policy_id", String(100), nullable=False),
    Column("period", Integer, nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("batch_id", String(40), nullable=True, index=True),
    Column("rule_sha256", String(64), nullable=False),
    Column("facts_sha256", String(64), nullable=False),
    Column("evaluated_on", String(10), nullable=False),
    Column("record", Text, nullable=False),
    Column("record_sha256", String(64), nullable=False),
    Column("ledger_seq", BigInteger, nullable=False),
    Column("leaf_index", Integer, nullable=False),
    UniqueConstraint("ledger_seq", "leaf_index", name="uq_evaluation_record_leaf"),
    # An enterprise's records (its lookups, and the reuse of a recorded decision, which narrows
    # to a few rows by these three). One index, not one per column: each index a batch writes
    # into cost PostgreSQL about 2 us per record (benchmarks/bench_records.py).
    Index("ix_evaluation_record_enterprise", "uscc", "policy_id", "period"),
)

RECORD_COLUMNS = tuple(str(c.name) for c in evaluation_record.columns)
FILTER_COLUMNS = (
    "evaluation_id",
    "uscc",
    "policy_id",
    "period",
    "outcome",
    "amount_fen",
    "batch_id",
    "rule_sha256",
    "facts_sha256",
    "evaluated_on",
)
"""The columns that repeat a field of the record, under the same name."""


def chunk_seal(policy_id: str, rule_sha256: str, record_hashes: Sequence[str]) -> dict[str, Any]:
    """The payload of a chunk's ledger entry: how many records, and the RFC 6962 root of their
    SHA-256s (leaf data: the 32 bytes) in leaf order. The facts snapshots need no place of
    their own: each record names its snapshot's hash, and the record's hash is a leaf."""
    return {
        "count": len(record_hashes),
        "merkle_root": root([bytes.fromhex(h) for h in record_hashes]).hex(),
        "policy_id": policy_id,
        "rule_sha256": rule_sha256,
    }


def create_audit_schema(engine: Engine) -> None:
    from service.audit.signatures import create_signature_schema

    create_ledger_schema(engine)
    create_signature_schema(engine)
    metadata.create_all(engine)
