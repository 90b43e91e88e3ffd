"""`make run` epilogue: explain one eligible and one not-eligible enterprise from the registry."""

from __future__ import annotations

import argparse
from datetime import date
from itertools import islice

from enterprise_registry.db import make_engine
from rules.evaluator import evaluate
from rules.values import Outcome
from service.cli.defaults import load_policies
from service.explain import as_text
from service.facts_documents import DocumentSource, build_document


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--period", type=int, required=True)
    parser.add_argument("--policy", default="stable-jobs-refund")
    args = parser.parse_args()
    policy = load_policies().get(args.policy)
    compiled = policy.compiled(args.period)
    shown: set[Outcome] = set()
    engine = make_engine(args.db)
    for rows in islice(DocumentSource(engine).all_rows(), 20000):
        if rows.enterprise is None or rows.enterprise.org_type != "enterprise":
            continue  # show companies, the common case
        result = evaluate(compiled, build_document(rows, policy.fact_year(args.period)), today=date.today())
        if result.outcome in shown or result.outcome not in (Outcome.ELIGIBLE, Outcome.INELIGIBLE):
            continue
        shown.add(result.outcome)
        print(f"$ benefits evaluate --db {args.db} --uscc {rows.uscc} --policy {policy.id} --period {args.period}")
        print(as_text(result, policy.model.title))
        print()
        if len(shown) == 2:
            break
    engine.dispose()


if __name__ == "__main__":
    main()
