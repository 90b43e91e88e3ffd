"""The registry read straight into columns (`service.evaluation.columns`) gives what the facts
documents give (`from_documents(build_document(...))`), field by field, on SQLite and PostgreSQL:
over a synthetic registry for every fact year 2021..2025, and over hand-made rows at the edges
(`edge_registry`: a stale yearly record, an enterprise with nothing but its registry row, one person
hired by two enterprises, NULL fields, rows of one kind only; and a chunk of one, USCCs out of
order, more USCCs than one IN list)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import date
from typing import Any

import numpy as np
import pytest
from sqlalchemy.engine import Engine
from testkit.edge_registry import (
    BARE,
    CHUNK,
    EDGE_ROWS,
    EDGES,
    FACT_YEARS,
    HIRER_A,
    HIRER_B,
    NOWHERE,
    NULLS,
    ORPHAN,
    REGISTRY_SIZE,
    STALE,
    TAX_ONLY,
    reference_rows,
    registry,
)

from enterprise_registry.kinds import KINDS
from rules.columns import Column, FactColumns, RecordColumns, from_documents
from rules.facts import FactsDocument
from service.audit.records import document_to_json
from service.catalogue import CATALOGUE
from service.evaluation import columns as reader
from service.evaluation.columns import ColumnSource, read_chunk, read_columns
from service.facts_documents import DocumentSource, EnterpriseRows, build_document
from service.payouts.tables import IN_LIST_SIZE

__all__ = ["reference_rows", "registry"]  # fixtures (tests/testkit/edge_registry.py)


def _expected(reference_rows: dict[str, EnterpriseRows], usccs: Sequence[str], year: int) -> FactColumns:
    return from_documents([build_document(reference_rows[u], year) for u in usccs], CATALOGUE)


def _by_owner_and_ref(records: RecordColumns) -> np.ndarray:
    """Records ordered by enterprise, then ref: documents come in the database's order."""
    return np.lexsort((np.asarray(records.refs, dtype=object), records.owner))


def _assert_column(actual: Column, expected: Column, what: str) -> None:
    assert actual.values.dtype == expected.values.dtype, what
    assert np.array_equal(actual.known, expected.known), what
    assert np.array_equal(actual.values, expected.values), what  # placeholders included


def assert_same_columns(actual: FactColumns, expected: FactColumns) -> None:
    assert list(actual.usccs) == list(expected.usccs)
    assert actual.fact_year == expected.fact_year
    assert list(actual.facts) == list(expected.facts)
    for name, column in expected.facts.items():
        _assert_column(actual.facts[name], column, f"{expected.fact_year} {name}")
    assert list(actual.collections) == list(expected.collections)
    for name, records in expected.collections.items():
        got = actual.collections[name]
        assert list(got.fields) == list(records.fields), name
        mine, theirs = _by_owner_and_ref(got), _by_owner_and_ref(records)
        assert np.array_equal(got.owner[mine], records.owner[theirs]), name
        assert np.all(np.diff(got.owner) >= 0), name
        assert [got.refs[i] for i in mine] == [records.refs[i] for i in theirs], name
        for field, column in records.fields.items():
            _assert_column(
                Column(got.fields[field].values[mine], got.fields[field].known[mine]),
                Column(column.values[theirs], column.known[theirs]),
                f"{name}.{field}",
            )


def _key_ordered(columns: FactColumns) -> None:
    """Within each enterprise, the columns' records follow their kind's key."""
    for spec in KINDS.values():
        if not spec.collection:
            continue
        records = columns.collections[spec.group]
        key = [records.fields[name].values for name in spec.key if name != "uscc"]
        rows = list(zip(records.owner.tolist(), *(k.tolist() for k in key)))
        assert rows == sorted(rows), spec.group


def test_synthetic_registry_every_fact_year(registry: Engine, reference_rows: dict[str, EnterpriseRows]) -> None:
    source = ColumnSource(registry)
    cursor, seen = "", 0
    while usccs := source.chunk_after(cursor, CHUNK):
        got = source.columns(usccs, FACT_YEARS)
        assert sorted(got) == list(FACT_YEARS)
        for year in FACT_YEARS:
            assert_same_columns(got[year], _expected(reference_rows, usccs, year))
            _key_ordered(got[year])
        cursor, seen = usccs[-1], seen + len(usccs)
    assert seen == REGISTRY_SIZE + len(EDGE_ROWS["enterprise"])


def test_chunks_are_those_of_the_documents(registry: Engine) -> None:
    documents, columns = DocumentSource(registry), ColumnSource(registry)
    for cursor in ("", "9142060", "EDGE00000000000002"):
        assert columns.chunk_after(cursor, 317) == [r.uscc for r in documents.rows_after(cursor, 317)]
    assert columns.chunk_after("EDGE99", 10) == []


