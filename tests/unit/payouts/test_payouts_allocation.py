"""Budget pro-rating by largest remainder, and 就高不重复 stacking in both orders of arrival."""
from __future__ import annotations

import random

import pytest

from service.payouts.allocation import control_sum, prorate, stack


def test_within_budget_nothing_changes() -> None:
    shares = prorate({"B": 300, "A": 200}, 1000)
    assert [(s.uscc, s.full_fen, s.paid_fen) for s in shares] == [("A", 200, 200), ("B", 300, 300)]


def test_over_budget_sums_to_the_budget_exactly() -> None:
    shares = prorate({"A": 1, "B": 1, "C": 1}, 2)
    assert control_sum(shares) == 2
    assert [s.paid_fen for s in shares] == [1, 1, 0]  # equal remainders: USCC order


def test_largest_remainder_gets_the_fen() -> None:
    shares = prorate({"A": 333, "B": 333, "C": 334}, 500)
    # exact shares 166.5, 166.5, 167.0 -> floors 166,166,167 = 499, one fen left: A (tie by USCC)
    assert [s.paid_fen for s in shares] == [167, 166, 167]


def test_random_batches_always_sum_to_the_budget() -> None:
    rng = random.Random(20251231)
    for _ in range(500):
        amounts = {f"{i:018d}": rng.randint(0, 10**9) for i in range(rng.randint(1, 60))}
        total = sum(amounts.values())
        budget = rng.randint(0, max(total - 1, 0))
        shares = prorate(amounts, budget)
        assert control_sum(shares) == (budget if total > budget else total)
        for share in shares:  # never more than the full amount, never off by more than a fen
            assert 0 <= share.paid_fen <= share.full_fen
            exact = budget * share.full_fen / total if total else 0
            assert abs(share.paid_fen - exact) < 1


def test_bad_amounts_are_refused() -> None:
    with pytest.raises(ValueError):
        prorate({"A": -1}, 10)
    with pytest.raises(ValueError):
        prorate({"A": 1}, -10)


def test_stacking_pays_only_the_highest_of_the_group() -> None:
    result = stack({"little-giant-reward": 50_000_000, "single-champion-reward": 100_000_000}, {})
    assert result["single-champion-reward"].payable_fen == 100_000_000
    assert result["little-giant-reward"].payable_fen == 0
    assert result["little-giant-reward"].superseded_by == "single-champion-reward"


def test_a_higher_award_after_a_lower_one_was_paid_pays_the_difference() -> None:
    result = stack({"single-champion-reward": 100_000_000}, {"little-giant-reward": 50_000_000})
    award = result["single-champion-reward"]
    assert (award.payable_fen, award.tops_up) == (50_000_000, "little-giant-reward")


def test_a_lower_award_after_a_higher_one_was_paid_pays_nothing() -> None:
    result = stack({"little-giant-reward": 50_000_000}, {"single-champion-reward": 100_000_000})
    assert result["little-giant-reward"].payable_fen == 0


def test_the_same_award_again_pays_nothing_more() -> None:
    result = stack({"little-giant-reward": 50_000_000}, {"little-giant-reward": 50_000_000})
    assert result["little-giant-reward"].payable_fen == 0
