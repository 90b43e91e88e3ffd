"""Benchmark: registry load rate and evaluation throughput, each against a baseline measured in
the same run on the same data.

  load:      importer (validate + store)        vs  reading and JSON-parsing the same lines
  evaluate:  full evaluation (engine + trace)   vs  trace only (the interpreter, no engine)
             and vs building the facts documents alone

Usage: python benchmarks/bench_rules.py [--count N] [--seed S] [--period P]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import date
from pathlib import Path

import orjson

from enterprise_registry.db import create_schema, make_engine
from enterprise_registry.importer import load_jsonl
from enterprise_registry.synthetic import write_jsonl
from rules.evaluator import evaluate
from rules.interpreter import Interpreter
from service.cli.defaults import load_policies
from service.facts_documents import DocumentSource, build_document


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--period", type=int, default=2025)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        feed = Path(tmp) / "registry.jsonl"
        records = write_jsonl(feed, args.count, args.seed)
        url = f"sqlite:///{tmp}/bench.db"
        engine = make_engine(url)
        create_schema(engine)

        started = time.perf_counter()
        with feed.open("rb") as handle:
            parsed = sum(1 for line in handle if orjson.loads(line))
        parse_seconds = time.perf_counter() - started
        report = load_jsonl(feed, engine)
        print(f"registry: {args.count} enterprises, {records} records")
        print(f"  load (validate + store, SQLite): {report.rate:>10,.0f} records/s ({report.seconds:.1f} s)")
        print(f"  baseline (read + JSON parse)   : {parsed / parse_seconds:>10,.0f} records/s ({parse_seconds:.1f} s)")

        policies = [p for p in load_policies() if p.covers(args.period)]
        compiled = {p.id: p.compiled(args.period) for p in policies}
        source = DocumentSource(engine)
        rows = list(source.all_rows())
        today = date(args.period + 1, 3, 31)

        started = time.perf_counter()
        documents = [
            {p.fact_year(args.period): build_document(r, p.fact_year(args.period)) for p in policies} for r in rows
        ]
        doc_seconds = time.perf_counter() - started

        started = time.perf_counter()
        trace_count = 0
        for docs in documents:
            for p in policies:
                interp = Interpreter(
                    docs[p.fact_year(args.period)], compiled[p.id].params, period=args.period, today=today
                )
                for clause in p.conditions:
                    interp.evaluate(clause.expr)
                trace_count += 1
        trace_seconds = time.perf_counter() - started

        started = time.perf_counter()
        outcomes: dict[str, int] = {}
        for docs in documents:
            for p in policies:
                result = evaluate(compiled[p.id], docs[p.fact_year(args.period)], today=today)
                outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
        full_seconds = time.perf_counter() - started
        n = len(rows) * len(policies)
        print(f"evaluation: {len(rows)} enterprises x {len(policies)} policies = {n} evaluations")
        print(f"  full (engine + trace + cross-check): {n / full_seconds:>10,.0f} evaluations/s")
        print(f"  baseline: trace only (no engine)   : {trace_count / trace_seconds:>10,.0f} evaluations/s")
        print(f"  building facts documents           : {len(rows) / doc_seconds:>10,.0f} enterprises/s")
        print(f"  outcomes: {outcomes}")


if __name__ == "__main__":
    main()
