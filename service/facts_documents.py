"""Builds facts documents (what the rules read) from the registry's tables, one enterprise at a
time or streamed in chunks for a whole period.

What a document holds is described here once - which facts and records a row gives, the derived
facts, the texts saying why something is missing - in three parts: the registry facts and the
collections, which no fact year changes, and the yearly facts. Each part is built through a
`FactOf` and a `RecordOf`: `build_document` makes `Fact` and `Record` objects, the chunk's audit
snapshot (`service.evaluation.columns.ChunkRows.snapshot`) makes the snapshot's plain JSON data
straight away, and builds the year-independent parts once for every fact year."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import date
from operator import attrgetter
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine
from sqlmodel import col

from enterprise_registry import derived
from enterprise_registry.kinds import KINDS, KindSpec
from enterprise_registry.models import (
    CreditListing,
    Enterprise,
    Hire,
    Qualification,
    SocialInsuranceYear,
    TaxYear,
    table_for,
)
from rules.facts import Fact, FactsDocument, Record

DERIVED = "derived"

F = TypeVar("F")
R = TypeVar("R")
# One fact from its value, the department holding it and the date it is true for (`Fact`).
FactOf = Callable[[Any, str, date | None], F]
# One record from its ref, its fields, its department and as-of date (`Record`).
RecordOf = Callable[[str, dict[str, Any], str, date | None], R]


class EnterpriseRows:
    """Every stored row of one enterprise."""

    def __init__(self, uscc: str) -> None:
        self.uscc = uscc
        self.enterprise: Any = None
        self.tax: dict[int, Any] = {}
        self.si: dict[int, Any] = {}
        self.hires: list[Any] = []
        self.qualifications: list[Any] = []
        self.credit_listings: list[Any] = []
        self.counting_hires: set[derived.HireKey] = set()


def build_document(rows: EnterpriseRows, fact_year: int) -> FactsDocument:
    """The facts document of one enterprise for one fact year, derived facts included."""
    facts, missing = registry_facts(rows.enterprise, Fact)
    add_yearly_facts(rows.enterprise, rows.tax.get(fact_year), rows.si.get(fact_year), fact_year, Fact, facts, missing)
    return FactsDocument(rows.uscc, fact_year, facts, collections_of(rows, Record), missing)


class _KindFacts:
    """The fact fields of a kind, the names its facts take (`<group>.<field>`), and a getter of
    all of a row's values at once (one C call)."""

    def __init__(self, spec: KindSpec) -> None:
        self.kind, self.group = spec.kind, spec.group
        self.fields = spec.fact_fields
        self.names = tuple(f"{spec.group}.{name}" for name in spec.fact_fields)
        getter = attrgetter(*spec.fact_fields)
        # attrgetter of several names gives a tuple, of one the value itself
        self.values: Callable[[Any], tuple[Any, ...]] = getter if len(self.fields) > 1 else lambda row: (getter(row),)


_ENTERPRISE = _KindFacts(KINDS["enterprise"])
_TAX = _KindFacts(KINDS["tax_year"])
_SI = _KindFacts(KINDS["social_insurance_year"])
_HIRE = _KindFacts(KINDS["hire"])
_QUALIFICATION = _KindFacts(KINDS["qualification"])
_CREDIT = _KindFacts(KINDS["credit_listing"])


def registry_facts(ent: Any, fact: FactOf[F]) -> tuple[dict[str, F], dict[str, str]]:
    """The facts of the registry row `ent` (None: there is none) and what is missing of them:
    the same for every fact year."""
    if ent is None:
        return {}, {"enterprise": "no registry (market_regulation) record"}
    source, as_of = ent.source, ent.as_of
    facts = {name: fact(value, source, as_of) for name, value in zip(_ENTERPRISE.names, _ENTERPRISE.values(ent))}
    facts["enterprise.industry_section"] = fact(derived.industry_section(ent.industry_code), DERIVED, as_of)
    facts["enterprise.has_bank_account"] = fact(derived.has_bank_account(ent.bank_account_no), source, as_of)
    return facts, {}


