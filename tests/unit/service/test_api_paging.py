"""Page tokens of the list methods (service/api/paging.py): page sizes within their bounds, a token
that leads to the next page of its own query only, and a precise refusal of every other token."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from service.api.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, next_token, page_bounds
from service.errors import InvalidArgumentError

QUERY = "batch=b-1;payee_changed=false"
NOT_ISSUED = [("page_token", "not a token this service issued")]
OTHER_QUERY = [("page_token", "belongs to a different query")]


def token_of(data: Any) -> str:
    """A token as the service encodes one, around any JSON value (forged ones included)."""
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


def fingerprint_in(token: str) -> str:
    return str(json.loads(base64.urlsafe_b64decode(token))["q"])


def refusal(page_size: int, page_token: str, query: str = QUERY) -> list[tuple[str, str]]:
    with pytest.raises(InvalidArgumentError) as raised:
        page_bounds(page_size, page_token, query)
    return raised.value.violations


# ---------------------------------------------------------------------------------------------
# Page sizes.
@pytest.mark.parametrize(
    ("page_size", "limit"),
    [
        (0, DEFAULT_PAGE_SIZE),  # unset: the default
        (1, 1),
        (DEFAULT_PAGE_SIZE + 1, DEFAULT_PAGE_SIZE + 1),
        (MAX_PAGE_SIZE, MAX_PAGE_SIZE),
        (MAX_PAGE_SIZE + 1, MAX_PAGE_SIZE),  # more than the maximum: the maximum, not an error (AIP-158)
        (10**9, MAX_PAGE_SIZE),
    ],
)
def test_the_page_size_is_the_default_when_unset_and_never_above_the_maximum(page_size: int, limit: int) -> None:
    assert page_bounds(page_size, "", QUERY) == (0, limit)


def test_a_method_passes_its_own_default_and_maximum() -> None:
    assert page_bounds(0, "", QUERY, default=7, maximum=9) == (0, 7)
    assert page_bounds(8, "", QUERY, default=7, maximum=9) == (0, 8)
    assert page_bounds(10, "", QUERY, default=7, maximum=9) == (0, 9)


@pytest.mark.parametrize("page_size", [-1, -MAX_PAGE_SIZE])
def test_a_negative_page_size_is_refused_naming_the_field(page_size: int) -> None:
    assert refusal(page_size, "") == [("page_size", "must not be negative")]


def test_a_negative_page_size_is_refused_before_the_token_is_read() -> None:
    assert refusal(-1, "garbage") == [("page_size", "must not be negative")]


# ---------------------------------------------------------------------------------------------
# Tokens the service issues.
def test_a_token_leads_to_the_next_page_of_its_query() -> None:
    token = next_token(0, 10, 25, QUERY)
    assert token
    assert page_bounds(10, token, QUERY) == (10, 10)
    last = next_token(10, 10, 25, QUERY)
    assert page_bounds(10, last, QUERY) == (20, 10)
    assert next_token(20, 10, 25, QUERY) == "", "the last page has no next token"


@pytest.mark.parametrize(("offset", "limit", "total"), [(0, 10, 10), (0, 10, 3), (5, 5, 10), (0, 10, 0)])
def test_no_next_token_once_the_page_reaches_the_end(offset: int, limit: int, total: int) -> None:
    assert next_token(offset, limit, total, QUERY) == ""


def test_one_row_left_still_gets_a_token() -> None:
    assert page_bounds(10, next_token(0, 10, 11, QUERY), QUERY) == (10, 10)


def test_the_page_size_of_a_later_page_may_differ_from_the_first() -> None:
    assert page_bounds(3, next_token(0, 10, 100, QUERY), QUERY) == (10, 3)


def test_a_token_is_url_safe_text() -> None:
    token = next_token(0, 1, 10**6, "policy=稳岗返还;" + "x" * 200)
    assert token.isascii() and not set(token) & set("+/")


def test_a_token_from_another_query_is_refused() -> None:
    token = next_token(0, 10, 100, QUERY)
    assert refusal(10, token, query="batch=b-2;payee_changed=false") == OTHER_QUERY
    assert refusal(10, token, query="") == OTHER_QUERY


def test_a_negative_offset_is_refused_even_with_the_right_fingerprint() -> None:
    fingerprint = fingerprint_in(next_token(0, 10, 100, QUERY))
    assert refusal(10, token_of({"o": -10, "q": fingerprint})) == OTHER_QUERY


def test_a_forged_offset_with_the_right_fingerprint_is_taken_as_it_says() -> None:
    """The fingerprint binds a token to its query, not to a page: an offset past the end is a
    valid (empty) page, which the servicer's query then returns."""
    fingerprint = fingerprint_in(next_token(0, 10, 100, QUERY))
    assert page_bounds(10, token_of({"o": 10**6, "q": fingerprint}), QUERY) == (10**6, 10)


# ---------------------------------------------------------------------------------------------
# Anything else is refused as a token this service did not issue.
@pytest.mark.parametrize(
    "token",
    [
        "not base64 at all!",
        "QQ",  # base64 cut short (padding wrong)
        base64.urlsafe_b64encode(b"not json").decode(),
        base64.urlsafe_b64encode(b"{\xc3\x28}").decode(),  # not even UTF-8
        token_of([10, "abc"]),  # JSON, not an object
        token_of("o"),
        token_of(10),
        token_of(None),
        token_of({"q": "abc"}),  # no offset
        token_of({"o": 10}),  # no fingerprint
        token_of({}),
        token_of({"o": "10", "q": "abc"}),  # an offset that is not an integer
        token_of({"o": 10.0, "q": "abc"}),
        token_of({"o": True, "q": "abc"}),
        token_of({"o": None, "q": "abc"}),
        token_of({"o": [10], "q": "abc"}),
    ],
    ids=[
        "not-base64",
        "bad-padding",
        "not-json",
        "not-utf8",
        "json-list",
        "json-string",
        "json-number",
        "json-null",
        "no-offset",
        "no-fingerprint",
        "empty-object",
        "offset-string",
        "offset-float",
        "offset-bool",
        "offset-null",
        "offset-list",
    ],
)
def test_a_token_the_service_did_not_issue_is_refused(token: str) -> None:
    assert refusal(10, token) == NOT_ISSUED


@pytest.mark.parametrize("forged", ["o", "q"])
def test_a_token_with_one_field_right_and_the_other_forged_is_refused(forged: str) -> None:
    data = json.loads(base64.urlsafe_b64decode(next_token(0, 10, 100, QUERY)))
    data[forged] = {"o": "ten", "q": "0" * 16}[forged]
    assert refusal(10, token_of(data)) == (NOT_ISSUED if forged == "o" else OTHER_QUERY)
