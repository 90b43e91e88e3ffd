"""The states of a payout batch and of its lines: written once, here.

A batch: RUNNING -> DRAFT -> APPROVED -> EXPORTED -> SETTLED, or CANCELLED from DRAFT or APPROVED
(never after export). A line: PENDING until the bank answers; PAID; RETURN_PENDING when the bank
returned it (or a paid line came back later) until a second principal confirms, then RETURNED;
WITHDRAWN by an approver before export (e.g. its payee changed); CANCELLED with its batch.
"""

from __future__ import annotations

from enum import StrEnum


class BatchState(StrEnum):
    RUNNING = "RUNNING"
    DRAFT = "DRAFT"
    APPROVED = "APPROVED"
    EXPORTED = "EXPORTED"
    SETTLED = "SETTLED"
    CANCELLED = "CANCELLED"


class LineState(StrEnum):
    PENDING = "PENDING"
    PAID = "PAID"
    RETURN_PENDING = "RETURN_PENDING"
    RETURNED = "RETURNED"
    WITHDRAWN = "WITHDRAWN"
    CANCELLED = "CANCELLED"


# Lines still to be paid or answered: a batch with any of these is not SETTLED.
OPEN_LINE_STATES = frozenset({LineState.PENDING, LineState.RETURN_PENDING})
# Lines that count in the batch's line count and total (and that its bank file carries).
COUNTED_LINE_STATES = frozenset({LineState.PENDING, LineState.PAID, LineState.RETURN_PENDING, LineState.RETURNED})