def add_yearly_facts(
    ent: Any, tax: Any, si: Any, year: int, fact: FactOf[F], facts: dict[str, F], missing: dict[str, str]
) -> None:
    """Add the facts of fact year `year` to `facts`, and what is missing of them to `missing`:
    from the registry row and that year's tax and social-insurance rows (None: there is none)."""
    tax = _yearly(tax, year, _TAX, fact, facts, missing)
    si = _yearly(si, year, _SI, fact, facts, missing)
    _size_class(ent, tax, si, fact, facts, missing)


def collections_of(rows: EnterpriseRows, record: RecordOf[R]) -> dict[str, list[R]]:
    """The enterprise's hires, qualifications and credit listings, each in the order of its rows:
    the same for every fact year."""
    counting = rows.counting_hires
    return {
        "hires": [_hire_record(h, counting, record) for h in rows.hires],
        "qualifications": [_record(_QUALIFICATION, q.certificate_no, q, record) for q in rows.qualifications],
        "credit_listings": [_record(_CREDIT, f"{c.list}@{c.listed_on}", c, record) for c in rows.credit_listings],
    }


def _yearly(
    row: Any, year: int, kind: _KindFacts, fact: FactOf[F], facts: dict[str, F], missing: dict[str, str]
) -> Any:
    """The row's facts (None when there is no row or it is stale: the whole group is missing)."""
    if row is None:
        missing[kind.group] = f"no {kind.kind} record for {year}"
        return None
    source, as_of = row.source, row.as_of
    if not derived.yearly_record_is_final(year, as_of):
        missing[kind.group] = f"stale: the {kind.kind} record for {year} is as of {as_of}, before the year ended"
        return None
    for name, field, value in zip(kind.names, kind.fields, kind.values(row)):
        if value is None:
            missing[name] = f"{kind.kind} {year} has no {field}"
        else:
            facts[name] = fact(value, source, as_of)
    return row


def _size_class(ent: Any, tax: Any, si: Any, fact: FactOf[F], facts: dict[str, F], missing: dict[str, str]) -> None:
    recorded = si.size_class if si is not None else None
    if ent is None:
        missing["derived.size_class"] = "no registry record to classify"
        return
    result = derived.size_class(
        recorded,
        ent.industry_code,
        employees=tax.employees if tax is not None else None,
        revenue_fen=tax.revenue_fen if tax is not None else None,
        main_business_revenue_fen=tax.main_business_revenue_fen if tax is not None else None,
        total_assets_fen=tax.total_assets_fen if tax is not None else None,
    )
    if result is None:
        missing["derived.size_class"] = (
            "no size class recorded by social insurance, and the SME "
            "standard cannot be applied (industry not covered or "
            "tax figures missing)"
        )
        return
    source_row = si if result.basis == derived.SIZE_CLASS_RECORDED else tax
    as_of = source_row.as_of if source_row is not None else None
    source = source_row.source if result.basis == derived.SIZE_CLASS_RECORDED else DERIVED
    facts["derived.size_class"] = fact(result.size_class, source, as_of)
    facts["derived.size_class_basis"] = fact(result.basis, DERIVED, as_of)


def _record(kind: _KindFacts, key: str, row: Any, record: RecordOf[R]) -> R:
    return record(f"{kind.kind}:{key}", dict(zip(kind.fields, kind.values(row))), row.source, row.as_of)


def _hire_record(row: Any, counting: set[derived.HireKey], record: RecordOf[R]) -> R:
    fields = dict(zip(_HIRE.fields, _HIRE.values(row)))
    fields["counts_for_enterprise"] = derived.HireKey(row.uscc, row.person_ref, row.year, row.hired_on) in counting
    return record(f"hire:{row.person_ref}@{row.hired_on}", fields, row.source, row.as_of)


