"""Independent review of the engine compiler's constant folding (rules/compiler.py `_constant`,
rewritten today): `-` and `*` over Fractions and ints, nested constants, negation, and a ratio
compared with a folded rate, each decided alike by the engine, the interpreter and the
vectorised trace (test_vectorised.assert_agrees)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rules_testkit import compile_text, document, policy_yaml
from test_vectorised import assert_agrees

from rules.values import Outcome

E, N, U = Outcome.ELIGIBLE, Outcome.INELIGIBLE, Outcome.UNDETERMINED
LAYOFFS = (0, 1, 2, 3, 4, 6, None)  # of 40 insured; None: not on record
RATE = "r:\n  description: 比例\n  value: 2.75%"


@pytest.mark.parametrize(
    ("condition", "outcomes"),
    [
        ("si.layoffs * (2 - 1) >= 1", [N, E, E, E, E, E, U]),
        ("si.layoffs >= -(-3)", [N, N, N, E, E, E, U]),
        ("si.layoffs >= 2 * 3 - 10", [E, E, E, E, E, E, U]),
        ("si.layoffs - 3 * 2 >= 0", [N, N, N, N, N, E, U]),
        ("si.layoffs - (1 - 3) >= 3", [N, E, E, E, E, E, U]),
        ("-(si.layoffs - 5) >= 0", [E, E, E, E, E, N, U]),
        ("0 - si.layoffs * -1 >= 2", [N, N, E, E, E, E, U]),
        ("2 * 50% == 1", [E, E, E, E, E, E, E]),
        ("si.layoffs * (3 * 50% * 2) >= 4", [N, N, E, E, E, E, U]),
        ("si.layoffs >= 3 * 50% * 2 - 1", [N, N, E, E, E, E, U]),
        ("si.layoffs * 2 - 1 >= 3 * 50% * 2", [N, N, E, E, E, E, U]),
        ("(if 1 - 1 == 0 then si.layoffs else 0) >= 1", [N, E, E, E, E, E, U]),
        ("ratio(si.layoffs, si.insured_start) <= 1 - 94.5%", [E, E, E, N, N, N, U]),
        ("ratio(si.layoffs, si.insured_start) <= params.r * 2", [E, E, E, N, N, N, U]),
        ("ratio(si.layoffs, si.insured_start) <= params.r - -1%", [E, E, N, N, N, N, U]),
        (
            "if si.layoffs > 2 then ratio(si.layoffs, si.insured_start) <= 5%"
            " else ratio(si.layoffs, si.insured_start) <= 10%",
            [E, E, E, N, N, N, U],
        ),
    ],
)
def test_a_folded_constant_decides_alike_everywhere(tmp_path: Path, condition: str, outcomes: list[Outcome]) -> None:
    compiled = compile_text(tmp_path, policy_yaml([condition], parameters=RATE))
    documents = [document({"si.layoffs": n, "si.insured_start": 40}) for n in LAYOFFS]
    trace = assert_agrees(compiled, documents)
    assert [trace.outcome_name(row) for row in range(len(documents))] == outcomes
