"""Errors of the service layer.

ServiceError
├── EnterpriseNotFoundError      nothing is on record for a USCC
├── InvalidArgumentError         request fields are malformed (one violation per field)
├── UnauthenticatedError         no token, or an unknown one
├── PermissionDeniedError        a known caller without the right (role, or foreign USCC)
├── LimitExceededError           a principal over its limits: calls per second, in flight, request size
├── RequestTimeoutError          a call's request message did not arrive in time
├── EvaluationNotFoundError      no stored evaluation has that id
├── RecordMismatchError          a stored evaluation does not replay to its record (DATA_LOSS)
├── DuplicateBatchError          a payout request_id reused with other arguments
├── BatchNotFoundError           no payout batch has that id
├── BatchStateError              an illegal lifecycle transition (FAILED_PRECONDITION)
│   ├── BatchRunningError        another batch of the policy and period is running
│   └── ConflictingResultError   a bank result contradicting the one a line has
├── AuthFileError                the auth file is unreadable or malformed
├── LedgerKeyError               the checkpoint signing key is missing, unreadable, malformed or exists
├── LedgerRestoreError           a restore cannot be signed: no reason, a damaged ledger, nothing to restore
├── TlsConfigError               TLS settings incomplete, or their files unreadable, malformed or not matching
└── ServerStartError             the server cannot start as configured (address in use, plaintext off loopback)
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every error raised by the service layer itself."""


class EnterpriseNotFoundError(ServiceError):
    """Raised when no registry record or fact of any kind exists for a USCC."""

    def __init__(self, uscc: str) -> None:
        self.uscc = uscc
        super().__init__(f"no facts on record for enterprise {uscc}")


class InvalidArgumentError(ServiceError):
    """Raised when request fields are malformed; carries one (field, reason) per problem. Its
    message names the first MESSAGE_VIOLATIONS and counts the rest: a status travels in
    trailers a client caps at 16 KiB, and a request may hold a million bad fields."""

    MESSAGE_VIOLATIONS = 10

    def __init__(self, violations: list[tuple[str, str]]) -> None:
        self.violations = violations
        shown = "; ".join(f"{field}: {reason}" for field, reason in violations[: self.MESSAGE_VIOLATIONS])
        more = len(violations) - self.MESSAGE_VIOLATIONS
        super().__init__(shown + (f"; and {more} more" if more > 0 else ""))


class UnauthenticatedError(ServiceError):
    """Raised when a call carries no token, or one the auth file does not know."""


class PermissionDeniedError(ServiceError):
    """Raised when a known caller may not do this: wrong role, or another enterprise's USCC."""


class LimitExceededError(ServiceError):
    """Raised when a principal asks more than its limits allow (RESOURCE_EXHAUSTED). `retry_after`
    is when the same call would be admitted, or None when waiting does not help (a request
    larger than the principal may send)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class RequestTimeoutError(ServiceError):
    """Raised when a call's request message does not arrive within the server's idle bound: the
    caller opened the call and went silent (DEADLINE_EXCEEDED)."""


class AuthFileError(ServiceError):
    """Raised when the auth file cannot be read or an entry is malformed (names the entry)."""


class EvaluationNotFoundError(ServiceError):
    """Raised when no stored evaluation has the requested id."""

    def __init__(self, evaluation_id: str) -> None:
        self.evaluation_id = evaluation_id
        super().__init__(f"no stored evaluation {evaluation_id!r}")


class RecordMismatchError(ServiceError):
    """Raised when a stored evaluation record cannot be rendered faithfully: its replay decides
    otherwise than the record says, or its facts or rule text is missing or edited."""

    def __init__(self, evaluation_id: str, differences: list[str]) -> None:
        self.evaluation_id, self.differences = evaluation_id, differences
        super().__init__(f"stored evaluation {evaluation_id} does not replay to its record: " + "; ".join(differences))


class DuplicateBatchError(ServiceError):
    """Raised when a payout request_id was already used with other arguments."""


class BatchNotFoundError(ServiceError):
    """Raised when no payout batch has the requested id."""


class BatchStateError(ServiceError):
    """Raised for a lifecycle transition the batch's state does not allow."""


class BatchRunningError(BatchStateError):
    """Raised when another batch of the same policy and period is still running."""


class ConflictingResultError(BatchStateError):
    """Raised when a line is given a bank result that contradicts the one it already has."""


class LedgerKeyError(ServiceError):
    """Raised when the ledger's signing key (or its public half) is missing, unreadable or malformed,
    or when a new key would overwrite an existing file."""


class LedgerRestoreError(ServiceError):
    """Raised when `benefits audit restore` cannot sign a restore: says which rule the restored
    ledger or the checkpoints file breaks (docs/operations.md, "Backup and restore")."""


class TlsConfigError(ServiceError):
    """Raised when TLS settings (server's or client's) are incomplete, or their files are unreadable,
    malformed or do not match (a key that is not the certificate's); names the file."""


class ServerStartError(ServiceError):
    """Raised when the server cannot start as configured; says what to change."""
