"""docs/reliability.md, written from what was run: the JUnit XML of `make test` and the figures of
`make load`. Nothing in the report is typed by hand; a figure that was not measured says so.

    python tools/reliability_report.py [--tests var/test-results.xml]
        [--load bench/results/load-latest-sqlite.json ...] [--out docs/reliability.md]
    # or: make reliability-report (after make test, and make load for the load figures)

Each part of the report is a group of test modules (GROUPS below): what they try is their own
module docstring, how many tests of each ran and passed comes from the XML, and the examples the
property-based tests generated from Hypothesis's statistics in the same XML.
"""

from __future__ import annotations

import argparse
import ast
import base64
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Group:
    title: str
    claim: str  # what the group's passing tests establish, in one sentence
    modules: tuple[str, ...]  # test files, relative to the repository


GROUPS = (
    Group(
        "Bad inputs tried",
        "Bad input always gets a clean status naming the field (INVALID_ARGUMENT, NOT_FOUND, ...), "
        "never a crash, a hang, UNKNOWN/INTERNAL or a partial write.",
        (
            "tests/unit/rules/test_hostile_rules.py",
            "tests/unit/enterprise_registry/test_hostile_importer.py",
            "tests/unit/service/test_hostile_paging.py",
            "tests/unit/service/test_hostile_requests.py",
            "tests/integration/api/test_api_hostile.py",
        ),
    ),
    Group(
        "Slow callers and limits",
        "Silent callers, watchers and principals over their limits cannot stop the server answering "
        "others; a refusal is RESOURCE_EXHAUSTED with RetryInfo, or DEADLINE_EXCEEDED for a silent body.",
        (
            "tests/integration/server/test_starvation.py",
            "tests/integration/server/test_aio_redteam.py",
            "tests/integration/api/test_api_limits.py",
            "tests/unit/service/test_admission.py",
        ),
    ),
    Group(
        "Faults survived",
        "The database going away, filling up or turning read-only, processes killed or stopped, "
        "policies and principals reloaded: a clear status with a retry hint, recovery without a "
        "restart, and no record, grant or ledger entry lost or doubled.",
        (
            "tests/integration/server/test_database_outage.py",
            "tests/integration/registry/test_database_timeouts.py",
            "tests/integration/server/test_storage_faults.py",
            "tests/integration/server/test_process_faults.py",
            "tests/integration/server/test_api_shutdown.py",
            "tests/integration/server/test_policy_reload.py",
            "tests/integration/payouts/test_payout_crash.py",
            "tests/integration/audit/test_checkpoint_failures.py",
        ),
    ),
)


@dataclass
class Outcome:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def ran(self) -> int:
        return self.passed + self.failed

    def add(self, case: ElementTree.Element) -> None:
        self.seconds += float(case.get("time") or 0)
        if case.find("skipped") is not None:
            self.skipped += 1
        elif case.find("failure") is not None or case.find("error") is not None:
            self.failed += 1
            self.failures.append(f"{case.get('classname')}::{case.get('name')}")
        else:
            self.passed += 1


@dataclass
class TestRun:
    total: Outcome
    by_file: dict[str, Outcome]
    by_database: dict[str, Outcome]
    examples: dict[str, int]  # test file -> Hypothesis examples generated (passing, all its tests)
    stamp: str
    commit: str  # the commit tested, as tests/conftest.py records it ("" in older results)


def read_tests(path: Path) -> TestRun:
    tree = ElementTree.parse(path)
    suites = [tree.getroot()] if tree.getroot().tag == "testsuite" else list(tree.getroot())
    total = Outcome()
    by_file: dict[str, Outcome] = {}
    by_database: dict[str, Outcome] = {}
    examples: dict[str, int] = {}
    tested = ""
    for suite in suites:
        for case in suite.iter("testcase"):
            module = _file_of(case.get("classname") or "")
            total.add(case)
            by_file.setdefault(module, Outcome()).add(case)
            database = _database_of(case.get("name") or "")
            if database:
                by_database.setdefault(database, Outcome()).add(case)
        for prop in suite.iter("property"):
            name = prop.get("name") or ""
            if name == "git_commit":
                tested = prop.get("value") or ""
            if name.startswith("hypothesis-statistics-"):
                stats = base64.b64decode(prop.get("value") or "").decode()
                module = name.removeprefix("hypothesis-statistics-").split("::", 1)[0]
                examples[module] = examples.get(module, 0) + sum(
                    int(n) for n in re.findall(r"(\d+) passing(?: examples)?,", stats)
                )
    stamp = suites[0].get("timestamp", "") if suites else ""
    return TestRun(total, by_file, by_database, examples, stamp, tested)


