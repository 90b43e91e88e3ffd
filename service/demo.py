"""`make run` epilogue: explain one eligible and one not-eligible enterprise from the registry."""
from __future__ import annotations

import argparse
from datetime import date
from itertools import islice
from pathlib import Path
from typing import Any

from enterprise_registry.db import make_engine
from rules.evaluator import evaluate
from service.cli import DEFAULT_RULES, _policies
from service.explain import as_text
from service.facts_documents import DocumentSource, build_document


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--period", type=int, required=True)
    parser.add_argument("--policy", default="stable-jobs-refund")
    args = parser.parse_args()
    policy = _policies(DEFAULT_RULES).get(args.policy)
    compiled = policy.compiled(args.period)
    shown: set[str] = set()
    engine = make_engine(args.db)
    for rows in islice(DocumentSource(engine).all_rows(), 20000):
        if rows.enterprise is None or rows.enterprise.org_type != "enterprise":
            continue  # show companies, the common case
        result = evaluate(compiled, build_document(rows, policy.fact_year(args.period)),
                          today=date.today())
        if result.outcome in shown or result.outcome not in ("ELIGIBLE", "INELIGIBLE"):
            continue
        shown.add(result.outcome)
        print(f"$ benefits evaluate --db {args.db} --uscc {rows.uscc} --policy {policy.id} "
              f"--period {args.period}")
        print(as_text(result, policy.model.title))
        print()
        if len(shown) == 2:
            break
    engine.dispose()


if __name__ == "__main__":
    main()


def write_demo_auth(engine: object, out: Path) -> list[dict[str, Any]]:
    """An auth file with one demo principal per role; the enterprise is a registered company,
    the feed writes for every department."""
    import secrets

    import yaml
    from sqlalchemy import select

    from enterprise_registry.models import Enterprise
    from enterprise_registry.records import DEPARTMENTS

    with engine.connect() as conn:  # type: ignore[attr-defined]
        uscc = conn.execute(select(Enterprise.uscc).where(Enterprise.org_type == "enterprise")
                            .where(Enterprise.status == "active")
                            .order_by(Enterprise.uscc).limit(1)).scalar_one()
    principals: list[dict[str, Any]] = []
    for role in ("admin", "auditor", "finance_operator", "finance_approver", "registry_feed",
                 "enterprise"):
        entry: dict[str, Any] = {"principal": f"demo-{role.replace('_', '-')}", "role": role,
                                 "token": f"demo-{role.replace('_', '-')}-{secrets.token_hex(8)}"}
        if role == "enterprise":
            entry["uscc"] = uscc
        if role == "registry_feed":
            entry["sources"] = list(DEPARTMENTS)
        principals.append(entry)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("# Demo tokens for `make run` only; never for production.\n" +
                   yaml.safe_dump({"principals": principals}, allow_unicode=True, sort_keys=False),
                   encoding="utf-8")
    out.chmod(0o600)
    return principals
