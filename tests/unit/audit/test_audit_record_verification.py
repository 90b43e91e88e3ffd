"""Verification of the records chunk by chunk: every way of altering a stored record, its facts
or its rule text is caught, naming the record when it can and its chunk when it cannot."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import orjson
import pytest
from records_testkit import audit_engine, policy, prepared, write_chunk
from sqlalchemy import ColumnElement, delete, insert, select, update
from sqlalchemy.engine import Connection, Engine

from rules.loader import LoadedPolicy
from service.audit.canonical import canonical_json, sha256_hex
from service.audit.ledger import Fault
from service.audit.problems import AuditProblem
from service.audit.record_proofs import prove_record
from service.audit.records import PreparedRecord, evaluation_record, verify_records

__all__ = ["audit_engine", "policy"]  # fixtures

CHUNK = 5
# (ledger seq of the chunk's entry, its records)
Chunks = list[tuple[int, list[PreparedRecord]]]


@pytest.fixture
def chunks(audit_engine: Engine, policy: LoadedPolicy) -> Chunks:
    """Three chunks of five records, every record of its own enterprise's facts."""
    out: Chunks = []
    for c in range(3):
        records = [prepared(policy, 1_000_000 * (c + 1) + i, uscc=f"91420600MA4K{c}{i:04d}X") for i in range(CHUNK)]
        out.append((write_chunk(audit_engine, policy, records), records))
    with audit_engine.connect() as conn:
        assert verify_records(conn) == []
    return out


@contextmanager
def tampered(engine: Engine) -> Iterator[Connection]:
    """A transaction an attacker writes in, rolled back afterwards (the records table has no
    append-only triggers: it is verified instead)."""
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN")
        try:
            yield conn
        finally:
            conn.rollback()


def _named(problems: list[AuditProblem]) -> set[tuple[str, Fault]]:
    assert all(p.table == "evaluation_record" for p in problems)
    return {(p.row, p.fault) for p in problems}


def _key(record: PreparedRecord) -> ColumnElement[bool]:
    return evaluation_record.c.evaluation_id == record.evaluation_id


def test_an_edited_record_text_is_named(audit_engine: Engine, chunks: Chunks) -> None:
    seq, records = chunks[1]
    victim = records[2]
    with tampered(audit_engine) as conn:
        conn.execute(
            update(evaluation_record)
            .where(_key(victim))
            .values(record=victim.record_json.replace('"amount_fen":', '"amount_fen":1'))
        )
        problems = verify_records(conn)
    assert [(p.row, p.fault, p.ledger_seq) for p in problems] == [(victim.evaluation_id, Fault.EDITED, seq)]
    assert "no longer hashes to its record_sha256" in problems[0].detail


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("uscc", "91420600MA4K99999X"),
        ("policy_id", "single-champion-reward"),
        ("period", 2024),
        ("outcome", "INELIGIBLE"),
        ("amount_fen", 1),
        ("batch_id", "pb_forged"),
        ("rule_sha256", "0" * 64),
        ("facts_sha256", "0" * 64),
        ("evaluated_on", "2026-01-01"),
        ("record_sha256", "0" * 64),
    ],
)
def test_an_edited_filter_column_is_named(audit_engine: Engine, chunks: Chunks, column: str, value: object) -> None:
    seq, records = chunks[0]
    with tampered(audit_engine) as conn:
        conn.execute(update(evaluation_record).where(_key(records[4])).values({column: value}))
        problems = verify_records(conn)
    assert _named(problems) == {(records[4].evaluation_id, Fault.EDITED)}, problems
    assert problems[0].ledger_seq == seq


@pytest.mark.parametrize("position", [0, 2, CHUNK - 1])
def test_a_deleted_record_names_its_chunk_and_place(audit_engine: Engine, chunks: Chunks, position: int) -> None:
    seq, records = chunks[1]
    with tampered(audit_engine) as conn:
        conn.execute(delete(evaluation_record).where(_key(records[position])))
        problems = verify_records(conn)
    assert _named(problems) == {(f"entry {seq}", Fault.DELETED)}
    detail = problems[0].detail
    assert f"sealed {CHUNK} record(s); {CHUNK - 1} remain: leaf {position} missing" in detail
    if position > 0:
        assert f"after {records[position - 1].evaluation_id}" in detail
    if position < CHUNK - 1:
        assert f"before {records[position + 1].evaluation_id}" in detail


