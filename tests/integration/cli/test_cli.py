"""The `benefits` command end to end: load a feed, evaluate with --json, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from testkit.api_fixtures import enterprise_record as _enterprise
from testkit.api_fixtures import si_record
from testkit.cli_commands import evaluate_command
from testkit.paths import POLICIES_DIR

from enterprise_registry.clock import Clock
from enterprise_registry.db import make_engine
from enterprise_registry.uscc import make
from service.cli import main

A = make("91420606MA4K10001")
B = make("91420606MA4K10002")


def _si(uscc: str, **overrides: object) -> dict[str, object]:
    """A 2024 social-insurance record with exactly 5.5 % claimants (the inclusive edge)."""
    return si_record(uscc, **{"ui_benefit_claimants": 55, **overrides})


def _hire(uscc: str, person: str, hired_on: str) -> dict[str, object]:
    return {
        "kind": "hire",
        "uscc": uscc,
        "source": "human_resources",
        "as_of": "2025-12-31",
        "year": 2025,
        "hired_on": hired_on,
        "person_ref": person,
        "category": "graduate",
        "graduation_year": 2025,
        "age": 22,
        "labor_contract": True,
        "insured_months": 3,
        "absorption_subsidy_claimed": False,
    }


def _write(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _evaluate(
    capsys: pytest.CaptureFixture[str], db_url: str, uscc: str, policy: str, period: int = 2025
) -> dict[str, Any]:
    code = main(evaluate_command(db_url, uscc, policy, period=period))
    out = capsys.readouterr().out
    assert code == 0, out
    evaluation: dict[str, Any] = json.loads(out)  # the JSON document `evaluate --json` prints
    return evaluation


def _first_evaluation(capsys: pytest.CaptureFixture[str], db_url: str, tmp_path: Path) -> str:
    """A loaded (enterprise and social-insurance record) by `registry load`, then evaluated under
    stable-jobs-refund: the id of that evaluation's record."""
    feed = _write(tmp_path / "feed.jsonl", [_enterprise(A), _si(A)])
    assert main(["registry", "load", str(feed), "--db", db_url]) == 0
    capsys.readouterr()
    evaluation_id: str = _evaluate(capsys, db_url, A, "stable-jobs-refund")["evaluation_id"]
    return evaluation_id