def _file_of(classname: str) -> str:
    """`tests.unit.rules.test_x.TestY` -> `tests/unit/rules/test_x.py` (a class part dropped)."""
    parts = classname.split(".")
    while parts and not parts[-1].startswith("test_"):
        parts.pop()
    return "/".join(parts) + ".py" if parts else classname


def _database_of(name: str) -> str | None:
    found = re.search(r"\[(?:[^\]]*-)?(sqlite|postgresql)(?:-[^\]]*)?\]", name)
    return found.group(1) if found else None


def summary_of(module: str) -> str:
    """The first paragraph of a test module's docstring, on one line."""
    text = ast.get_docstring(ast.parse((ROOT / module).read_text(encoding="utf-8"))) or ""
    return " ".join(text.split("\n\n", 1)[0].split())


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def render(tests: TestRun | None, loads: Sequence[dict[str, Any]]) -> str:
    lines = [
        "# Reliability report",
        "",
        "Written by `make reliability-report` (`tools/reliability_report.py`) from the JUnit XML of",
        "`make test` and the figures of `make load`; do not edit by hand. Every figure below is what",
        "those runs measured; a part that was not run says so.",
        "",
    ]
    lines += _tests_part(tests) + _load_part(loads)
    if tests is not None:
        for group in GROUPS:
            lines += _group_part(group, tests)
        lines += _lost_part(tests)
    return "\n".join(lines).rstrip() + "\n"


def _tests_part(tests: TestRun | None) -> list[str]:
    lines = ["## Tests run", ""]
    if tests is None:
        return [*lines, "No test results were given (`make test` writes var/test-results.xml).", ""]
    t = tests.total
    tested = (
        f"commit {tests.commit}"
        if tests.commit
        else f"a checkout the results do not name (this report was written at commit {commit()})"
    )
    lines += [
        f"`make test` at {tests.stamp or 'an unrecorded time'}, {tested}: {t.ran + t.skipped:,} tests, "
        f"{t.passed:,} passed, {t.failed:,} failed, {t.skipped:,} skipped or expected failures (xfail), "
        f"{t.seconds / 60:.1f} min of test time.",
        "",
        "| database | passed | failed | skipped |",
        "|---|---|---|---|",
    ]
    for database, outcome in sorted(tests.by_database.items()):
        lines.append(f"| {database} | {outcome.passed:,} | {outcome.failed:,} | {outcome.skipped:,} |")
    return [
        *lines,
        "",
        "Tests without a database in their id (unit tests, gRPC without a database) are in the total only.",
        "",
    ]


def _group_part(group: Group, tests: TestRun) -> list[str]:
    lines = [
        f"## {group.title}",
        "",
        group.claim,
        "",
        "| tests | passed | examples | what they try |",
        "|---|---|---|---|",
    ]
    for module in group.modules:
        outcome = tests.by_file.get(module)
        if outcome is None:
            lines.append(f"| `{module}` | not run | | {summary_of(module)} |")
            continue
        examples = tests.examples.get(module)
        generated = f"{examples:,}" if examples else ""
        lines.append(
            f"| `{module}` | {outcome.passed}/{outcome.ran}"
            + (f" ({outcome.skipped} skipped)" if outcome.skipped else "")
            + f" | {generated} | {summary_of(module)} |"
        )
    return [*lines, "", "Examples: inputs generated by Hypothesis (derandomized: the same each run) that passed.", ""]


def _load_part(loads: Sequence[dict[str, Any]]) -> list[str]:
    lines = ["## Load held", ""]
    if not loads:
        return [*lines, "Not measured in this report (`make load` writes bench/results/load-latest-<db>.json).", ""]
    for figures in loads:
        lines += _one_load(figures)
    return lines


