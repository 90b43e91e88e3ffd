"""Opaque page tokens (AIP-158): an offset bound to the query it belongs to."""

from __future__ import annotations

import base64
import hashlib
import json

from service.errors import InvalidArgumentError

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
# A token we issue is about 60 characters; anything far longer is refused before it is decoded,
# so a hostile one cannot make the JSON decoder recurse (a token of 100,000 `[`) or work long.
MAX_TOKEN_LENGTH = 200
# The largest offset a token may carry: PostgreSQL's integer, far more rows than any list holds,
# and well inside the 64-bit OFFSET of PostgreSQL and SQLite (10**30 would overflow it).
MAX_OFFSET = 2**31 - 1


def page_bounds(
    page_size: int, page_token: str, query: str, *, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE
) -> tuple[int, int]:
    """(offset, limit) for a request; a token from another query or a forged one is refused.
    `default` and `maximum` are the page sizes the method's proto comment promises."""
    if page_size < 0:
        raise InvalidArgumentError([("page_size", "must not be negative")])
    limit = default if page_size == 0 else min(page_size, maximum)
    if not page_token:
        return 0, limit
    if len(page_token) > MAX_TOKEN_LENGTH:
        raise InvalidArgumentError([("page_token", "not a token this service issued")])
    try:
        data = json.loads(base64.urlsafe_b64decode(page_token.encode()))
        offset, fingerprint = data["o"], str(data["q"])
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise TypeError("offset")
    except (ValueError, KeyError, TypeError, OverflowError):
        raise InvalidArgumentError([("page_token", "not a token this service issued")]) from None
    if offset > MAX_OFFSET:
        raise InvalidArgumentError([("page_token", "not a token this service issued")])
    if offset < 0 or fingerprint != _fingerprint(query):
        raise InvalidArgumentError([("page_token", "belongs to a different query")])
    return offset, limit


def next_token(offset: int, limit: int, total: int, query: str) -> str:
    if offset + limit >= total:
        return ""
    raw = json.dumps({"o": offset + limit, "q": _fingerprint(query)}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _fingerprint(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()[:16]
