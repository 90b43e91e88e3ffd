"""docs/reliability.md is written from runs (tools/reliability_report.py): every test module it
names exists and says what it tries; counts, failures and Hypothesis examples come from the
JUnit XML; a failed test turns "nothing lost" into the list of what failed."""

from __future__ import annotations

import base64
from pathlib import Path

from tools.reliability_report import GROUPS, ROOT, read_tests, render, summary_of

STATS = """tests/unit/rules/test_hostile_rules.py::test_any_text:

  - during generate phase (0.69 seconds):
    - 300 passing, 0 failing, and 2 invalid test cases
"""


def _xml(tmp_path: Path, *, failing: bool) -> Path:
    failure = '<failure message="boom">trace</failure>' if failing else ""
    stats = base64.b64encode(STATS.encode()).decode()
    path = tmp_path / "results.xml"
    faults = "tests.integration.server.test_storage_faults"
    path.write_text(
        f"""<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" timestamp="2026-12-04T01:00:00">
<properties>
<property name="hypothesis-statistics-tests/unit/rules/test_hostile_rules.py::test_any_text" value="{stats}"/>
</properties>
<testcase classname="tests.unit.rules.test_hostile_rules" name="test_any_text" time="1.5"/>
<testcase classname="{faults}" name="test_full[sqlite]" time="2.0">{failure}</testcase>
<testcase classname="{faults}" name="test_full[postgresql]" time="2.0"><skipped/></testcase>
</testsuite></testsuites>""",
        encoding="utf-8",
    )
    return path


def test_every_module_the_report_names_exists_and_says_what_it_tries() -> None:
    for group in GROUPS:
        for module in group.modules:
            assert (ROOT / module).is_file(), module
            assert len(summary_of(module)) > 40, f"{module} has no docstring worth showing"


def test_counts_databases_and_examples_come_from_the_xml(tmp_path: Path) -> None:
    tests = read_tests(_xml(tmp_path, failing=False))
    assert (tests.total.passed, tests.total.failed, tests.total.skipped) == (2, 0, 1)
    assert tests.by_database["sqlite"].passed == 1 and tests.by_database["postgresql"].skipped == 1
    assert tests.examples == {"tests/unit/rules/test_hostile_rules.py": 300}
    report = render(tests, [])
    assert "| `tests/unit/rules/test_hostile_rules.py` | 1/1 | 300 |" in report
    assert "Nothing: the 2 tests above passed" in report
    assert "Not measured in this report" in report
    assert "a checkout the results do not name" in report  # no git_commit property in this XML


def test_a_failed_test_is_listed_and_nothing_is_claimed(tmp_path: Path) -> None:
    report = render(read_tests(_xml(tmp_path, failing=True)), [])
    assert "1 of 2 tests above failed" in report
    assert "tests.integration.server.test_storage_faults::test_full[sqlite]" in report
    assert "Nothing:" not in report
