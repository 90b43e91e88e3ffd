"""Tests of the importer on SQLite and PostgreSQL: all-or-nothing feeds, supersede and stale."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from enterprise_registry import importer
from enterprise_registry.errors import ImportRejectedError, RecordError
from enterprise_registry.importer import (
    LoadReport,
    RecordChecker,
    load_jsonl,
    load_records,
    store_records,
)
from enterprise_registry.models import table_for
from enterprise_registry.records import KINDS

DATA = Path(__file__).parent / "data"
USCC = "91420600MA4T00019H"
OTHER_USCC = "91420606MA4T000273"

Snapshot = dict[str, list[tuple[Any, ...]]]


def good_lines() -> list[bytes]:
    return (DATA / "good.jsonl").read_bytes().splitlines()


def good_records() -> dict[str, dict[str, Any]]:
    return {record["kind"]: record for record in map(orjson.loads, good_lines())}


def bad_cases() -> list[dict[str, Any]]:
    """data/bad_records.yaml with each case's line text built (see the file's header)."""
    good = good_records()
    cases = yaml.safe_load((DATA / "bad_records.yaml").read_text(encoding="utf-8"))
    for case in cases:
        if "raw" not in case:
            record = dict(good[case["base"]])
            for key in case.get("drop", []):
                del record[key]
            record.update(case.get("set", {}))
            case["raw"] = orjson.dumps(record).decode()
    return list(cases)


BAD_CASES = bad_cases()


def write_feed(path: Path, lines: Sequence[bytes | str]) -> Path:
    path.write_bytes(b"\n".join(line.encode() if isinstance(line, str) else line for line in lines))
    return path


def snapshot(engine: Engine) -> Snapshot:
    """Every stored row of every table, in key order."""
    with engine.connect() as connection:
        result = {}
        for kind in KINDS:
            table = table_for(kind)
            rows = connection.execute(select(table).order_by(*table.primary_key.columns))
            result[kind] = [tuple(row) for row in rows]
        return result


def row_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            kind: connection.execute(select(func.count()).select_from(table_for(kind))).scalar_one() for kind in KINDS
        }


def nothing_stored(engine: Engine) -> bool:
    return all(count == 0 for count in row_counts(engine).values())


def where(errors: list[RecordError]) -> list[tuple[str, int, str | None]]:
    return [(error.file, error.line, error.field) for error in errors]


# -- good feeds ------------------------------------------------------------------------------


def test_good_feed_is_stored(db_engine: Engine, tmp_path: Path) -> None:
    path = write_feed(tmp_path / "good.jsonl", good_lines())
    report = load_jsonl(path, db_engine)
    assert report.records == 6
    assert report.by_kind == {kind: 1 for kind in KINDS}
    assert (report.stored, report.stale) == (6, 0)
    assert report.warnings == []
    assert report.seconds > 0 and report.rate > 0
    rows = snapshot(db_engine)
    assert rows["enterprise"] == [
        (
            USCC,
            "襄阳市测试精密机械有限公司",
            "enterprise",
            "420600",
            "C3484",
            date(2012, 3, 15),
            "active",
            False,
            "中国工商银行股份有限公司襄阳分行",
            "1804020109200012345",
            "襄阳市测试精密机械有限公司",
            "market_regulation",
            date(2025, 6, 30),
        )
    ]
    # Fen above 2**31 survive: the money columns are BIGINT.
    assert rows["tax_year"][0][1:] == (
        USCC,
        2024,
        86,
        4523678915,
        4312000000,
        3900000000,
        123456789,
        98765432,
        "A",
        "tax",
        date(2025, 5, 31),
    )
    assert rows["credit_listing"][0][1:] == (
        USCC,
        "abnormal_operation",
        date(2023, 4, 1),
        date(2023, 10, 9),
        "credit",
        date(2025, 6, 30),
    )


def test_empty_and_blank_feeds_store_nothing(db_engine: Engine, tmp_path: Path) -> None:
    report = load_jsonl(write_feed(tmp_path / "blank.jsonl", [b"", b"  ", b"\t"]), db_engine)
    assert (report.records, report.stored, report.by_kind) == (0, 0, {})
    assert nothing_stored(db_engine)


def test_blank_lines_bom_and_crlf(db_engine: Engine, tmp_path: Path) -> None:
    lines = good_lines()
    bom = b"\xef\xbb\xbf"
    path = write_feed(tmp_path / "dos.jsonl", [bom + lines[0] + b"\r", b"\r", *lines[1:]])
    assert load_jsonl(path, db_engine).records == 6


def test_records_given_as_objects(db_engine: Engine) -> None:
    # Policy tests write facts inline, often from YAML with dates already parsed.
    hire = {**good_records()["hire"], "hired_on": date(2024, 7, 8), "as_of": date(2025, 1, 31)}
    report = load_records([good_records()["enterprise"], hire], db_engine, origin="case-1")
    assert report.by_kind == {"enterprise": 1, "hire": 1}
    assert row_counts(db_engine)["hire"] == 1


def test_organisation_code_failure_is_only_a_warning(db_engine: Engine, tmp_path: Path) -> None:
    code = "91420600MA4T00090X"  # valid GB 32100 check, wrong GB 11714 check
    enterprise = {**good_records()["enterprise"], "uscc": code}
    path = write_feed(tmp_path / "warn.jsonl", [b"", orjson.dumps(enterprise)])
    report = load_jsonl(path, db_engine)
    assert report.stored == 1
    assert where(report.warnings) == [(str(path), 2, "uscc")]
    assert "GB 11714" in report.warnings[0].reason
    assert report.warnings_total == 1


# -- bad feeds: nothing is stored --------------------------------------------------------------


@pytest.mark.parametrize("case", BAD_CASES, ids=[case["name"] for case in BAD_CASES])
def test_bad_line_rejects_the_whole_file(db_engine: Engine, tmp_path: Path, case: dict[str, Any]) -> None:
    # Six good lines, a blank line (7), then the bad line: physical line 8.
    path = write_feed(tmp_path / "feed.jsonl", [*good_lines(), b"", case["raw"]])
    with pytest.raises(ImportRejectedError) as info:
        load_jsonl(path, db_engine)
    errors = info.value.errors
    assert where(errors) == [(str(path), 8, case["field"])]
    assert case["reason"] in errors[0].reason
    assert info.value.total == 1
    assert nothing_stored(db_engine)


def test_all_errors_are_reported_in_line_order(db_engine: Engine, tmp_path: Path) -> None:
    lines: list[bytes | str] = [*good_lines()]
    expected = []
    for case in BAD_CASES:
        lines.append(case["raw"])
        expected.append((str(tmp_path / "feed.jsonl"), len(lines), case["field"]))
    path = write_feed(tmp_path / "feed.jsonl", lines)
    with pytest.raises(ImportRejectedError) as info:
        load_jsonl(path, db_engine)
    assert where(info.value.errors) == expected
    assert info.value.total == len(BAD_CASES)
    assert nothing_stored(db_engine)


def test_error_list_is_capped_but_every_error_counted(db_engine: Engine) -> None:
    records: list[object] = [good_records()["enterprise"], *([[]] * 1005)]
    with pytest.raises(ImportRejectedError) as info:
        load_records(records, db_engine, origin="inline")
    assert len(info.value.errors) == importer.MAX_ERRORS == 1000
    assert info.value.total == 1005
    assert info.value.errors[0] == RecordError("inline", 2, None, "must be a JSON object, got an array")
    message = str(info.value)
    assert "1005 error(s)" in message and "and 985 more" in message
    assert "inline:2: must be a JSON object, got an array" in message
    assert nothing_stored(db_engine)


def test_duplicate_key_in_one_file(db_engine: Engine, tmp_path: Path) -> None:
    tax = {**good_records()["tax_year"], "revenue_fen": 1, "as_of": "2025-06-30"}
    path = write_feed(tmp_path / "dup.jsonl", [*good_lines(), orjson.dumps(tax)])
    with pytest.raises(ImportRejectedError) as info:
        load_jsonl(path, db_engine)
    assert where(info.value.errors) == [(str(path), 7, None)]
    assert info.value.errors[0].reason == (f"duplicate tax_year (uscc={USCC}, year=2024): already on line 2")
    assert nothing_stored(db_engine)


def test_same_person_hired_on_another_day_is_no_duplicate(db_engine: Engine) -> None:
    hire = good_records()["hire"]
    again = {**hire, "hired_on": "2024-09-01"}
    elsewhere = {**hire, "uscc": OTHER_USCC}
    report = load_records([hire, again, elsewhere], db_engine)
    assert report.stored == 3


def test_good_data_survives_a_refused_file(db_engine: Engine, tmp_path: Path) -> None:
    load_jsonl(write_feed(tmp_path / "first.jsonl", good_lines()), db_engine)
    before = snapshot(db_engine)
    # Newer versions of every record (they would replace the stored rows), then one bad line.
    newer = []
    for record in good_records().values():
        changed = {**record, "as_of": "2026-01-31"}
        if record["kind"] == "tax_year":
            changed["revenue_fen"] = 1
        newer.append(orjson.dumps(changed))
    newer.append(orjson.dumps({**good_records()["tax_year"], "year": 2023, "revenue_fen": -5}))
    path = write_feed(tmp_path / "second.jsonl", newer)
    with pytest.raises(ImportRejectedError) as info:
        load_jsonl(path, db_engine)
    assert where(info.value.errors) == [(str(path), 7, "revenue_fen")]
    assert snapshot(db_engine) == before


def test_error_names_the_file_as_given(db_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_feed(tmp_path / "relative.jsonl", [b"{"])
    with pytest.raises(ImportRejectedError) as info:
        load_jsonl(Path("relative.jsonl"), db_engine)
    assert str(info.value.errors[0]).startswith("relative.jsonl:1: malformed JSON at column 2")


def test_undecodable_bytes_are_a_line_error(db_engine: Engine, tmp_path: Path) -> None:
    path = write_feed(tmp_path / "latin1.jsonl", [*good_lines(), b'{"kind": "caf\xe9"}'])
    with pytest.raises(ImportRejectedError) as info:
        load_jsonl(path, db_engine)
    assert where(info.value.errors) == [(str(path), 7, None)]
    assert nothing_stored(db_engine)


# -- facts of a day to come, and the departments a feed speaks for ---------------------------------

TODAY = date(2025, 6, 30)  # the as_of of the newest line of good.jsonl


def test_a_line_as_of_a_later_day_rejects_the_file(db_engine: Engine, tmp_path: Path) -> None:
    assert max(record["as_of"] for record in good_records().values()) == TODAY.isoformat()
    tomorrow = {**good_records()["tax_year"], "year": 2023, "as_of": (TODAY + timedelta(days=1)).isoformat()}
    path = write_feed(tmp_path / "future.jsonl", [*good_lines(), orjson.dumps(tomorrow)])
    with pytest.raises(ImportRejectedError) as info:
        load_jsonl(path, db_engine, today=TODAY)
    assert where(info.value.errors) == [(str(path), 7, "as_of")]
    assert info.value.errors[0].reason.startswith("2025-07-01 is after today (2025-06-30, Asia/Shanghai)")
    assert str(info.value.errors[0]).startswith(f"{path}:7: as_of: ")
    assert nothing_stored(db_engine)
    # A day earlier everything is fine: lines as of today itself are accepted.
    assert load_jsonl(path, db_engine, today=TODAY + timedelta(days=1)).records == 7


def test_records_given_as_objects_are_checked_against_today(db_engine: Engine) -> None:
    records = list(good_records().values())
    assert [record["as_of"] for record in records].count(TODAY.isoformat()) == 2  # lines 1 and 6
    with pytest.raises(ImportRejectedError) as info:
        load_records(records, db_engine, origin="case", today=TODAY - timedelta(days=1))
    assert where(info.value.errors) == [("case", 1, "as_of"), ("case", 6, "as_of")]
    assert nothing_stored(db_engine)


def test_a_feed_writes_only_for_its_departments() -> None:
    good = good_records()
    checker = RecordChecker("feed", sources=["tax"])
    assert checker.check(1, good["enterprise"]) is None
    tax = checker.check(2, good["tax_year"])
    assert tax is not None and tax.source == "tax"
    assert checker.errors == [
        RecordError(
            "feed", 1, "source", "department market_regulation is not a source of this feed (it may write only for tax)"
        )
    ]
    assert RecordChecker("feed", sources=["tax", "market_regulation"]).check(1, good["enterprise"]) is not None


def test_a_record_refused_for_its_source_leaves_its_key_free() -> None:
    qualification = good_records()["qualification"]  # from science_technology
    checker = RecordChecker("feed", sources=["science_technology"])
    assert checker.check(1, {**qualification, "source": "industry_it"}) is None
    assert checker.check(2, qualification) is not None  # same key, not a "duplicate of line 1"
    assert [(e.line, e.field) for e in checker.errors] == [(1, "source")]


# -- superseding ---------------------------------------------------------------------------------


def stored_tax(engine: Engine) -> list[tuple[int, date]]:
    table = table_for("tax_year")
    with engine.connect() as connection:
        rows = connection.execute(select(table.c.revenue_fen, table.c.as_of).order_by(table.c.year))
        return [(row.revenue_fen, row.as_of) for row in rows]


def test_later_feed_supersedes_and_older_is_stale(db_engine: Engine) -> None:
    tax = good_records()["tax_year"]
    load_records([tax], db_engine)

    newer = load_records([{**tax, "as_of": "2025-07-31", "revenue_fen": 200}], db_engine)
    assert (newer.stored, newer.stale) == (1, 0)
    assert stored_tax(db_engine) == [(200, date(2025, 7, 31))]

    same_day = load_records([{**tax, "as_of": "2025-07-31", "revenue_fen": 300}], db_engine)
    assert (same_day.stored, same_day.stale) == (1, 0)
    assert stored_tax(db_engine) == [(300, date(2025, 7, 31))]

    older = load_records([{**tax, "as_of": "2025-01-31", "revenue_fen": 100}], db_engine)
    assert (older.records, older.stored, older.stale) == (1, 0, 1)
    assert stored_tax(db_engine) == [(300, date(2025, 7, 31))]


def test_supersede_replaces_every_column(db_engine: Engine) -> None:
    enterprise = good_records()["enterprise"]
    load_records([enterprise], db_engine)
    closed = {**enterprise, "as_of": "2025-09-30", "status": "deregistered", "bank_account": None}
    load_records([closed], db_engine)
    (row,) = snapshot(db_engine)["enterprise"]
    assert row[6] == "deregistered"
    assert row[8:11] == (None, None, None)
    assert row_counts(db_engine)["enterprise"] == 1


def test_stale_and_stored_mix_across_batches(db_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importer, "BATCH_ROWS", 7)  # many statements from a few records
    tax = good_records()["tax_year"]
    first = [{**tax, "year": year} for year in range(1990, 2020)]
    load_records(first, db_engine)
    # Even years come newer, odd years older than what is stored.
    second = [
        {**tax, "year": year, "revenue_fen": 7, "as_of": f"{2025 if year % 2 == 0 else 2024}-12-31"}
        for year in range(1990, 2025)
    ]
    report = load_records(second, db_engine)
    assert (report.records, report.stored, report.stale) == (35, 20, 15)
    revenues = [revenue for revenue, _ in stored_tax(db_engine)]
    kept = tax["revenue_fen"]
    assert revenues == [7 if year % 2 == 0 or year >= 2020 else kept for year in range(1990, 2025)]


# -- building blocks ----------------------------------------------------------------------------


def test_checked_records_then_store_records(db_engine: Engine) -> None:
    """The building blocks ImportFacts streams through: check each record, store the good ones."""
    good = good_records()
    checker = RecordChecker("stream", max_errors=None)
    checked = [
        checker.check(line, obj)
        for line, obj in [(1, good["tax_year"]), (2, {**good["tax_year"], "year": "2024"}), (3, good["hire"])]
    ]
    records = [record for record in checked if record is not None]
    assert [record.kind for record in records] == ["tax_year", "hire"]
    assert checker.errors == [RecordError("stream", 2, "year", 'must be an integer, got "2024"')]
    with db_engine.begin() as connection:
        assert store_records(connection, records) == (2, 0)
    with db_engine.begin() as connection:
        assert store_records(connection, records) == (2, 0)  # same as_of: replaced again
    assert row_counts(db_engine)["tax_year"] == 1


def test_load_report_rate() -> None:
    assert LoadReport(records=100, seconds=2.0).rate == 50.0
    assert LoadReport().rate == 0.0
