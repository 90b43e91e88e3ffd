"""The facts snapshot built straight from a chunk's rows (`ChunkRows.snapshot`, what `Chunk.snapshot`
stores with every evaluation record) is, byte for byte, the snapshot of the chunk's facts document
(`snapshot_of(ChunkRows.document(...))`) and of the document `DocumentSource` reads: for every
enterprise of a synthetic registry and every fact year 2021..2025, and for the edge rows of
`edge_registry`, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.engine import Engine
from testkit.edge_registry import (
    BARE,
    CHUNK,
    EDGE_ROWS,
    EDGES,
    FACT_YEARS,
    HIRER_A,
    LISTED_ONLY,
    NOWHERE,
    NULLS,
    ORPHAN,
    REGISTRY_SIZE,
    STALE,
    TAX_ONLY,
    reference_rows,
    registry,
)

from service.audit.facts_json import snapshot_of
from service.evaluation.chunks import read_chunk
from service.evaluation.columns import ChunkRows, ColumnSource
from service.facts_documents import EnterpriseRows, build_document

__all__ = ["reference_rows", "registry"]  # fixtures (tests/testkit/edge_registry.py)

# Each enterprise's years in an order that revisits one: a fact year's snapshot must not change
# what the next one (or the same one again) shares with it.
YEARS_IN_TURN = (*FACT_YEARS, *reversed(FACT_YEARS), 2024)


def _assert_identical(rows: ChunkRows, index: int, reference: dict[str, EnterpriseRows]) -> None:
    uscc = rows.usccs[index]
    for year in YEARS_IN_TURN:
        text, sha256 = rows.snapshot(index, year)
        assert (text, sha256) == snapshot_of(rows.document(uscc, year)), (uscc, year)
        assert (text, sha256) == snapshot_of(build_document(reference[uscc], year)), (uscc, year)


def test_every_enterprise_and_fact_year_of_the_synthetic_registry(
    registry: Engine, reference_rows: dict[str, EnterpriseRows]
) -> None:
    source = ColumnSource(registry)
    cursor, seen = "", 0
    while usccs := source.chunk_after(cursor, CHUNK):
        rows = source.chunk(usccs)
        for index in range(len(rows)):
            _assert_identical(rows, index, reference_rows)
        cursor, seen = usccs[-1], seen + len(usccs)
    assert seen == REGISTRY_SIZE + len(EDGE_ROWS["enterprise"])


def test_the_edge_rows(registry: Engine, reference_rows: dict[str, EnterpriseRows]) -> None:
    usccs = [*EDGES, NOWHERE]
    rows = ColumnSource(registry).chunk(usccs)
    for index in range(len(rows)):
        _assert_identical(rows, index, reference_rows)

    def snapshot(uscc: str, year: int) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(rows.snapshot(usccs.index(uscc), year)[0])
        return data

    # what the comparison above went through: each edge is in its snapshot
    stale = snapshot(STALE, 2024)
    assert stale["missing"]["tax"].startswith("stale: the tax_year record for 2024 is as of 2024-06-30")
    assert stale["facts"]["derived.size_class"] == {
        "value": "medium",
        "source": "human_resources",
        "as_of": "2025-01-31",
    }
    bare = snapshot(BARE, 2024)
    assert bare["facts"]["enterprise.has_bank_account"]["value"] is False
    assert bare["collections"] == {"credit_listings": [], "hires": [], "qualifications": []}
    assert set(bare["missing"]) == {"tax", "si", "derived.size_class"}
    nulls = snapshot(NULLS, 2024)
    assert nulls["missing"]["si.size_class"] == "social_insurance_year 2024 has no size_class"
    assert nulls["facts"]["derived.size_class_basis"]["value"] == "sme_standard"
    hire = next(h for h in nulls["collections"]["hires"] if h["ref"] == "hire:PX-NULLS@2024-07-01")
    assert hire["fields"]["age"] is None and hire["fields"]["hired_on"] == "2024-07-01"
    counts = {h["ref"]: h["fields"]["counts_for_enterprise"] for h in snapshot(HIRER_A, 2025)["collections"]["hires"]}
    assert counts == {
        "hire:PX-SHARED@2024-03-01": False,
        "hire:PX-TIE@2024-05-06": True,
        "hire:PX-YEARS@2023-09-01": True,
    }
    for uscc in (ORPHAN, TAX_ONLY, LISTED_ONLY, NOWHERE):
        assert snapshot(uscc, 2024)["missing"]["enterprise"] == "no registry (market_regulation) record", uscc
    assert snapshot(TAX_ONLY, 2024)["facts"]["tax.employees"]["value"] == 50
    assert snapshot(TAX_ONLY, 2025)["facts"] == {}
    assert [r["ref"] for r in snapshot(LISTED_ONLY, 2021)["collections"]["credit_listings"]] == [
        "credit_listing:zombie@2023-02-28"
    ]
    assert snapshot(ORPHAN, 2024)["collections"]["hires"][0]["ref"] == "hire:PX-ORPHAN@2024-08-01"
    nowhere = snapshot(NOWHERE, 2024)
    assert nowhere["facts"] == {} and not any(nowhere["collections"].values())


def test_a_chunk_stores_the_fast_snapshot(registry: Engine, reference_rows: dict[str, EnterpriseRows]) -> None:
    """`Chunk.snapshot` (what the batches and lookups record) is the rows' snapshot, made once per
    enterprise and fact year."""
    usccs = [*ColumnSource(registry).chunk_after("", 50), *EDGES]
    with registry.connect() as conn:
        chunk = read_chunk(conn, usccs, [2024, 2025])
    for row, uscc in enumerate(usccs):
        for year in (2024, 2025):
            made = chunk.snapshot(row, year)
            assert made == chunk.rows.snapshot(row, year)
            assert made == snapshot_of(build_document(reference_rows[uscc], year))
            assert chunk.snapshot(row, year) is made
