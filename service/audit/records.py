"""Evaluation records: every evaluation stored compactly with its facts and rule text by their
hash, sealed in the ledger one chunk at a time, and rendered on demand.

A record is the canonical JSON of its decision (`service.audit.decision`: outcome, amount and
the clause mask), the SHA-256 of its facts snapshot, the actor, when, the batch and the
versions; nothing of the explanation, which is rendered by replaying the snapshot under the
rule text (`service.audit.rendering`). Each `write_records` call appends ONE ledger entry of
kind `evaluations` holding the count and the Merkle root of its records' hashes; each record row
keeps its hash and its place (ledger_seq, leaf_index), so editing, deleting, inserting or
moving a record, or editing the facts or rule text it points to, is caught by `verify_records`
(`service.audit.record_verification`), and any record has an inclusion proof
(`service.audit.record_proofs`).

Old databases (one `evaluation` entry and a full trace per record) are not read: they are
rebuilt, not migrated.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection, Engine

from rules.evaluator import Evaluation
from rules.facts import FactsDocument
from rules.loader import LoadedPolicy
from service.audit.bulk import insert_rows, store_snapshots
from service.audit.canonical import canonical_json_of_typed, sha256_hex
from service.audit.decision import Decision
from service.audit.facts_json import document_from_json, document_to_json, snapshot_of
from service.audit.ledger import LedgerEntry, append_many, ledger_transaction
from service.audit.record_tables import (
    RECORD_COLUMNS,
    RECORDS_KIND,
    chunk_seal,
    create_audit_schema,
    evaluation_record,
    facts_snapshot,
    metadata,
    policy_version,
)
from service.audit.record_verification import verify_records
from service.audit.rendering import ReplayResult, render, replay

SERVICE_VERSION = "benefits 0.1.0"

__all__ = [
    "RECORDS_KIND",
    "SERVICE_VERSION",
    "Actor",
    "Decision",
    "PreparedRecord",
    "ReplayResult",
    "create_audit_schema",
    "document_from_json",
    "document_to_json",
    "evaluation_record",
    "facts_snapshot",
    "find_recorded",
    "list_records",
    "load_record",
    "metadata",
    "policy_version",
    "prepare_decision",
    "prepare_record",
    "record_evaluation",
    "record_with_hash",
    "remember_policy",
    "render",
    "replay",
    "snapshot_of",
    "verify_records",
    "write_records",
]


@dataclass(frozen=True)
class Actor:
    principal: str
    role: str


@dataclass(frozen=True, slots=True)
class PreparedRecord:
    """An evaluation record encoded and hashed, ready to be written (see `write_records`)."""

    decision: Decision
    evaluation_id: str
    batch_id: str | None
    record_json: str
    record_sha256: str
    facts_json: str
    facts_sha256: str


def remember_policy(connection: Connection, policy: LoadedPolicy) -> None:
    """Store a loaded policy version by the hash of its bytes (once)."""
    known = connection.execute(
        select(policy_version.c.rule_sha256).where(policy_version.c.rule_sha256 == policy.sha256)
    ).first()
    if known is None:
        connection.execute(
            insert(policy_version).values(
                rule_sha256=policy.sha256,
                policy_id=policy.id,
                version=policy.version,
                source=policy.source,
                first_seen=now_stamp(),
            )
        )


def record_evaluation(
    engine: Engine,
    evaluation: Evaluation,
    document: FactsDocument,
    policy: LoadedPolicy,
    actor: Actor,
    *,
    batch_id: str | None = None,
) -> str:
    """Store one evaluation with its facts and rule text and seal it in the ledger; its id."""
    return record_with_hash(engine, evaluation, document, policy, actor, batch_id=batch_id)[0]


def record_with_hash(
    engine: Engine,
    evaluation: Evaluation,
    document: FactsDocument,
    policy: LoadedPolicy,
    actor: Actor,
    *,
    batch_id: str | None = None,
) -> tuple[str, str]:
    """As `record_evaluation`, also returning the record's SHA-256 (a batch's Merkle leaf)."""
    prepared = prepare_record(evaluation, document, actor, batch_id=batch_id)
    with ledger_transaction(engine) as conn:
        write_records(conn, policy, [prepared])
    return prepared.evaluation_id, prepared.record_sha256


def prepare_decision(
    decision: Decision,
    facts_json: str,
    facts_sha256: str,
    actor: Actor,
    batch_id: str | None = None,
    payout_note: str | None = None,
    *,
    recorded_at: str | None = None,
) -> PreparedRecord:
    """Encode one decision's record outside any transaction. `facts_json` and `facts_sha256`
    are the enterprise's facts snapshot (`snapshot_of`), computed once and shared by the policies
    evaluated on it; `payout_note` says why a batch does not pay an eligible enterprise."""
    evaluation_id = "ev_" + uuid.uuid4().hex  # random: concurrent records never collide
    record: dict[str, Any] = {
        "evaluation_id": evaluation_id,
        "policy_id": decision.policy_id,
        "policy_version": decision.policy_version,
        "rule_sha256": decision.rule_sha256,
        "period": decision.period,
        "fact_year": decision.fact_year,
        "uscc": decision.uscc,
        "evaluated_on": decision.evaluated_on,
        "outcome": decision.outcome,
        "amount_fen": decision.amount_fen,
        "mask": decision.mask,
        "engine": decision.engine,
        "facts_sha256": facts_sha256,
        "actor": {"principal": actor.principal, "role": actor.role},
        "recorded_at": recorded_at or now_stamp(),
        "batch_id": batch_id,
        "service_version": SERVICE_VERSION,
    }
    if payout_note:
        record["payout_note"] = payout_note
    record_json = canonical_json_of_typed(record)
    return PreparedRecord(
        decision, evaluation_id, batch_id, record_json.decode(), sha256_hex(record_json), facts_json, facts_sha256
    )


def prepare_record(
    evaluation: Evaluation,
    document: FactsDocument,
    actor: Actor,
    *,
    batch_id: str | None = None,
    payout_note: str | None = None,
) -> PreparedRecord:
    """`prepare_decision` for an evaluation and the facts document it was made from."""
    facts_json, facts_sha = snapshot_of(document)
    return prepare_decision(Decision.of(evaluation), facts_json, facts_sha, actor, batch_id, payout_note)


def write_records(
    connection: Connection, policy: LoadedPolicy, prepared: Sequence[PreparedRecord], *, stored: set[str] | None = None
) -> LedgerEntry | None:
    """Store prepared records of one policy as one chunk, inside the caller's
    `ledger_transaction` (so they commit, or vanish, with whatever else it writes): their new
    facts snapshots, the records, and ONE ledger entry sealing them; that entry (None when
    there was nothing to write). `stored`: the hashes of snapshots the transaction already
    wrote (skipped, and this call's added), when several chunks share them."""
    if not prepared:
        return None
    foreign = [p.evaluation_id for p in prepared if p.decision.rule_sha256 != policy.sha256]
    if foreign:
        raise ValueError(f"records {foreign[:3]} were not made under {policy.id} {policy.sha256[:12]}")
    remember_policy(connection, policy)
    known = stored if stored is not None else set()
    store_snapshots(connection, {p.facts_sha256: p.facts_json for p in prepared if p.facts_sha256 not in known})
    known.update(p.facts_sha256 for p in prepared)
    seal = chunk_seal(policy.id, policy.sha256, [p.record_sha256 for p in prepared])
    entry = append_many(connection, [(RECORDS_KIND, seal)])[0]
    insert_rows(
        connection,
        evaluation_record,
        RECORD_COLUMNS,
        [
            (
                p.evaluation_id,
                p.decision.uscc,
                p.decision.policy_id,
                p.decision.period,
                p.decision.outcome,
                p.decision.amount_fen,
                p.batch_id,
                p.decision.rule_sha256,
                p.facts_sha256,
                p.decision.evaluated_on,
                p.record_json,
                p.record_sha256,
                entry.seq,
                index,
            )
            for index, p in enumerate(prepared)
        ],
    )
    return entry


def load_record(connection: Connection, evaluation_id: str) -> dict[str, Any] | None:
    row = connection.execute(
        select(evaluation_record.c.record).where(evaluation_record.c.evaluation_id == evaluation_id)
    ).first()
    return orjson.loads(row.record) if row else None


def find_recorded(
    connection: Connection,
    *,
    rule_sha256: str,
    facts_sha256: str,
    evaluated_on: str,
    uscc: str,
    policy_id: str,
    period: int,
) -> dict[str, Any] | None:
    """The newest stored record of this decision - the same rule text on the same facts on the
    same day - whose text still has its hash, for a lookup to answer from instead of recording
    again; None when there is none."""
    wanted = {
        "rule_sha256": rule_sha256,
        "facts_sha256": facts_sha256,
        "evaluated_on": evaluated_on,
        "uscc": uscc,
        "policy_id": policy_id,
        "period": period,
    }
    query = (
        select(evaluation_record.c.record, evaluation_record.c.record_sha256)
        .where(*(evaluation_record.c[column] == value for column, value in wanted.items()))
        .order_by(evaluation_record.c.ledger_seq.desc(), evaluation_record.c.leaf_index.desc())
        .limit(10)
    )
    for text, digest in connection.execute(query):
        if sha256_hex(text.encode()) != digest:
            continue  # altered: verification reports it; never answer from it
        record: dict[str, Any] = orjson.loads(text)
        if all(record.get(column) == value for column, value in wanted.items()):
            return record
    return None


def list_records(
    connection: Connection,
    *,
    uscc: str = "",
    policy_id: str = "",
    period: int = 0,
    batch_id: str = "",
    outcome: str = "",
    offset: int = 0,
    limit: int = 100,
) -> tuple[list[dict[str, Any]], int]:
    """Stored records matching the filters, newest first: one page, and the total count."""
    query = select(evaluation_record.c.record)
    count = select(func.count()).select_from(evaluation_record)
    for column, value in (
        (evaluation_record.c.uscc, uscc),
        (evaluation_record.c.policy_id, policy_id),
        (evaluation_record.c.period, period),
        (evaluation_record.c.batch_id, batch_id),
        (evaluation_record.c.outcome, outcome),
    ):
        if value:
            query, count = query.where(column == value), count.where(column == value)
    rows = connection.execute(
        query.order_by(evaluation_record.c.ledger_seq.desc(), evaluation_record.c.leaf_index.desc())
        .offset(offset)
        .limit(limit)
    ).all()
    return [orjson.loads(r.record) for r in rows], int(connection.execute(count).scalar_one())


def now_stamp() -> str:
    """Now, as records store it (UTC, microseconds); one stamp may serve a whole chunk."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
