"""The money rules of a batch: budget pro-rating to the fen and 就高不重复 stacking.

Pro-rating: when eligible amounts exceed the budget, each line gets budget x amount / total,
rounded down to the fen, and the fen left over go one each to the lines with the largest
remainders (ties by USCC), so the lines sum to the budget exactly (largest-remainder method).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Share:
    uscc: str
    full_fen: int       # what the enterprise qualified for
    paid_fen: int       # after pro-rating


def prorate(amounts: Mapping[str, int], budget_fen: int | None) -> list[Share]:
    """Shares of `amounts` (USCC -> fen) within `budget_fen`; untouched when within budget."""
    if any(fen < 0 for fen in amounts.values()):
        raise ValueError("amounts must not be negative")
    if budget_fen is not None and budget_fen < 0:
        raise ValueError("the budget must not be negative")
    total = sum(amounts.values())
    ordered = sorted(amounts)
    if budget_fen is None or total <= budget_fen:
        return [Share(u, amounts[u], amounts[u]) for u in ordered]
    floors = {u: budget_fen * amounts[u] // total for u in ordered}
    remainders = {u: budget_fen * amounts[u] % total for u in ordered}
    left = budget_fen - sum(floors.values())
    # Largest remainder first; equal remainders go in USCC order.
    for uscc in sorted(ordered, key=lambda u: (-remainders[u], u))[:left]:
        floors[uscc] += 1
    return [Share(u, amounts[u], floors[u]) for u in ordered]


@dataclass(frozen=True)
class StackedAward:
    policy_id: str
    payable_fen: int            # what this policy's line pays now
    superseded_by: str | None   # a higher award of the same group pays instead
    tops_up: str | None         # an earlier grant of the group this line adds to


def stack(awards: Mapping[str, int], already_paid: Mapping[str, int]) -> dict[str, StackedAward]:
    """就高不重复 within one conflict group for one enterprise and period.

    `awards`: policy -> eligible amount now; `already_paid`: policy -> amount granted earlier.
    Only the highest award is paid; if a lower one was paid before, the new line pays the
    difference and refers to it; nothing is paid twice.
    """
    if not awards:
        return {}
    best = max(sorted(awards), key=lambda p: awards[p])
    paid_before = max(already_paid.values(), default=0)
    earlier = max(sorted(already_paid), key=lambda p: already_paid[p]) if already_paid else None
    out: dict[str, StackedAward] = {}
    for policy in sorted(awards):
        if policy != best:
            out[policy] = StackedAward(policy, 0, best, None)
        else:
            difference = max(awards[policy] - paid_before, 0)
            out[policy] = StackedAward(policy, difference, None,
                                       earlier if earlier and earlier != policy and paid_before else None)
    return out


def control_sum(shares: Sequence[Share]) -> int:
    return sum(s.paid_fen for s in shares)