def _one_load(figures: dict[str, Any]) -> list[str]:
    """One `make load` run, in the keys benchmarks/load_run.py writes."""
    rss, verify, decisions, batch = (figures.get(k) or {} for k in ("rss", "verify", "decisions", "batch"))
    lines = [
        f"### {figures.get('db')}: {'passed' if figures.get('passed') else 'FAILED'}",
        "",
        f"`make load{' DB=postgresql' if figures.get('db') == 'postgresql' else ''}` at {figures.get('date')}, "
        f"commit {str(figures.get('git_commit'))[:7]}, {_n(figures.get('enterprises'))} enterprises: "
        f"{_n(figures.get('calls'))} calls by {figures.get('clients')} concurrent clients in "
        f"{_f(figures.get('wall_s'))} s ({_f(figures.get('calls_per_s'))} calls/s); errors: "
        f"{_n(figures.get('errors'))}; RESOURCE_EXHAUSTED from rate limits (counted apart): "
        f"{_n(figures.get('rate_limited'))}.",
        "",
        f"- Server RSS: {_f(rss.get('warmup_mb'))} MB after warm-up, {_f(rss.get('end_mb'))} MB at the end, "
        f"{_f(rss.get('max_mb'))} MB at most: growth {_f(rss.get('growth_pct'))} % (bound: < 10 %).",
        f"- One payout batch in flight: {batch.get('policy')} to {batch.get('state')} in {_f(batch.get('seconds'))} s, "
        f"{_n(batch.get('evaluated'))} enterprises evaluated, {_n(batch.get('lines'))} lines.",
        f"- Decisions answered by ExplainEligibility: {_n(decisions.get('answered'))}; stored as answered: "
        f"{_n(decisions.get('stored'))}; missing {_n(decisions.get('missing'))}, differing "
        f"{_n(decisions.get('differing'))}.",
        f"- The ledger afterwards: VerifyAuditLog {'VALID' if verify.get('valid') else 'NOT VALID'}, "
        f"{_n(verify.get('entries_checked'))} entries.",
        "",
        "| method | calls | errors | p50 ms | p99 ms | max ms | statuses |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in sorted(dict(figures.get("methods") or {}).items()):
        statuses = ", ".join(f"{code} {count:,}" for code, count in sorted(dict(m.get("codes") or {}).items()))
        lines.append(
            f"| {name} | {_n(m.get('calls'))} | {_n(m.get('errors'))} | {_f(m.get('p50_ms'))} | "
            f"{_f(m.get('p99_ms'))} | {_f(m.get('max_ms'))} | {statuses} |"
        )
    return [*lines, "", "Latencies are of the OK calls after the warm-up (the first 20 % of calls).", ""]


def _lost_part(tests: TestRun) -> list[str]:
    modules = [m for g in GROUPS for m in g.modules]
    outcomes = [tests.by_file[m] for m in modules if m in tests.by_file]
    failed = [name for o in outcomes for name in o.failures]
    ran = sum(o.ran for o in outcomes)
    lines = ["## What was lost", ""]
    if failed:
        return [
            *lines,
            f"{len(failed)} of {ran} tests above failed; until they pass, nothing is claimed:",
            "",
            *(f"- `{name}`" for name in failed),
            "",
        ]
    return [
        *lines,
        f"Nothing: the {ran} tests above passed. The fault tests among them check after each fault that "
        "what was committed is there once, that no grant is lost or doubled and that the ledger verifies "
        "(each module's docstring says what it checks); expected failures (xfail) are listed with their "
        "reasons in the test run's summary.",
        "",
    ]


def _n(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def _f(value: object) -> str:
    return f"{value:,.1f}" if isinstance(value, (int, float)) else str(value)


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", type=Path, default=ROOT / "var" / "test-results.xml")
    parser.add_argument("--load", type=Path, action="append", default=[], help="a load run's JSON (repeatable)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability.md")
    args = parser.parse_args(list(argv) if argv is not None else None)
    tests = read_tests(args.tests) if args.tests.exists() else None
    loads = [json.loads(p.read_text(encoding="utf-8")) for p in args.load if p.exists()]
    args.out.write_text(render(tests, loads), encoding="utf-8")
    print(f"wrote {args.out}" + ("" if tests else f" (no test results at {args.tests})"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
