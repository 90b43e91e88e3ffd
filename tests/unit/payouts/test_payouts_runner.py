"""Running payout batches on SQLite and PostgreSQL: chunked, resumable, leased, stacked, pro-rated.

Each test builds a registry of a few dozen enterprises whose profile repeats every six USCCs
(see `PROFILES`), runs batches of the real policies in `rules/policies/` with small chunks so
that several chunks commit, and checks the result against an independent expectation: every
enterprise evaluated directly with `rules.evaluator.evaluate`, 就高不重复 applied by hand.
Interruptions are made with real mechanisms - the `stop` event, an exception raised inside a
chunk's transaction, a lease that runs out while a worker stalls - never by editing tables.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date
from fractions import Fraction
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine, Row

from enterprise_registry.importer import load_records
from enterprise_registry.uscc import make, organisation_check_character
from rules.evaluator import evaluate
from rules.loader import LoadedPolicy, PolicySet, load_policy_dir
from rules.packing import PackedMember
from rules.values import Outcome
from service.audit.ledger import verify
from service.audit.merkle import root
from service.audit.records import Actor, PreparedRecord, evaluation_record, verify_records, write_records
from service.catalogue import CATALOGUE
from service.errors import BatchRunningError, BatchStateError
from service.evaluation import decide
from service.evaluation.decide import PolicyDecisions
from service.facts_documents import DocumentSource
from service.payouts import partitions
from service.payouts.batches import Batch, create_payout_schema, get_batch, lines_of, start_batch
from service.payouts.runner import BatchWorkers, RunSettings, claim, claimable, create_batch, run_batch
from service.payouts.tables import grant, payout_batch, payout_candidate, payout_partition

RULES = Path(__file__).resolve().parents[3] / "rules"
POLICIES_DIR = RULES / "policies"
OPERATOR = Actor("finance-op", "finance_operator")
TODAY = date(2026, 3, 31)
PERIOD = 2025
GIANT, CHAMPION = "little-giant-reward", "single-champion-reward"  # one conflict group: 50万 and 100万
GIANT_FEN, CHAMPION_FEN = 50_000_000, 100_000_000
ENTERPRISES = 45
CHUNK = 7
SETTINGS = RunSettings(chunk_size=CHUNK, lease_seconds=30)
BANK = {"bank_name": "中国工商银行襄阳分行", "account_no": "1804000109200012345", "account_name": "x"}

# The profile of enterprise i is PROFILES[i % 6].
PROFILES = ("giant", "champion", "both", "none", "giant-but-listed", "champion-without-bank")


class SimulatedCrash(Exception):
    """Stands for a process dying at the point where it is raised."""


# -- the registry ---------------------------------------------------------------------------------


def _uscc(n: int) -> str:
    org8 = f"MA4P{n:04d}"
    return make("91420600" + org8 + organisation_check_character(org8))


def _enterprise(uscc: str, *, bank: bool = True) -> dict[str, object]:
    return {
        "kind": "enterprise",
        "uscc": uscc,
        "source": "market_regulation",
        "as_of": "2025-12-31",
        "name": f"襄阳示例{uscc[-5:]}有限公司",
        "org_type": "enterprise",
        "region_code": "420606",
        "industry_code": "C3670",
        "established_on": "2010-01-01",
        "status": "active",
        "labor_dispatch": False,
        "bank_account": BANK if bank else None,
    }


def _title(
    uscc: str,
    kind: str,
    number: str,
    *,
    level: str = "national",
    first_time: bool = True,
    granted_on: str = "2025-07-01",
    as_of: str = "2025-12-31",
) -> dict[str, object]:
    return {
        "kind": "qualification",
        "uscc": uscc,
        "source": "industry_it",
        "as_of": as_of,
        "type": kind,
        "level": level,
        "first_time": first_time,
        "granted_on": granted_on,
        "certificate_no": number,
    }


def _serious_listing(uscc: str) -> dict[str, object]:
    return {
        "kind": "credit_listing",
        "uscc": uscc,
        "source": "credit",
        "as_of": "2025-12-31",
        "list": "serious_dishonesty",
        "listed_on": "2025-09-01",
        "removed_on": None,
    }


def _records_of(i: int, uscc: str) -> list[dict[str, object]]:
    profile = PROFILES[i % len(PROFILES)]
    giant, champion = _title(uscc, "little_giant", f"LG-{i}"), _title(uscc, "single_champion", f"SC-{i}")
    return {
        "giant": [_enterprise(uscc), giant],
        "champion": [_enterprise(uscc), champion],
        "both": [_enterprise(uscc), giant, champion],
        "none": [_enterprise(uscc)],
        "giant-but-listed": [_enterprise(uscc), giant, _serious_listing(uscc)],
        "champion-without-bank": [_enterprise(uscc, bank=False), champion],
    }[profile]


USCCS = [_uscc(i) for i in range(ENTERPRISES)]


def _of_profile(profile: str) -> list[str]:
    return [u for i, u in enumerate(USCCS) if PROFILES[i % len(PROFILES)] == profile]


@pytest.fixture
def registry(db_engine: Engine) -> Engine:
    create_payout_schema(db_engine)
    load_records([r for i, u in enumerate(USCCS) for r in _records_of(i, u)], db_engine)
    return db_engine


def _policy_dir_with(
    tmp_path: Path, policy_id: str, edit: Callable[[str], str], *, keep: tuple[str, ...] = (GIANT, CHAMPION)
) -> PolicySet:
    """The policies `keep`, copied (with their test files) into tmp_path, `policy_id` edited."""
    folder = tmp_path / "policies"
    folder.mkdir(exist_ok=True)
    for name in keep:
        text = (POLICIES_DIR / f"{name}.yaml").read_text(encoding="utf-8")
        (folder / f"{name}.yaml").write_text(edit(text) if name == policy_id else text, encoding="utf-8")
        test_file = f"{name}.test.yaml"
        (folder / test_file).write_text((POLICIES_DIR / test_file).read_text(encoding="utf-8"), encoding="utf-8")
    return load_policy_dir(folder, CATALOGUE)


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} should occur once in the policy file"
    return text.replace(old, new)


# -- running --------------------------------------------------------------------------------------


def _cursor(engine: Engine, batch_id: str) -> str:
    """The cursor of the batch's one partition (these runs have one worker, so one partition)."""
    with engine.connect() as conn:
        return str(
            conn.execute(select(payout_partition.c.cursor).where(payout_partition.c.batch_id == batch_id)).scalar_one()
        )


