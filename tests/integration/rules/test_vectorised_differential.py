"""Differential test of the vectorised trace over the synthetic registry: every reference policy,
every period it covers that the data is made for (and the first after), every enterprise, every
clause, outcome and amount equal to `rules.evaluator.evaluate` on the same facts documents.

The short form (3,000 enterprises) runs with the suite; the long form (100,000) is marked slow.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from testkit.paths import POLICIES_DIR

from enterprise_registry.db import create_schema, make_engine
from enterprise_registry.importer import load_records
from enterprise_registry.synthetic import PERIOD_YEARS, generate
from rules.columns import from_documents
from rules.evaluator import evaluate
from rules.loader import LoadedPolicy, PolicySet, load_policy_dir
from rules.vectorised import FALSE, TRUE, UNKNOWN
from service.catalogue import CATALOGUE
from service.facts_documents import DocumentSource, EnterpriseRows, build_document

TODAY = date(2025, 6, 1)
CHUNK = 2000
CODES = {"false": FALSE, "true": TRUE, "unknown": UNKNOWN}


def registry_rows(folder: Path, count: int, seed: int) -> list[EnterpriseRows]:
    """The synthetic registry loaded into SQLite and read back as the service reads it."""
    engine = make_engine(f"sqlite:///{folder / 'registry.db'}")
    try:
        create_schema(engine)
        load_records(generate(count, seed), engine)
        return list(DocumentSource(engine).all_rows())
    finally:
        engine.dispose()


def periods(policy: LoadedPolicy) -> list[int]:
    """The periods the file names, those the synthetic data is made for, and the year after."""
    years = set(policy.model.effective.listed()) | set(PERIOD_YEARS) | {max(PERIOD_YEARS) + 1}
    return sorted(year for year in years if policy.covers(year))


def differences(policies: PolicySet, rows: list[EnterpriseRows]) -> Iterator[str]:
    """Every (policy, period, enterprise) where the vectorised trace and evaluate differ."""
    for policy in policies:
        for period in periods(policy):
            compiled = policy.compiled(period)
            assert compiled.vectorised is not None
            documents = [build_document(r, policy.fact_year(period)) for r in rows]
            outcomes: set[str] = set()
            for start in range(0, len(documents), CHUNK):
                chunk = documents[start : start + CHUNK]
                trace = compiled.vectorised.run(from_documents(chunk, CATALOGUE), today=TODAY)
                assert not trace.engine_error.any() and not trace.failed.any()
                for row, doc in enumerate(chunk):
                    result = evaluate(compiled, doc, today=TODAY)
                    outcomes.add(result.outcome)
                    want = (
                        [CODES[c.result] for c in result.conditions],
                        [CODES[c.result] for c in result.payable],
                        result.outcome,
                        result.amount_fen,
                    )
                    got = (
                        list(trace.conditions[row]),
                        list(trace.payable[row]),
                        trace.outcome_name(row),
                        int(trace.amount_fen[row]),
                    )
                    if got != want:
                        yield f"{policy.id} {period} {doc.uscc}: vectorised {got}, evaluate {want}"
            assert outcomes, (policy.id, period)


def check(tmp_path: Path, count: int, seed: int) -> None:
    rows = registry_rows(tmp_path, count, seed)
    assert len(rows) == count
    policies = load_policy_dir(POLICIES_DIR, CATALOGUE, require_tests=False)
    # named definitions are among what is compared: the pack uses them in clauses and amounts
    assert {p.id for p in policies if p.definitions} >= {"job-expansion-subsidy", "stable-jobs-refund"}
    found = []
    for difference in differences(policies, rows):
        found.append(difference)
        if len(found) >= 20:
            break
    assert found == []


def test_vectorised_trace_equals_evaluate_over_3000_synthetic_enterprises(tmp_path: Path) -> None:
    check(tmp_path, 3000, 20250601)


@pytest.mark.slow
def test_vectorised_trace_equals_evaluate_over_100000_synthetic_enterprises(tmp_path: Path) -> None:
    check(tmp_path, 100_000, 7)
