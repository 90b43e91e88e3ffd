"""Hostile feeds (enterprise_registry/importer.py): whatever a line holds, it is a record or a
problem naming its line (and field, where one is wrong), never another exception; a NUL in any
string of any record, which PostgreSQL text cannot store, is refused naming line and field and
nothing of the feed is stored (on SQLite and PostgreSQL)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from enterprise_registry.errors import ImportRejectedError
from enterprise_registry.importer import RecordChecker, _json_lines, load_jsonl
from enterprise_registry.models import table_for
from enterprise_registry.records import KINDS

DATA = Path(__file__).parent / "data"
GOOD_LINES = (DATA / "good.jsonl").read_bytes().splitlines()
GOOD = [orjson.loads(line) for line in GOOD_LINES]
FUZZ = settings(derandomize=True, max_examples=300, deadline=None)


def _strings(value: object, path: str = "") -> Iterator[tuple[str, str]]:
    """(dotted path, value) of every string in a record, nested objects included."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}" if path else key)


def _with(record: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    copy = orjson.loads(orjson.dumps(record))
    *parents, leaf = path.split(".")
    target = copy
    for key in parents:
        target = target[key]
    target[leaf] = value
    return copy  # type: ignore[no-any-return]  # orjson.loads returns Any


# (line of the record in the feed, field path) for every string field of the good feed
NUL_CASES = [(line, path) for line, record in enumerate(GOOD, start=1) for path, _ in _strings(record)]


def stored_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return sum(conn.execute(select(func.count()).select_from(table_for(kind))).scalar_one() for kind in KINDS)


def test_the_cases_cover_every_kind_of_the_good_feed() -> None:
    assert len(NUL_CASES) > 20
    assert {GOOD[line - 1]["kind"] for line, _ in NUL_CASES} == {record["kind"] for record in GOOD}


@pytest.mark.parametrize(("line", "path"), NUL_CASES, ids=[f"{GOOD[n - 1]['kind']}.{p}" for n, p in NUL_CASES])
def test_a_nul_in_any_string_is_refused_naming_line_and_field(
    db_engine: Engine, tmp_path: Path, line: int, path: str
) -> None:
    records = list(GOOD)
    original = dict(_strings(records[line - 1]))[path]
    records[line - 1] = _with(records[line - 1], path, original[:1] + "\x00" + original[1:])
    feed = tmp_path / "feed.jsonl"
    feed.write_bytes(b"\n".join(orjson.dumps(r) for r in records) + b"\n")
    with pytest.raises(ImportRejectedError) as raised:
        load_jsonl(feed, db_engine)
    assert [(e.line, e.field) for e in raised.value.errors] == [(line, path)]
    assert stored_rows(db_engine) == 0


def test_a_nul_in_a_field_name_is_refused_naming_the_line(db_engine: Engine, tmp_path: Path) -> None:
    feed = tmp_path / "feed.jsonl"
    record = {**GOOD[0], "na\x00me": "x"}
    feed.write_bytes(orjson.dumps(record) + b"\n")
    with pytest.raises(ImportRejectedError) as raised:
        load_jsonl(feed, db_engine)
    assert [e.line for e in raised.value.errors] == [1]
    assert stored_rows(db_engine) == 0


def _judge(raw: bytes) -> None:
    """One line through the importer's own reading and checking: a record, or problems on line 1."""
    checker = RecordChecker("feed.jsonl", today=None)
    for line, obj in _json_lines(io.BytesIO(raw)):
        record = checker.check(line, obj)
        if record is None:
            assert checker.errors, "a refused line must say why"
            assert {e.line for e in checker.errors} == {line}
            assert all(e.file == "feed.jsonl" and e.reason for e in checker.errors)


@FUZZ
@given(st.binary(max_size=400) | st.text(max_size=200).map(str.encode))
def test_any_bytes_as_a_line_are_a_record_or_a_problem_on_that_line(raw: bytes) -> None:
    _judge(raw.replace(b"\n", b" "))


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(st.sampled_from(GOOD), st.data())
def test_a_good_record_with_any_field_set_to_any_json_is_a_record_or_a_problem(
    record: dict[str, Any], data: st.DataObject
) -> None:
    paths = [*record, *(p for p, _ in _strings(record) if "." in p)]
    path = data.draw(st.sampled_from(paths))
    value = data.draw(_JSON | st.integers(min_value=-(2**70), max_value=2**70) | st.sampled_from(["", " ", "\x00"]))
    # the standard encoder: it writes integers past 64 bits too, as a department's might
    _judge(json.dumps(_with(record, path, value), ensure_ascii=False).encode())


@pytest.mark.parametrize(
    "raw",
    [b"[" * 100_000, b'{"kind": ' * 10_000, b"{" + b'"a": 1, ' * 50_000 + b"}", b"1" * 100_000, b"\xff\xfe\x00"],
    ids=["deep-array", "deep-object", "wide-object", "huge-number", "not-utf8"],
)
def test_a_hostile_line_is_a_problem_on_its_line(raw: bytes) -> None:
    checker = RecordChecker("feed.jsonl", today=None)
    assert [checker.check(line, obj) for line, obj in _json_lines(io.BytesIO(raw))] == [None]
    assert [e.line for e in checker.errors] == [1]