def test_a_whole_deleted_chunk_is_named(audit_engine: Engine, chunks: Chunks) -> None:
    seq, _ = chunks[2]
    with tampered(audit_engine) as conn:
        conn.execute(delete(evaluation_record).where(evaluation_record.c.ledger_seq == seq))
        problems = verify_records(conn)
    assert _named(problems) == {(f"entry {seq}", Fault.DELETED)} and "none is stored" in problems[0].detail


def _copy_of(conn: Connection, record: PreparedRecord, **changes: object) -> dict[str, object]:
    row = dict(conn.execute(select(evaluation_record).where(_key(record))).one()._mapping)
    return {**row, "evaluation_id": "ev_" + "f" * 32, **changes}


def test_a_record_inserted_into_a_chunk_is_named(audit_engine: Engine, chunks: Chunks) -> None:
    seq, records = chunks[0]
    with tampered(audit_engine) as conn:
        forged = _copy_of(conn, records[0], leaf_index=CHUNK)
        conn.execute(insert(evaluation_record).values(forged))
        problems = verify_records(conn)
    assert _named(problems) == {(forged["evaluation_id"], Fault.INSERTED)}
    assert f"it claims leaf {CHUNK} of ledger entry {seq}" in problems[0].detail


def test_a_record_claiming_no_entry_is_named(audit_engine: Engine, chunks: Chunks) -> None:
    _, records = chunks[0]
    with tampered(audit_engine) as conn:
        forged = _copy_of(conn, records[0], ledger_seq=999, leaf_index=0)
        conn.execute(insert(evaluation_record).values(forged))
        problems = verify_records(conn)
    assert _named(problems) == {(forged["evaluation_id"], Fault.INSERTED)}
    assert "claims ledger entry 999, which seals no evaluation records" in problems[0].detail


def test_a_record_moved_to_another_chunk_is_caught_in_both(audit_engine: Engine, chunks: Chunks) -> None:
    (first, records), (second, _) = chunks[0], chunks[1]
    with tampered(audit_engine) as conn:
        conn.execute(update(evaluation_record).where(_key(records[1])).values(ledger_seq=second, leaf_index=CHUNK))
        problems = verify_records(conn)
    assert _named(problems) == {(f"entry {first}", Fault.DELETED), (records[1].evaluation_id, Fault.INSERTED)}


def test_swapped_records_name_their_chunk(audit_engine: Engine, chunks: Chunks) -> None:
    seq, records = chunks[1]
    with tampered(audit_engine) as conn:
        for record, index in ((records[0], 100), (records[3], 0), (records[0], 3)):
            conn.execute(update(evaluation_record).where(_key(record)).values(leaf_index=index))
        problems = verify_records(conn)
    assert _named(problems) == {(f"entry {seq}", Fault.EDITED)}
    assert "no longer give its Merkle root" in problems[0].detail


def test_a_record_rewritten_with_its_hash_recomputed_is_named_by_its_replay(
    audit_engine: Engine, chunks: Chunks
) -> None:
    seq, records = chunks[2]
    victim = records[3]
    body = orjson.loads(victim.record_json)
    body["amount_fen"] *= 2
    text = canonical_json(body).decode()
    with tampered(audit_engine) as conn:
        conn.execute(
            update(evaluation_record)
            .where(_key(victim))
            .values(record=text, record_sha256=sha256_hex(text.encode()), amount_fen=body["amount_fen"])
        )
        problems = verify_records(conn)
    assert _named(problems) == {(victim.evaluation_id, Fault.EDITED)}
    assert f"ledger entry {seq}'s Merkle root fails" in problems[0].detail
    assert f"amount_fen: stored {body['amount_fen']}, replayed {victim.decision.amount_fen}" in problems[0].detail


