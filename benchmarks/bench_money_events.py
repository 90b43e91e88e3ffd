"""Benchmark: what sealing the money path costs, for a batch of N lines, against the same writes
without any seal measured in the same run.

- DRAFT: the lines inserted with one ledger entry and their leaves (`seals.seal_event`) vs the
  lines inserted alone;
- approve: one entry whatever N (the batch snapshot only): its time should not grow with N;
- results for every line, in calls of 5,000 (as `benefits batch results` sends them) vs plain
  UPDATEs of the same rows;
- `verify_payouts` over the whole batch: lines per second.
SQLite, and PostgreSQL when reachable.

Usage: python benchmarks/bench_money_events.py [--lines 100000]
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench_databases import run_sized_bench
from sqlalchemy import insert
from sqlalchemy.engine import Engine

from service.audit.ledger import ledger_transaction
from service.audit.records import Actor
from service.payouts import batches
from service.payouts.seals import MoneyEvent, seal_event
from service.payouts.states import BatchState, LineState
from service.payouts.tables import create_payout_schema, grant, payout_batch
from service.payouts.verification import verify_payouts

OPERATOR, APPROVER = Actor("bench-operator", "finance_operator"), Actor("bench-approver", "finance_approver")
RESULTS_PER_CALL = 5000


def _batch_row(batch_id: str) -> dict[str, Any]:
    return {
        "batch_id": batch_id,
        "request_id": f"req-{batch_id}",
        "policy_id": "stable-jobs-refund",
        "policy_version": "bench",
        "rule_sha256": "0" * 64,
        "period": 2025,
        "state": BatchState.DRAFT.value,
        "created_by": OPERATOR.principal,
        "created_role": OPERATOR.role,
        "created_at": "2026-12-02T00:00:00Z",
        "evaluated_on": "2026-12-02",
    }


def _lines(batch_id: str, count: int) -> list[dict[str, Any]]:
    return [
        {
            "grant_id": f"{batch_id}-{i:07d}",
            "uscc": f"U{batch_id[-4:]}{i:013d}",
            "policy_id": "stable-jobs-refund",
            "period": 2025,
            "conflict_group": None,
            "batch_id": batch_id,
            "full_fen": 10_000 + i,
            "amount_fen": 10_000 + i,
            "tops_up": None,
            "evaluation_id": f"ev_{i:032x}",
            "record_sha256": f"{i:064x}",
            "payee_name": f"襄阳示例{i}有限公司",
            "payee_account_no": f"18040001{i:011d}",
            "payee_bank": "中国工商银行襄阳分行",
            "state": LineState.PENDING.value,
            "return_reason": None,
            "result_by": None,
            "confirmed_by": None,
            "withdraw_reason": None,
            "released": "",
        }
        for i in range(count)
    ]


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def run(engine: Engine, label: str, count: int) -> None:
    create_payout_schema(engine)

    def draft(batch_id: str, sealed: bool) -> None:
        lines = _lines(batch_id, count)
        with ledger_transaction(engine) as conn:
            conn.execute(
                insert(payout_batch).values(
                    **_batch_row(batch_id), line_count=count, total_fen=sum(line["amount_fen"] for line in lines)
                )
            )
            for start in range(0, count, 1000):
                conn.execute(insert(grant), lines[start : start + 1000])
            if sealed:
                seal_event(conn, MoneyEvent.DRAFT, batch_id, OPERATOR, lines=lines)

    plain, sealed = _timed(lambda: draft("pb_plain", False)), _timed(lambda: draft("pb_sealed", True))
    print(f"{label}: a batch of {count:,} lines")
    print(f"  DRAFT, sealed (one entry + leaves) : {count / sealed:>9,.0f} lines/s ({sealed:.1f} s)")
    print(
        f"  baseline: the same lines, no seal  : {count / plain:>9,.0f} lines/s (sealing costs {sealed / plain:.1f}x)"
    )

    approve = _timed(lambda: batches.approve(engine, "pb_sealed", APPROVER))
    print(f"  approve (one entry, any size)      : {approve * 1000:>9,.1f} ms")
    with engine.begin() as conn:
        conn.execute(payout_batch.update().values(state=BatchState.EXPORTED.value))
    ids = [f"pb_sealed-{i:07d}" for i in range(count)]

    def results() -> None:
        for start in range(0, count, RESULTS_PER_CALL):
            batches.record_results(
                engine,
                "pb_sealed",
                [batches.BankResult(line_id, LineState.PAID) for line_id in ids[start : start + RESULTS_PER_CALL]],
                OPERATOR,
            )

    def plain_updates() -> None:
        plain_ids = [f"pb_plain-{i:07d}" for i in range(count)]
        for start in range(0, count, RESULTS_PER_CALL):
            with engine.begin() as conn:
                conn.execute(
                    grant.update()
                    .where(grant.c.grant_id.in_(plain_ids[start : start + RESULTS_PER_CALL]))
                    .values(state=LineState.PAID.value, result_by=OPERATOR.principal)
                )

    sealed_results, plain_results = _timed(results), _timed(plain_updates)
    print(
        f"  results, sealed, {RESULTS_PER_CALL:,} per call : {count / sealed_results:>9,.0f} lines/s "
        f"({sealed_results:.1f} s)"
    )
    print(
        f"  baseline: plain UPDATEs            : {count / plain_results:>9,.0f} lines/s "
        f"(sealing costs {sealed_results / plain_results:.1f}x)"
    )
    with engine.connect() as conn:
        verifying = _timed(lambda: verify_payouts(conn, limit=1_000_000))
    print(
        f"  verify_payouts (both batches)      : {2 * count / verifying:>9,.0f} lines/s ({verifying:.1f} s; "
        "the unsealed baseline batch is reported, as it should be)"
    )


def main() -> None:
    run_sized_bench(run, "lines", 100_000)


if __name__ == "__main__":
    main()
