"""What verification reports about a stored row: which table and row, what happened, and the
ledger entry that says what the row should be."""

from __future__ import annotations

from dataclasses import dataclass

from service.audit.ledger import Fault


@dataclass(frozen=True)
class AuditProblem:
    table: str  # the table of the row concerned
    row: str  # its key
    fault: Fault  # edited, deleted or inserted
    ledger_seq: int  # the entry that sealed what the row should be (0: none)
    detail: str  # never holds an account number, a payee's name or a token

    def __str__(self) -> str:
        return f"{self.table} {self.row}: {self.detail}"
