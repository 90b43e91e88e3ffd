"""Benchmark: the trace of (enterprise, policy) pairs, interpreter vs vectorised, on the same
in-memory facts documents of a synthetic registry.

  interpreter:  rules.interpreter over each condition, each payable clause and the amount (no engine)
  vectorised:   rules.vectorised over chunks of --chunk enterprises (every clause, outcome, amount
                and the engine fact's columns), columns built beforehand; and with building the
                columns from the documents (`rules.columns.from_documents`) counted in

Usage: python benchmarks/bench_trace.py [--count N] [--seed S] [--period P] [--chunk C] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import tempfile
import time
from datetime import date
from pathlib import Path

from enterprise_registry.db import create_schema, make_engine
from enterprise_registry.importer import load_records
from enterprise_registry.synthetic import generate
from rules.columns import FactColumns, from_documents
from rules.facts import FactsDocument
from rules.interpreter import Interpreter
from rules.loader import CompiledPolicy, load_policy_dir
from service.catalogue import CATALOGUE
from service.facts_documents import DocumentSource, build_document

RULES = Path(__file__).resolve().parents[1] / "rules" / "policies"


def interpreter_pass(compiled: list[CompiledPolicy], documents: dict[int, list[FactsDocument]], today: date) -> int:
    pairs = 0
    for c in compiled:
        policy = c.policy
        for document in documents[policy.fact_year(c.period)]:
            interp = Interpreter(document, c.params, period=c.period, today=today)
            for clause in policy.conditions:
                interp.evaluate(clause.expr)
            for clause in policy.payable:
                interp.evaluate(clause.expr)
            interp.evaluate(policy.amount)
            pairs += 1
    return pairs


def vectorised_pass(compiled: list[CompiledPolicy], chunks: dict[int, list[FactColumns]], today: date) -> int:
    pairs = 0
    for c in compiled:
        assert c.vectorised is not None
        for columns in chunks[c.policy.fact_year(c.period)]:
            pairs += len(c.vectorised.run(columns, today=today))
    return pairs


def column_chunks(documents: dict[int, list[FactsDocument]], size: int) -> dict[int, list[FactColumns]]:
    return {
        year: [from_documents(docs[i : i + size], CATALOGUE) for i in range(0, len(docs), size)]
        for year, docs in documents.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--period", type=int, default=2025)
    parser.add_argument("--chunk", type=int, default=2000)
    parser.add_argument("--profile", action="store_true", help="cProfile the vectorised pass")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/bench.db")
        create_schema(engine)
        load_records(generate(args.count, args.seed), engine)
        rows = list(DocumentSource(engine).all_rows())
        engine.dispose()
    policies = [p for p in load_policy_dir(RULES, CATALOGUE, require_tests=False) if p.covers(args.period)]
    compiled = [p.compiled(args.period) for p in policies]
    years = {p.fact_year(args.period) for p in policies}
    documents = {year: [build_document(r, year) for r in rows] for year in years}
    today = date(args.period + 1, 3, 31)
    print(f"{len(rows)} synthetic enterprises x {len(compiled)} policies, period {args.period}")

    started = time.perf_counter()
    pairs = interpreter_pass(compiled, documents, today)
    interpreter_rate = pairs / (time.perf_counter() - started)

    started = time.perf_counter()
    chunks = column_chunks(documents, args.chunk)
    columns_seconds = time.perf_counter() - started
    started = time.perf_counter()
    vectorised_pairs = vectorised_pass(compiled, chunks, today)
    vectorised_seconds = time.perf_counter() - started
    assert vectorised_pairs == pairs
    vectorised_rate = pairs / vectorised_seconds
    # the columns are built once per fact year and serve every policy reading that year
    with_columns_rate = pairs / (vectorised_seconds + columns_seconds)

    print(f"  interpreter trace (clauses + amount)        : {interpreter_rate:>12,.0f} pairs/s")
    print(
        f"  vectorised trace, chunks of {args.chunk:<6,}         : {vectorised_rate:>12,.0f} pairs/s "
        f"({vectorised_rate / interpreter_rate:.1f}x)"
    )
    print(
        f"  vectorised incl. columns from documents     : {with_columns_rate:>12,.0f} pairs/s "
        f"({with_columns_rate / interpreter_rate:.1f}x; columns {columns_seconds:.2f} s)"
    )

    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        vectorised_pass(compiled, chunks, today)
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(20)
        print(out.getvalue())


if __name__ == "__main__":
    main()
