"""Many threads, one compiled policy: every result equals the sequential result for that document."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rules_testkit import TODAY, load_text, policy_yaml, record, stable_document, stable_jobs

from rules.evaluator import evaluate
from rules.facts import FactsDocument
from rules.values import Outcome

THREADS = 8
PER_THREAD = 500


def documents() -> list[FactsDocument]:
    zombie = record("credit:1", list="zombie", listed_on=TODAY.replace(year=2023), removed_on=None)
    variants: list[dict[str, Any]] = [
        {},
        {"si.ui_premium_paid_fen": 123_456_718},
        {"si.ui_benefit_claimants": 55},
        {"si.ui_benefit_claimants": 56},
        {"enterprise.status": "revoked"},
        {"si.insured_avg_monthly": 0},
        {"si.ui_months_paid": None},
        {"enterprise.has_bank_account": False},
        {"derived.size_class": None},
        {"enterprise.org_type": "law_firm", "derived.size_class": None},
        {"si.ui_benefit_claimants": 6, "si.insured_avg_monthly": 30, "si.insured_start": 30},
        {"si.ui_benefit_claimants": 6, "si.insured_avg_monthly": 30, "si.insured_start": 31},
        {"si.ui_arrears": True},
        {"enterprise.labor_dispatch": True},
        {"derived.size_class": "micro", "si.ui_premium_paid_fen": 15},
    ]
    docs = [stable_document(overrides, uscc=f"DOC{i:02d}") for i, overrides in enumerate(variants)]
    docs.append(stable_document({}, credit_listings=[zombie], uscc="DOC-ZOMBIE"))
    return docs


def test_threads_share_one_compiled_policy_without_mixing_results() -> None:
    compiled = stable_jobs().compiled(2025)
    docs = documents()
    expected = [evaluate(compiled, doc, today=TODAY).to_dict() for doc in docs]
    assert {e["outcome"] for e in expected} == set(Outcome)
    assert len({(e["outcome"], e["amount_fen"]) for e in expected}) >= 6

    start = threading.Barrier(THREADS)

    def work(worker: int) -> list[str]:
        """Evaluate PER_THREAD documents; return what differed (an exception propagates)."""
        start.wait()
        mismatches = []
        for k in range(PER_THREAD):
            index = (worker * 7 + k * 5) % len(docs)
            result = evaluate(compiled, docs[index], today=TODAY).to_dict()
            if result != expected[index]:
                mismatches.append(
                    f"thread {worker} #{k} {docs[index].uscc}: {result['outcome']} {result['amount_fen']}"
                )
        return mismatches

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        futures = [pool.submit(work, worker) for worker in range(THREADS)]
        results = [future.result(timeout=120) for future in futures]
    assert results == [[]] * THREADS


def test_first_use_from_many_threads_compiles_and_registers_once(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex  # a policy text no other test has registered
    policy = load_text(tmp_path, policy_yaml([f'si.layoffs >= 0 or enterprise.name == "{marker}"']))
    start = threading.Barrier(THREADS)
    seen: list[tuple[int, int]] = []

    def first_use() -> None:
        start.wait()
        compiled = policy.compiled(2025)
        seen.append((id(compiled), id(compiled.ruleset)))

    workers = [threading.Thread(target=first_use) for _ in range(THREADS)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=60)
    assert len(seen) == THREADS
    assert len(set(seen)) == 1
