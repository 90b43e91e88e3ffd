"""Proof that a payout line is in its batch: an RFC 6962 inclusion proof of the line's evaluation
record hash under the Merkle root of decisions the batch sealed in the ledger when it became DRAFT,
and the record's own proof under the root of the chunk that recorded it.

The roots are read from the ledger (the DRAFT money event, the chunk's `evaluations` entry:
hash-chained, signed by checkpoints), not from the batch row, so editing the tables cannot forge
a proof.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.engine import Connection

from service.audit.merkle import inclusion_proof, verify_inclusion
from service.audit.record_proofs import RecordProof, prove_record
from service.audit.record_tables import evaluation_record
from service.errors import BatchNotFoundError
from service.payouts.batches import lines_of
from service.payouts.seals import MoneyEvent, money_event
from service.payouts.tables import grant


@dataclass(frozen=True)
class LineProof:
    line_id: str
    batch_id: str
    evaluation_id: str
    record_sha256: str
    leaf_index: int
    tree_size: int
    proof: list[str]  # sibling hashes, leaf to root (hex)
    sealed_root: str  # from the ledger's DRAFT event
    ledger_seq: int  # that entry's sequence number
    verified: bool  # the proof places the stored record's hash under the sealed root, and the record
    problem: str = ""  # is in its recording chunk
    record: RecordProof | None = None  # the record's proof under its chunk's ledger entry


def prove_line(conn: Connection, line_id: str) -> LineProof:
    """The inclusion proof of one line (its grant id), checked against the ledger."""
    row = conn.execute(select(grant.c.batch_id).where(grant.c.grant_id == line_id)).first()
    if row is None:
        raise BatchNotFoundError(f"no payout line {line_id!r}")
    batch_id = row.batch_id
    lines = lines_of(conn, batch_id)  # the order the seal used
    index = next(i for i, line in enumerate(lines) if line["grant_id"] == line_id)
    line = lines[index]
    leaves = [bytes.fromhex(str(item["record_sha256"])) for item in lines]
    proof = inclusion_proof(leaves, index)
    seal_seq, seal = _seal(conn, batch_id)
    stored = conn.execute(
        select(evaluation_record.c.record_sha256).where(evaluation_record.c.evaluation_id == line["evaluation_id"])
    ).scalar()
    problem = ""
    if stored != line["record_sha256"]:
        problem = "the line's record hash differs from the stored evaluation record's"
    elif seal is None:
        problem = "no DRAFT event for this batch in the ledger"
    elif seal.get("leaf_count") != len(lines):
        problem = f"the seal covers {seal.get('leaf_count')} lines, the batch has {len(lines)}"
    sealed_root = str(seal["merkle_root"]) if seal else ""
    verified = not problem and verify_inclusion(leaves[index], index, len(leaves), proof, bytes.fromhex(sealed_root))
    if not problem and not verified:
        problem = "the proof does not lead to the sealed root"
    record = prove_record(conn, str(line["evaluation_id"]))
    if not problem and (record is None or not record.verified):
        problem = f"its evaluation record is not proven in the ledger: {record.problem if record else 'missing'}"
        verified = False
    return LineProof(
        line_id,
        batch_id,
        str(line["evaluation_id"]),
        str(line["record_sha256"]),
        index,
        len(leaves),
        [p.hex() for p in proof],
        sealed_root,
        seal_seq,
        verified,
        problem,
        record,
    )


def _seal(conn: Connection, batch_id: str) -> tuple[int, dict[str, object] | None]:
    """The decisions root of the batch's DRAFT event."""
    found = money_event(conn, batch_id, MoneyEvent.DRAFT)
    return (0, None) if found is None else (found[0], found[1]["decisions"])
