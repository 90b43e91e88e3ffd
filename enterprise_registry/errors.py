"""Errors of the enterprise registry.

RegistryError                  base of every error this package raises
 ├── InvalidUsccError          a unified social credit code fails GB 32100-2015
 ├── RecordValidationError     one fact record fails validation (field path and reason)
 └── ImportRejectedError       a feed had errors: it was refused and nothing of it was stored

RecordError is not an exception but a value: one problem found at file:line, collected by the
importer so that a rejected feed reports all its problems at once.
"""

from __future__ import annotations

from dataclasses import dataclass

# How many problems an ImportRejectedError spells out in its message; all are on `.errors`.
_MESSAGE_ERRORS = 20


class RegistryError(Exception):
    """Base class of the registry's errors."""


class InvalidUsccError(RegistryError):
    """Raised by `uscc.validate` when a code is not a valid GB 32100 unified social credit code."""

    def __init__(self, code: object, reason: str) -> None:
        super().__init__(f"invalid USCC {code!r}: {reason}")
        self.code = code
        self.reason = reason


class RecordValidationError(RegistryError):
    """Raised by `records.parse_record` for the first problem of one record.

    `field` is the dotted path of the offending field (`revenue_fen`, `bank_account.account_no`)
    or None when the record as a whole is wrong (not an object).
    """

    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RecordError:
    """One problem (or warning) in a feed: where it is and what is wrong."""

    file: str
    line: int
    field: str | None
    reason: str

    def __str__(self) -> str:
        if self.field is None:
            return f"{self.file}:{self.line}: {self.reason}"
        return f"{self.file}:{self.line}: {self.field}: {self.reason}"


class ImportRejectedError(RegistryError):
    """Raised by the importer when a feed had at least one bad record; nothing was stored.

    `errors` holds the problems found (capped by the importer), `total` counts all of them.
    """

    def __init__(self, errors: list[RecordError], total: int | None = None) -> None:
        self.errors = errors
        self.total = len(errors) if total is None else total
        shown = "\n".join(f"  {error}" for error in errors[:_MESSAGE_ERRORS])
        more = self.total - min(len(errors), _MESSAGE_ERRORS)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(f"import rejected, nothing stored: {self.total} error(s)\n{shown}{tail}")