class DocumentSource:
    """Reads enterprises' rows from the registry database and builds their documents."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def document(self, uscc: str, fact_year: int) -> FactsDocument | None:
        """One enterprise's document, or None when nothing at all is on record for it."""
        rows = self.rows(uscc)
        return None if rows is None else build_document(rows, fact_year)

    def rows(self, uscc: str) -> EnterpriseRows | None:
        """One enterprise's rows (read once, for documents of several fact years), or None when
        nothing at all is on record for it."""
        with self.engine.connect() as conn:
            rows = load_rows(conn, [uscc])[uscc]
        return rows if _on_record(rows) else None

    def all_rows(self, chunk_size: int = 2000) -> Iterator[EnterpriseRows]:
        """Every registered enterprise's rows, ordered by USCC, loaded a chunk at a time."""
        last = ""
        while chunk := self.rows_after(last, chunk_size):
            yield from chunk
            last = chunk[-1].uscc

    def rows_after(self, last: str, limit: int) -> list[EnterpriseRows]:
        """The rows of the next `limit` registered enterprises after USCC `last`, in USCC order."""
        with self.engine.connect() as conn:
            usccs = list(
                conn.execute(
                    select(col(Enterprise.uscc))
                    .where(col(Enterprise.uscc) > last)
                    .order_by(Enterprise.uscc)
                    .limit(limit)
                ).scalars()
            )
            loaded = load_rows(conn, usccs) if usccs else {}
        return [loaded[uscc] for uscc in usccs]

    def rows_of(self, usccs: list[str]) -> list[EnterpriseRows]:
        """The rows of the given enterprises, in the given order."""
        with self.engine.connect() as conn:
            loaded = load_rows(conn, usccs) if usccs else {}
        return [loaded[uscc] for uscc in usccs]

    def count(self) -> int:
        from sqlalchemy import func

        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(Enterprise)).scalar_one())


def _on_record(rows: EnterpriseRows) -> bool:
    return rows.enterprise is not None or bool(
        rows.tax or rows.si or rows.hires or rows.qualifications or rows.credit_listings
    )


def load_rows(conn: Connection, usccs: list[str]) -> dict[str, EnterpriseRows]:
    out = {uscc: EnterpriseRows(uscc) for uscc in usccs}
    for ent in _rows(conn, Enterprise, usccs):
        out[ent.uscc].enterprise = ent
    for tax in _rows(conn, TaxYear, usccs):
        out[tax.uscc].tax[tax.year] = tax
    for si in _rows(conn, SocialInsuranceYear, usccs):
        out[si.uscc].si[si.year] = si
    hires = list(_rows(conn, Hire, usccs))
    for hire in hires:
        out[hire.uscc].hires.append(hire)
    for q in _rows(conn, Qualification, usccs):
        out[q.uscc].qualifications.append(q)
    for c in _rows(conn, CreditListing, usccs):
        out[c.uscc].credit_listings.append(c)
    counting = _counting_hires(conn, hires)
    for rows in out.values():
        rows.counting_hires = counting
    return out


def _rows(conn: Connection, model: Any, usccs: list[str]) -> Sequence[Any]:
    # In key order: a document (and so its snapshot's hash) must not depend on the database's
    # row order (PostgreSQL returns a heap's order, which an upsert changes).
    table = model.__table__
    key = next(spec.key for spec in KINDS.values() if table_for(spec.kind) is table)
    return conn.execute(select(table).where(table.c.uscc.in_(usccs)).order_by(*(table.c[name] for name in key))).all()


def _counting_hires(conn: Connection, hires: list[Any]) -> set[derived.HireKey]:
    """Which of these hires count, judged against every enterprise that reported the same
    persons in the same years (not only the enterprises of this chunk)."""
    persons = sorted({h.person_ref for h in hires})
    everyone: list[derived.HireKey] = []
    for start in range(0, len(persons), 5000):
        part = persons[start : start + 5000]
        hire = table_for("hire")
        for row in conn.execute(
            select(hire.c.uscc, hire.c.person_ref, hire.c.year, hire.c.hired_on).where(hire.c.person_ref.in_(part))
        ):
            everyone.append(derived.HireKey(row.uscc, row.person_ref, row.year, row.hired_on))
    return derived.counting_hires(everyone)
