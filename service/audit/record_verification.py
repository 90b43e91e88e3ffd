"""Verification of the evaluation records against the ledger, streamed one chunk at a time.

Each ledger entry of kind `evaluations` sealed a chunk: the count of its records and the Merkle
root of their hashes in leaf order. For every chunk, the stored records at (ledger_seq,
leaf_index) are read in order and

- a record whose text no longer hashes to its `record_sha256` column, or whose filter columns
  (uscc, policy, period, outcome, amount, batch, hashes, day) differ from its text, is named;
- a missing leaf (a record deleted or moved away) names the chunk, with the positions and the
  neighbouring records; a record beyond the sealed count, or at a taken position, is named as
  inserted;
- when the chunk's root fails with every record present (reordered, or rewritten with its hash
  recomputed), the records of that chunk are replayed and those that no longer replay to what
  they say are named; when all do, the chunk is named;
- a record claiming no such entry is named as inserted;
- every facts snapshot and rule text is hashed once, and each record pointing at one that is
  missing or edited is named.

Memory stays bounded by one chunk whatever the number of records.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Table, exists, or_, select
from sqlalchemy.engine import Connection

from rules.facts import Catalogue
from service.audit.canonical import sha256_hex
from service.audit.ledger import Fault, ledger_entry
from service.audit.merkle import RootBuilder
from service.audit.problems import AuditProblem
from service.audit.record_tables import (
    FILTER_COLUMNS,
    RECORDS_KIND,
    evaluation_record,
    facts_snapshot,
    policy_version,
)
from service.audit.rendering import render
from service.errors import RecordMismatchError

_STREAM = {"stream_results": True, "yield_per": 2000}
_REPLAY_BUDGET = 10_000  # records replayed to tell which of a failing chunk were rewritten
_IN_LIST = 500
_PROGRESS_EVERY = 2000  # records between two progress calls (the stream's page)
_TABLE = evaluation_record.name


def verify_records(
    connection: Connection,
    *,
    limit: int = 100,
    catalogue: Catalogue | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[AuditProblem]:
    """Every difference between the stored records (and the texts they point to) and the ledger,
    at most `limit`: the chunks in ledger order, then records claiming no entry, then records
    whose facts snapshot or rule text is missing or edited. `progress(records read)` every
    `_PROGRESS_EVERY` records of the chunks and once at their end."""
    if limit <= 0:
        return []
    if catalogue is None:
        from service.catalogue import CATALOGUE

        catalogue = CATALOGUE
    run = _Run(connection, catalogue, progress)
    problems: list[AuditProblem] = []
    with closing(run.problems()) as found:  # closes the open cursors when stopping early
        for problem in found:
            problems.append(problem)
            if len(problems) >= limit:
                break
    return problems


@dataclass
class _Chunk:
    seq: int
    seal: dict[str, Any]
    by_column: RootBuilder = field(default_factory=RootBuilder)  # leaves: the record_sha256 columns
    by_text: RootBuilder = field(default_factory=RootBuilder)  # leaves: the texts' own hashes
    expected: int = 0  # the next leaf index
    last_id: str | None = None
    stored: int = 0
    gaps: list[str] = field(default_factory=list)


class _Run:
    def __init__(self, connection: Connection, catalogue: Catalogue, progress: Callable[[int], None] | None) -> None:
        self.conn, self.catalogue, self.progress = connection, catalogue, progress
        self.named: set[str] = set()  # records already reported (one problem each)
        self.replays_left = _REPLAY_BUDGET

    def problems(self) -> Generator[AuditProblem, None, None]:
        yield from self._chunks()
        yield from self._orphans()
        yield from self._texts("facts snapshot", facts_snapshot, "facts_sha256", "document")
        yield from self._texts("rule text", policy_version, "rule_sha256", "source")

    def _problem(self, row: str, fault: Fault, seq: int, detail: str) -> AuditProblem:
        if not row.startswith("entry "):  # a record, not a chunk
            self.named.add(row)
        return AuditProblem(_TABLE, row, fault, seq, detail)

    # -- chunks -----------------------------------------------------------------------------------

    def _chunks(self) -> Iterator[AuditProblem]:
        r = evaluation_record.c
        query = (
            select(
                ledger_entry.c.seq,
                ledger_entry.c.payload,
                *(r[c] for c in FILTER_COLUMNS),
                r.record,
                r.record_sha256,
                r.leaf_index,
            )
            .select_from(ledger_entry.outerjoin(evaluation_record, r.ledger_seq == ledger_entry.c.seq))
            .where(ledger_entry.c.kind == RECORDS_KIND)
            .order_by(ledger_entry.c.seq, r.leaf_index)
        )
        chunk: _Chunk | None = None
        read = 0
        with self.conn.execution_options(**_STREAM).execute(query) as rows:
            for row in rows:
                if chunk is None or row.seq != chunk.seq:
                    if chunk is not None:
                        yield from self._close(chunk)
                    chunk = _Chunk(int(row.seq), orjson.loads(row.payload))
                if row.evaluation_id is not None:
                    read += 1
                    if self.progress is not None and read % _PROGRESS_EVERY == 0:
                        self.progress(read)
                    yield from self._leaf(chunk, row)
        if chunk is not None:
            yield from self._close(chunk)
        if self.progress is not None:
            self.progress(read)

    def _leaf(self, chunk: _Chunk, row: Any) -> Iterator[AuditProblem]:
        seq, count, index = chunk.seq, int(chunk.seal["count"]), int(row.leaf_index)
        evaluation_id = str(row.evaluation_id)
        if index >= count or index < chunk.expected:
            why = (
                f"ledger entry {seq} sealed {count} record(s)" if index >= count else "another record holds that place"
            )
            yield self._problem(
                evaluation_id, Fault.INSERTED, seq, f"it claims leaf {index} of ledger entry {seq}, but {why}"
            )
            return
        if index > chunk.expected:
            chunk.gaps.append(_gap(chunk.expected, index - 1, chunk.last_id, evaluation_id))
        chunk.expected, chunk.last_id, chunk.stored = index + 1, evaluation_id, chunk.stored + 1
        text_hash = sha256_hex(row.record.encode())
        chunk.by_text.add(bytes.fromhex(text_hash))
        chunk.by_column.add(_leaf_bytes(row.record_sha256))
        detail = _record_detail(row, text_hash, chunk)
        if detail:
            yield self._problem(evaluation_id, Fault.EDITED, seq, detail)

    def _close(self, chunk: _Chunk) -> Iterator[AuditProblem]:
        seq, count = chunk.seq, int(chunk.seal["count"])
        where = f"entry {seq}"
        if chunk.stored == 0:
            yield self._problem(
                where,
                Fault.DELETED,
                seq,
                f"ledger entry {seq} sealed {count} record(s) of {chunk.seal.get('policy_id')}; none is stored",
            )
            return
        if chunk.expected < count:
            chunk.gaps.append(_gap(chunk.expected, count - 1, chunk.last_id, None))
        if chunk.gaps:
            yield self._problem(
                where,
                Fault.DELETED,
                seq,
                f"ledger entry {seq} sealed {count} record(s); {chunk.stored} remain: " + "; ".join(chunk.gaps),
            )
            return
        sealed = chunk.seal.get("merkle_root")
        if sealed in (chunk.by_column.root().hex(), chunk.by_text.root().hex()):
            return  # intact, or only columns edited (each already named)
        rewritten = list(self._rewritten(seq))
        if rewritten:
            yield from rewritten
        else:
            yield self._problem(
                where,
                Fault.EDITED,
                seq,
                f"the records of ledger entry {seq} no longer give its "
                "Merkle root: moved, reordered, or rewritten with their hashes recomputed "
                "(each record replays to what it says)",
            )

    def _rewritten(self, seq: int) -> Iterator[AuditProblem]:
        """The records of a chunk whose root fails that do not replay to what they say."""
        rows = self.conn.execute(
            select(evaluation_record.c.evaluation_id, evaluation_record.c.record)
            .where(evaluation_record.c.ledger_seq == seq)
            .order_by(evaluation_record.c.leaf_index)
        ).all()
        for evaluation_id, text in rows:
            if evaluation_id in self.named or self.replays_left <= 0:
                continue
            self.replays_left -= 1
            try:
                differences = render(self.conn, orjson.loads(text), self.catalogue).differences
            except RecordMismatchError as exc:
                differences = exc.differences
            except orjson.JSONDecodeError:
                differences = ["its text is not JSON"]
            if differences:
                yield self._problem(
                    str(evaluation_id),
                    Fault.EDITED,
                    seq,
                    f"ledger entry {seq}'s Merkle root fails "
                    "and this record does not replay to what it says: " + "; ".join(differences),
                )

    # -- records claiming no entry --------------------------------------------------------------

    def _orphans(self) -> Iterator[AuditProblem]:
        r = evaluation_record.c
        query = (
            select(r.evaluation_id, r.ledger_seq)
            .select_from(evaluation_record.outerjoin(ledger_entry, ledger_entry.c.seq == r.ledger_seq))
            .where(or_(ledger_entry.c.seq.is_(None), ledger_entry.c.kind != RECORDS_KIND))
            .order_by(r.ledger_seq, r.leaf_index)
        )
        with self.conn.execution_options(**_STREAM).execute(query) as rows:
            for evaluation_id, seq in rows:
                if evaluation_id not in self.named:
                    yield self._problem(
                        str(evaluation_id),
                        Fault.INSERTED,
                        0,
                        f"it claims ledger entry {seq}, which seals no evaluation records",
                    )

    # -- facts snapshots and rule texts -----------------------------------------------------------

    def _texts(self, what: str, table: Table, key: str, column: str) -> Iterator[AuditProblem]:
        """Each stored text hashed once; the records pointing at one missing or edited."""
        bad = [
            digest
            for digest, text in self.conn.execution_options(**_STREAM).execute(select(table.c[key], table.c[column]))
            if sha256_hex(text.encode()) != digest
        ]
        r = evaluation_record.c
        missing = (
            select(r.evaluation_id, r.ledger_seq, r[key])
            .where(~exists().where(table.c[key] == r[key]))
            .order_by(r.ledger_seq, r.leaf_index)
        )
        queries = [missing] + [
            select(r.evaluation_id, r.ledger_seq, r[key])
            .where(r[key].in_(bad[start : start + _IN_LIST]))
            .order_by(r.ledger_seq, r.leaf_index)
            for start in range(0, len(bad), _IN_LIST)
        ]
        for query in queries:
            with self.conn.execution_options(**_STREAM).execute(query) as rows:
                for evaluation_id, seq, digest in rows:
                    if evaluation_id not in self.named:
                        yield self._problem(
                            str(evaluation_id),
                            Fault.EDITED,
                            int(seq),
                            f"its {what} {str(digest)[:12]} is missing or edited",
                        )


def _record_detail(row: Any, text_hash: str, chunk: _Chunk) -> str:
    """How one stored record departs from itself and its chunk ('' when it does not)."""
    seq = chunk.seq
    if text_hash != row.record_sha256:
        return f"its text no longer hashes to its record_sha256 (sealed by ledger entry {seq})"
    try:
        record = orjson.loads(row.record)
    except orjson.JSONDecodeError:
        return f"its text is not JSON (ledger entry {seq})"
    changed = [
        f"{column} is {getattr(row, column)!r}, its record says {record.get(column)!r}"
        for column in FILTER_COLUMNS
        if getattr(row, column) != record.get(column)
    ]
    if record.get("rule_sha256") != chunk.seal.get("rule_sha256"):
        changed.append(f"it was not made under the rule text ledger entry {seq} sealed")
    return "; ".join(changed) + f" (ledger entry {seq})" if changed else ""


def _gap(first: int, last: int, before: str | None, after: str | None) -> str:
    where = " ".join(part for part in (f"after {before}" if before else "", f"before {after}" if after else "") if part)
    leaves = f"leaf {first}" if first == last else f"leaves {first}..{last}"
    return f"{leaves} missing ({where})" if where else f"{leaves} missing"


def _leaf_bytes(record_sha256: str) -> bytes:
    try:
        return bytes.fromhex(record_sha256)
    except (TypeError, ValueError):  # an edited column that is no hash: its leaf cannot match
        return str(record_sha256).encode()
