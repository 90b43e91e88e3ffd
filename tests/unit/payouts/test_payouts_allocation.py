"""Budget pro-rating by largest remainder, and 就高不重复 stacking in both orders of arrival."""

from __future__ import annotations

import random

import pytest

from service.payouts.allocation import prorate, stack


def test_within_budget_nothing_changes() -> None:
    shares = prorate({"B": 300, "A": 200}, 1000)
    assert [(s.uscc, s.full_fen, s.paid_fen) for s in shares] == [("A", 200, 200), ("B", 300, 300)]


def test_over_budget_sums_to_the_budget_exactly() -> None:
    shares = prorate({"A": 1, "B": 1, "C": 1}, 2)
    assert sum(s.paid_fen for s in shares) == 2
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
        assert sum(s.paid_fen for s in shares) == (budget if total > budget else total)
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


def test_a_returned_lower_grant_under_a_top_up_is_made_good_by_the_lower_policy() -> None:
    # little giant 50万 paid, champion topped it up by 50万, then the bank returned the little giant line
    result = stack(
        {"little-giant-reward": 50_000_000, "single-champion-reward": 100_000_000},
        {"single-champion-reward": 50_000_000},
    )
    assert result["little-giant-reward"].payable_fen == 50_000_000
    assert result["little-giant-reward"].tops_up == "single-champion-reward"
    assert result["single-champion-reward"].payable_fen == 0  # it holds a grant already


def test_a_lower_policy_waits_while_the_higher_one_holds_nothing() -> None:
    # the champion line was returned; the little giant must not step in with its lower award
    result = stack({"little-giant-reward": 50_000_000, "single-champion-reward": 100_000_000}, {})
    assert result["little-giant-reward"].payable_fen == 0
    assert result["single-champion-reward"].payable_fen == 100_000_000


@pytest.mark.parametrize("seed", range(200))
def test_standing_grants_never_exceed_the_highest_award(seed: int) -> None:
    """Any order of batches, returns and re-batches: what stands never exceeds the highest award,
    and once every policy ran after the last return, it equals it."""
    import random

    rng = random.Random(seed)
    awards = {p: rng.choice([10_000, 50_000, 100_000]) for p in ("a", "b", "c") if rng.random() < 0.8} or {"a": 1}
    standing: dict[str, int] = {}
    for _ in range(12):
        policy = rng.choice(sorted(awards))
        if policy in standing and rng.random() < 0.3:
            del standing[policy]  # the bank returned it
            continue
        if policy not in standing:
            paid = stack(awards, standing)[policy].payable_fen
            if paid:
                standing[policy] = paid
        assert sum(standing.values()) <= max(awards.values())
    for _ in range(len(awards)):
        for policy in sorted(awards):
            if policy not in standing and (paid := stack(awards, standing)[policy].payable_fen):
                standing[policy] = paid
    assert sum(standing.values()) == max(awards.values())
