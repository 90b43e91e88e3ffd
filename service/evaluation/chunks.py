"""A chunk of enterprises read once: their facts as columns (what the decision reads) and, on
demand, each enterprise's facts document (what its record's snapshot stores)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlmodel import col

from enterprise_registry.models import Enterprise
from rules.columns import FactColumns
from rules.facts import FactsDocument
from service.audit.records import now_stamp
from service.evaluation.columns import ChunkRows
from service.evaluation.columns import read_chunk as read_rows


@dataclass
class Chunk:
    usccs: Sequence[str]
    columns: dict[int, FactColumns]
    rows: ChunkRows
    _snapshots: dict[tuple[int, int], tuple[str, str]] = field(default_factory=dict)
    recorded_at: str = field(default_factory=now_stamp)  # when its records say they were made

    def document(self, row: int, fact_year: int) -> FactsDocument:
        return self.rows.document(self.usccs[row], fact_year)

    def on_record(self, row: int) -> bool:
        """Whether anything at all is on record for the enterprise of `row`."""
        return any(kind.rows_of(row) for kind in self.rows.kinds.values())

    def snapshot(self, row: int, fact_year: int) -> tuple[str, str]:
        """The facts snapshot of one enterprise and fact year (JSON and its SHA-256), made once
        and shared by every policy reading that year: built from the chunk's rows, the bytes of
        `snapshot_of(self.document(row, fact_year))`."""
        key = (row, fact_year)
        if key not in self._snapshots:
            self._snapshots[key] = self.rows.snapshot(row, fact_year)
        return self._snapshots[key]


def next_usccs(conn: Connection, after: str, limit: int, *, last: str | None = None) -> list[str]:
    """The next `limit` registered enterprises after USCC `after` (up to `last`), in USCC order."""
    query = select(col(Enterprise.uscc)).where(col(Enterprise.uscc) > after)
    if last is not None:
        query = query.where(col(Enterprise.uscc) <= last)
    return list(conn.execute(query.order_by(Enterprise.uscc).limit(limit)).scalars())


def read_chunk(conn: Connection, usccs: Sequence[str], fact_years: Iterable[int]) -> Chunk:
    """The chunk read with one query per kind (`service.evaluation.columns`), as columns for each
    fact year."""
    rows = read_rows(conn, usccs)
    return Chunk(usccs, {year: rows.columns(year) for year in dict.fromkeys(fact_years)}, rows)
