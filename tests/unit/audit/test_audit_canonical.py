"""Canonical JSON: sorted keys, UTF-8, no whitespace, no floats (the path of one is named)."""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from service.audit.canonical import canonical_json, canonical_json_of_typed, sha256_hex


def test_keys_are_sorted_at_every_level_and_there_is_no_whitespace() -> None:
    value = {"b": 1, "a": {"z": [3, {"y": None, "x": True}], "c": "v"}}
    assert canonical_json(value) == b'{"a":{"c":"v","z":[3,{"x":true,"y":null}]},"b":1}'


def test_insertion_order_does_not_change_the_bytes() -> None:
    assert canonical_json({"a": 1, "b": 2}) == canonical_json({"b": 2, "a": 1})


def test_non_ascii_text_is_kept_as_utf8() -> None:
    encoded = canonical_json({"政策": "稳岗返还"})
    assert encoded == '{"政策":"稳岗返还"}'.encode()
    assert b"\\u" not in encoded


def test_scalars_and_big_integers() -> None:
    assert canonical_json([0, -1, 2**63 - 1, -(2**63), 2**64 - 1, False, None, ""]) == (
        b'[0,-1,9223372036854775807,-9223372036854775808,18446744073709551615,false,null,""]'
    )


def test_the_bytes_round_trip() -> None:
    value: dict[str, Any] = {"amount_fen": 123456, "trace": [{"ok": True, "fact": "employees"}], "note": "é"}
    assert orjson.loads(canonical_json(value)) == value


@pytest.mark.parametrize(
    ("value", "path"),
    [
        (1.5, "$"),
        ({"a": 0.0}, "$.a"),
        ({"a": [1, 2, {"b": float("nan")}]}, "$.a[2].b"),
        ([[1.0]], "$[0][0]"),
        ({"a key": 2.5}, '$["a key"]'),
        ({"规则": {"比例": 0.5}}, "$.规则.比例"),
    ],
)
def test_a_float_anywhere_is_refused_naming_its_path(value: Any, path: str) -> None:
    with pytest.raises(TypeError, match="float") as caught:
        canonical_json(value)
    assert f"at {path} " in str(caught.value)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ({"d": date(2025, 1, 1)}, "date at $.d is not allowed in canonical JSON (give dates as ISO 8601 strings)"),
        ({"t": datetime(2025, 1, 1)}, "datetime at $.t"),
        ({"m": Decimal("1.00")}, "Decimal at $.m"),
        ({"t": (1, 2)}, "tuple at $.t"),
        ({"s": {1, 2}}, "set at $.s"),
        ({"b": b"x"}, "bytes at $.b"),
        ({1: "x"}, "key 1 at $ is a int"),
        ({"a": {None: 1}}, "key None at $.a"),
        ({"n": 2**64}, "integer at $.n is outside"),
        ({"n": -(2**63) - 1}, "integer at $.n is outside"),
    ],
)
def test_other_types_are_refused_naming_their_path(value: Any, fragment: str) -> None:
    with pytest.raises(TypeError) as caught:
        canonical_json(value)
    assert fragment in str(caught.value)


def test_sha256_hex_is_lower_case_hex_of_the_bytes() -> None:
    digest = sha256_hex(b"abc")
    assert digest == hashlib.sha256(b"abc").hexdigest()
    assert digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.mark.parametrize("value", [1.0, (1,), date(2025, 1, 1), 2**64, {1: "a"}, True.__class__, Decimal("1")])
def test_the_fast_check_refuses_what_the_named_check_refuses(value: Any) -> None:
    with pytest.raises(TypeError, match=r"\$\.deep\[1\]\.x"):
        canonical_json({"deep": [0, {"x": value}]})


def test_encoded_records_take_about_their_own_size_in_memory() -> None:
    """orjson returns over-allocated buffers (1 KB to 8 KB for a few hundred bytes); a DRAFT
    batch holds one leaf per line, so each must cost about its length, not the buffer's."""
    import tracemalloc

    value = {f"column_{i}": f"value {i}" for i in range(20)}
    tracemalloc.start()
    try:
        held = [canonical_json(value) for _ in range(1000)] + [canonical_json_of_typed(value) for _ in range(1000)]
        used = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert used < 2 * sum(len(b) + 64 for b in held), used
