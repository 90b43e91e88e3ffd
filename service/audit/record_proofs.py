"""Proof that an evaluation record is sealed in the ledger: an RFC 6962 inclusion proof of its
hash under the Merkle root its chunk's ledger entry holds."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.engine import Connection

from service.audit.canonical import sha256_hex
from service.audit.ledger import LedgerEntry, get_entry
from service.audit.merkle import inclusion_proof, verify_inclusion
from service.audit.record_tables import RECORDS_KIND, evaluation_record


@dataclass(frozen=True)
class RecordProof:
    evaluation_id: str
    record_sha256: str  # the leaf (its 32 bytes are the leaf data), hex
    leaf_index: int
    tree_size: int
    path: list[str]  # sibling hashes, leaf to root (hex)
    sealed_root: str  # from the ledger entry
    entry: LedgerEntry | None  # the chunk's entry (kind `evaluations`)
    verified: bool  # the record's text has its hash, and the path leads to the sealed root
    problem: str = ""

    @property
    def ledger_seq(self) -> int:
        return self.entry.seq if self.entry else 0


def prove_record(connection: Connection, evaluation_id: str) -> RecordProof | None:
    """The inclusion proof of one stored record, checked against the ledger; None when no record
    has that id."""
    row = connection.execute(
        select(
            evaluation_record.c.record,
            evaluation_record.c.record_sha256,
            evaluation_record.c.ledger_seq,
            evaluation_record.c.leaf_index,
        ).where(evaluation_record.c.evaluation_id == evaluation_id)
    ).first()
    if row is None:
        return None
    seq, index, digest = int(row.ledger_seq), int(row.leaf_index), str(row.record_sha256)
    # The leaves of the chunk, in order (at most one chunk's records).
    hashes = [
        str(h)
        for h in connection.execute(
            select(evaluation_record.c.record_sha256)
            .where(evaluation_record.c.ledger_seq == seq)
            .order_by(evaluation_record.c.leaf_index)
        ).scalars()
    ]
    entry = get_entry(connection, seq)
    seal = entry.data() if entry is not None and entry.kind == RECORDS_KIND else None
    position = hashes.index(digest) if digest in hashes else -1
    problem = ""
    if sha256_hex(row.record.encode()) != digest:
        problem = "the record's text no longer has its record_sha256"
    elif seal is None:
        problem = f"ledger entry {seq} seals no evaluation records"
    elif seal.get("count") != len(hashes):
        problem = f"ledger entry {seq} sealed {seal.get('count')} records, {len(hashes)} are stored"
    elif position != index:
        problem = f"the record is stored at leaf {index} but its chunk holds it at {position}"
    try:
        leaves = [bytes.fromhex(h) for h in hashes]
    except ValueError:
        leaves, problem = [], problem or "a record_sha256 of the chunk is not a hash"
    path = inclusion_proof(leaves, index) if 0 <= index < len(leaves) else []
    sealed_root = str(seal.get("merkle_root", "")) if seal else ""
    verified = not problem and verify_inclusion(leaves[index], index, len(leaves), path, bytes.fromhex(sealed_root))
    if not problem and not verified:
        problem = f"the proof does not lead to the root ledger entry {seq} sealed"
    return RecordProof(
        evaluation_id, digest, index, len(hashes), [p.hex() for p in path], sealed_root, entry, verified, problem
    )