def _start(engine: Engine, policies: PolicySet, policy_id: str, request_id: str) -> Batch:
    return start_batch(
        engine, policies, policy_id=policy_id, period=PERIOD, request_id=request_id, actor=OPERATOR, today=TODAY
    )


def _run(
    engine: Engine,
    policies: PolicySet,
    batch_id: str,
    worker: str = "w1",
    settings: RunSettings = SETTINGS,
    stop: threading.Event | None = None,
) -> bool:
    return run_batch(engine, policies, batch_id, worker=worker, settings=settings, stop=stop)


def _stop_after_chunks(monkeypatch: pytest.MonkeyPatch, chunks: int) -> threading.Event:
    """A stop event set when the runner reads its `chunks`-th chunk: that chunk still commits,
    and the runner stops before reading the next."""
    stop, reads = threading.Event(), Counter[str]()
    original = partitions.next_chunk

    def next_chunk(conn: Connection, part: Any, limit: int) -> list[str]:
        found = original(conn, part, limit)
        if found:
            reads["chunks"] += 1
            if reads["chunks"] >= chunks:
                stop.set()
        return found

    monkeypatch.setattr(partitions, "next_chunk", next_chunk)
    return stop


def _fail_evaluations_of(monkeypatch: pytest.MonkeyPatch, victim: str) -> None:
    """The engine is shown an empty fact for `victim`, so it fires none of the clauses the trace
    holds true: the cross-check makes every evaluation of `victim` an error."""
    original = decide.engine_facts

    def emptied(members: Sequence[PackedMember], decisions: Mapping[str, PolicyDecisions]) -> list[dict[str, Any]]:
        facts = original(members, decisions)
        usccs = next(iter(decisions.values())).columns.usccs
        for row, uscc in enumerate(usccs):
            if uscc == victim:
                facts[row] = {}
        return facts

    monkeypatch.setattr(decide, "engine_facts", emptied)


def _sleep_past_lease(engine: Engine, batch_id: str) -> None:
    remaining = _row(engine, batch_id).lease_until / 1000 - time.time()
    time.sleep(max(remaining, 0) + 0.05)


def _wait_for_state(engine: Engine, batch_id: str, state: str, timeout: float = 60) -> Batch:
    deadline = time.monotonic() + timeout
    while (batch := get_batch(engine, batch_id)).state != state:
        assert time.monotonic() < deadline, f"batch still {batch.state} after {timeout}s: {batch}"
        time.sleep(0.05)
    return batch


