"""A chunk of enterprises read once: their facts as columns (what the decision reads) and, on
demand, each enterprise's facts document (what its record's snapshot stores)."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.engine import Connection

from enterprise_registry.models import Enterprise
from rules.columns import FactColumns, from_documents
from rules.facts import FactsDocument
from service.audit.facts_json import snapshot_of
from service.catalogue import CATALOGUE
from service.facts_documents import EnterpriseRows, build_document, load_rows


@dataclass
class Chunk:
    usccs: Sequence[str]
    columns: dict[int, FactColumns]
    rows: Sequence[EnterpriseRows]
    _documents: dict[tuple[int, int], FactsDocument] = field(default_factory=dict)
    _snapshots: dict[tuple[int, int], tuple[str, str]] = field(default_factory=dict)

    def document(self, row: int, fact_year: int) -> FactsDocument:
        key = (row, fact_year)
        if key not in self._documents:
            self._documents[key] = build_document(self.rows[row], fact_year)
        return self._documents[key]

    def snapshot(self, row: int, fact_year: int) -> tuple[str, str]:
        """The facts snapshot of one enterprise and fact year (JSON and its SHA-256), made once
        and shared by every policy reading that year."""
        key = (row, fact_year)
        if key not in self._snapshots:
            self._snapshots[key] = snapshot_of(self.document(row, fact_year))
        return self._snapshots[key]


def next_usccs(conn: Connection, after: str, limit: int, *, last: str | None = None) -> list[str]:
    """The next `limit` registered enterprises after USCC `after` (up to `last`), in USCC order."""
    query = select(Enterprise.uscc).where(Enterprise.uscc > after)
    if last is not None:
        query = query.where(Enterprise.uscc <= last)
    return list(conn.execute(query.order_by(Enterprise.uscc).limit(limit)).scalars())


def read_chunk(conn: Connection, usccs: Sequence[str], fact_years: Iterable[int]) -> Chunk:
    """The chunk's rows, read with one query per kind, and its columns for each fact year."""
    loaded = load_rows(conn, list(usccs))
    rows = [loaded[uscc] for uscc in usccs]
    chunk = Chunk(usccs, {}, rows)
    for year in fact_years:
        chunk.columns[year] = from_documents([chunk.document(i, year) for i in range(len(rows))], CATALOGUE)
    return chunk