def test_a_document_from_the_same_read(registry: Engine, reference_rows: dict[str, EnterpriseRows]) -> None:
    """Each enterprise's facts document (sources, as-of dates, missing reasons: the audit
    snapshot) is built from the chunk's rows, equal to the one read by DocumentSource."""
    usccs = ColumnSource(registry).chunk_after("", 700) + list(EDGES) + [NOWHERE]
    with registry.connect() as conn:
        chunk = read_chunk(conn, usccs)
    for uscc in usccs:
        for year in FACT_YEARS:
            mine = _canonical(document_to_json(chunk.document(uscc, year)))
            assert mine == _canonical(document_to_json(build_document(reference_rows[uscc], year))), (uscc, year)


def _canonical(document: dict[str, Any]) -> dict[str, Any]:
    for records in document["collections"].values():
        records.sort(key=lambda record: record["ref"])
    return document


def test_edge_rows(registry: Engine, reference_rows: dict[str, EnterpriseRows]) -> None:
    usccs = [*EDGES, NOWHERE]
    with registry.connect() as conn:
        got = read_columns(conn, usccs, FACT_YEARS)
    for year in FACT_YEARS:
        assert_same_columns(got[year], _expected(reference_rows, usccs, year))
    row = {uscc: index for index, uscc in enumerate(usccs)}
    y2024, y2025 = got[2024], got[2025]

    def known(columns: FactColumns, name: str, uscc: str) -> bool:
        return bool(columns.facts[name].known[row[uscc]])

    # a stale tax record: no tax fact at all that year, the final social-insurance record stands
    assert not any(known(y2024, f"tax.{name}", STALE) for name in KINDS["tax_year"].fact_fields)
    assert known(y2024, "si.insured_end", STALE) and y2024.facts["derived.size_class"].python(row[STALE]) == "medium"
    assert known(y2025, "tax.employees", STALE) and not known(y2025, "si.year", STALE)
    assert y2025.facts["derived.size_class_basis"].python(row[STALE]) == "sme_standard"
    # the registry row alone: enterprise facts, no bank account, nothing yearly, no size class
    assert known(y2024, "enterprise.name", BARE) and not y2024.facts["enterprise.has_bank_account"].python(row[BARE])
    assert not known(y2024, "tax.year", BARE) and not known(y2024, "derived.size_class", BARE)
    # NULL fields are not on record; the size class falls back on the SME standard
    assert known(y2024, "si.year", NULLS) and not known(y2024, "si.size_class", NULLS)
    assert y2024.facts["derived.size_class"].python(row[NULLS]) == "small"
    assert y2024.facts["derived.size_class_basis"].python(row[NULLS]) == "sme_standard"
    hires = y2024.collections["hires"]
    ages = {ref: hires.fields["age"].python(i) for i, ref in enumerate(hires.refs)}
    assert ages["hire:PX-NULLS@2024-07-01"] is None and ages["hire:PX-ORPHAN@2024-08-01"] == 23
    listings = y2024.collections["credit_listings"]
    removed = {ref: listings.fields["removed_on"].python(i) for i, ref in enumerate(listings.refs)}
    assert removed == {
        "credit_listing:abnormal_operation@2022-03-01": None,
        "credit_listing:wage_arrears@2021-01-05": date(2021, 9, 1).toordinal(),
        "credit_listing:zombie@2023-02-28": None,
    }  # LISTED_ONLY's, of no registered enterprise
    # a tax record alone: its facts, none of the registry, so no size class
    assert known(y2024, "tax.employees", TAX_ONLY) and not known(y2024, "enterprise.uscc", TAX_ONLY)
    assert not known(y2024, "derived.size_class", TAX_ONLY) and not known(y2025, "tax.employees", TAX_ONLY)
    # one person, two employers: the earlier hire counts, a tie goes to the lower USCC, years apart both
    counts = {
        (usccs[hires.owner[i]], ref): hires.fields["counts_for_enterprise"].python(i)
        for i, ref in enumerate(hires.refs)
    }
    assert counts[(HIRER_A, "hire:PX-SHARED@2024-03-01")] is False
    assert counts[(HIRER_B, "hire:PX-SHARED@2024-02-01")] is True
    assert counts[(HIRER_A, "hire:PX-TIE@2024-05-06")] is True
    assert counts[(HIRER_B, "hire:PX-TIE@2024-05-06")] is False
    assert counts[(HIRER_A, "hire:PX-YEARS@2023-09-01")] is True and counts[(HIRER_B, "hire:PX-YEARS@2024-01-02")]
    # the orphan's hire is there, its enterprise facts are not; nothing at all for NOWHERE
    assert not known(y2024, "enterprise.uscc", ORPHAN) and ORPHAN in {usccs[o] for o in hires.owner}
    assert not any(column.known[row[NOWHERE]] for column in y2024.facts.values())
    assert row[NOWHERE] not in set(hires.owner.tolist())