# -- reading what a run left ----------------------------------------------------------------------


def _row(engine: Engine, batch_id: str) -> Row[Any]:
    with engine.connect() as conn:
        return conn.execute(select(payout_batch).where(payout_batch.c.batch_id == batch_id)).one()


def _create(
    registry: Engine, policies: PolicySet, policy_id: str, request_id: str, settings: RunSettings = SETTINGS
) -> Batch:
    """One batch of PERIOD run to DRAFT by the operator today."""
    return create_batch(
        registry,
        policies,
        policy_id=policy_id,
        period=PERIOD,
        request_id=request_id,
        actor=OPERATOR,
        today=TODAY,
        settings=settings,
    )


def _grants(engine: Engine, batch_id: str) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        lines = lines_of(conn, batch_id)
    by_uscc = {line["uscc"]: line for line in lines}
    assert len(by_uscc) == len(lines), "one line per enterprise"
    return by_uscc


def _amounts(engine: Engine, batch_id: str) -> dict[str, int]:
    return {uscc: line["amount_fen"] for uscc, line in _grants(engine, batch_id).items()}


def _candidate_usccs(engine: Engine, batch_id: str) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(select(payout_candidate.c.uscc).where(payout_candidate.c.batch_id == batch_id)).scalars()
        )


def _recorded(engine: Engine, batch_id: str, policy_id: str) -> list[str]:
    """The USCCs of the batch's evaluation records under `policy_id`, one per record."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(evaluation_record.c.uscc).where(
                    evaluation_record.c.batch_id == batch_id, evaluation_record.c.policy_id == policy_id
                )
            ).scalars()
        )


def _all_grants_of(engine: Engine, policy_id: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(select(grant).where(grant.c.policy_id == policy_id, grant.c.period == PERIOD))
        ]


# -- the independent expectation ------------------------------------------------------------------


def _award(policy: LoadedPolicy, source: DocumentSource, uscc: str) -> int | None:
    """What `policy` awards the enterprise on its own (None unless ELIGIBLE)."""
    document = source.document(uscc, policy.fact_year(PERIOD))
    assert document is not None
    result = evaluate(policy.compiled(PERIOD), document, today=TODAY)
    return result.amount_fen if result.outcome == Outcome.ELIGIBLE else None


def _expected_grants(engine: Engine, policies: PolicySet, policy_id: str, usccs: list[str] = USCCS) -> dict[str, int]:
    """USCC -> full award, for the enterprises a first batch of `policy_id` must pay: eligible,
    and no other policy of its conflict group awards more (就高不重复; these awards never tie)."""
    policy, source = policies.get(policy_id), DocumentSource(engine)
    group = policy.model.conflict_group
    rivals = [p for p in policies if group and p.id != policy_id and p.model.conflict_group == group]
    expected = {}
    for uscc in usccs:
        own = _award(policy, source, uscc)
        if own is not None and all((_award(r, source, uscc) or 0) < own for r in rivals):
            expected[uscc] = own
    return expected


def _largest_remainder(amounts: dict[str, int], budget: int) -> dict[str, int]:
    """Pro-rating to the fen, written out with exact fractions: floors, then one fen each to the
    largest remainders (ties by USCC)."""
    total = sum(amounts.values())
    exact = {u: Fraction(budget * fen, total) for u, fen in amounts.items()}
    shares = {u: math.floor(x) for u, x in exact.items()}
    for uscc in sorted(amounts, key=lambda u: (shares[u] - exact[u], u))[: budget - sum(shares.values())]:
        shares[uscc] += 1
    return shares


# -- checks ---------------------------------------------------------------------------------------


def _assert_audit_intact(engine: Engine) -> None:
    with engine.connect() as conn:
        result = verify(conn)
        assert result.valid, result.detail
        assert verify_records(conn) == []


def _assert_complete(engine: Engine, batch_id: str, expected: dict[str, int]) -> None:
    """The batch is DRAFT; every enterprise was evaluated into it exactly once; its lines are
    `expected` (paid in full), each backed by its own evaluation record; the seal matches."""
    batch, row = get_batch(engine, batch_id), _row(engine, batch_id)
    assert batch.state == "DRAFT"
    assert (row.worker, row.lease_until, row.running_key) == (None, 0, None)
    assert batch.evaluated_count == batch.enterprise_count == ENTERPRISES
    assert _cursor(engine, batch_id) == max(USCCS)
    candidates = _candidate_usccs(engine, batch_id)
    assert len(candidates) == len(set(candidates))
    per_enterprise = Counter(_recorded(engine, batch_id, batch.policy_id))
    assert sorted(per_enterprise) == USCCS and set(per_enterprise.values()) == {1}, "each evaluated once"
    lines = _grants(engine, batch_id)
    assert {u: line["amount_fen"] for u, line in lines.items()} == expected
    assert {u: line["full_fen"] for u, line in lines.items()} == expected
    assert (batch.line_count, batch.total_fen) == (len(expected), sum(expected.values()))
    with engine.connect() as conn:
        for uscc, line in lines.items():
            record = conn.execute(
                select(evaluation_record).where(evaluation_record.c.evaluation_id == line["evaluation_id"])
            ).one()
            assert (record.uscc, record.policy_id, record.batch_id, record.outcome) == (
                uscc,
                batch.policy_id,
                batch_id,
                Outcome.ELIGIBLE,
            )
            assert record.record_sha256 == line["record_sha256"]
    ordered = [lines[u]["record_sha256"] for u in sorted(lines)]
    assert batch.merkle_root == root([bytes.fromhex(h) for h in ordered]).hex()
    _assert_audit_intact(engine)


# -- 1. interruption and resumption ---------------------------------------------------------------


def test_a_stopped_run_resumes_without_missing_or_doubling_anyone(
    registry: Engine, policies: PolicySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _expected_grants(registry, policies, GIANT)
    assert sorted(expected) == _of_profile("giant")  # "both" is paid by the champion policy only
    batch = _start(registry, policies, GIANT, "req-stop")
    stop = _stop_after_chunks(monkeypatch, 1)

    assert _run(registry, policies, batch.batch_id, worker="w1", stop=stop) is False

    stopped, row = get_batch(registry, batch.batch_id), _row(registry, batch.batch_id)
    assert stopped.state == "RUNNING"
    assert 0 < stopped.evaluated_count < ENTERPRISES
    assert stopped.evaluated_count == CHUNK and _cursor(registry, batch.batch_id) == USCCS[CHUNK - 1]
    assert sorted(_recorded(registry, batch.batch_id, GIANT)) == USCCS[:CHUNK]
    assert (row.worker, row.lease_until) == (None, 0), "a stopped worker gives its batch back"
    assert batch.batch_id in claimable(registry)
    assert _grants(registry, batch.batch_id) == {}, "no grants before the batch is complete"
    _assert_audit_intact(registry)

    monkeypatch.undo()
    assert _run(registry, policies, batch.batch_id, worker="w2") is True
    _assert_complete(registry, batch.batch_id, expected)


# -- 2. a crash inside a chunk --------------------------------------------------------------------


def test_a_crash_inside_a_chunk_leaves_nothing_of_it_and_the_next_worker_finishes(
    registry: Engine, policies: PolicySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _expected_grants(registry, policies, GIANT)
    batch = _start(registry, policies, GIANT, "req-crash")
    first_chunk_end = USCCS[CHUNK - 1]
    real_write, writes_in_second_chunk = write_records, Counter[str]()  # what partitions calls

    def write_then_crash(
        conn: Connection, policy: LoadedPolicy, prepared: Sequence[PreparedRecord], *, stored: set[str] | None = None
    ) -> None:
        if any(p.decision.uscc > first_chunk_end for p in prepared):
            writes_in_second_chunk["calls"] += 1
            if writes_in_second_chunk["calls"] == 2:  # after one policy's records of the chunk
                raise SimulatedCrash("the server died mid-chunk")
        real_write(conn, policy, prepared, stored=stored)

    monkeypatch.setattr(partitions, "write_records", write_then_crash)
    short = RunSettings(chunk_size=CHUNK, lease_seconds=0.5)
    with pytest.raises(SimulatedCrash):
        _run(registry, policies, batch.batch_id, worker="w1", settings=short)

    crashed, row = get_batch(registry, batch.batch_id), _row(registry, batch.batch_id)
    assert crashed.state == "RUNNING"
    assert (crashed.evaluated_count, _cursor(registry, batch.batch_id)) == (CHUNK, first_chunk_end), (
        "the cursor did not move"
    )
    assert sorted(_candidate_usccs(registry, batch.batch_id)) == sorted(
        u for u in USCCS[:CHUNK] if u in _of_profile("giant") + _of_profile("both")
    )
    with registry.connect() as conn:
        recorded = (
            conn.execute(select(evaluation_record.c.uscc).where(evaluation_record.c.batch_id == batch.batch_id))
            .scalars()
            .all()
        )
    assert recorded and max(recorded) <= first_chunk_end, "no record of the crashed chunk survived"
    assert row.worker == "w1", "a dead worker keeps its lease until it runs out"
    _assert_audit_intact(registry)

    monkeypatch.undo()
    _sleep_past_lease(registry, batch.batch_id)
    assert batch.batch_id in claimable(registry)
    assert _run(registry, policies, batch.batch_id, worker="w2", settings=short) is True
    _assert_complete(registry, batch.batch_id, expected)


# -- 3. leases ------------------------------------------------------------------------------------


def test_a_live_lease_keeps_other_workers_out_until_it_runs_out(registry: Engine, policies: PolicySet) -> None:
    batch = _start(registry, policies, GIANT, "req-lease")
    assert batch.batch_id in claimable(registry)
    assert claim(registry, batch.batch_id, "w1", 0.5)
    assert claim(registry, batch.batch_id, "w1", 0.5), "the holder may renew"

    assert not claim(registry, batch.batch_id, "w2", 0.5)
    assert batch.batch_id not in claimable(registry)
    assert _run(registry, policies, batch.batch_id, worker="w2") is False
    assert get_batch(registry, batch.batch_id).evaluated_count == 0, "the refused worker wrote nothing"

    _sleep_past_lease(registry, batch.batch_id)
    assert batch.batch_id in claimable(registry)
    assert claim(registry, batch.batch_id, "w2", 30)
    assert not claim(registry, batch.batch_id, "w1", 30)
    assert _row(registry, batch.batch_id).worker == "w2"


def test_a_worker_whose_lease_was_taken_over_writes_nothing_more(
    registry: Engine, policies: PolicySet, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    expected = _expected_grants(registry, policies, GIANT)
    batch = _start(registry, policies, GIANT, "req-takeover")
    short = RunSettings(chunk_size=CHUNK, lease_seconds=0.3)
    original, taken_over = partitions.next_chunk, threading.Event()

    def stall_while_another_takes_over(conn: Connection, part: Any, limit: int) -> list[str]:
        if part.cursor and not taken_over.is_set():  # w1 committed its first chunk, then hangs
            _sleep_past_lease(registry, batch.batch_id)
            assert claim(registry, batch.batch_id, "w2", 30)
            taken_over.set()
        return original(conn, part, limit)

    monkeypatch.setattr(partitions, "next_chunk", stall_while_another_takes_over)
    with caplog.at_level(logging.WARNING, logger="benefits.payouts"):
        assert _run(registry, policies, batch.batch_id, worker="w1", settings=short) is False
    assert taken_over.is_set()
    assert "lease lost" in caplog.text

    lost, row = get_batch(registry, batch.batch_id), _row(registry, batch.batch_id)
    assert (lost.state, row.worker) == ("RUNNING", "w2")
    assert (lost.evaluated_count, _cursor(registry, batch.batch_id)) == (CHUNK, USCCS[CHUNK - 1]), (
        "w1's second chunk was not kept"
    )
    assert sorted(_recorded(registry, batch.batch_id, GIANT)) == USCCS[:CHUNK]
    assert max(_candidate_usccs(registry, batch.batch_id)) <= USCCS[CHUNK - 1]

    monkeypatch.undo()
    assert _run(registry, policies, batch.batch_id, worker="w2", settings=short) is True
    _assert_complete(registry, batch.batch_id, expected)


# -- 4. one running batch per policy and period ---------------------------------------------------


def test_a_second_request_waits_for_the_running_batch_and_then_grants_nobody_twice(
    registry: Engine, policies: PolicySet
) -> None:
    expected = _expected_grants(registry, policies, GIANT)
    running = _start(registry, policies, GIANT, "req-1")
    assert running.state == "RUNNING"
    assert _start(registry, policies, GIANT, "req-1") == running, "a repeated request is the same batch"

    with pytest.raises(BatchRunningError, match=running.batch_id) as refused:
        _start(registry, policies, GIANT, "req-2")
    assert isinstance(refused.value, BatchStateError)
    assert _start(registry, policies, CHAMPION, "req-3").state == "RUNNING", "other policies are not held up"

    assert _run(registry, policies, running.batch_id) is True
    _assert_complete(registry, running.batch_id, expected)

    again = _create(registry, policies, GIANT, "req-2")
    assert (again.state, again.line_count, again.total_fen) == ("DRAFT", 0, 0)
    assert again.evaluated_count == ENTERPRISES
    assert sorted(g["uscc"] for g in _all_grants_of(registry, GIANT)) == sorted(expected)
    _assert_audit_intact(registry)


# -- 5. 就高不重复 across batches -----------------------------------------------------------------


def test_a_higher_award_after_a_lower_one_pays_the_difference_and_names_the_earlier_grant(
    registry: Engine, policies: PolicySet
) -> None:
    late_champion = _of_profile("giant")[0]
    giant = _create(registry, policies, GIANT, "req-giant")
    earlier = _grants(registry, giant.batch_id)[late_champion]
    assert earlier["amount_fen"] == GIANT_FEN

    # The enterprise is named a single champion of the same year after the first batch ran.
    load_records(
        [_title(late_champion, "single_champion", "SC-late", granted_on="2025-11-28", as_of="2026-01-15")], registry
    )
    champion = _create(registry, policies, CHAMPION, "req-champion")

    lines = _grants(registry, champion.batch_id)
    top_up = lines[late_champion]
    assert (top_up["full_fen"], top_up["amount_fen"]) == (CHAMPION_FEN, CHAMPION_FEN - GIANT_FEN)
    assert top_up["tops_up"] == earlier["grant_id"]
    others = {u: (line["amount_fen"], line["tops_up"]) for u, line in lines.items() if u != late_champion}
    assert others == {u: (CHAMPION_FEN, None) for u in _of_profile("champion") + _of_profile("both")}
    assert champion.total_fen == sum(line["amount_fen"] for line in lines.values())
    _assert_audit_intact(registry)


def test_a_lower_award_after_a_higher_one_pays_nothing(registry: Engine, policies: PolicySet) -> None:
    former_champion = _of_profile("champion")[0]
    champion = _create(registry, policies, CHAMPION, "req-champion")
    assert _amounts(registry, champion.batch_id)[former_champion] == CHAMPION_FEN

    # Later the champion title is corrected to provincial and a 小巨人 title of the year arrives:
    # on its own the enterprise now qualifies for the lower award only, and it was paid the higher.
    i = USCCS.index(former_champion)
    load_records(
        [
            _title(former_champion, "single_champion", f"SC-{i}", level="provincial", as_of="2026-01-15"),
            _title(former_champion, "little_giant", "LG-late", as_of="2026-01-15"),
        ],
        registry,
    )
    source = DocumentSource(registry)
    assert _award(policies.get(GIANT), source, former_champion) == GIANT_FEN
    assert _award(policies.get(CHAMPION), source, former_champion) is None

    giant = _create(registry, policies, GIANT, "req-giant")
    assert former_champion in _candidate_usccs(registry, giant.batch_id)
    assert _amounts(registry, giant.batch_id) == {u: GIANT_FEN for u in _of_profile("giant")}
    assert [g["amount_fen"] for g in _all_grants_of(registry, GIANT) if g["uscc"] == former_champion] == []
    _assert_audit_intact(registry)


# -- 6. budget ------------------------------------------------------------------------------------

AWARD_PER_TITLE = 1_234_567  # fen: 12345.67元 per single-champion certificate on record
BUDGET_FEN = 12_345_678  # 123456.78元, well below what the eligible enterprises add up to


def _budgeted_champion(tmp_path: Path) -> PolicySet:
    """single-champion-reward alone, paying per certificate on record and with a budget."""

    def edit(text: str) -> str:
        text = _replace_once(
            text,
            "conflict_group: national-manufacturing-titles\n",
            "conflict_group: national-manufacturing-titles\nbudget: 123456.78元\n",
        )
        text = _replace_once(text, "value: 100万元", "value: 12345.67元")
        return _replace_once(
            text,
            "formula: params.award",
            'formula: params.award * count(q in qualifications where q.type == "single_champion")',
        )

    budgeted = _policy_dir_with(tmp_path, CHAMPION, edit, keep=(CHAMPION,))
    assert budgeted.get(CHAMPION).budget_fen == BUDGET_FEN
    return budgeted


def _extra_certificates(engine: Engine) -> None:
    """Champions get 1, 2 or 3 certificates on record, so their full amounts differ."""
    extra = []
    for n, uscc in enumerate(_of_profile("champion") + _of_profile("both")):
        extra += [
            _title(uscc, "single_champion", f"SC-old-{n}-{k}", first_time=False, granted_on="2023-05-01")
            for k in range(n % 3)
        ]
    load_records(extra, engine)


def test_lines_are_pro_rated_to_the_budget_by_largest_remainder(registry: Engine, tmp_path: Path) -> None:
    budgeted = _budgeted_champion(tmp_path)
    _extra_certificates(registry)
    full = _expected_grants(registry, budgeted, CHAMPION)
    assert len(set(full.values())) == 3 and sum(full.values()) > BUDGET_FEN
    assert all(fen % AWARD_PER_TITLE == 0 for fen in full.values())

    batch = _create(registry, budgeted, CHAMPION, "req-budget")

    lines = _grants(registry, batch.batch_id)
    assert {u: line["full_fen"] for u, line in lines.items()} == full
    paid = {u: line["amount_fen"] for u, line in lines.items()}
    assert sum(paid.values()) == BUDGET_FEN == batch.total_fen
    assert paid == _largest_remainder(full, BUDGET_FEN)
    assert all(abs(paid[u] - Fraction(BUDGET_FEN * full[u], sum(full.values()))) < 1 for u in full)
    assert batch.eligible_fen == sum(full.values()) and batch.eligible_count == len(full)
    _assert_audit_intact(registry)


def test_a_later_batch_of_the_period_spends_only_what_is_left_of_the_budget(registry: Engine, tmp_path: Path) -> None:
    budgeted = _budgeted_champion(tmp_path)
    first = _create(registry, budgeted, CHAMPION, "req-budget-1")
    assert first.total_fen == BUDGET_FEN, "the first batch spent the whole budget"

    # A champion title of the year arrives late; the next batch picks up whoever the first did not pay.
    newcomer = _of_profile("none")[0]
    load_records([_title(newcomer, "single_champion", "SC-newcomer", as_of="2026-01-15")], registry)
    _create(registry, budgeted, CHAMPION, "req-budget-2")
    granted = sum(g["amount_fen"] for g in _all_grants_of(registry, CHAMPION))
    assert granted <= BUDGET_FEN, f"the period's budget is {BUDGET_FEN} fen, its grants add up to {granted}"


# -- 7. the rule text a batch started under -------------------------------------------------------


def _giant_paying_600k(tmp_path: Path) -> PolicySet:
    reloaded = _policy_dir_with(tmp_path, GIANT, lambda t: _replace_once(t, "value: 50万元", "value: 60万元"))
    assert reloaded.get(GIANT).compiled(PERIOD).params["award"] == 60_000_000
    return reloaded


@pytest.mark.parametrize("reload", ["changed", "removed"])
def test_a_batch_runs_under_the_rule_text_it_started_with(
    registry: Engine, policies: PolicySet, tmp_path: Path, reload: str
) -> None:
    expected = _expected_grants(registry, policies, GIANT)
    batch = _start(registry, policies, GIANT, "req-reload")
    started_under = policies.get(GIANT).sha256
    reloaded = _giant_paying_600k(tmp_path)
    if reload == "removed":
        reloaded = PolicySet([reloaded.get(CHAMPION)], reloaded.root)
    else:
        assert reloaded.get(GIANT).sha256 != started_under

    assert _run(registry, reloaded, batch.batch_id) is True

    _assert_complete(registry, batch.batch_id, expected)
    with registry.connect() as conn:
        shas = {
            orjson.loads(r)["rule_sha256"]
            for r in conn.execute(
                select(evaluation_record.c.record).where(
                    evaluation_record.c.batch_id == batch.batch_id, evaluation_record.c.policy_id == GIANT
                )
            ).scalars()
        }
    assert shas == {started_under}


def test_a_batch_started_just_before_a_crash_still_runs_under_its_own_rule_text(
    registry: Engine, policies: PolicySet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """start_batch stores the RUNNING batch and its rule text in one transaction: a crash while
    storing the text leaves no batch, and the retried request runs under its own text even when
    the rules were reloaded before the run."""
    expected = _expected_grants(registry, policies, GIANT)

    def crash(*_: object) -> None:
        raise SimulatedCrash("the server died while storing the rule text")

    monkeypatch.setattr("service.payouts.batches.remember_policy", crash)
    with pytest.raises(SimulatedCrash):
        _start(registry, policies, GIANT, "req-crash-at-start")
    monkeypatch.undo()
    with registry.connect() as conn:
        assert conn.execute(select(payout_batch.c.batch_id)).first() is None  # nothing half-made
    batch = _start(registry, policies, GIANT, "req-crash-at-start")  # the client retries
    assert batch.state == "RUNNING"

    assert _run(registry, _giant_paying_600k(tmp_path), batch.batch_id) is True
    _assert_complete(registry, batch.batch_id, expected)


# -- 8. evaluation errors -------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, CHUNK], ids=["alone-in-its-chunk", "among-other-candidates"])
def test_an_enterprise_that_cannot_be_evaluated_is_counted_and_paid_by_a_later_batch(
    registry: Engine, policies: PolicySet, monkeypatch: pytest.MonkeyPatch, chunk_size: int
) -> None:
    settings = RunSettings(chunk_size=chunk_size, lease_seconds=30)
    expected = _expected_grants(registry, policies, GIANT)
    source = DocumentSource(registry)
    eligible_alone = {u: fen for u in USCCS if (fen := _award(policies.get(GIANT), source, u)) is not None}
    victim = _of_profile("giant")[2]
    _fail_evaluations_of(monkeypatch, victim)

    first = _create(registry, policies, GIANT, "req-error-1", settings=settings)
    assert first.state == "DRAFT"
    assert (first.error_count, first.eligible_count) == (1, len(eligible_alone) - 1)  # before stacking
    assert first.eligible_fen == sum(eligible_alone.values()) - GIANT_FEN
    assert first.evaluated_count == ENTERPRISES
    assert _amounts(registry, first.batch_id) == {u: fen for u, fen in expected.items() if u != victim}
    with registry.connect() as conn:
        error = conn.execute(
            select(payout_candidate.c.error).where(
                payout_candidate.c.batch_id == first.batch_id, payout_candidate.c.uscc == victim
            )
        ).scalar_one()
    assert "engine and trace disagree: clause registered-active: engine failed, trace true" in error
    _assert_audit_intact(registry)

    monkeypatch.undo()
    second = _create(registry, policies, GIANT, "req-error-2", settings=settings)
    assert (second.state, second.error_count) == ("DRAFT", 0)
    assert _amounts(registry, second.batch_id) == {victim: GIANT_FEN}
    assert sorted(g["uscc"] for g in _all_grants_of(registry, GIANT)) == sorted(expected)
    _assert_audit_intact(registry)


# -- 9. background workers ------------------------------------------------------------------------


@pytest.fixture
def workers(registry: Engine, policies: PolicySet) -> Iterator[Callable[[], BatchWorkers]]:
    """Makes started BatchWorkers on the registry; whatever is still running is stopped at the end."""
    made: list[BatchWorkers] = []

    def make_workers() -> BatchWorkers:
        made.append(BatchWorkers(registry, lambda: policies, RunSettings(chunk_size=CHUNK, lease_seconds=1)))
        made[-1].start()
        return made[-1]

    yield make_workers
    for w in made:
        w.stop(timeout=10)


def test_background_workers_run_a_started_batch_to_draft(
    registry: Engine, policies: PolicySet, workers: Callable[[], BatchWorkers]
) -> None:
    expected = _expected_grants(registry, policies, GIANT)
    pool = workers()
    batch = _start(registry, policies, GIANT, "req-background")
    pool.wake()

    _wait_for_state(registry, batch.batch_id, "DRAFT")
    pool.stop(timeout=10)
    assert not pool._scanner.is_alive()
    _assert_complete(registry, batch.batch_id, expected)


def test_stopped_workers_give_the_batch_back_and_new_ones_resume_it(
    registry: Engine, policies: PolicySet, workers: Callable[[], BatchWorkers], monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _expected_grants(registry, policies, GIANT)
    original = partitions.next_chunk

    def slow_next_chunk(conn: Connection, part: Any, limit: int) -> list[str]:
        time.sleep(0.2)
        return original(conn, part, limit)

    monkeypatch.setattr(partitions, "next_chunk", slow_next_chunk)
    first = workers()
    batch = _start(registry, policies, GIANT, "req-handover")
    first.wake()
    deadline = time.monotonic() + 30
    while get_batch(registry, batch.batch_id).evaluated_count == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    first.stop(timeout=10)

    handed_over, row = get_batch(registry, batch.batch_id), _row(registry, batch.batch_id)
    assert handed_over.state == "RUNNING" and 0 < handed_over.evaluated_count < ENTERPRISES
    assert row.worker is None

    monkeypatch.undo()
    workers()
    _wait_for_state(registry, batch.batch_id, "DRAFT")
    _assert_complete(registry, batch.batch_id, expected)
