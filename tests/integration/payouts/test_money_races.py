"""Races on the money path around export, in-process on SQLite and PostgreSQL, made deterministic
by running the other party's call at a fixed point inside `export` (the pain.001 check, which
runs after the lines were read and before the export's transaction).

- A withdrawal that commits while the bank file is being built must not be paid by that file:
  the withdrawn line's grant is released, so a later batch pays the enterprise again.
- A second export of the same batch made meanwhile must return the stored file, not fail.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from testkit.money_fixtures import APPROVER, GIANT, OPERATOR, PAYER, creditor_accounts, titled, uscc

from enterprise_registry.importer import load_records
from rules.loader import PolicySet
from service.payouts import export as export_module
from service.payouts.batches import approve, create_payout_schema, get_batch, lines_of, withdraw
from service.payouts.runner import create_batch

TODAY = date(2026, 1, 10)
W = [uscc(n, "MA4L") for n in (1, 2, 3)]


@pytest.fixture
def approved(db_engine: Engine, policies: PolicySet) -> tuple[str, list[str]]:
    create_payout_schema(db_engine)
    load_records([r for n, code in enumerate(W, start=1) for r in titled(code, n, 2025)], db_engine)
    batch = create_batch(
        db_engine, policies, policy_id=GIANT, period=2025, request_id="race-0001", actor=OPERATOR, today=TODAY
    )
    approve(db_engine, batch.batch_id, APPROVER)
    with db_engine.connect() as conn:
        return batch.batch_id, [str(line["grant_id"]) for line in lines_of(conn, batch.batch_id)]


def _meanwhile(monkeypatch: pytest.MonkeyPatch, action: Callable[[], Any]) -> list[Any]:
    """Run `action` once, inside the export, after it read the lines (at its pain.001 check)."""
    done: list[Any] = []
    started: list[bool] = []
    real_check = export_module.check

    def check(xml: bytes, lines: list[Any]) -> None:
        real_check(xml, lines)
        if not started:  # once (the action may export too)
            started.append(True)
            done.append(action())

    monkeypatch.setattr(export_module, "check", check)
    return done


def test_a_line_withdrawn_while_the_bank_file_is_built_is_not_in_the_file(
    db_engine: Engine, policies: PolicySet, approved: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_id, line_ids = approved
    done = _meanwhile(monkeypatch, lambda: withdraw(db_engine, batch_id, [line_ids[0]], "账户变更", APPROVER))
    try:
        _, xml = export_module.export(db_engine, batch_id, PAYER, OPERATOR)
    except Exception as exc:  # refusing the export is a correct outcome too
        assert done and get_batch(db_engine, batch_id).state == "APPROVED", exc
        return
    assert done, "the withdrawal did not run"
    with db_engine.connect() as conn:
        states = {str(line["grant_id"]): line["state"] for line in lines_of(conn, batch_id)}
    assert states[line_ids[0]] == "WITHDRAWN"
    in_file = set(creditor_accounts(xml))
    later = create_batch(
        db_engine, policies, policy_id=GIANT, period=2025, request_id="race-0002", actor=OPERATOR, today=TODAY
    )
    assert line_ids[0] not in in_file, (
        f"the bank file pays withdrawn line {line_ids[0]} (grant released), and the next batch pays its "
        f"enterprise again: {later.line_count} line(s)"
    )


def test_a_second_export_made_meanwhile_returns_the_stored_file(
    db_engine: Engine, approved: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_id, _ = approved
    done = _meanwhile(monkeypatch, lambda: export_module.export(db_engine, batch_id, PAYER, OPERATOR))
    outcome: Any
    try:
        outcome = export_module.export(db_engine, batch_id, PAYER, OPERATOR)
    except Exception as exc:
        outcome = exc
    assert done, "the second export did not run"
    assert not isinstance(outcome, Exception), f"the first export failed: {type(outcome).__name__}: {outcome}"
    assert outcome == done[0], "two exports of one batch returned different files"
    assert get_batch(db_engine, batch_id).state == "EXPORTED"
