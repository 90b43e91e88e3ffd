"""A chunk of enterprises' facts read from the registry straight into columns
(`rules.columns.FactColumns`): one SELECT per kind for the whole chunk, no document per enterprise.

The result equals `rules.columns.from_documents([build_document(rows, year) ...], CATALOGUE)`
value for value; the test holds the two together. What the rules read of each kind comes from
`enterprise_registry.kinds`, the derived facts from `enterprise_registry.derived` (mapped over
columns, so each rule stays written once there).

The chunk's raw rows are kept (`ChunkRows`), so that one enterprise's `FactsDocument` - with the
department and as-of date of every fact, which an explanation needs - is built from the same read
by `build_document` itself, never by querying again; and its audit snapshot (the document's
canonical JSON) straight from the rows by the same description (`service.facts_documents`).

Records of a collection are in the order of their kind's key within each enterprise (the
documents' own order depends on the database: see `ChunkRows`).
"""

from __future__ import annotations

import json
from collections import namedtuple
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from sqlalchemy import ColumnElement, Select, String, any_, bindparam, func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine

from enterprise_registry import derived
from enterprise_registry.kinds import KINDS, KindSpec
from enterprise_registry.models import table_for
from rules.columns import Column, FactColumns, RecordColumns, dtype_of, encode
from rules.facts import FactsDocument, FactValue, ScalarKind
from service.audit.facts_json import document_json, fact_json, record_json, snapshot_of_json
from service.catalogue import CATALOGUE
from service.facts_documents import EnterpriseRows, add_yearly_facts, build_document, collections_of, registry_facts
from service.payouts.tables import in_lists

Index = npt.NDArray[np.int64]

_REGISTRY = KINDS["enterprise"]
_TAX = KINDS["tax_year"]
_SI = KINDS["social_insurance_year"]
_YEARLY = (_TAX, _SI)
_COLLECTIONS = tuple(spec for spec in KINDS.values() if spec.collection)
_HIRE = KINDS["hire"]
# Beside its fact fields, a row carries whom it is of, who holds it and as of when.
_ROW_COLUMNS = ("uscc", "source", "as_of")
# Not a fact itself: the column `derived.has_bank_account` reads.
_BANK_ACCOUNT_NO = "bank_account_no"
# The hire field derived from every enterprise's hires (`derived.counting_hires`).
_COUNTS = "counts_for_enterprise"
_SIZE_INPUTS = ("employees", "revenue_fen", "main_business_revenue_fen", "total_assets_fen")


def read_columns(conn: Connection, usccs: Sequence[str], fact_years: Iterable[int]) -> dict[int, FactColumns]:
    """The facts of `usccs` (rows in that order) for each fact year, the registry read once."""
    chunk = read_chunk(conn, usccs)
    return {year: chunk.columns(year) for year in dict.fromkeys(fact_years)}


def read_chunk(conn: Connection, usccs: Sequence[str]) -> ChunkRows:
    """Every stored row of `usccs` (one SELECT per kind, one more for the hires of the same
    persons elsewhere), kept as columns and rows."""
    usccs = tuple(usccs)
    position = {uscc: index for index, uscc in enumerate(usccs)}
    if len(position) != len(usccs):
        raise ValueError("the same USCC twice in one chunk")
    kinds = {spec.kind: _read_kind(conn, spec, position) for spec in KINDS.values()}
    counting = _counting_hires(conn, kinds[_HIRE.kind])
    return ChunkRows(usccs, kinds, counting)


class ColumnSource:
    """Chunks of registered enterprises, read from the registry database as columns."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def chunk_after(self, cursor: str, limit: int) -> list[str]:
        """The next `limit` registered USCCs after `cursor`, in USCC order (as
        `DocumentSource.rows_after` picks them)."""
        uscc = table_for(_REGISTRY.kind).c.uscc
        with self.engine.connect() as conn:
            return list(conn.execute(select(uscc).where(uscc > cursor).order_by(uscc).limit(limit)).scalars())

    def chunk(self, usccs: Sequence[str]) -> ChunkRows:
        """The chunk's rows, for columns of several fact years and documents of some enterprises."""
        with self.engine.connect() as conn:
            return read_chunk(conn, usccs)

    def columns(self, usccs: Sequence[str], fact_years: Iterable[int]) -> dict[int, FactColumns]:
        with self.engine.connect() as conn:
            return read_columns(conn, usccs, fact_years)


