"""Independent review of the engine compiler's constant folding (rules/compiler.py `_constant`,
rewritten today): `-` and `*` over Fractions and ints, nested constants, negation, and a ratio
compared with a folded rate, each decided alike by the engine, the interpreter and the
vectorised trace (test_vectorised.assert_agrees)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rules_testkit import compile_text, document, load_text, policy_yaml
from test_vectorised import assert_agrees

from rules.errors import PolicyFileError
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


# --- a ratio reached through a definition, an if, a negation ----------------------------------------
RATIO = "ratio(si.layoffs, si.insured_start)"
SHARES = {"share": RATIO, "share2": "share"}
RATIO_ROWS = [{"si.layoffs": n, "si.insured_start": 40} for n in (0, 2, 3)] + [{"si.layoffs": 0, "si.insured_start": 0}]


@pytest.mark.parametrize(
    "condition",
    ["share2 <= 5%", "5% >= share", f"not ({RATIO} > 5%)", "if si.layoffs > 1 then share <= 5% else share <= 10%"],
)
def test_a_ratio_compared_where_it_is_used_decides_alike_everywhere(tmp_path: Path, condition: str) -> None:
    compiled = compile_text(tmp_path, policy_yaml([condition], definitions=SHARES))
    trace = assert_agrees(compiled, [document(row) for row in RATIO_ROWS])
    # 0/40 and 2/40 are within 5%, 3/40 is not, and nothing is a share of no one
    assert [trace.outcome_name(row) for row in range(len(RATIO_ROWS))] == [E, E, N, U]


@pytest.mark.parametrize(
    "condition",
    [
        "(if si.layoffs > 1 then share else share2) <= 5%",
        f"min({RATIO}, share) <= 5%",
        f"{RATIO} * 100 <= 5",
        f"-{RATIO} >= -5%",
        f"{RATIO} == 5%",
    ],
)
def test_a_ratio_used_as_a_value_is_refused_at_load(tmp_path: Path, condition: str) -> None:
    with pytest.raises(PolicyFileError) as info:
        load_text(tmp_path, policy_yaml([condition], definitions=SHARES))
    assert info.value.line is not None and "ratio" in str(info.value)
