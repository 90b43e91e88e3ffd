"""Volume: 100,000 evaluations in one process through one compiled policy.

durable-rules keeps every asserted fact until it is retracted: without retraction a ruleset reports
false duplicates after some tens of thousands of facts (docs/durable-rules-limits.md), and a host holds at
most 1,024 state ids. The driver holds one live fact at a time, so the count here is unlimited.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from rules_testkit import TODAY, compile_text, document, policy_yaml

from rules.evaluator import evaluate
from rules.values import Outcome

EVALUATIONS = 100_000
MAX_LAYOFFS = 50_000


def expected(i: int) -> tuple[str, int]:
    """The outcome and amount for document i, worked out without the rules package."""
    premium = i * 7 + 15
    if i % 10 == 7 or i > MAX_LAYOFFS:
        return Outcome.INELIGIBLE, 0
    if i % 10 == 3:
        return Outcome.UNDETERMINED, 0
    amount = (2 * 3 * premium + 10) // 20  # premium x 30%, half up, in integers
    return (Outcome.HELD if i % 10 == 5 else Outcome.ELIGIBLE), amount


def test_one_hundred_thousand_evaluations_through_one_compiled_policy(tmp_path: Path) -> None:
    compiled = compile_text(
        tmp_path,
        policy_yaml(
            ['enterprise.status == "active"', f"si.layoffs <= {MAX_LAYOFFS}"],
            payable=["enterprise.has_bank_account"],
            amount="si.ui_premium_paid_fen * 30%",
        ),
    )
    outcomes: Counter[str] = Counter()
    amounts: Counter[str] = Counter()
    wrong: list[int] = []
    for i in range(EVALUATIONS):
        status = None if i % 10 == 3 else ("revoked" if i % 10 == 7 else "active")
        doc = document(
            {
                "enterprise.status": status,
                "si.layoffs": i,
                "enterprise.has_bank_account": i % 10 != 5,
                "si.ui_premium_paid_fen": i * 7 + 15,
            },
            uscc=f"E{i:07d}",
        )
        result = evaluate(compiled, doc, today=TODAY)  # an engine error raises here
        outcomes[result.outcome] += 1
        amounts[result.outcome] += result.amount_fen
        if (result.outcome, result.amount_fen) != expected(i):
            wrong.append(i)
    assert wrong == []
    want_outcomes: Counter[str] = Counter()
    want_amounts: Counter[str] = Counter()
    for i in range(EVALUATIONS):
        outcome, amount = expected(i)
        want_outcomes[outcome] += 1
        want_amounts[outcome] += amount
    assert outcomes == want_outcomes
    assert amounts == want_amounts
    assert outcomes[Outcome.INELIGIBLE] == 5_000 + 49_999  # revoked up to 50,000, then all above it
    assert sum(outcomes.values()) == EVALUATIONS
