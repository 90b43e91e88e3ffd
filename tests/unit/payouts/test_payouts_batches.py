"""Creating batches on SQLite and PostgreSQL: exactly once, idempotent, stacked, sealed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import pytest
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from enterprise_registry.importer import load_records
from enterprise_registry.uscc import make
from rules.loader import PolicySet
from service.audit.ledger import verify
from service.audit.merkle import root
from service.audit.records import Actor
from service.errors import DuplicateBatchError
from service.payouts.batches import Batch, create_payout_schema, grant, lines_of
from service.payouts.runner import create_batch

OPERATOR = Actor("finance-op", "finance_operator")
TODAY = date(2026, 3, 31)
BOTH, GIANT, CHAMPION = make("91420600MA4P00001"), make("91420600MA4P00002"), make("91420600MA4P00003")
BANK = {"bank_name": "中国工商银行襄阳分行", "account_no": "1804000109200012345", "account_name": "x"}


def _enterprise(uscc: str) -> dict[str, object]:
    return {
        "kind": "enterprise",
        "uscc": uscc,
        "source": "market_regulation",
        "as_of": "2025-12-31",
        "name": f"襄阳示例{uscc[-4:]}有限公司",
        "org_type": "enterprise",
        "region_code": "420606",
        "industry_code": "C3670",
        "established_on": "2010-01-01",
        "status": "active",
        "labor_dispatch": False,
        "bank_account": BANK,
    }


def _title(uscc: str, kind: str, number: str) -> dict[str, object]:
    return {
        "kind": "qualification",
        "uscc": uscc,
        "source": "industry_it",
        "as_of": "2025-12-31",
        "type": kind,
        "level": "national",
        "first_time": True,
        "granted_on": "2025-07-01",
        "certificate_no": number,
    }


@pytest.fixture
def registry(db_engine: Engine) -> Engine:
    create_payout_schema(db_engine)
    load_records(
        [
            _enterprise(BOTH),
            _title(BOTH, "little_giant", "LG-1"),
            _title(BOTH, "single_champion", "SC-1"),
            _enterprise(GIANT),
            _title(GIANT, "little_giant", "LG-2"),
            _enterprise(CHAMPION),
            _title(CHAMPION, "single_champion", "SC-3"),
        ],
        db_engine,
    )
    return db_engine


def _create(engine: Engine, policies: PolicySet, policy_id: str, request_id: str) -> Batch:
    return create_batch(
        engine, policies, policy_id=policy_id, period=2025, request_id=request_id, actor=OPERATOR, today=TODAY
    )


def test_the_higher_award_of_a_group_is_the_only_one_paid(registry: Engine, policies: PolicySet) -> None:
    giant = _create(registry, policies, "little-giant-reward", "req-1")
    champion = _create(registry, policies, "single-champion-reward", "req-2")
    with registry.connect() as conn:
        assert [(line["uscc"], line["amount_fen"]) for line in lines_of(conn, giant.batch_id)] == [(GIANT, 50_000_000)]
        assert [(line["uscc"], line["amount_fen"]) for line in lines_of(conn, champion.batch_id)] == [
            (BOTH, 100_000_000),
            (CHAMPION, 100_000_000),
        ]
    assert (giant.state, giant.line_count, giant.total_fen) == ("DRAFT", 1, 50_000_000)


def test_a_repeated_request_returns_the_same_batch(registry: Engine, policies: PolicySet) -> None:
    first = _create(registry, policies, "little-giant-reward", "req-1")
    assert _create(registry, policies, "little-giant-reward", "req-1") == first
    with pytest.raises(DuplicateBatchError):
        _create(registry, policies, "single-champion-reward", "req-1")


def test_a_second_batch_pays_nobody_twice(registry: Engine, policies: PolicySet) -> None:
    _create(registry, policies, "little-giant-reward", "req-1")
    again = _create(registry, policies, "little-giant-reward", "req-2")
    assert (again.line_count, again.total_fen) == (0, 0)


def test_the_database_refuses_a_second_grant(registry: Engine, policies: PolicySet) -> None:
    batch = _create(registry, policies, "little-giant-reward", "req-1")
    with registry.connect() as conn:
        line = lines_of(conn, batch.batch_id)[0]
    with pytest.raises(IntegrityError), registry.begin() as conn:
        conn.execute(insert(grant).values({**line, "grant_id": "forged", "batch_id": "other"}))


def test_the_batch_is_sealed_with_the_merkle_root_of_its_decisions(registry: Engine, policies: PolicySet) -> None:
    batch = _create(registry, policies, "single-champion-reward", "req-9")
    with registry.connect() as conn:
        hashes = [line["record_sha256"] for line in lines_of(conn, batch.batch_id)]
        assert batch.merkle_root == root([bytes.fromhex(h) for h in hashes]).hex()
        assert verify(conn).valid


def test_four_eyes_and_cancellation_release_grants(registry: Engine, policies: PolicySet) -> None:
    from service.errors import BatchStateError, PermissionDeniedError
    from service.payouts.batches import approve, cancel

    batch = _create(registry, policies, "little-giant-reward", "req-1")
    with pytest.raises(PermissionDeniedError):
        approve(registry, batch.batch_id, OPERATOR)  # the creator
    assert cancel(registry, batch.batch_id, OPERATOR, "预算调整").state == "CANCELLED"
    with pytest.raises(BatchStateError):
        approve(registry, batch.batch_id, Actor("approver", "finance_approver"))
    again = _create(registry, policies, "little-giant-reward", "req-2")  # grants were released
    assert again.line_count == 1


def test_every_line_has_an_inclusion_proof_under_the_sealed_root(registry: Engine, policies: PolicySet) -> None:
    from service.payouts.proofs import prove_line

    batch = _create(registry, policies, "single-champion-reward", "req-proof")
    with registry.connect() as conn:
        lines = lines_of(conn, batch.batch_id)
        proofs = [prove_line(conn, str(line["grant_id"])) for line in lines]
    assert len(proofs) == 2 and all(p.verified and p.sealed_root == batch.merkle_root for p in proofs)
    assert [p.leaf_index for p in proofs] == [0, 1]


def test_a_line_whose_record_hash_was_edited_is_not_proven(registry: Engine, policies: PolicySet) -> None:
    from service.payouts.proofs import prove_line

    batch = _create(registry, policies, "single-champion-reward", "req-proof")
    with registry.connect() as conn:
        line_id = str(lines_of(conn, batch.batch_id)[0]["grant_id"])
    with registry.begin() as conn:
        conn.execute(grant.update().where(grant.c.grant_id == line_id).values(record_sha256="0" * 64))
    with registry.connect() as conn:
        proof = prove_line(conn, line_id)
    assert not proof.verified and "differs from the stored evaluation record" in proof.problem


STATES = ("RUNNING", "DRAFT", "APPROVED", "EXPORTED", "SETTLED", "CANCELLED")
# An approver may cancel an APPROVED batch that was not exported; a late return may reach a
# SETTLED batch.
LEGAL = {
    ("approve", "DRAFT"),
    ("cancel", "DRAFT"),
    ("cancel", "APPROVED"),
    ("export", "APPROVED"),
    ("results", "EXPORTED"),
    ("results", "SETTLED"),
}
APPROVER = Actor("approver", "finance_approver")


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("action", ["approve", "cancel", "export", "results"])
def test_every_transition_outside_the_lifecycle_is_refused(
    registry: Engine, policies: PolicySet, action: str, state: str
) -> None:
    from service.errors import BatchStateError
    from service.payouts.batches import BankResult, approve, cancel, record_results
    from service.payouts.export import Payer, export
    from service.payouts.states import LineState
    from service.payouts.tables import payout_batch

    batch = _create(registry, policies, "little-giant-reward", "req-lifecycle")
    with registry.begin() as conn:  # put the batch in the state under test
        conn.execute(payout_batch.update().where(payout_batch.c.batch_id == batch.batch_id).values(state=state))
        line_id = str(lines_of(conn, batch.batch_id)[0]["grant_id"])
    calls: dict[str, Callable[[], object]] = {
        "approve": lambda: approve(registry, batch.batch_id, APPROVER),
        "cancel": lambda: cancel(registry, batch.batch_id, APPROVER, "test"),
        "export": lambda: export(registry, batch.batch_id, Payer("国库", "4200000000000000001", "人民银行"), OPERATOR),
        "results": lambda: record_results(registry, batch.batch_id, [BankResult(line_id, LineState.PAID)], OPERATOR),
    }
    if (action, state) in LEGAL:
        calls[action]()
    else:
        with pytest.raises(BatchStateError):
            calls[action]()
        with registry.connect() as conn:  # refused, and nothing changed
            assert (
                conn.execute(select(payout_batch.c.state).where(payout_batch.c.batch_id == batch.batch_id)).scalar_one()
                == state
            )
            assert len(lines_of(conn, batch.batch_id)) == 1
