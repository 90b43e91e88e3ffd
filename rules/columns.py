"""A chunk of enterprises' facts as columns: what the vectorised trace (`rules.vectorised`) reads.

One chunk holds n enterprises for one fact year. Every scalar fact of the catalogue is one
`Column` of length n; every collection (hires, qualifications, credit listings) is a flat table of
its records with `owner`, the index of the enterprise each record belongs to. A value that is not
on record has `known` False (its slot in `values` is a placeholder and never read).

Encodings, the same for every column: int facts int64; bool facts bool; dates int64 day numbers
(`date.toordinal()`, as the engine sees them); strings numpy object arrays of `str`.

`from_documents` builds the same columns from facts documents: the reference the database reader
is tested against, and what a single lookup uses; `row_document` is its inverse for one row (what
the vectorised trace hands the interpreter for a row it cannot vouch for).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import numpy.typing as npt

from rules.facts import Catalogue, Fact, FactsDocument, FactType, FactValue, Record, ScalarKind

Array = npt.NDArray[np.generic]

# The placeholder stored where a value is not on record, by kind.
_PLACEHOLDER: dict[ScalarKind, object] = {"int": 0, "bool": False, "str": "", "date": 0}


def dtype_of(kind: ScalarKind) -> np.dtype[np.generic]:
    """The numpy dtype of a column holding facts of `kind`."""
    if kind in ("int", "date"):
        return np.dtype(np.int64)
    if kind == "bool":
        return np.dtype(np.bool_)
    return np.dtype(object)


@dataclass(frozen=True)
class Column:
    """One value per row, with whether it is on record."""

    values: Array
    known: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.known)

    @classmethod
    def of(cls, kind: ScalarKind, raw: Sequence[FactValue | None]) -> Column:
        """A column from Python values (None where not on record); dates become day numbers."""
        placeholder = _PLACEHOLDER[kind]
        known = np.fromiter((value is not None for value in raw), dtype=np.bool_, count=len(raw))
        encoded = [placeholder if value is None else encode(value) for value in raw]
        values = np.empty(len(raw), dtype=dtype_of(kind))
        values[:] = encoded
        return cls(values, known)

    def python(self, index: int) -> FactValue | None:
        """The value of one row as the interpreter holds it (None when not on record)."""
        if not self.known[index]:
            return None
        value = self.values[index]
        return value.item() if isinstance(value, np.generic) else value  # type: ignore[no-any-return]


@dataclass(frozen=True)
class RecordColumns:
    """The records of one collection for a chunk: `owner[i]` is the row (enterprise) of record i,
    ascending; `refs` name the records for traces."""

    owner: npt.NDArray[np.int64]
    fields: Mapping[str, Column]
    refs: Sequence[str]

    def __len__(self) -> int:
        return len(self.owner)


@dataclass(frozen=True)
class FactColumns:
    """n enterprises' facts for one fact year."""

    usccs: Sequence[str]
    fact_year: int
    facts: Mapping[str, Column]
    collections: Mapping[str, RecordColumns]

    def __len__(self) -> int:
        return len(self.usccs)


def encode(value: FactValue) -> FactValue:
    """A value as a column stores it: dates as day numbers, everything else unchanged."""
    return value.toordinal() if isinstance(value, date) else value


def decode(kind: ScalarKind, value: FactValue) -> FactValue:
    """The inverse of `encode` for a fact of `kind`."""
    return date.fromordinal(int(value)) if kind == "date" else value  # type: ignore[arg-type]


def from_documents(documents: Sequence[FactsDocument], catalogue: Catalogue) -> FactColumns:
    """The columns of facts documents of one fact year (in the documents' order)."""
    years = {d.fact_year for d in documents}
    if len(years) > 1:
        raise ValueError(f"documents of several fact years: {sorted(years)}")
    facts = {name: _scalar(documents, name, fact_type) for name, fact_type in catalogue.facts.items()}
    collections = {name: _records(documents, name, fields) for name, fields in catalogue.collections.items()}
    return FactColumns([d.uscc for d in documents], years.pop() if years else 0, facts, collections)


def _scalar(documents: Sequence[FactsDocument], name: str, fact_type: FactType) -> Column:
    raw = []
    for document in documents:
        fact = document.facts.get(name)
        raw.append(None if fact is None else fact.value)
    return Column.of(fact_type.kind, raw)


def _records(documents: Sequence[FactsDocument], name: str, fields: Mapping[str, FactType]) -> RecordColumns:
    owner: list[int] = []
    refs: list[str] = []
    raw: dict[str, list[FactValue | None]] = {field: [] for field in fields}
    for row, document in enumerate(documents):
        for record in document.collections.get(name, ()):
            owner.append(row)
            refs.append(record.ref)
            for field in fields:
                raw[field].append(record.fields.get(field))
    return RecordColumns(
        np.asarray(owner, dtype=np.int64), {field: Column.of(fields[field].kind, raw[field]) for field in fields}, refs
    )


def row_document(columns: FactColumns, row: int, catalogue: Catalogue) -> FactsDocument:
    """One row of a chunk as a facts document, values decoded (sources and dates of record are not
    columns: every fact has source "columns" and no as_of). A day number beyond the calendar
    raises ValueError."""
    facts: dict[str, Fact] = {}
    for name, column in columns.facts.items():
        value = column.python(row)
        if value is not None and name in catalogue.facts:
            facts[name] = Fact(decode(catalogue.facts[name].kind, value), "columns", None)
    collections: dict[str, list[Record]] = {}
    for name, records in columns.collections.items():
        kinds = catalogue.collections.get(name, {})
        first, last = np.searchsorted(records.owner, [row, row + 1])
        out = []
        for i in range(int(first), int(last)):
            fields: dict[str, FactValue | None] = {}
            for field, column in records.fields.items():
                value = column.python(i)
                fields[field] = None if value is None or field not in kinds else decode(kinds[field].kind, value)
            out.append(Record(records.refs[i], fields, "columns", None))
        collections[name] = out
    return FactsDocument(columns.usccs[row], columns.fact_year, facts, collections)
