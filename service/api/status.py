"""One table from errors to gRPC status codes, and the google.rpc.Status built from an error.
Domain code raises its own errors; this module and the interceptor that applies it
(`service.api.interceptor`) are the only ones that speak gRPC status."""

from __future__ import annotations

import logging
import uuid

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from enterprise_registry.db import (
    DatabaseFullError,
    DatabaseUnavailableError,
    database_full,
    database_unavailable,
    error_text,
    redacted,
)
from enterprise_registry.errors import RegistryError
from rules.errors import (
    EvaluationError,
    PeriodNotCoveredError,
    PolicyFileError,
    PolicyNotFoundError,
    RuleError,
)
from service.errors import (
    BatchNotFoundError,
    BatchStateError,
    DuplicateBatchError,
    EnterpriseNotFoundError,
    EvaluationNotFoundError,
    InvalidArgumentError,
    LimitExceededError,
    PermissionDeniedError,
    RecordMismatchError,
    RequestTimeoutError,
    ServiceError,
    UnauthenticatedError,
)

log = logging.getLogger("benefits.api")

# Looked up along the exception's MRO, so the most specific entry wins.
ERROR_CODES: dict[type[BaseException], grpc.StatusCode] = {
    InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
    PeriodNotCoveredError: grpc.StatusCode.INVALID_ARGUMENT,
    RegistryError: grpc.StatusCode.INVALID_ARGUMENT,
    UnauthenticatedError: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
    LimitExceededError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    RequestTimeoutError: grpc.StatusCode.DEADLINE_EXCEEDED,
    EnterpriseNotFoundError: grpc.StatusCode.NOT_FOUND,
    EvaluationNotFoundError: grpc.StatusCode.NOT_FOUND,
    RecordMismatchError: grpc.StatusCode.DATA_LOSS,
    DuplicateBatchError: grpc.StatusCode.ALREADY_EXISTS,
    BatchNotFoundError: grpc.StatusCode.NOT_FOUND,
    BatchStateError: grpc.StatusCode.FAILED_PRECONDITION,
    PolicyNotFoundError: grpc.StatusCode.NOT_FOUND,
    PolicyFileError: grpc.StatusCode.FAILED_PRECONDITION,
    # The database away, overloaded, busy or read-only (`database_unavailable`: a connection
    # refused, lost or timed out, a statement or lock timeout, SQLite's "database is locked", a
    # standby refusing writes): retry later.
    DatabaseUnavailableError: grpc.StatusCode.UNAVAILABLE,
    # The database's storage full (`database_full`): gRPC's code for "the entire file system is
    # out of space". The refused transaction wrote nothing; the call succeeds once there is room.
    DatabaseFullError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    # Engine failures and disagreements are our fault, never the caller's: reported, with a
    # reference to the log entry that holds the details.
    EvaluationError: grpc.StatusCode.INTERNAL,
    RuleError: grpc.StatusCode.INTERNAL,
    ServiceError: grpc.StatusCode.INTERNAL,
}
_GENERIC = frozenset({grpc.StatusCode.INTERNAL})
MAX_LISTED = 50  # field violations in a BadRequest detail; the rest are counted
# The google.rpc.RetryInfo delay of an UNAVAILABLE answer: a database that went away (a restart,
# a failover) is usually back within seconds, and the pool reconnects on the next call.
RETRY_DELAY_SECONDS = 2
_UNAVAILABLE_MESSAGE = f"the database is unavailable; retry in {RETRY_DELAY_SECONDS} s"
# A full disk waits for an operator to make room: minutes rather than seconds.
FULL_RETRY_DELAY_SECONDS = 60
_FULL_MESSAGE = f"the database's storage is full; retry in {FULL_RETRY_DELAY_SECONDS} s"


def status_code_for(exc: BaseException) -> grpc.StatusCode | None:
    if database_full(exc):  # before unavailable: PostgreSQL's disk_full is in its class 53
        return ERROR_CODES[DatabaseFullError]
    if database_unavailable(exc):  # a driver's error, told by its state rather than its class
        return ERROR_CODES[DatabaseUnavailableError]
    for cls in type(exc).__mro__:
        if cls in ERROR_CODES:
            return ERROR_CODES[cls]
    return None


def to_status(exc: BaseException) -> status_pb2.Status:
    """The google.rpc.Status for an error, with BadRequest field violations where they apply."""
    code = status_code_for(exc)
    if code is None or code in _GENERIC:
        reference = uuid.uuid4().hex[:12]
        # Redacted: a database error's own text would carry DETAIL, i.e. the row's values.
        log.error("internal error %s: %s", reference, error_text(exc), exc_info=redacted(exc))
        return status_pb2.Status(code=code_pb2.INTERNAL, message=f"internal error (reference {reference})")
    if code is grpc.StatusCode.UNAVAILABLE:  # only the database's unavailability maps here
        # The driver's text names hosts and ports: logged (its primary message only), never answered.
        log.warning("database unavailable: %s", error_text(exc))
        return retry_later(status_pb2.Status(code=code.value[0], message=_UNAVAILABLE_MESSAGE))
    if database_full(exc):  # RESOURCE_EXHAUSTED, like a principal over its limits (below)
        log.error("database storage full: %s", error_text(exc))  # an operator must make room
        return retry_later(status_pb2.Status(code=code.value[0], message=_FULL_MESSAGE), FULL_RETRY_DELAY_SECONDS)
    status = status_pb2.Status(code=code.value[0], message=str(exc))
    if isinstance(exc, LimitExceededError) and exc.retry_after is not None:
        return retry_later(status, exc.retry_after)
    violations: list[tuple[str, str]] = []
    if isinstance(exc, InvalidArgumentError):
        violations = exc.violations
    elif isinstance(exc, PeriodNotCoveredError):
        violations = [("period", str(exc))]
    if violations:
        listed = [
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in violations[:MAX_LISTED]
        ]
        if len(violations) > MAX_LISTED:  # the trailers stay far below a client's 16 KiB
            listed.append(
                error_details_pb2.BadRequest.FieldViolation(description=f"and {len(violations) - MAX_LISTED} more")
            )
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.BadRequest(field_violations=listed))
        status.details.append(detail)
    return status


def retry_later(status: status_pb2.Status, seconds: float = RETRY_DELAY_SECONDS) -> status_pb2.Status:
    """`status` with a google.rpc.RetryInfo detail: the same call may succeed after `seconds`."""
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(max(1_000_000, round(seconds * 1e9)))  # at least a millisecond: never "now"
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    status.details.append(detail)
    return status