class KindRows:
    """The rows of one kind in a chunk, sorted by `owner` (the enterprise's index in the chunk),
    within an enterprise by the kind's key; `raw[name]` holds one column's values as read."""

    def __init__(
        self, spec: KindSpec, rows: list[Any], owner: Index, raw: dict[str, Sequence[Any]], chunk_size: int
    ) -> None:
        self.spec = spec
        self.owner = owner
        self.raw = raw
        self._rows = rows  # the rows as read: documents and snapshots are built from them
        self._named = _row_type(spec.kind, tuple(raw))._make
        # _starts[i]:_starts[i + 1] are the rows of enterprise i
        self._starts: list[int] = np.searchsorted(owner, np.arange(chunk_size + 1)).tolist()
        self._encoded: dict[str, Column] = {}

    def __len__(self) -> int:
        return len(self.owner)

    def column(self, name: str, kind: ScalarKind) -> Column:
        """Field `name` of every row, encoded as `rules.columns` stores facts of `kind`."""
        if name not in self._encoded:
            self._encoded[name] = _encoded(kind, self.raw[name])
        return self._encoded[name]

    def rows_of(self, index: int) -> list[Any]:
        """The rows of enterprise `index`, with one attribute per column read: named tuples, made
        when asked for (making all of a chunk's when it is read cost more than it saved: the
        garbage collector walks a chunk's 20,000-odd new tuples; measured read + snapshots)."""
        return list(map(self._named, self._rows[self._starts[index] : self._starts[index + 1]]))


@dataclass(frozen=True)
class _SnapshotPart:
    """What the facts snapshots of the enterprise at `index` share whatever their fact year: its
    rows, and its registry facts, what is missing of them and its collections as snapshot JSON
    data (only read: every fact year's snapshot holds them)."""

    index: int
    rows: EnterpriseRows
    facts: dict[str, Any]
    missing: dict[str, str]
    collections: dict[str, list[Any]]


