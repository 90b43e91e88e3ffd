"""The words a decision is made of, written once: an evaluation's outcome and a clause's truth.

Their values are stored in evaluation records, sealed in the ledger and hashed: never change one.
A StrEnum member is its value (`Outcome.ELIGIBLE == "ELIGIBLE"`, and json.dumps writes the bare
string), so stored data reads back as the same members.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final

import numpy as np


class Outcome(StrEnum):
    """What an evaluation decided."""

    ELIGIBLE = "ELIGIBLE"  # every condition holds, every payable clause holds, the amount is known
    INELIGIBLE = "INELIGIBLE"  # a condition is false
    UNDETERMINED = "UNDETERMINED"  # a condition, or the amount, cannot be decided from the facts on record
    HELD = "HELD"  # eligible, but a payable clause does not hold (e.g. no bank account)


class Truth(StrEnum):
    """A clause's three-valued result."""

    TRUE = "true"
    FALSE = "false"
    UNKNOWN = "unknown"


# The vectorised trace (rules.vectorised) holds outcomes and truths as int8 codes, a code being
# the member's index here; these orders are in-memory only (records store the words). FALSE is 0
# and TRUE 1, so that a known boolean array is its own truth code.
OUTCOME_OF_CODE: Final[tuple[Outcome, ...]] = (Outcome.ELIGIBLE, Outcome.INELIGIBLE, Outcome.UNDETERMINED, Outcome.HELD)
TRUTH_OF_CODE: Final[tuple[Truth, ...]] = (Truth.FALSE, Truth.TRUE, Truth.UNKNOWN)
OUTCOME_CODES: Final[Mapping[Outcome, np.int8]] = {outcome: np.int8(i) for i, outcome in enumerate(OUTCOME_OF_CODE)}
TRUTH_CODES: Final[Mapping[Truth, np.int8]] = {truth: np.int8(i) for i, truth in enumerate(TRUTH_OF_CODE)}
if set(OUTCOME_OF_CODE) != set(Outcome) or set(TRUTH_OF_CODE) != set(Truth):
    raise AssertionError("a member of Outcome or Truth has no int8 code")
