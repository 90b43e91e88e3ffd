"""The money rules of a batch: budget pro-rating to the fen and 就高不重复 stacking.

Pro-rating: when eligible amounts exceed the budget, each line gets budget x amount / total,
rounded down to the fen, and the fen left over go one each to the lines with the largest
remainders (ties by USCC), so the lines sum to the budget exactly (largest-remainder method).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Share:
    uscc: str
    full_fen: int  # what the enterprise qualified for
    paid_fen: int  # after pro-rating


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
    payable_fen: int  # what this policy's line pays now
    superseded_by: str | None  # a higher award of the same group, not granted yet, pays instead
    tops_up: str | None  # the policy of the largest standing grant this line adds to


def stack(awards: Mapping[str, int], standing: Mapping[str, int]) -> dict[str, StackedAward]:
    """就高不重复 within one conflict group for one enterprise and period.

    `awards`: policy -> amount the enterprise is eligible for now; `standing`: policy -> amount
    of the group's grants that stand (paid or pending; returned ones are released). The
    enterprise is owed the highest award; what the standing grants hold counts against it, and
    only the shortfall is paid. The highest policy pays it; a lower one pays (up to its own
    award) only once every higher policy already holds a grant - so a returned or cancelled
    lower grant under a top-up is made good, and nothing is ever paid twice. A policy that
    holds a grant pays nothing more.
    """
    if not awards:
        return {}
    shortfall = max(max(awards.values()) - sum(standing.values()), 0)
    ranked = sorted(awards, key=lambda p: (-awards[p], p))  # highest first; ties by policy id
    earlier = max(sorted(standing), key=lambda p: standing[p]) if standing else None
    out: dict[str, StackedAward] = {}
    for rank, policy in enumerate(ranked):
        waiting_for = next((p for p in ranked[:rank] if p not in standing), None)
        if policy in standing or waiting_for is not None:
            out[policy] = StackedAward(policy, 0, waiting_for, None)
            continue
        payable = min(shortfall, awards[policy])
        out[policy] = StackedAward(policy, payable, None, earlier if payable and earlier else None)
    return out