class ChunkRows:
    """Every stored row of a chunk of enterprises: columns for any fact year, and the facts
    document of any one enterprise (what its audit snapshot and explanation are made of).

    `document` orders each collection by its kind's key, as the columns do; documents from
    `DocumentSource` come in the database's order (SQLite: the key; PostgreSQL: the heap), so
    compare them record by record, not by position."""

    def __init__(self, usccs: tuple[str, ...], kinds: dict[str, KindRows], counting: set[derived.HireKey]) -> None:
        self.usccs = usccs
        self.kinds = kinds
        self.counting = counting
        self._index = {uscc: index for index, uscc in enumerate(usccs)}
        self._snapshot_part: _SnapshotPart | None = None

    def __len__(self) -> int:
        return len(self.usccs)

    def document(self, uscc: str, fact_year: int) -> FactsDocument:
        """One enterprise's facts document for `fact_year`, from the rows already read."""
        return build_document(self._enterprise_rows(self._index[uscc]), fact_year)

    def snapshot(self, index: int, fact_year: int) -> tuple[str, str]:
        """The facts snapshot (canonical JSON, SHA-256) of the enterprise at `index` for `fact_year`:
        the bytes of `snapshot_of(self.document(uscc, fact_year))`, built as JSON data straight from
        the rows (no `Fact` objects) by the same description (`service.facts_documents`). The part
        no fact year changes is built once for the fact years asked of an enterprise in turn."""
        part = self._year_independent(index)
        rows = part.rows
        facts, missing = dict(part.facts), dict(part.missing)
        add_yearly_facts(
            rows.enterprise, rows.tax.get(fact_year), rows.si.get(fact_year), fact_year, fact_json, facts, missing
        )
        return snapshot_of_json(document_json(rows.uscc, fact_year, facts, part.collections, missing))

    def _enterprise_rows(self, index: int) -> EnterpriseRows:
        rows = EnterpriseRows(self.usccs[index])
        registry = self.kinds[_REGISTRY.kind].rows_of(index)
        rows.enterprise = registry[0] if registry else None
        rows.tax = {row.year: row for row in self.kinds[_TAX.kind].rows_of(index)}
        rows.si = {row.year: row for row in self.kinds[_SI.kind].rows_of(index)}
        rows.hires = self.kinds[_HIRE.kind].rows_of(index)
        rows.qualifications = self.kinds["qualification"].rows_of(index)
        rows.credit_listings = self.kinds["credit_listing"].rows_of(index)
        rows.counting_hires = self.counting
        return rows

    def _year_independent(self, index: int) -> _SnapshotPart:
        # Kept for the last enterprise asked only: batches and lookups ask for an enterprise's fact
        # years in turn, and keeping every enterprise's part made snapshots 10% slower, not faster
        # (the garbage collector walks the dicts kept; benchmarks/bench_snapshots.py).
        part = self._snapshot_part
        if part is None or part.index != index:
            rows = self._enterprise_rows(index)
            facts, missing = registry_facts(rows.enterprise, fact_json)
            part = self._snapshot_part = _SnapshotPart(index, rows, facts, missing, collections_of(rows, record_json))
        return part

    def columns(self, fact_year: int) -> FactColumns:
        """The chunk's facts for one fact year, in the order of its USCCs. The columns of several
        fact years share the year-independent arrays (registry facts, collections), which are
        therefore read-only."""
        yearly = {spec.group: self._final_rows(spec, fact_year) for spec in _YEARLY}
        year_facts = {
            **{
                f"{spec.group}.{name}": self._scatter(spec, name, *yearly[spec.group])
                for spec in _YEARLY
                for name in spec.fact_fields
            },
            **self._size_class(*yearly[_TAX.group], *yearly[_SI.group]),
        }
        facts = {
            name: self._registry_facts[name] if name in self._registry_facts else year_facts[name]
            for name in CATALOGUE.facts
        }
        return FactColumns(list(self.usccs), fact_year, facts, self._collections)

    # Year-independent parts, built once for every fact year (the columns share them).

    @cached_property
    def _registry_facts(self) -> dict[str, Column]:
        rows = self.kinds[_REGISTRY.kind]
        every = np.arange(len(rows), dtype=np.int64)
        facts = {
            f"{_REGISTRY.group}.{name}": self._scatter(_REGISTRY, name, every, rows.owner)
            for name in _REGISTRY.fact_fields
        }
        facts["enterprise.industry_section"] = self._derived(
            rows, "industry_code", "enterprise.industry_section", derived.industry_section
        )
        facts["enterprise.has_bank_account"] = self._derived(
            rows, _BANK_ACCOUNT_NO, "enterprise.has_bank_account", derived.has_bank_account
        )
        for column in facts.values():
            _freeze(column)
        return facts

    @cached_property
    def _collections(self) -> dict[str, RecordColumns]:
        out = {}
        for spec in _COLLECTIONS:
            rows = self.kinds[spec.kind]
            fields = CATALOGUE.collections[spec.group]
            columns = {name: rows.column(name, fields[name].kind) for name in spec.fact_fields if name in fields}
            if spec is _HIRE:
                columns[_COUNTS] = Column.of(fields[_COUNTS].kind, self._hire_counts())
            missing = set(fields) - set(columns)
            if missing:
                raise KeyError(f"no column reader for {spec.group} fields {sorted(missing)}")
            for column in columns.values():
                _freeze(column)
            rows.owner.flags.writeable = False
            out[spec.group] = RecordColumns(rows.owner, {name: columns[name] for name in fields}, _refs(spec, rows))
        return out

    @cached_property
    def _final(self) -> dict[str, npt.NDArray[np.bool_]]:
        """Per yearly kind, whether each row describes its whole year (else it is stale)."""
        out = {}
        for spec in _YEARLY:
            rows = self.kinds[spec.kind]
            verdicts: dict[tuple[Any, Any], bool] = {}  # few distinct (year, as_of): judged once each
            pairs = zip(rows.raw["year"], rows.raw["as_of"])
            out[spec.kind] = np.fromiter(
                (
                    verdicts[p] if p in verdicts else verdicts.setdefault(p, derived.yearly_record_is_final(*p))
                    for p in pairs
                ),
                dtype=np.bool_,
                count=len(rows),
            )
        return out

    # Helpers.

    def _final_rows(self, spec: KindSpec, year: int) -> tuple[Index, Index]:
        """The rows of `spec` for `year` that are final, and their enterprises: a stale or
        absent record leaves its enterprise's whole group missing."""
        rows = self.kinds[spec.kind]
        years = rows.column("year", CATALOGUE.facts[f"{spec.group}.year"].kind).values
        chosen = np.flatnonzero((years == year) & self._final[spec.kind])
        return chosen.astype(np.int64), rows.owner[chosen]

    def _scatter(self, spec: KindSpec, name: str, chosen: Index, owners: Index) -> Column:
        """Column `spec.group.name` of the chunk: the chosen rows' values at their enterprises."""
        kind = CATALOGUE.facts[f"{spec.group}.{name}"].kind
        source = self.kinds[spec.kind].column(name, kind)
        return _placed(kind, len(self), owners, source.values[chosen], source.known[chosen])

    def _derived(self, rows: KindRows, field: str, fact: str, rule: Callable[[Any], FactValue]) -> Column:
        """A fact derived from one field of the registry row, the rule applied once per distinct value."""
        kind = CATALOGUE.facts[fact].kind
        values = rows.raw[field]
        distinct = list(dict.fromkeys(values))
        derived_values = Column.of(kind, [rule(value) for value in distinct])
        where = {value: index for index, value in enumerate(distinct)}
        picks = np.fromiter((where[value] for value in values), dtype=np.int64, count=len(values))
        return _placed(kind, len(self), rows.owner, derived_values.values[picks], derived_values.known[picks])

    def _size_class(self, tax_rows: Index, tax_owners: Index, si_rows: Index, si_owners: Index) -> dict[str, Column]:
        """`derived.size_class` and its basis. The SME standard is applied row by row through
        `derived.size_class`: its table is a few dozen prefix rules, not worth a second,
        vectorised copy (measured in benchmarks/bench_columns.py)."""
        n = len(self)
        registry = self.kinds[_REGISTRY.kind]
        industry: list[str | None] = [None] * n
        for owner, code in zip(registry.owner.tolist(), registry.raw["industry_code"]):
            industry[owner] = code
        recorded = _python_at(n, si_owners, self.kinds[_SI.kind].raw["size_class"], si_rows)
        tax = self.kinds[_TAX.kind]
        figures = [_python_at(n, tax_owners, tax.raw[name], tax_rows) for name in _SIZE_INPUTS]
        classes: list[str | None] = [None] * n
        bases: list[str | None] = [None] * n
        for owner in registry.owner.tolist():
            employees, revenue, main_revenue, assets = (column[owner] for column in figures)
            result = derived.size_class(
                recorded[owner],
                industry[owner],
                employees=employees,
                revenue_fen=revenue,
                main_business_revenue_fen=main_revenue,
                total_assets_fen=assets,
            )
            if result is not None:
                classes[owner], bases[owner] = result.size_class, result.basis
        return {
            "derived.size_class": Column.of(CATALOGUE.facts["derived.size_class"].kind, classes),
            "derived.size_class_basis": Column.of(CATALOGUE.facts["derived.size_class_basis"].kind, bases),
        }

    def _hire_counts(self) -> list[bool]:
        hires = self.kinds[_HIRE.kind].raw
        return [
            derived.HireKey(*key) in self.counting
            for key in zip(hires["uscc"], hires["person_ref"], hires["year"], hires["hired_on"])
        ]


