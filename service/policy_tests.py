"""Runs the test cases that sit beside each policy (`<id>.test.yaml`).

Each case's facts go through the same path as production data: validated by the importer into
a private in-memory SQLite registry, turned into a facts document with derived facts, and
evaluated by the engine with its cross-check.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy.pool import StaticPool

from enterprise_registry import uscc as uscc_codes
from enterprise_registry.db import create_schema, make_engine
from enterprise_registry.errors import ImportRejectedError
from enterprise_registry.importer import load_records
from enterprise_registry.kinds import KINDS
from rules.evaluator import Evaluation, evaluate
from rules.loader import LoadedPolicy, PolicySet
from rules.schema import PolicyTestCase, validate_test_cases
from rules.values import Truth
from rules.yaml_source import load
from service.facts_documents import DocumentSource

# A synthetic code (never a real company's) used when a case does not name its enterprise.
DEFAULT_USCC = uscc_codes.make("91420600MA4K00001")
# A case's record without a source is taken to come from the kind's (last named) department.
_SOURCE_BY_KIND = {kind: spec.sources[-1] for kind, spec in KINDS.items()}


@dataclass(frozen=True)
class CaseResult:
    policy_id: str
    name: str
    problems: list[str]
    evaluation: Evaluation | None

    @property
    def passed(self) -> bool:
        return not self.problems


def load_cases(policy: LoadedPolicy) -> list[PolicyTestCase]:
    if policy.test_file is None:
        return []
    return validate_test_cases(load(Path(policy.test_file).read_text(encoding="utf-8"), policy.test_file))


def run_case(policy: LoadedPolicy, case: PolicyTestCase) -> CaseResult:
    """Evaluate one case and compare it with what it expects."""
    enterprise = case.uscc or DEFAULT_USCC
    engine = make_engine("sqlite://", poolclass=StaticPool)
    try:
        create_schema(engine)
        records = [_with_defaults(r, enterprise, case.as_of) for r in case.facts]
        try:
            load_records(records, engine, origin=f"{policy.test_file} [{case.name}]")
        except ImportRejectedError as exc:
            return CaseResult(policy.id, case.name, [f"facts refused: {exc}"], None)
        if not policy.covers(case.period):
            return CaseResult(policy.id, case.name, [f"policy not in force for {case.period}"], None)
        document = DocumentSource(engine).document(enterprise, policy.fact_year(case.period))
        if document is None:
            return CaseResult(policy.id, case.name, [f"no facts for {enterprise}"], None)
        result = evaluate(policy.compiled(case.period), document, today=case.as_of)
    finally:
        engine.dispose()
    return CaseResult(policy.id, case.name, _compare(case, result), result)


def run_policy_tests(policies: PolicySet) -> Iterator[CaseResult]:
    for policy in policies:
        for case in load_cases(policy):
            yield run_case(policy, case)


def _with_defaults(record: dict[str, Any], enterprise: str, as_of: date) -> dict[str, Any]:
    out = {key: (value.isoformat() if isinstance(value, date) else value) for key, value in record.items()}
    account = out.get("bank_account")
    if isinstance(account, dict):
        out["bank_account"] = dict(account)
    out.setdefault("uscc", enterprise)
    kind = out.get("kind")
    if isinstance(kind, str) and kind in _SOURCE_BY_KIND:
        out.setdefault("source", _SOURCE_BY_KIND[kind])
    out.setdefault("as_of", as_of.isoformat())
    return out


def _compare(case: PolicyTestCase, result: Evaluation) -> list[str]:
    expect = case.expect
    problems = []
    if result.outcome != expect.outcome:
        problems.append(f"outcome {result.outcome}, expected {expect.outcome}" + _why(result))
    if expect.amount_fen is not None and result.amount_fen != expect.amount_fen:
        problems.append(f"amount_fen {result.amount_fen}, expected {expect.amount_fen}")
    results = {c.id: c.result for c in [*result.conditions, *result.payable]}
    for clause_id, wanted in (expect.conditions or {}).items():
        if clause_id not in results:
            problems.append(f"no clause {clause_id!r} in the policy")
        elif results[clause_id] != wanted:
            problems.append(f"clause {clause_id} is {results[clause_id]}, expected {wanted}")
    if expect.missing is not None and sorted(result.missing) != sorted(expect.missing):
        problems.append(f"missing {result.missing}, expected {expect.missing}")
    if expect.held is not None and sorted(result.held) != sorted(expect.held):
        problems.append(f"held {result.held}, expected {expect.held}")
    return problems


def _why(result: Evaluation) -> str:
    failed = [c.id for c in result.conditions if c.result != Truth.TRUE]
    extra = f"; not true: {failed}" if failed else ""
    if result.missing:
        extra += f"; missing: {result.missing}"
    if result.held:
        extra += f"; held: {result.held}"
    return extra
