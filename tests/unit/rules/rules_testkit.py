"""Helpers shared by the rules unit tests: policy text, facts documents, loading from tmp_path.

Not a test module (pytest collects only test_*.py); the test modules import it by name, which works
because pytest puts this folder on sys.path (the folder has no __init__.py on purpose: a package
here would be named `rules` and shadow the real one).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from datetime import date
from functools import cache
from pathlib import Path
from typing import Required, TypedDict

from rules.facts import Fact, FactsDocument, FactValue, Record
from rules.loader import CompiledPolicy, LoadedPolicy, PolicySet, load_policy_dir, load_policy_file
from service.catalogue import CATALOGUE

REPO_ROOT = Path(__file__).resolve().parents[3]
POLICIES_DIR = REPO_ROOT / "rules" / "policies"
STABLE_JOBS_FILE = POLICIES_DIR / "stable-jobs-refund.yaml"

TODAY = date(2025, 6, 1)
AS_OF = date(2025, 3, 31)
USCC = "91420600MA4K00001X"

_SOURCE_BY_GROUP = {"enterprise": "market_regulation", "si": "human_resources", "tax": "tax", "derived": "derived"}


def fact(name: str, value: FactValue, as_of: date | None = AS_OF) -> Fact:
    return Fact(value, _SOURCE_BY_GROUP.get(name.split(".", 1)[0], "market_regulation"), as_of)


def document(
    values: Mapping[str, FactValue | None],
    *,
    collections: Mapping[str, Sequence[Record]] | None = None,
    missing: Mapping[str, str] | None = None,
    uscc: str = USCC,
    fact_year: int = 2024,
) -> FactsDocument:
    """A facts document; a value of None means the fact is not on record."""
    facts = {name: fact(name, value) for name, value in values.items() if value is not None}
    return FactsDocument(uscc, fact_year, facts, dict(collections or {}), dict(missing or {}))


def record(ref: str, source: str = "credit", as_of: date | None = AS_OF, /, **fields: FactValue | None) -> Record:
    # positional-only: a record field may be named like them (a mapping of fields unpacked here)
    return Record(ref, fields, source, as_of)


class PolicyArgs(TypedDict, total=False):
    """The arguments of policy_yaml, for a policy kept as data: policy_yaml(**args)."""

    conditions: Required[Sequence[str]]
    amount: str
    parameters: str
    payable: Sequence[str]
    cap: str | None
    policy_id: str
    first_period: int
    last_period: int | None
    definitions: Mapping[str, str] | None
    rounding: str | None


def policy_yaml(
    conditions: Sequence[str],
    *,
    amount: str = "1000元",
    parameters: str = "",
    payable: Sequence[str] = (),
    cap: str | None = None,
    policy_id: str = "demo",
    first_period: int = 2025,
    last_period: int | None = 2025,
    definitions: Mapping[str, str] | None = None,
    rounding: str | None = None,
) -> str:
    """A minimal valid policy; every expression is written as a `|` block scalar
    (`definitions`: name -> expression, each with the text 名称<name>; `rounding` of the amount:
    the policy format's default when None)."""

    def clauses(exprs: Sequence[str], prefix: str) -> str:
        out = []
        for i, expr in enumerate(exprs):
            body = textwrap.indent(expr.strip("\n"), " " * 6)
            out.append(f"  - id: {prefix}{i}\n    text: 条件{i}\n    citation: 第{i}条\n    expr: |\n{body}\n")
        return "".join(out)

    last = f"  last_period: {last_period}\n" if last_period is not None else ""
    params = f"parameters:\n{textwrap.indent(parameters.strip(chr(10)), '  ')}\n" if parameters else ""
    pay = f"payable:\n{clauses(payable, 'p')}" if payable else ""
    cap_line = f"  cap: {cap}\n" if cap else ""
    named = "".join(
        f"  {name}:\n    text: 名称{name}\n    expr: |\n{textwrap.indent(expr.strip(chr(10)), ' ' * 6)}\n"
        for name, expr in (definitions or {}).items()
    )
    defs = f"definitions:\n{named}" if named else ""
    rounding_line = f"  rounding: {rounding}\n" if rounding is not None else ""
    return (
        f"id: {policy_id}\n"
        'version: "1"\n'
        "title: 演示政策\n"
        "authority: 演示局\n"
        "legal_basis:\n"
        "  - document: 演示〔2025〕1号\n"
        "    title: 演示文件\n"
        "apply_free: true\n"
        "funding: treasury\n"
        "effective:\n"
        f"  first_period: {first_period}\n"
        f"{last}"
        "fact_year: previous\n"
        f"{params}"
        f"{defs}"
        "conditions:\n"
        f"{clauses(conditions, 'c')}"
        f"{pay}"
        "amount:\n"
        "  text: 金额\n"
        f"{rounding_line}"
        "  formula: |\n"
        f"{textwrap.indent(amount.strip(chr(10)), '    ')}\n"
        f"{cap_line}"
    )


def write_policy(directory: Path, text: str, policy_id: str = "demo") -> Path:
    path = directory / f"{policy_id}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def load_text(directory: Path, text: str, policy_id: str = "demo") -> LoadedPolicy:
    return load_policy_file(write_policy(directory, text, policy_id), CATALOGUE, require_tests=False)


def compile_text(directory: Path, text: str, period: int = 2025) -> CompiledPolicy:
    return load_text(directory, text).compiled(period)


def position_of(text: str, needle: str, occurrence: int = 1) -> tuple[int, int]:
    """1-based (line, column) of the n-th occurrence of `needle` in `text`."""
    index = -1
    for _ in range(occurrence):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, column


@cache
def stable_jobs() -> LoadedPolicy:
    """The real stable-jobs-refund policy (loaded once per test process)."""
    return load_policy_file(STABLE_JOBS_FILE, CATALOGUE, require_tests=False)


@cache
def shipped_policies() -> PolicySet:
    """Every policy under rules/policies (loaded once per test process)."""
    return load_policy_dir(POLICIES_DIR, CATALOGUE, require_tests=False)


STABLE_BASE: dict[str, FactValue] = {
    "enterprise.status": "active",
    "enterprise.org_type": "enterprise",
    "enterprise.labor_dispatch": False,
    "enterprise.has_bank_account": True,
    "si.ui_months_paid": 12,
    "si.ui_arrears": False,
    "si.ui_benefit_claimants": 10,
    "si.insured_avg_monthly": 1000,
    "si.insured_start": 1000,
    "derived.size_class": "large",
    "si.ui_premium_paid_fen": 123_456_715,  # 1,234,567.15 元
    "si.ui_back_payment_fen": 0,
    "si.ui_late_fee_fen": 0,
}


def stable_document(
    overrides: Mapping[str, FactValue | None] | None = None,
    *,
    credit_listings: Sequence[Record] = (),
    missing: Mapping[str, str] | None = None,
    uscc: str = USCC,
) -> FactsDocument:
    """A document for stable-jobs-refund: by default a large enterprise that qualifies."""
    values: dict[str, FactValue | None] = {**STABLE_BASE, **(overrides or {})}
    return document(values, collections={"credit_listings": list(credit_listings)}, missing=missing, uscc=uscc)