def _read_kind(conn: Connection, spec: KindSpec, position: dict[str, int]) -> KindRows:
    table = table_for(spec.kind)
    extra = (_BANK_ACCOUNT_NO,) if spec is _REGISTRY else ()
    names = tuple(dict.fromkeys((*_ROW_COLUMNS, *spec.fact_fields, *extra)))
    statement = select(*(table.c[name] for name in names)).order_by(*(table.c[name] for name in spec.key))
    fetched = _select_in(conn, statement, table.c.uscc, list(position))
    owner = np.fromiter((position[row[0]] for row in fetched), dtype=np.int64, count=len(fetched))
    order = np.argsort(owner, kind="stable")  # stable: the key order within an enterprise stays
    fetched = [fetched[i] for i in order.tolist()]
    transposed = list(zip(*fetched)) if fetched else [() for _ in names]
    return KindRows(spec, fetched, owner[order], dict(zip(names, transposed)), len(position))


@cache
def _row_type(kind: str, names: tuple[str, ...]) -> type[Any]:
    """The rows of a kind kept as named tuples: documents and snapshots read a row's fields by
    name, which costs a tenth of a SQLAlchemy `Row`'s attribute lookup."""
    return namedtuple(f"{kind}_row", names)  # names known at run time only


def _counting_hires(conn: Connection, hires: KindRows) -> set[derived.HireKey]:
    """Which hires count, judged against every enterprise that reported the same persons
    (not only this chunk's), as `derived.counting_hires` says."""
    table = table_for(_HIRE.kind)
    statement = select(table.c.uscc, table.c.person_ref, table.c.year, table.c.hired_on)
    persons = sorted(set(hires.raw["person_ref"]))
    return derived.counting_hires(
        derived.HireKey(*row) for row in _select_in(conn, statement, table.c.person_ref, persons)
    )


