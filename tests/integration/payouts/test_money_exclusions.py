"""Exclusions (`excludes:`) end to end, in-process on SQLite and PostgreSQL.

Two copies of the little-giant reward outside any conflict group, `lg-alpha` and `lg-beta`,
the second excluding the first. An enterprise holding a standing grant of one in a period is not
paid by a batch of the other in that period (either way round: exclusions are symmetric), and
its evaluation record says why (`payout_note`); once the grant is released (its batch cancelled)
the other policy pays it; another period is not concerned. A batch of one cannot start while a
batch of the other runs for the same period.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from testkit.money_fixtures import APPROVER, OPERATOR, money_snapshot, title, titled, uscc
from testkit.paths import POLICIES_DIR

from enterprise_registry.importer import load_records
from rules.loader import PolicySet, load_policy_dir
from service.audit.records import list_records
from service.catalogue import CATALOGUE
from service.errors import BatchRunningError
from service.payouts.batches import Batch, cancel, create_payout_schema, get_batch, lines_of, start_batch
from service.payouts.runner import RunSettings, create_batch, new_worker_id, run_batch

REFERENCE = POLICIES_DIR / "little-giant-reward.yaml"
ALPHA, BETA = "lg-alpha", "lg-beta"
TODAY = date(2026, 1, 10)
SETTINGS = RunSettings(chunk_size=2)
E1, E2, E3 = (uscc(n, "MA4K") for n in (1, 2, 3))


def _copy(text: str, policy_id: str, excludes: list[str]) -> str:
    assert text.count("id: little-giant-reward\n") == 1 and text.count("conflict_group:") == 1
    out = text.replace("id: little-giant-reward\n", f"id: {policy_id}\n")
    out = "\n".join(line for line in out.splitlines() if not line.startswith("conflict_group:")) + "\n"
    if excludes:
        out = out.replace(
            "fact_year: period\n", "fact_year: period\nexcludes:\n" + "".join(f"  - {other}\n" for other in excludes)
        )
    return out


@pytest.fixture
def policies(tmp_path: Path) -> PolicySet:
    folder = tmp_path / "rules"
    folder.mkdir()
    text = REFERENCE.read_text(encoding="utf-8")
    (folder / f"{ALPHA}.yaml").write_text(_copy(text, ALPHA, []), encoding="utf-8")
    (folder / f"{BETA}.yaml").write_text(_copy(text, BETA, [ALPHA]), encoding="utf-8")
    loaded = load_policy_dir(folder, CATALOGUE, require_tests=False)
    assert loaded.excluded(ALPHA) == frozenset({BETA}) and loaded.excluded(BETA) == frozenset({ALPHA})
    return loaded


@pytest.fixture
def registry(db_engine: Engine) -> Engine:
    create_payout_schema(db_engine)
    load_records([*titled(E1, 1, 2025), title(E1, 2024), *titled(E2, 2, 2025)], db_engine)
    return db_engine


def _run(engine: Engine, policies: PolicySet, policy_id: str, request_id: str, period: int = 2025) -> Batch:
    return create_batch(
        engine,
        policies,
        policy_id=policy_id,
        period=period,
        request_id=request_id,
        actor=OPERATOR,
        today=TODAY,
        settings=SETTINGS,
    )


def _paid(engine: Engine, batch_id: str) -> list[str]:
    with engine.connect() as conn:
        return [str(line["uscc"]) for line in lines_of(conn, batch_id)]


def _record(engine: Engine, code: str, policy_id: str, batch_id: str) -> dict[str, object]:
    with engine.connect() as conn:
        records, total = list_records(conn, uscc=code, policy_id=policy_id, batch_id=batch_id)
    assert total == 1, f"{total} records of {code} under {policy_id} in {batch_id}"
    return records[0]


def test_an_enterprise_granted_under_one_policy_is_not_paid_by_the_other(registry: Engine, policies: PolicySet) -> None:
    alpha = _run(registry, policies, ALPHA, "excl-alpha-0001")
    assert sorted(_paid(registry, alpha.batch_id)) == sorted([E1, E2])
    with registry.connect() as conn:
        alpha_lines = {str(line["uscc"]): str(line["grant_id"]) for line in lines_of(conn, alpha.batch_id)}
    load_records(titled(E3, 3, 2025), registry)  # a newcomer, granted by nobody yet

    beta = _run(registry, policies, BETA, "excl-beta-0001")
    assert _paid(registry, beta.batch_id) == [E3]
    assert (beta.line_count, beta.eligible_count) == (1, 1)
    for code in (E1, E2):
        record = _record(registry, code, BETA, beta.batch_id)
        assert record["outcome"] == "ELIGIBLE"  # eligible, but not paid: says why
        note = str(record.get("payout_note", ""))
        assert ALPHA in note and alpha_lines[code] in note, record.get("payout_note")
    assert "payout_note" not in _record(registry, E3, BETA, beta.batch_id)

    # Symmetric: alpha does not pay the newcomer beta granted.
    alpha_again = _run(registry, policies, ALPHA, "excl-alpha-0002")
    assert alpha_again.line_count == 0
    assert BETA in str(_record(registry, E3, ALPHA, alpha_again.batch_id).get("payout_note", ""))

    # Another period is not concerned.
    beta_2024 = _run(registry, policies, BETA, "excl-beta-2024", period=2024)
    assert _paid(registry, beta_2024.batch_id) == [E1]

    # Released (alpha's batch cancelled), the grants no longer bar beta: it pays E1 and E2, once.
    cancel(registry, alpha.batch_id, APPROVER, "政策互斥，改由 lg-beta 发放")
    beta_again = _run(registry, policies, BETA, "excl-beta-0002")
    assert sorted(_paid(registry, beta_again.batch_id)) == sorted([E1, E2])
    assert _run(registry, policies, BETA, "excl-beta-0003").line_count == 0
    assert _run(registry, policies, ALPHA, "excl-alpha-0003").line_count == 0


def test_a_batch_cannot_start_while_a_batch_of_a_policy_it_excludes_runs(registry: Engine, policies: PolicySet) -> None:
    running = start_batch(
        registry, policies, policy_id=ALPHA, period=2025, request_id="excl-run-alpha", actor=OPERATOR, today=TODAY
    )
    assert running.state == "RUNNING"
    before = money_snapshot(registry)
    for policy_id in (BETA, ALPHA):
        with pytest.raises(BatchRunningError) as refused:
            start_batch(
                registry,
                policies,
                policy_id=policy_id,
                period=2025,
                request_id=f"excl-run-{policy_id}-2",
                actor=OPERATOR,
                today=TODAY,
            )
        assert running.batch_id in str(refused.value)
        assert money_snapshot(registry) == before, "a refused start wrote something"
    # Another period of the other policy may run meanwhile.
    other = start_batch(
        registry, policies, policy_id=BETA, period=2024, request_id="excl-run-beta-2024", actor=OPERATOR, today=TODAY
    )
    assert other.state == "RUNNING"

    assert run_batch(registry, policies, running.batch_id, worker=new_worker_id(), settings=SETTINGS)
    assert get_batch(registry, running.batch_id).state == "DRAFT"
    beta = _run(registry, policies, BETA, "excl-run-beta-3")  # now it may, and pays nobody alpha holds
    assert (beta.state, beta.line_count) == ("DRAFT", 0)
