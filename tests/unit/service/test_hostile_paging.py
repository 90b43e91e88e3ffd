"""Hostile page tokens (service/api/paging.py): whatever a client sends as `page_token`, the
answer is a page (offset, limit) or InvalidArgumentError on `page_token`, never another error."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.api.paging import MAX_OFFSET, MAX_TOKEN_LENGTH, next_token, page_bounds
from service.errors import InvalidArgumentError

QUERY = "evaluations:::0::"


def encoded(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


def fingerprint() -> str:
    return str(json.loads(base64.urlsafe_b64decode(next_token(0, 10, 100, QUERY)))["q"])


def refused_fields(token: str) -> list[str]:
    with pytest.raises(InvalidArgumentError) as raised:
        page_bounds(10, token, QUERY)
    return [field for field, _ in raised.value.violations]


@pytest.mark.parametrize(
    "token",
    [
        "[" * 100_000,  # as sent
        encoded(b"[" * 100_000),  # decoding to JSON nested 100,000 deep (RecursionError before)
        encoded(b'{"o": ' + b"[" * 5000 + b"]" * 5000 + b', "q": "x"}'),
        "A" * (MAX_TOKEN_LENGTH + 1),
    ],
    ids=["brackets", "brackets-base64", "nested-offset", "too-long"],
)
def test_a_deep_or_long_token_is_refused_on_page_token(token: str) -> None:
    assert refused_fields(token) == ["page_token"]


@pytest.mark.parametrize("offset", [MAX_OFFSET + 1, 2**63, 10**30])
def test_an_offset_past_the_bound_is_refused_even_with_the_right_fingerprint(offset: int) -> None:
    """10**30 would overflow the SQL OFFSET (a 64-bit integer) of the list query."""
    token = encoded(json.dumps({"o": offset, "q": fingerprint()}).encode())
    assert refused_fields(token) == ["page_token"]


def test_the_largest_offset_allowed_is_taken() -> None:
    token = encoded(json.dumps({"o": MAX_OFFSET, "q": fingerprint()}).encode())
    assert page_bounds(10, token, QUERY) == (MAX_OFFSET, 10)


def test_a_token_the_service_issues_stays_within_the_length_bound() -> None:
    assert len(next_token(MAX_OFFSET - 1000, 1000, MAX_OFFSET + 1, QUERY)) <= MAX_TOKEN_LENGTH


def _check(token: str) -> None:
    try:
        offset, limit = page_bounds(10, token, QUERY)
    except InvalidArgumentError as exc:
        assert [field for field, _ in exc.violations] == ["page_token"]
    else:
        assert 0 <= offset <= MAX_OFFSET
        assert limit == 10


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.text())
def test_any_text_is_a_page_or_refused_on_page_token(token: str) -> None:
    _check(token)


# JSON that decodes, wrapped as a token: the shapes a forger would try.
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(["o", "q", "x"]), children),
    max_leaves=10,
)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(_json)
def test_any_json_inside_a_token_is_a_page_or_refused_on_page_token(data: object) -> None:
    _check(encoded(json.dumps(data).encode()))