def _select_in(conn: Connection, statement: Select[Any], column: ColumnElement[str], values: list[str]) -> list[Any]:
    """The rows of `statement` whose `column` is one of `values`, in one query where the database
    takes the values as one parameter (`_ONE_PARAMETER`), else an IN list of `in_lists` size at a time."""
    if not values:
        return []
    one_parameter = _ONE_PARAMETER.get(conn.dialect.name)
    if one_parameter is not None:
        return list(conn.execute(statement.where(one_parameter(column, values))).all())
    fetched: list[Any] = []
    for part in in_lists(values):
        fetched.extend(conn.execute(statement.where(column.in_(part))).all())
    return fetched


def _any_of_array(column: ColumnElement[str], values: list[str]) -> ColumnElement[bool]:
    return column == any_(bindparam("members", values, type_=postgresql.ARRAY(String)))


def _in_json_each(column: ColumnElement[str], values: list[str]) -> ColumnElement[bool]:
    members = func.json_each(bindparam("members", json.dumps(values), type_=String)).table_valued("value")
    return column.in_(select(members.c.value))


# A chunk's thousands of USCCs bound one by one in an IN list cost more to render, bind and parse
# (SQLAlchemy, psycopg) than the query costs to run: PostgreSQL takes them as one array, SQLite
# as one JSON list read by json_each.
_ONE_PARAMETER: dict[str, Callable[[ColumnElement[str], list[str]], ColumnElement[bool]]] = {
    "postgresql": _any_of_array,
    "sqlite": _in_json_each,
}


def _refs(spec: KindSpec, rows: KindRows) -> list[str]:
    """`kind:key` for each record, the key its natural key without the USCC joined by `@`
    (`hire:P1@2025-03-01`, `qualification:GR2024001`, `credit_listing:zombie@2024-01-02`),
    as documents name records."""
    parts = [rows.raw[name] for name in spec.key if name != "uscc"]
    return [f"{spec.kind}:" + "@".join(str(value) for value in key) for key in zip(*parts)]


def _python_at(n: int, owners: Index, values: Sequence[Any], rows: Index) -> list[Any]:
    """The chosen rows' raw values at their enterprises' positions, None elsewhere."""
    out: list[Any] = [None] * n
    for owner, row in zip(owners.tolist(), rows.tolist()):
        out[owner] = values[row]
    return out


def _encoded(kind: ScalarKind, raw: Sequence[FactValue | None]) -> Column:
    """`Column.of(kind, raw)`, without its value-by-value loop where every value is on record
    (the usual case: most columns are NOT NULL)."""
    if None in raw:
        return Column.of(kind, raw)
    dtype = dtype_of(kind)
    on_record = cast("Sequence[FactValue]", raw)  # no None among them (above)
    values = (
        np.fromiter(map(encode, on_record), dtype=dtype, count=len(raw))
        if kind == "date"
        else np.array(raw, dtype=dtype).reshape(len(raw))
    )
    return Column(values, np.ones(len(raw), dtype=np.bool_))


def _placed(kind: ScalarKind, n: int, owners: Index, values: npt.NDArray[Any], known: npt.NDArray[np.bool_]) -> Column:
    """A column of n rows holding `values` at `owners`, not on record elsewhere."""
    out = np.full(n, _placeholder(kind), dtype=dtype_of(kind))
    out[owners] = values
    on_record = np.zeros(n, dtype=np.bool_)
    on_record[owners] = known
    return Column(out, on_record)


def _freeze(column: Column) -> None:
    """Shared by the columns of every fact year: a write would change them all."""
    column.values.flags.writeable = False
    column.known.flags.writeable = False


_PLACEHOLDERS: dict[ScalarKind, Any] = {}


def _placeholder(kind: ScalarKind) -> Any:
    """What `rules.columns` stores where a value of `kind` is not on record."""
    if kind not in _PLACEHOLDERS:
        _PLACEHOLDERS[kind] = Column.of(kind, [None]).values[0]
    return _PLACEHOLDERS[kind]
