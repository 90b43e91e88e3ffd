"""Canonical JSON (sorted keys, UTF-8, no whitespace, no floats) and SHA-256 for the audit ledger."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

# orjson refuses integers outside this range; say where instead of failing without a path.
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


def canonical_json(value: Any) -> bytes:
    """Encode `value` as canonical JSON bytes: the same value always gives the same bytes.

    Keys are sorted, non-ASCII text is kept as UTF-8 and there is no insignificant whitespace.
    Allowed: dict (str keys only), list, str, int, bool, None. Floats are refused anywhere
    (their text is not canonical across writers; give amounts as integer fen, ratios as strings),
    and so are dates: callers pass them as ISO 8601 strings. Raises `TypeError` naming the path
    of the first offending value, e.g. `$.conditions[2].ratio`.
    """
    if not _allowed(value):
        _check(value, "$")  # walks again, with paths, to name the first offending value
    return _trimmed(orjson.dumps(value, option=orjson.OPT_SORT_KEYS))


def canonical_json_of_typed(value: Any) -> bytes:
    """`canonical_json` without the walk that refuses floats and dates: for values built by our
    own code from typed sources only (a `Decision`, a facts document of the typed registry), where
    the walk cost a third of writing a record. The bytes are the same as `canonical_json`'s."""
    return _trimmed(orjson.dumps(value, option=orjson.OPT_SORT_KEYS))


def _trimmed(encoded: bytes) -> bytes:
    """A copy of orjson's result in a buffer of its own size. orjson (3.11: 1 KB and up; 3.12+:
    4 KB and up) returns bytes whose allocation is far larger than their length; holding tens of
    thousands of them (a DRAFT batch's line leaves) took 460 MB for 59,000 leaves of 350 bytes."""
    return bytes(memoryview(encoded))


def sha256_hex(data: bytes) -> str:
    """Lower-case hex SHA-256 of `data` (64 characters)."""
    return hashlib.sha256(data).hexdigest()


def _allowed(value: Any) -> bool:
    """The fast check (no paths): every value is one canonical JSON allows. Evaluation records
    hold thousands of values each, so this loop is on the hot path of every batch."""
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if not _INT_MIN <= item <= _INT_MAX:
                return False
        elif kind is dict:
            for key in item:
                if type(key) is not str:
                    return False
            pending.extend(item.values())
        elif kind is list:
            pending.extend(item)
        else:
            return False  # floats, tuples, dates, subclasses: let the slow walk decide and name them
    return True


def _check(value: Any, path: str) -> None:
    # Checked before orjson sees the value: orjson would happily encode floats, tuples and dates.
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, float):
        raise TypeError(f"float at {path} is not allowed in canonical JSON (use int or str): {value!r}")
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise TypeError(f"integer at {path} is outside the 64-bit range canonical JSON allows")
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check(item, f"{path}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"key {key!r} at {path} is a {type(key).__name__}; only str keys are allowed")
            _check(item, _child(path, key))
        return
    hint = " (give dates as ISO 8601 strings)" if hasattr(value, "isoformat") else ""
    raise TypeError(f"{type(value).__name__} at {path} is not allowed in canonical JSON{hint}")


def _child(path: str, key: str) -> str:
    if key.isidentifier():
        return f"{path}.{key}"
    return f"{path}[{orjson.dumps(key).decode()}]"
