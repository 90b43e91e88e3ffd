"""Builds facts documents (what the rules read) from the registry's tables, one enterprise at a
time or streamed in chunks for a whole period."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from enterprise_registry import derived
from enterprise_registry.kinds import KINDS
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
# What policies read of each kind: its fact fields (`enterprise_registry.kinds`).
_ENTERPRISE_FIELDS = KINDS["enterprise"].fact_fields
_TAX_FIELDS = KINDS["tax_year"].fact_fields
_SI_FIELDS = KINDS["social_insurance_year"].fact_fields
_HIRE_FIELDS = KINDS["hire"].fact_fields
_QUALIFICATION_FIELDS = KINDS["qualification"].fact_fields
_CREDIT_FIELDS = KINDS["credit_listing"].fact_fields


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
    facts: dict[str, Fact] = {}
    missing: dict[str, str] = {}
    ent = rows.enterprise
    if ent is None:
        missing["enterprise"] = "no registry (market_regulation) record"
    else:
        for name in _ENTERPRISE_FIELDS:
            facts[f"enterprise.{name}"] = Fact(getattr(ent, name), ent.source, ent.as_of)
        facts["enterprise.industry_section"] = Fact(derived.industry_section(ent.industry_code),
                                                    DERIVED, ent.as_of)
        facts["enterprise.has_bank_account"] = Fact(derived.has_bank_account(ent.bank_account_no),
                                                    ent.source, ent.as_of)
    tax = _yearly(rows.tax.get(fact_year), "tax", "tax_year", fact_year, _TAX_FIELDS, facts, missing)
    si = _yearly(rows.si.get(fact_year), "si", "social_insurance_year", fact_year, _SI_FIELDS,
                 facts, missing)
    _size_class(ent, tax, si, facts, missing)
    hires = [_hire_record(h, rows.counting_hires) for h in rows.hires]
    qualifications = [_record("qualification", q.certificate_no, q, _QUALIFICATION_FIELDS)
                      for q in rows.qualifications]
    listings = [_record("credit_listing", f"{c.list}@{c.listed_on}", c, _CREDIT_FIELDS)
                for c in rows.credit_listings]
    return FactsDocument(rows.uscc, fact_year, facts,
                         {"hires": hires, "qualifications": qualifications,
                          "credit_listings": listings}, missing)


def _yearly(row: Any, prefix: str, kind: str, year: int, fields: Sequence[str],
            facts: dict[str, Fact], missing: dict[str, str]) -> Any:
    if row is None:
        missing[prefix] = f"no {kind} record for {year}"
        return None
    if not derived.yearly_record_is_final(year, row.as_of):
        missing[prefix] = (f"stale: the {kind} record for {year} is as of {row.as_of}, "
                           "before the year ended")
        return None
    for name in fields:
        value = getattr(row, name)
        if value is None:
            missing[f"{prefix}.{name}"] = f"{kind} {year} has no {name}"
        else:
            facts[f"{prefix}.{name}"] = Fact(value, row.source, row.as_of)
    return row


def _size_class(ent: Any, tax: Any, si: Any, facts: dict[str, Fact],
                missing: dict[str, str]) -> None:
    recorded = si.size_class if si is not None else None
    if ent is None:
        missing["derived.size_class"] = "no registry record to classify"
        return
    result = derived.size_class(
        recorded, ent.industry_code,
        employees=tax.employees if tax is not None else None,
        revenue_fen=tax.revenue_fen if tax is not None else None,
        main_business_revenue_fen=tax.main_business_revenue_fen if tax is not None else None,
        total_assets_fen=tax.total_assets_fen if tax is not None else None)
    if result is None:
        missing["derived.size_class"] = ("no size class recorded by social insurance, and the SME "
                                         "standard cannot be applied (industry not covered or "
                                         "tax figures missing)")
        return
    source_row = si if result.basis == derived.SIZE_CLASS_RECORDED else tax
    as_of = source_row.as_of if source_row is not None else None
    source = source_row.source if result.basis == derived.SIZE_CLASS_RECORDED else DERIVED
    facts["derived.size_class"] = Fact(result.size_class, source, as_of)
    facts["derived.size_class_basis"] = Fact(result.basis, DERIVED, as_of)


def _record(kind: str, key: str, row: Any, fields: Sequence[str],
            extra: dict[str, Any] | None = None) -> Record:
    values = {name: getattr(row, name) for name in fields}
    values.update(extra or {})
    return Record(f"{kind}:{key}", values, row.source, row.as_of)


def _hire_record(row: Any, counting: set[derived.HireKey]) -> Record:
    key = derived.HireKey(row.uscc, row.person_ref, row.year, row.hired_on)
    return _record("hire", f"{row.person_ref}@{row.hired_on}", row, _HIRE_FIELDS,
                   {"counts_for_enterprise": key in counting})


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

    def exists(self, uscc: str) -> bool:
        """Whether anything at all is on record for the USCC."""
        return self.rows(uscc) is not None

    def all_rows(self, chunk_size: int = 2000) -> Iterator[EnterpriseRows]:
        """Every registered enterprise's rows, ordered by USCC, loaded a chunk at a time."""
        last = ""
        while chunk := self.rows_after(last, chunk_size):
            yield from chunk
            last = chunk[-1].uscc

    def rows_after(self, last: str, limit: int) -> list[EnterpriseRows]:
        """The rows of the next `limit` registered enterprises after USCC `last`, in USCC order."""
        with self.engine.connect() as conn:
            usccs = list(conn.execute(select(Enterprise.uscc).where(Enterprise.uscc > last)
                                      .order_by(Enterprise.uscc).limit(limit)).scalars())
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
    return rows.enterprise is not None or bool(rows.tax or rows.si or rows.hires or
                                               rows.qualifications or rows.credit_listings)


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
    return conn.execute(select(table).where(table.c.uscc.in_(usccs))
                        .order_by(*(table.c[name] for name in key))).all()


def _counting_hires(conn: Connection, hires: list[Any]) -> set[derived.HireKey]:
    """Which of these hires count, judged against every enterprise that reported the same
    persons in the same years (not only the enterprises of this chunk)."""
    persons = sorted({h.person_ref for h in hires})
    everyone: list[derived.HireKey] = []
    for start in range(0, len(persons), 5000):
        part = persons[start:start + 5000]
        for row in conn.execute(select(Hire.__table__.c.uscc, Hire.__table__.c.person_ref,
                                       Hire.__table__.c.year, Hire.__table__.c.hired_on)
                                .where(Hire.__table__.c.person_ref.in_(part))):
            everyone.append(derived.HireKey(row.uscc, row.person_ref, row.year, row.hired_on))
    return derived.counting_hires(everyone)