def test_the_hire_judged_against_enterprises_outside_the_chunk(
    registry: Engine, reference_rows: dict[str, EnterpriseRows]
) -> None:
    with registry.connect() as conn:
        got = read_columns(conn, [HIRER_A], [2024])[2024]
    assert_same_columns(got, _expected(reference_rows, [HIRER_A], 2024))
    hires = got.collections["hires"]
    counts = dict(zip(hires.refs, hires.fields["counts_for_enterprise"].values.tolist()))
    assert counts["hire:PX-SHARED@2024-03-01"] is False  # B, not in this chunk, hired earlier


def test_a_chunk_of_one(registry: Engine, reference_rows: dict[str, EnterpriseRows]) -> None:
    with registry.connect() as conn:
        for uscc in [*ColumnSource(registry).chunk_after("", 3), *EDGES, NOWHERE]:
            got = read_columns(conn, [uscc], [2024, 2025])
            for year in (2024, 2025):
                assert len(got[year]) == 1
                assert_same_columns(got[year], _expected(reference_rows, [uscc], year))


def test_usccs_out_of_order_and_more_than_one_in_list(
    registry: Engine, reference_rows: dict[str, EnterpriseRows], monkeypatch: pytest.MonkeyPatch
) -> None:
    usccs = ColumnSource(registry).chunk_after("", 2 * IN_LIST_SIZE + 37) + list(EDGES) + [NOWHERE]
    random.Random(5).shuffle(usccs)
    assert usccs != sorted(usccs)
    with registry.connect() as conn:
        got = read_columns(conn, usccs, [2023, 2025, 2023])
        assert sorted(got) == [2023, 2025]
        for year in (2023, 2025):
            assert_same_columns(got[year], _expected(reference_rows, usccs, year))
        # the IN lists every other database gets, a chunk of `in_lists` at a time
        monkeypatch.setattr(reader, "_ONE_PARAMETER", {})
        in_lists = read_columns(conn, usccs, [2025])[2025]
    assert_same_columns(in_lists, _expected(reference_rows, usccs, 2025))


def test_an_empty_chunk_and_a_repeated_uscc(registry: Engine) -> None:
    with registry.connect() as conn:
        empty = read_columns(conn, [], [2025])[2025]
        assert len(empty) == 0 and empty.fact_year == 2025
        assert set(empty.facts) == set(CATALOGUE.facts) and all(len(c) == 0 for c in empty.facts.values())
        assert all(len(r) == 0 for r in empty.collections.values())
        with pytest.raises(ValueError, match="twice"):
            read_columns(conn, [BARE, STALE, BARE], [2025])


def test_documents_compared_here_hold_records(reference_rows: dict[str, EnterpriseRows]) -> None:
    """The comparison above is not vacuous: the registry has stale, missing and NULL facts,
    hires that do and do not count, and every collection."""
    documents: list[FactsDocument] = [build_document(rows, 2024) for rows in reference_rows.values()]
    reasons = [reason for d in documents for reason in d.missing.values()]
    assert any(reason.startswith("stale:") for reason in reasons)
    assert any(reason.startswith("no tax_year record") for reason in reasons)
    assert all(any(d.collections[name] for d in documents) for name in CATALOGUE.collections)
    counted = {r.fields["counts_for_enterprise"] for d in documents for r in d.collections["hires"]}
    assert counted == {True, False}


def test_what_the_fact_years_share_is_read_only(registry: Engine) -> None:
    with registry.connect() as conn:
        got = read_columns(conn, [STALE, NULLS, HIRER_A], [2024, 2025])
    assert got[2024].collections["hires"] is got[2025].collections["hires"]
    assert got[2024].facts["enterprise.name"] is got[2025].facts["enterprise.name"]
    with pytest.raises(ValueError, match="read-only"):
        got[2024].collections["hires"].fields["age"].values[0] = 99
    with pytest.raises(ValueError, match="read-only"):
        got[2024].facts["enterprise.has_bank_account"].known[0] = False
    got[2024].facts["tax.employees"].values[0] = 1  # a fact year's own column is its own
    assert got[2025].facts["tax.employees"].values[0] != 1 or not got[2025].facts["tax.employees"].known[0]