def test_load_then_evaluate_json(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feed = _write(tmp_path / "feed.jsonl", [_enterprise(A), _si(A), _enterprise(B), _si(B, ui_benefit_claimants=56)])
    assert main(["registry", "load", str(feed), "--db", db_url]) == 0
    capsys.readouterr()

    eligible = _evaluate(capsys, db_url, A, "stable-jobs-refund")
    assert eligible["outcome"] == "ELIGIBLE"
    assert eligible["amount_fen"] == 37037015
    layoff = next(c for c in eligible["conditions"] if c["id"] == "layoff-rate")
    assert layoff["result"] is True
    assert {r["name"] for r in layoff["reads"]} >= {"si.ui_benefit_claimants", "si.insured_avg_monthly"}
    assert all(r["source"] == "human_resources" and r["as_of"] == "2025-01-31" for r in layoff["reads"])

    ineligible = _evaluate(capsys, db_url, B, "stable-jobs-refund")
    assert ineligible["outcome"] == "INELIGIBLE"
    assert ineligible["amount_fen"] == 0


def test_person_hired_by_two_enterprises_counts_once(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    feed = _write(
        tmp_path / "hires.jsonl",
        [
            _enterprise(A),
            _enterprise(B),
            _hire(A, "P000001", "2025-03-01"),
            _hire(B, "P000001", "2025-02-01"),
            _hire(A, "P000002", "2025-04-01"),
        ],
    )
    assert main(["registry", "load", str(feed), "--db", db_url]) == 0
    capsys.readouterr()
    assert _evaluate(capsys, db_url, A, "job-expansion-subsidy")["amount_fen"] == 150000
    assert _evaluate(capsys, db_url, B, "job-expansion-subsidy")["amount_fen"] == 150000


def test_refused_feed_stores_nothing_and_names_the_line(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _write(tmp_path / "good.jsonl", [_enterprise(A), _si(A)])
    assert main(["registry", "load", str(good), "--db", db_url]) == 0
    bad = _write(tmp_path / "bad.jsonl", [_enterprise(B), _si(B, ui_premium_paid_fen=12.5)])
    assert main(["registry", "load", str(bad), "--db", db_url]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2:" in err and "ui_premium_paid_fen" in err
    code = main(["evaluate", "--db", db_url, "--uscc", B, "--policy", "stable-jobs-refund", "--period", "2025"])
    assert code == 2
    assert f"no facts on record for enterprise {B}" in capsys.readouterr().err
    assert _evaluate(capsys, db_url, A, "stable-jobs-refund")["outcome"] == "ELIGIBLE"


def test_a_line_as_of_a_day_to_come_refuses_the_feed(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    today = Clock().today()  # the Asia/Shanghai date, as the command reads it
    # Two days ahead: still in the future should the test straddle midnight in Shanghai.
    later = (today + timedelta(days=2)).isoformat()
    bad = _write(tmp_path / "future.jsonl", [_enterprise(B), _si(B, as_of=later)])
    assert main(["registry", "load", str(bad), "--db", db_url]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2: as_of: {later} is after today (" in err and "Asia/Shanghai" in err
    assert f"nothing of {bad} was stored" in err
    assert main(["evaluate", "--db", db_url, "--uscc", B, "--policy", "stable-jobs-refund", "--period", "2025"]) == 2
    assert f"no facts on record for enterprise {B}" in capsys.readouterr().err
    # Facts as of today itself are no facts of the future.
    good = _write(tmp_path / "today.jsonl", [_enterprise(B, as_of=today.isoformat()), _si(B)])
    assert main(["registry", "load", str(good), "--db", db_url]) == 0


def test_a_database_refusal_is_told_without_the_row(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    account = {"bank_name": "中国银行襄阳分行", "account_no": "6217856200031415926", "account_name": "襄阳"}
    assert (
        main(
            [
                "registry",
                "load",
                str(_write(tmp_path / "a.jsonl", [_enterprise(A, bank_account=account)])),
                "--db",
                db_url,
            ]
        )
        == 0
    )
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:  # a constraint the schema lacks: the database refuses the next feed
            conn.execute(text("create unique index uq_cli_account on enterprise (bank_account_no)"))
    finally:
        engine.dispose()
    capsys.readouterr()
    feed = _write(tmp_path / "b.jsonl", [_enterprise(B, bank_account=account)])
    assert main(["registry", "load", str(feed), "--db", db_url]) == 2
    out, err = capsys.readouterr()
    if db_url.startswith("postgresql"):  # the importer writes through psycopg's own cursor there
        assert err == (
            "error: database: psycopg.errors.UniqueViolation: duplicate key value violates "
            'unique constraint "uq_cli_account"\n'
        )
    else:
        assert err == (
            "error: database: sqlalchemy.exc.IntegrityError: sqlite3.IntegrityError: "
            "UNIQUE constraint failed: enterprise.bank_account_no\n"
        )
    assert account["account_no"] not in out


def test_evaluate_refuses_unknown_policy_and_period(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    assert main(["evaluate", "--db", db, "--uscc", A, "--policy", "no-such", "--period", "2025"]) == 2
    assert "unknown policy 'no-such'" in capsys.readouterr().err
    assert main(["evaluate", "--db", db, "--uscc", A, "--policy", "job-expansion-subsidy", "--period", "2024"]) == 2
    assert "not in force for period 2024" in capsys.readouterr().err


def test_rules_check_names_file_and_line_of_a_broken_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pack = tmp_path / "rules"
    shutil.copytree(POLICIES_DIR, pack)
    policy = pack / "high-tech-reward.yaml"
    text = policy.read_text(encoding="utf-8")
    policy.write_text(text.replace('expr: tax.credit_rating != "D"', 'expr: tax.credit_ratng != "D"'), encoding="utf-8")
    line = next(
        number
        for number, text in enumerate(policy.read_text(encoding="utf-8").splitlines(), 1)
        if "credit_ratng" in text
    )
    assert main(["rules", "check", str(pack)]) == 2
    err = capsys.readouterr().err
    assert f"{policy}:{line}:" in err
    assert "unknown fact 'tax.credit_ratng'" in err and "did you mean 'tax.credit_rating'" in err


def test_console_script_runs_as_a_process(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "rules", "check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "6 policies valid" in result.stdout


def test_evaluations_are_recorded_and_audit_verify_locates_an_edit(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sqlalchemy import text

    from enterprise_registry.db import make_engine

    first = _first_evaluation(capsys, db_url, tmp_path)
    # The same decision (rule text, facts, evaluation date) again: answered from its record.
    assert _evaluate(capsys, db_url, A, "stable-jobs-refund")["evaluation_id"] == first
    assert main(evaluate_command(db_url, A, as_of="2026-04-01")) == 0
    # Another evaluation date is another decision: recorded anew.
    assert json.loads(capsys.readouterr().out)["evaluation_id"] != first
    assert main(["audit", "verify", "--db", db_url]) == 0
    assert capsys.readouterr().out.startswith("VALID: 2 entries checked")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE evaluation_record SET outcome = 'INELIGIBLE', "
                    "record = replace(record, '\"ELIGIBLE\"', '\"INELIGIBLE\"') "
                    "WHERE evaluation_id = :e"
                ),
                {"e": first},
            )
    finally:
        engine.dispose()
    assert main(["audit", "verify", "--db", db_url]) == 1
    out = capsys.readouterr().out
    assert out.startswith("INVALID (edited") and first in out


def test_audit_verify_shows_its_progress_on_stderr_when_asked(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _first_evaluation(capsys, db_url, tmp_path)
    assert main(["audit", "verify", "--db", db_url, "--progress"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("VALID: 1 entries checked")
    # one bar per part, each up to its total; the verdict stays on stdout alone
    for part in ("ledger entries: 100%", "evaluation records: 100%", "payout lines"):
        assert part in captured.err, captured.err
    assert "1/1" in captured.err and "VALID" not in captured.err
    assert main(["audit", "verify", "--db", db_url, "--no-progress"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["audit", "verify", "--db", db_url]) == 0  # stderr is no terminal here: no bar
    assert capsys.readouterr().err == ""


def test_audit_prove_gives_an_evaluation_records_inclusion_proof(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evaluation_id = _first_evaluation(capsys, db_url, tmp_path)
    assert main(["audit", "prove", "--db", db_url, evaluation_id]) == 0
    out = capsys.readouterr().out
    assert f"record {evaluation_id}: leaf 0 of 1" in out and out.rstrip().endswith(
        "VERIFIED: the record is sealed in the ledger"
    )
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE evaluation_record SET record = replace(record, 'cli:', 'forged:') WHERE evaluation_id = :e"
                ),
                {"e": evaluation_id},
            )
    finally:
        engine.dispose()
    assert main(["audit", "prove", "--db", db_url, evaluation_id]) == 1
    assert "NOT VERIFIED: the record's text no longer has its record_sha256" in capsys.readouterr().out
    assert main(["audit", "prove", "--db", db_url, "ev_unknown"]) != 0