def test_a_record_rewritten_where_its_replay_cannot_tell_names_its_chunk(audit_engine: Engine, chunks: Chunks) -> None:
    seq, records = chunks[0]
    body = {**orjson.loads(records[1].record_json), "actor": {"principal": "someone-else", "role": "auditor"}}
    text = canonical_json(body).decode()
    with tampered(audit_engine) as conn:
        conn.execute(
            update(evaluation_record)
            .where(_key(records[1]))
            .values(record=text, record_sha256=sha256_hex(text.encode()))
        )
        problems = verify_records(conn)
    assert _named(problems) == {(f"entry {seq}", Fault.EDITED)}


@pytest.mark.parametrize(("table", "column"), [("facts_snapshot", "document"), ("policy_version", "source")])
def test_an_edited_text_names_every_record_resting_on_it(
    audit_engine: Engine, chunks: Chunks, table: str, column: str
) -> None:
    _, records = chunks[1]
    what = "facts snapshot" if table == "facts_snapshot" else "rule text"
    with tampered(audit_engine) as conn:
        if table == "facts_snapshot":
            conn.exec_driver_sql(
                f"UPDATE facts_snapshot SET document = document || ' ' WHERE facts_sha256 = '{records[2].facts_sha256}'"
            )
            victims = {records[2].evaluation_id}
        else:
            conn.exec_driver_sql("UPDATE policy_version SET source = source || '#'")
            victims = {r.evaluation_id for _, chunk in chunks for r in chunk}
        problems = verify_records(conn)
    assert _named(problems) == {(v, Fault.EDITED) for v in victims}
    assert all(p.detail.startswith(f"its {what} ") and "missing or edited" in p.detail for p in problems)


def test_a_deleted_snapshot_names_its_record(audit_engine: Engine, chunks: Chunks) -> None:
    _, records = chunks[2]
    with tampered(audit_engine) as conn:
        conn.exec_driver_sql(f"DELETE FROM facts_snapshot WHERE facts_sha256 = '{records[0].facts_sha256}'")
        problems = verify_records(conn)
    assert _named(problems) == {(records[0].evaluation_id, Fault.EDITED)}


def test_verification_stops_at_its_limit(audit_engine: Engine, chunks: Chunks) -> None:
    with tampered(audit_engine) as conn:
        conn.exec_driver_sql("UPDATE evaluation_record SET outcome = 'HELD'")
        assert len(verify_records(conn)) == 3 * CHUNK
        assert len(verify_records(conn, limit=4)) == 4
        assert verify_records(conn, limit=0) == []


def test_every_record_has_an_inclusion_proof_under_its_entry(audit_engine: Engine, chunks: Chunks) -> None:
    from service.audit.merkle import verify_inclusion

    with audit_engine.connect() as conn:
        for seq, records in chunks:
            for index, record in enumerate(records):
                proof = prove_record(conn, record.evaluation_id)
                assert proof is not None and proof.verified, proof
                assert (proof.ledger_seq, proof.leaf_index, proof.tree_size) == (seq, index, CHUNK)
                assert proof.entry is not None and proof.sealed_root == proof.entry.data()["merkle_root"]
                assert verify_inclusion(
                    bytes.fromhex(proof.record_sha256),
                    index,
                    CHUNK,
                    [bytes.fromhex(h) for h in proof.path],
                    bytes.fromhex(proof.sealed_root),
                )
        assert prove_record(conn, "ev_unknown") is None


def test_an_altered_record_has_no_proof(audit_engine: Engine, chunks: Chunks) -> None:
    _, records = chunks[0]
    body = {**orjson.loads(records[2].record_json), "amount_fen": 5}
    text = canonical_json(body).decode()
    with tampered(audit_engine) as conn:
        conn.execute(update(evaluation_record).where(_key(records[2])).values(record=text))
        proof = prove_record(conn, records[2].evaluation_id)
        assert proof is not None and "no longer has its record_sha256" in proof.problem
        conn.execute(update(evaluation_record).where(_key(records[2])).values(record_sha256=sha256_hex(text.encode())))
        proof = prove_record(conn, records[2].evaluation_id)
        assert proof is not None and not proof.verified and "does not lead to the root" in proof.problem
        conn.execute(delete(evaluation_record).where(_key(records[0])))
        proof = prove_record(conn, records[1].evaluation_id)
        assert proof is not None and not proof.verified and "sealed 5 records, 4 are stored" in proof.problem
