"""Verification of the money tables against the ledger: the batches, their lines and the stored
bank files must be exactly what the money events sealed.

- every line equals its newest seal, and every sealed line exists (a line edited, deleted or
  inserted is named, with the columns that differ);
- the seals of each event give the Merkle root and count its ledger entry holds (a seal row
  edited, deleted or inserted is caught, so the seals cannot be rewritten to match);
- every batch row equals the snapshot of its newest event (state, totals, approver, ...);
- every stored bank file has the SHA-256 and message id its export event sealed.
The ledger itself is verified first by the chain walk, so its entries can be trusted here.
Lines and seal rows stream (a fixed number of queries); memory holds the money events' snapshots
and roots, never the lines, whatever their number.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection

from rules.values import Outcome
from service.audit import signatures
from service.audit.ledger import Fault, ledger_entry
from service.audit.merkle import RootBuilder
from service.audit.problems import AuditProblem
from service.audit.record_tables import evaluation_record
from service.payouts.seals import (
    LINE_COLUMNS,
    MONEY_EVENT_KIND,
    PRIVATE_LINE_COLUMNS,
    MoneyEvent,
    export_digest,
    line_leaf,
)
from service.payouts.tables import SEALED_BATCH_COLUMNS, grant, payout_batch, payout_export, payout_line_seal

_STREAM = {"stream_results": True, "yield_per": 2000}
_PROGRESS_EVERY = 2000  # lines between two progress calls (the stream's page)


@dataclass
class _Events:
    batches: dict[str, tuple[int, dict[str, Any]]]  # batch -> newest (seq, snapshot)
    exports: dict[str, tuple[int, dict[str, Any]]]  # batch -> (seq, export digest)
    line_seals: dict[int, tuple[str, int, str]]  # seq -> (batch, count, root)
    suspects: frozenset[str] = frozenset()  # evaluation records reported as altered
    unsigned: list[AuditProblem] = field(default_factory=list)  # money events without a valid signature
    progress: Callable[[int], None] | None = None  # lines read so far


def verify_payouts(
    connection: Connection,
    *,
    limit: int = 100,
    suspect_evaluations: frozenset[str] = frozenset(),
    public_key: Ed25519PublicKey | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[AuditProblem]:
    """Every difference between the money tables and the ledger, at most `limit` of them. Lines
    citing a `suspect_evaluations` record (already reported as altered) are not compared with it.
    With the ledger's public key, every money event must carry its signature. `progress(lines
    read)` every `_PROGRESS_EVERY` lines and once at their end.

    Queries: a fixed number, each streamed; memory: the money events' batch snapshots and seal
    roots (a few per batch), never the lines or their seals."""
    if limit <= 0:
        return []
    events = _read_events(connection, public_key)
    events.suspects = suspect_evaluations
    events.progress = progress
    problems: list[AuditProblem] = list(events.unsigned)
    for check in (_check_seals, _check_lines, _check_batches, _check_exports):
        with closing(check(connection, events)) as found:  # closes its open cursor when stopping early
            for problem in found:
                problems.append(problem)
                if len(problems) >= limit:
                    return problems
    return problems


def _read_events(connection: Connection, public_key: Ed25519PublicKey | None) -> _Events:
    events = _Events({}, {}, {})
    signature = signatures.ledger_signature
    query = (
        select(
            ledger_entry.c.seq,
            ledger_entry.c.payload,
            ledger_entry.c.entry_hash,
            signature.c.key_id,
            signature.c.signature,
        )
        .select_from(ledger_entry.outerjoin(signature, signature.c.seq == ledger_entry.c.seq))
        .where(ledger_entry.c.kind == MONEY_EVENT_KIND)
        .order_by(ledger_entry.c.seq)
    )
    for seq, text, digest, signer, signed in connection.execution_options(**_STREAM).execute(query):
        if public_key is not None and not signatures.valid(public_key, seq, digest, signer, signed):
            events.unsigned.append(
                AuditProblem(
                    ledger_entry.name,
                    f"entry {seq}",
                    Fault.INSERTED,
                    seq,
                    f"money event {seq} is not signed by the ledger key: it was not written by the server",
                )
            )
        payload = orjson.loads(text)
        batch_id = payload["batch_id"]
        events.batches[batch_id] = (seq, payload["batch"])
        if payload["event"] == MoneyEvent.EXPORT:
            events.exports[batch_id] = (seq, payload["export"])
        if "lines" in payload:
            events.line_seals[seq] = (batch_id, payload["lines"]["count"], payload["lines"]["root"])
    return events


@dataclass
class _SealedEvent:
    """The seal rows of one ledger entry, as they stream by."""

    seq: int
    builder: RootBuilder = field(default_factory=RootBuilder)
    misplaced: str | None = None
    stray: int = 0  # rows claiming an entry that sealed no lines


def _check_seals(connection: Connection, events: _Events) -> Generator[AuditProblem, None, None]:
    """The seal rows of each event give its sealed root; no seal row belongs to no event. One
    query over every seal row in (entry, position) order, whatever the number of events."""
    query = select(
        payout_line_seal.c.ledger_seq,
        payout_line_seal.c.leaf_index,
        payout_line_seal.c.line_id,
        payout_line_seal.c.batch_id,
        payout_line_seal.c.leaf,
    ).order_by(payout_line_seal.c.ledger_seq, payout_line_seal.c.leaf_index)
    with connection.execution_options(**_STREAM).execute(query) as rows:
        sealed = sorted(events.line_seals)  # the events, in the rows' order
        waiting = 0  # sealed[waiting:] not yet met among the rows
        strays: list[_SealedEvent] = []  # reported after every event, as before streaming
        current: _SealedEvent | None = None
        for seq, index, line_id, seal_batch, leaf in rows:
            if current is None or seq != current.seq:
                if current is not None:
                    yield from _close_seals(current, events, strays)
                while waiting < len(sealed) and sealed[waiting] < seq:  # events none of whose rows remain
                    yield from _close_seals(_SealedEvent(sealed[waiting]), events, strays)
                    waiting += 1
                if waiting < len(sealed) and sealed[waiting] == seq:
                    waiting += 1
                current = _SealedEvent(int(seq))
            if seq not in events.line_seals:
                current.stray += 1
                continue
            batch_id = events.line_seals[seq][0]
            builder = current.builder
            # The row's own columns must say what its (sealed) leaf says: the verification of
            # lines looks seals up by them.
            decoded = orjson.loads(leaf)
            labelled = (line_id, seal_batch) == (decoded.get("grant_id"), decoded.get("batch_id"))
            if (index != builder.count or seal_batch != batch_id or not labelled) and current.misplaced is None:
                current.misplaced = f"position {index} ({line_id}) " + (
                    "is out of place" if labelled else "is labelled as another line than its leaf"
                )
            builder.add(leaf.encode())
    if current is not None:
        yield from _close_seals(current, events, strays)
    for seq in sealed[waiting:]:
        yield from _close_seals(_SealedEvent(seq), events, strays)
    for stray in strays:
        yield AuditProblem(
            payout_line_seal.name,
            f"entry {stray.seq}",
            Fault.INSERTED,
            0,
            f"{stray.stray} seal row(s) claim ledger entry {stray.seq}, which sealed no lines",
        )


def _close_seals(event: _SealedEvent, events: _Events, strays: list[_SealedEvent]) -> Iterator[AuditProblem]:
    if event.stray:
        strays.append(event)
        return
    seq, builder, misplaced = event.seq, event.builder, event.misplaced
    batch_id, count, expected_root = events.line_seals[seq]
    where = f"entry {seq}"
    if builder.count != count:
        fault = Fault.DELETED if builder.count < count else Fault.INSERTED
        yield AuditProblem(
            payout_line_seal.name,
            where,
            fault,
            seq,
            f"ledger entry {seq} sealed {count} line(s) of batch {batch_id}; {builder.count} seal row(s) remain",
        )
    elif misplaced is not None or builder.root().hex() != expected_root:
        yield AuditProblem(
            payout_line_seal.name,
            where,
            Fault.EDITED,
            seq,
            f"the seal rows of ledger entry {seq} (batch {batch_id}) no longer give its Merkle "
            f"root{': ' + misplaced if misplaced else ''}",
        )


def _check_lines(connection: Connection, events: _Events) -> Generator[AuditProblem, None, None]:
    """Every line equals its newest seal and rests on the evaluation it cites; every sealed line
    exists."""
    newest = (
        select(payout_line_seal.c.line_id, func.max(payout_line_seal.c.ledger_seq).label("seq"))
        .group_by(payout_line_seal.c.line_id)
        .subquery()
    )
    seal = payout_line_seal.alias("newest_seal")
    decision = evaluation_record.alias("decision")
    query = select(
        grant, newest.c.seq, seal.c.leaf, *(decision.c[c].label(f"decision_{c}") for c in _DECISION_COLUMNS)
    ).select_from(
        grant.outerjoin(newest, newest.c.line_id == grant.c.grant_id)
        .outerjoin(seal, and_(seal.c.line_id == newest.c.line_id, seal.c.ledger_seq == newest.c.seq))
        .outerjoin(decision, decision.c.evaluation_id == grant.c.evaluation_id)
    )
    read = 0
    for row in connection.execution_options(**_STREAM).execute(query):
        read += 1
        if events.progress is not None and read % _PROGRESS_EVERY == 0:
            events.progress(read)
        line = {column: row._mapping[column] for column in LINE_COLUMNS}  # not the joined columns
        line_id = str(line["grant_id"])
        if row.seq is None:
            yield AuditProblem(
                grant.name,
                line_id,
                Fault.INSERTED,
                0,
                f"line of batch {line['batch_id']} was never sealed in the ledger",
            )
            continue
        if line_leaf(line).decode() != row.leaf:
            yield AuditProblem(
                grant.name,
                line_id,
                Fault.EDITED,
                int(row.seq),
                _differences(line, orjson.loads(row.leaf), int(row.seq)),
            )
            continue
        if line["evaluation_id"] in events.suspects:
            continue
        unfounded = _unfounded(line, {c: row._mapping[f"decision_{c}"] for c in _DECISION_COLUMNS})
        if unfounded:
            yield AuditProblem(
                grant.name,
                line_id,
                Fault.EDITED,
                int(row.seq),
                f"the line does not rest on its evaluation {line['evaluation_id']}: {unfounded} "
                f"(sealed so by ledger entry {row.seq}: its batch was drafted from altered data)",
            )
    if events.progress is not None:
        events.progress(read)
    missing = (
        select(payout_line_seal.c.line_id, func.max(payout_line_seal.c.ledger_seq))
        .where(~select(grant.c.grant_id).where(grant.c.grant_id == payout_line_seal.c.line_id).exists())
        .group_by(payout_line_seal.c.line_id)
        .order_by(payout_line_seal.c.line_id)
    )
    for line_id, seq in connection.execute(missing):
        yield AuditProblem(
            grant.name, str(line_id), Fault.DELETED, int(seq), f"line sealed by ledger entry {seq} is missing"
        )


_DECISION_COLUMNS = (
    "evaluation_id",
    "uscc",
    "policy_id",
    "period",
    "outcome",
    "amount_fen",
    "record_sha256",
    "batch_id",
)


def _unfounded(line: dict[str, Any], decision: dict[str, Any]) -> str:
    """How a line departs from the stored evaluation it cites ('' when it does not): the
    evaluation's own columns are verified against the ledger by `verify_records`."""
    if decision["evaluation_id"] is None:
        return "that evaluation is not stored"
    wrong = [
        f"{column} {line[column]!r} but the evaluation's {decision[column]!r}"
        for column in ("uscc", "policy_id", "period", "record_sha256", "batch_id")
        if line[column] != decision[column]
    ]
    if decision["outcome"] != Outcome.ELIGIBLE:
        wrong.append(f"the evaluation is {decision['outcome']}")
    if line["full_fen"] != decision["amount_fen"]:
        wrong.append(f"full_fen {line['full_fen']} but the evaluation awards {decision['amount_fen']}")
    if not 0 <= line["amount_fen"] <= line["full_fen"]:
        wrong.append(f"amount_fen {line['amount_fen']} is not within 0..full_fen")
    return "; ".join(wrong)


def _check_batches(connection: Connection, events: _Events) -> Generator[AuditProblem, None, None]:
    seen: set[str] = set()
    query = select(*(payout_batch.c[c] for c in SEALED_BATCH_COLUMNS)).order_by(payout_batch.c.batch_id)
    for row in connection.execution_options(**_STREAM).execute(query):
        batch = dict(row._mapping)
        batch_id = str(batch["batch_id"])
        seen.add(batch_id)
        sealed = events.batches.get(batch_id)
        if sealed is None:
            yield AuditProblem(payout_batch.name, batch_id, Fault.INSERTED, 0, "batch was never sealed in the ledger")
        elif batch != sealed[1]:
            yield AuditProblem(
                payout_batch.name, batch_id, Fault.EDITED, sealed[0], _differences(batch, sealed[1], sealed[0])
            )
    for batch_id, (seq, _) in sorted(events.batches.items()):
        if batch_id not in seen:
            yield AuditProblem(
                payout_batch.name, batch_id, Fault.DELETED, seq, f"batch sealed by ledger entry {seq} is missing"
            )


def _check_exports(connection: Connection, events: _Events) -> Generator[AuditProblem, None, None]:
    seen: set[str] = set()
    for row in connection.execution_options(stream_results=True, yield_per=1).execute(select(payout_export)):
        batch_id = str(row.batch_id)
        seen.add(batch_id)
        sealed = events.exports.get(batch_id)
        if sealed is None:
            yield AuditProblem(
                payout_export.name, batch_id, Fault.INSERTED, 0, "bank file was never sealed in the ledger"
            )
            continue
        stored = export_digest(row.message_id, bytes(row.csv), bytes(row.pain001), row.exported_at)
        if stored != sealed[1]:
            changed = ", ".join(k for k in sorted(stored) if stored[k] != sealed[1].get(k))
            yield AuditProblem(
                payout_export.name,
                batch_id,
                Fault.EDITED,
                sealed[0],
                f"{changed} differ(s) from what ledger entry {sealed[0]} sealed",
            )
    for batch_id, (seq, _) in sorted(events.exports.items()):
        if batch_id not in seen:
            yield AuditProblem(
                payout_export.name, batch_id, Fault.DELETED, seq, f"bank file sealed by ledger entry {seq} is missing"
            )


def _differences(live: dict[str, Any], sealed: dict[str, Any], seq: int) -> str:
    """Which columns differ, with both values (but for the payee's private columns)."""
    parts = []
    for column in sorted(set(live) | set(sealed)):
        now, then = live.get(column), sealed.get(column)
        if now != then:
            private = column in PRIVATE_LINE_COLUMNS
            parts.append(f"{column} differs" if private else f"{column} is {now!r}, sealed {then!r}")
    return f"{'; '.join(parts) or 'differs'} (ledger entry {seq})"
