"""Red-team review: a period's batches run together (one task per partition for all of them,
one read, one decision, one transaction per chunk for every batch), the streamed end of a
batch, and the facts snapshots stored before the ledger lock - on SQLite and PostgreSQL.

Every expectation is independent of the code under test: batches run together are compared
with the same batches run one by one on a database of their own, the money with what the
reference evaluator (`rules.evaluator.evaluate` over `service.facts_documents` documents)
awards stacked by hand (就高不重复: the group pays its highest award once), and budgets with
shares computed by hand. Pages and chunks are made tiny so that every boundary is crossed.

Tests marked "FAILED" showed a bug of the reviewed change, since fixed (snapshots are stored
under the lock again; one failing group no longer holds up the others, and BatchWorkers runs
each period and date in a thread of its own):
- test_a_lookup_recorded_while_a_chunk_waits_for_the_ledger_lock_does_not_deadlock and
  test_two_groups_storing_the_same_snapshots_in_another_order_do_not_deadlock (PostgreSQL):
  snapshots stored before the chain-head lock (`before_lock`) deadlock with a lock holder or a
  second chunk storing the same snapshots (they pass at 6d25d2c, before that change);
- test_a_batch_that_fails_does_not_hold_up_the_other_batches_waiting_with_it: BatchWorkers runs
  every waiting batch in one thread, so one failing batch holds up all the others.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select, text, update
from sqlalchemy.engine import Engine
from sqlmodel import col
from testkit.api_fixtures import database_factory
from testkit.databases import BACKENDS
from testkit.money_fixtures import BUDGET_POLICY, budget_policies
from testkit.paths import POLICIES_DIR
from testkit.payout_runs import batch_counts, create_together_or_one_by_one

from enterprise_registry.importer import load_records
from enterprise_registry.models import Enterprise
from enterprise_registry.synthetic import generate
from rules.evaluator import evaluate
from rules.loader import LoadedPolicy, PolicySet, load_policy_dir
from rules.values import Outcome
from service.audit.records import Actor, evaluation_record, prepare_decision, prepare_record, verify_records
from service.audit.verification import verify_audit_log
from service.catalogue import CATALOGUE
from service.evaluation import chunks
from service.facts_documents import DocumentSource, build_document
from service.payouts import partitions, runner, seals
from service.payouts.batches import Batch, create_payout_schema, get_batch, lines_of, start_batch
from service.payouts.partitions import (
    ChunkEvaluator,
    ChunkOutcome,
    LeaseLostError,
    PartitionTask,
    ensure_partitions,
    now_ms,
    run_partition_with,
    standing_grants,
)
from service.payouts.runner import (
    BatchWorkers,
    RunSettings,
    claim,
    create_batch,
    run_batch,
    run_batches,
)
from service.payouts.states import BatchState
from service.payouts.tables import grant, payout_batch, payout_candidate, payout_partition
from service.payouts.verification import verify_payouts

ENTERPRISES, SEED, PERIOD = 160, 7, 2025
TODAY = date(2026, 3, 31)
OPERATOR = Actor("operator-together", "finance_operator")
GIANT, CHAMPION, SJR = "little-giant-reward", "single-champion-reward", "stable-jobs-refund"
GIANT_FEN, CHAMPION_FEN = 50_000_000, 100_000_000
CHUNK = 7


# -- the registry: the synthetic one, with national titles spread over it -------------------------------


def _title(uscc: str, kind: str, year: int = PERIOD) -> dict[str, object]:
    return {
        "kind": "qualification",
        "uscc": uscc,
        "source": "industry_it",
        "as_of": f"{year}-12-31",
        "type": kind,
        "level": "national",
        "first_time": True,
        "granted_on": f"{year}-07-01",
        "certificate_no": f"{kind[:2].upper()}-tg-{uscc[-6:]}-{year}",
    }


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    """160 synthetic enterprises; every 5th (from the 2nd) holds a little-giant title of the
    period, every 7th (from the 3rd) a single-champion title - some hold both."""
    base = list(generate(ENTERPRISES, SEED))
    usccs = sorted({str(r["uscc"]) for r in base if r["kind"] == "enterprise"})
    titles = [_title(u, "little_giant") for i, u in enumerate(usccs) if i % 5 == 1]
    titles += [_title(u, "single_champion") for i, u in enumerate(usccs) if i % 7 == 2]
    return base + titles


@pytest.fixture(params=BACKENDS)
def databases(
    request: pytest.FixtureRequest, tmp_path: Path, records: list[dict[str, Any]]
) -> Iterator[Callable[[], Engine]]:
    """A factory of databases, each holding the same registry."""
    with database_factory(request.param, tmp_path, records) as new:
        yield new


# `databases` on PostgreSQL only: what is tested does not exist on SQLite (one writer, whose lock is
# taken before anything is written), so no SQLite case is collected (rather than one skipped).
postgres_only = pytest.mark.parametrize(
    "databases", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


# -- the independent references ----------------------------------------------------------------------------


def _in_force(policies: PolicySet, period: int = PERIOD) -> list[str]:
    return [p.id for p in policies if p.covers(period)]


def _awards(engine: Engine, policy: LoadedPolicy, period: int = PERIOD) -> dict[str, int]:
    """What the reference evaluator awards each enterprise registered now, decided alone."""
    compiled, year = policy.compiled(period), policy.fact_year(period)
    out = {}
    for rows in DocumentSource(engine).all_rows():
        evaluation = evaluate(compiled, build_document(rows, year), today=TODAY)
        if evaluation.outcome == Outcome.ELIGIBLE:
            out[rows.uscc] = evaluation.amount_fen
    return out


def _first_round(engine: Engine, policies: PolicySet, period: int = PERIOD) -> dict[str, dict[str, int]]:
    """policy -> USCC -> fen that the period's first batches pay, by hand: every eligible
    enterprise its award, but within a conflict group only the highest award (ties by policy
    id), once. The reference pack has no budgets and no exclusions (asserted)."""
    awards = {policy_id: _awards(engine, policies.get(policy_id), period) for policy_id in _in_force(policies, period)}
    out: dict[str, dict[str, int]] = {policy_id: {} for policy_id in awards}
    for policy_id, theirs in awards.items():
        policy = policies.get(policy_id)
        assert policy.budget_fen is None and not policies.excluded(policy_id)
        group = policy.model.conflict_group
        rivals = [p for p in awards if p != policy_id and group and policies.get(p).model.conflict_group == group]
        for uscc, fen in theirs.items():
            best = max(
                [(fen, policy_id)] + [(awards[r][uscc], r) for r in rivals if uscc in awards[r]],
                key=lambda pair: (pair[0], [-ord(c) for c in pair[1]]),
            )
            if best[1] == policy_id:
                out[policy_id][uscc] = fen
    return out


# a record counted: enterprise, policy, rule text's sha256, outcome, amount, payout note
Decided = tuple[str, str, str, str, int, str | None]
# state, evaluated, eligible, eligible fen, errors, lines, total fen; (amount, full amount, tops up)
# by USCC; the records counted
BatchRun = tuple[BatchState, int, int, int, int, int, int, dict[str, tuple[int, int, bool]], Counter[Decided]]


def _outcome(engine: Engine, batch_id: str) -> BatchRun:
    """What the batch decided and paid, independent of how it was run: its counts, its lines
    (amount, full amount, whether it tops up), and every record it holds (enterprise, policy,
    rule text, outcome, amount, payout note) counted. The audit trail verifies."""
    batch = get_batch(engine, batch_id)
    with engine.connect() as conn:
        lines: dict[str, tuple[int, int, bool]] = {
            line["uscc"]: (line["amount_fen"], line["full_fen"], line["tops_up"] is not None)
            for line in lines_of(conn, batch_id)
        }
        decided: Counter[Decided] = Counter()
        for stored in conn.execute(
            select(evaluation_record.c.record).where(evaluation_record.c.batch_id == batch_id)
        ).scalars():
            r = orjson.loads(stored)
            decided[
                (r["uscc"], r["policy_id"], r["rule_sha256"], r["outcome"], r["amount_fen"], r.get("payout_note"))
            ] += 1
        assert verify_records(conn) == []
        assert verify_payouts(conn) == []
        verdict = verify_audit_log(conn)
        assert verdict.valid, (verdict.fault, verdict.detail)
    return (*batch_counts(batch), lines, decided)


def _paid(engine: Engine, batch_id: str) -> dict[str, int]:
    with engine.connect() as conn:
        return {line["uscc"]: line["amount_fen"] for line in lines_of(conn, batch_id)}


def _together(
    engine: Engine,
    policies: PolicySet,
    policy_ids: Sequence[str],
    settings: RunSettings,
    prefix: str = "req",
    period: int = PERIOD,
    together: bool = True,
) -> list[Batch]:
    """The policies' batches of `period` created and run together, or (`together=False`) one by one."""
    return create_together_or_one_by_one(
        engine,
        policies,
        [(p, f"{prefix}-{p}-{period}") for p in policy_ids],
        together=together,
        period=period,
        actor=OPERATOR,
        today=TODAY,
        settings=settings,
    )


def _one_by_one(
    engine: Engine,
    policies: PolicySet,
    policy_ids: Sequence[str],
    settings: RunSettings,
    period: int = PERIOD,
    prefix: str = "req",
) -> dict[str, BatchRun]:
    made = _together(engine, policies, policy_ids, settings, prefix, period, together=False)
    return {batch.policy_id: _outcome(engine, batch.batch_id) for batch in made}


def _start(engine: Engine, policies: PolicySet, policy_id: str, period: int = PERIOD, prefix: str = "req") -> str:
    return start_batch(
        engine,
        policies,
        policy_id=policy_id,
        period=period,
        request_id=f"{prefix}-{policy_id}-{period}",
        actor=OPERATOR,
        today=TODAY,
    ).batch_id


def _partition_rows(engine: Engine, batch_id: str) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(payout_partition)
                .where(payout_partition.c.batch_id == batch_id)
                .order_by(payout_partition.c.partition_no)
            )
        )


def _batch_row(engine: Engine, batch_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(payout_batch).where(payout_batch.c.batch_id == batch_id)).one()


def _records_per_enterprise(engine: Engine, batch_id: str) -> Counter[tuple[str, str]]:
    with engine.connect() as conn:
        return Counter(
            conn.execute(
                select(evaluation_record.c.uscc, evaluation_record.c.policy_id).where(
                    evaluation_record.c.batch_id == batch_id
                )
            ).all()
        )


def _registered(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(col(Enterprise.uscc)).order_by(col(Enterprise.uscc))).scalars())


@pytest.fixture
def tiny_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch's end reads its candidates 3 at a time and seals its lines 2 at a time."""
    monkeypatch.setattr(runner, "_CANDIDATES_PER_PAGE", 3)
    monkeypatch.setattr(seals, "_LINES_PER_PAGE", 2)


# -- 1. together = one by one = the reference --------------------------------------------------------------


@pytest.mark.parametrize("partition_count", [1, 3])
def test_a_periods_six_batches_together_in_tiny_chunks_and_pages_equal_one_by_one_and_the_reference(
    databases: Callable[[], Engine], policies: PolicySet, tiny_pages: None, partition_count: int
) -> None:
    alone = databases()
    wanted = _in_force(policies)
    expected = _one_by_one(alone, policies, wanted, RunSettings(chunk_size=50))
    reference = _first_round(alone, policies)
    assert {p: {u: fen for u, (fen, _, _) in o[7].items()} for p, o in expected.items()} == reference
    both = set(_awards(alone, policies.get(GIANT))) & set(_awards(alone, policies.get(CHAMPION)))
    assert both and reference[CHAMPION], "enterprises eligible for both titles: 就高不重复 decides"

    joint = databases()
    settings = RunSettings(chunk_size=CHUNK, partitions=partition_count)
    made = _together(joint, policies, wanted, settings)
    assert {batch.policy_id: _outcome(joint, batch.batch_id) for batch in made} == expected
    # 就高不重复 by hand: an enterprise holding both titles is paid the champion's award, once.
    by_policy = {batch.policy_id: _paid(joint, batch.batch_id) for batch in made}
    for uscc in both:
        assert (by_policy[GIANT].get(uscc, 0), by_policy[CHAMPION].get(uscc, 0)) == (0, CHAMPION_FEN), uscc


def test_a_second_round_run_together_tops_up_and_skips_the_granted_as_one_by_one_does(
    databases: Callable[[], Engine], policies: PolicySet, tiny_pages: None
) -> None:
    """After a first round, champion titles go to enterprises the first round paid as little
    giants, and new giants appear: the second round (the six batches again) pays the champions
    the difference, topping up the giant's grant, the new giants their award, nobody twice."""
    settings = RunSettings(chunk_size=CHUNK, partitions=2)
    wanted = _in_force(policies)
    outcomes: list[dict[str, BatchRun]] = []
    engines = []
    for mode in ("one-by-one", "together"):
        engine = databases()
        engines.append(engine)
        first = _one_by_one(engine, policies, wanted, settings, prefix="r1")
        giants = sorted(first[GIANT][7])
        assert len(giants) >= 4, "giants paid in the first round"
        registered = _registered(engine)
        fresh = [u for u in registered if u not in first[GIANT][7] and u not in first[CHAMPION][7]][:6]
        load_records(
            [_title(u, "single_champion") for u in giants[::2]] + [_title(u, "little_giant") for u in fresh], engine
        )
        if mode == "one-by-one":
            outcomes.append(_one_by_one(engine, policies, wanted, settings, prefix="r2"))
        else:
            made = _together(engine, policies, wanted, settings, prefix="r2")
            outcomes.append({batch.policy_id: _outcome(engine, batch.batch_id) for batch in made})
        # By hand: champions who were paid as giants get the difference, as a top-up.
        champions = outcomes[-1][CHAMPION][7]
        topped = [u for u in giants[::2] if u in _awards(engine, policies.get(CHAMPION))]
        assert topped, "champions who were paid as giants"
        for uscc in topped:
            assert champions[uscc] == (CHAMPION_FEN - GIANT_FEN, CHAMPION_FEN, True), (mode, uscc)
        assert not set(outcomes[-1][GIANT][7]) & set(first[GIANT][7]), "a giant paid twice"
    assert outcomes[1] == outcomes[0]


# -- helpers of the tests that drive partitions by hand ----------------------------------------------------


def _joint_task(
    engine: Engine,
    policies: PolicySet,
    batch_ids: Sequence[str],
    coordinator: str,
    settings: RunSettings,
    partition_no: int = 0,
) -> tuple[list[ChunkEvaluator], PartitionTask]:
    """The batches claimed by `coordinator`, partitioned, and one partition's task for all of
    them, as `run_batches` makes it."""
    for batch_id in batch_ids:
        assert claim(engine, batch_id, coordinator, 60)
    ensure_partitions(engine, batch_ids, settings.partitions or 1)
    runs = [runner._Run.load(engine, policies, batch_id, coordinator, settings) for batch_id in batch_ids]
    task = PartitionTask(
        engine.url.render_as_string(hide_password=False),
        tuple(r.batch_task() for r in runs),
        partition_no,
        coordinator,
        settings,
    )
    return [r.evaluator for r in runs], task


def _chunks_then_stop(count: int) -> Callable[[], bool]:
    """A `stop` for run_partition_with: `count` chunks, then stop."""
    answers = iter([False] * count + [True] * 1000)
    return lambda: next(answers)


def _until_a_lock_is_awaited(engine: Engine, locktype: str) -> bool:
    """Until some session waits for a lock of `locktype` (pg_locks: 'advisory' is the chain head,
    'transactionid' a row another transaction inserted), at most 10 s."""
    deadline = time.monotonic() + 10
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                text("select count(*) from pg_locks where locktype = :locktype and not granted"), {"locktype": locktype}
            ).scalar_one()
            conn.rollback()
            if waiting:
                return True
            time.sleep(0.02)
    return False


def _in_thread(outcomes: dict[str, object], name: str, work: Callable[[], object]) -> threading.Thread:
    def run() -> None:
        try:
            outcomes[name] = work()
        except Exception as exc:  # checked by the test
            outcomes[name] = exc

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


# -- 2. facts snapshots stored before the ledger lock (PostgreSQL) ---------------------------------------


@postgres_only
def test_a_lookup_recorded_while_a_chunk_waits_for_the_ledger_lock_does_not_deadlock(
    databases: Callable[[], Engine], policies: PolicySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FAILED before the fix (PostgreSQL): a deadlock (psycopg DeadlockDetected) where both should commit.

    A chunk stores its facts snapshots before it takes the chain-head lock
    (`partitions.run_partition_with`: `ledger_transaction(before_lock=store_snapshots)`) and
    keeps those rows locked, uncommitted, until it has the lock and commits. The lookups'
    group commit (`evaluation.recorder.Recorder._commit`) takes the lock first and then stores
    ITS snapshots (`write_records` -> `store_snapshots`): a lookup of an enterprise of that
    chunk stores the very document the chunk does (same SHA-256), so the recorder waits for
    the chunk's row while the chunk waits for the recorder's lock - a cycle PostgreSQL breaks
    by aborting one of them (the lookups of the group fail, or the chunk and its batches).
    `ledger_transaction`'s promise for `before_lock` ("that no holder of the lock waits for")
    does not hold. Before this change the chunk stored its snapshots under the lock, and the
    two ran one after the other. Here the lookup is handed to a real Recorder right after the
    chunk stored its snapshots, and the chunk goes on once the recorder waits."""
    from service.evaluation.recorder import Recorder

    engine = databases()
    policy = policies.get(SJR)
    batch_id = _start(engine, policies, SJR)
    settings = RunSettings(chunk_size=CHUNK, partitions=1)
    evaluators, task = _joint_task(engine, policies, [batch_id], "coord", settings)
    victim = _registered(engine)[0]  # in the first chunk
    rows = DocumentSource(engine).rows(victim)
    assert rows is not None
    document = build_document(rows, policy.fact_year(PERIOD))
    looked_up = prepare_record(
        evaluate(policy.compiled(PERIOD), document, today=TODAY), document, Actor("api-viewer", "viewer")
    )
    real_store, seen = getattr(partitions, "store_snapshots", None), {}
    submitted: list[Any] = []

    with Recorder(engine) as recorder:

        def store_then_look_up(conn: Any, snapshots: Any) -> None:
            assert real_store is not None
            real_store(conn, snapshots)
            seen.update(snapshots)
            if not submitted:  # the lookup's group commit, while this chunk waits to take the lock
                submitted.append(recorder.submit([(policy, looked_up)]))
                _until_a_lock_is_awaited(engine, "transactionid")

        monkeypatch.setattr(partitions, "store_snapshots", store_then_look_up, raising=False)
        outcomes: dict[str, object] = {}
        _in_thread(
            outcomes, "chunk", lambda: run_partition_with(engine, evaluators, task, stop=_chunks_then_stop(1))
        ).join(90)
        if not submitted:  # nothing stored before the lock: the lookup comes after the chunk
            submitted.append(recorder.submit([(policy, looked_up)]))
        try:
            submitted[0].result(60)
            outcomes["lookup"] = "recorded"
        except Exception as exc:
            outcomes["lookup"] = exc
    assert not seen or looked_up.facts_sha256 in seen, "the lookup stores the snapshot the chunk stores"
    assert outcomes == {"chunk": CHUNK, "lookup": "recorded"}, outcomes


@postgres_only
def test_two_groups_storing_the_same_snapshots_in_another_order_do_not_deadlock(
    databases: Callable[[], Engine], policies: PolicySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FAILED before the fix (PostgreSQL): one of two chunks of unrelated batches aborts with DeadlockDetected.

    Two coordinators run two groups of the period over the same enterprises (two servers, or
    a group created while the other runs): group 1 holds stable-jobs-refund (fact year 2024)
    before above-size-entry-reward (2025), group 2 little-giant (2025) before high-tech (2024).
    Each chunk stores its snapshots before the lock in the order of its batches and holds them:
    1 holds the 2024 snapshots and wants the 2025 ones, 2 the other way round. To make the two
    INSERTs overlap every time, both start at once and a trigger (test-only) makes each row
    of facts_snapshot take 20 ms. Under the lock, as before this change, they could not overlap."""
    engine = databases()
    with engine.begin() as conn:
        conn.execute(
            text(
                "create function slow_snapshot() returns trigger language plpgsql as "
                "$$ begin perform pg_sleep(0.02); return new; end $$"
            )
        )
        conn.execute(
            text(
                "create trigger slow_snapshot before insert on facts_snapshot "
                "for each row execute function slow_snapshot()"
            )
        )
    settings = RunSettings(chunk_size=CHUNK, partitions=1)
    first = [_start(engine, policies, p) for p in (SJR, "above-size-entry-reward")]
    second = [_start(engine, policies, p) for p in (GIANT, "high-tech-reward")]
    evaluators_1, task_1 = _joint_task(engine, policies, first, "coord-1", settings)
    evaluators_2, task_2 = _joint_task(engine, policies, second, "coord-2", settings)
    # what partitions calls: it imports them from chunks and records (no re-export)
    meet, real_read = threading.Barrier(2, timeout=30), chunks.read_chunk
    years: dict[str, list[int]] = {}

    def read_then_meet(conn: Any, usccs: Sequence[str], fact_years: Sequence[int]) -> Any:
        chunk = real_read(conn, usccs, fact_years)
        meet.wait()  # both chunks decided at about the same time, then stored
        return chunk

    monkeypatch.setattr(partitions, "read_chunk", read_then_meet)
    real_prepare = prepare_decision

    def noting_years(decision: Any, *args: Any, **kwargs: Any) -> Any:
        years.setdefault(threading.current_thread().name, [])
        if decision.fact_year not in years[threading.current_thread().name]:
            years[threading.current_thread().name].append(decision.fact_year)
        return real_prepare(decision, *args, **kwargs)

    monkeypatch.setattr(partitions, "prepare_decision", noting_years)
    outcomes: dict[str, object] = {}
    threads = [
        _in_thread(
            outcomes, "group-1", lambda: run_partition_with(engine, evaluators_1, task_1, stop=_chunks_then_stop(1))
        ),
        _in_thread(
            outcomes, "group-2", lambda: run_partition_with(engine, evaluators_2, task_2, stop=_chunks_then_stop(1))
        ),
    ]
    for thread in threads:
        thread.join(90)
    assert outcomes == {"group-1": CHUNK, "group-2": CHUNK}, (outcomes, years)


@pytest.mark.parametrize("copies", [2])
def test_a_duplicate_joint_task_loses_with_lease_lost_and_every_enterprise_is_recorded_once(
    databases: Callable[[], Engine], policies: PolicySet, monkeypatch: pytest.MonkeyPatch, copies: int
) -> None:
    """Two copies of one joint task (a resubmitted task, its first copy still alive) read the
    same cursor, both store the chunk's snapshots (on PostgreSQL before the lock, the second
    waiting for the first's commit): the loser must fail with LeaseLostError, not a deadlock or
    an IntegrityError, and each batch then ends as it does run one by one."""
    wanted = [GIANT, CHAMPION, SJR]
    expected = _one_by_one(databases(), policies, wanted, RunSettings(chunk_size=CHUNK))
    engine = databases()
    batch_ids = [_start(engine, policies, p) for p in wanted]
    settings = RunSettings(chunk_size=CHUNK, partitions=1)
    evaluators, task = _joint_task(engine, policies, batch_ids, "coord", settings)
    meet, real_next = threading.Barrier(copies, timeout=30), partitions.next_chunk
    first_read: set[str] = set()

    def next_chunk(conn: Any, part: Any, limit: int) -> list[str]:
        found = real_next(conn, part, limit)
        if threading.current_thread().name not in first_read:
            first_read.add(threading.current_thread().name)
            meet.wait()
        return found

    monkeypatch.setattr(partitions, "next_chunk", next_chunk)
    outcomes: dict[str, object] = {}
    threads = [
        _in_thread(outcomes, f"copy-{k}", lambda: run_partition_with(engine, evaluators, task)) for k in range(copies)
    ]
    for thread in threads:
        thread.join(120)
    monkeypatch.undo()
    lost = [o for o in outcomes.values() if isinstance(o, LeaseLostError)]
    won = [o for o in outcomes.values() if o == ENTERPRISES]
    assert (len(lost), len(won)) == (copies - 1, 1), outcomes
    assert sorted(run_batches(engine, policies, batch_ids, worker="coord", settings=settings)) == sorted(batch_ids)
    assert {get_batch(engine, b).policy_id: _outcome(engine, b) for b in batch_ids} == expected


# -- 3. BatchWorkers: what it finds waiting, it runs in one thread ---------------------------------------


def _until_draft(engine: Engine, batch_ids: Sequence[str], timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        states = {b: str(get_batch(engine, b).state) for b in batch_ids}
        if all(s == "DRAFT" for s in states.values()) or time.monotonic() > deadline:
            return states
        time.sleep(0.2)


def test_batch_workers_run_waiting_batches_of_different_periods_each_as_it_would_alone(
    databases: Callable[[], Engine], policies: PolicySet
) -> None:
    engine = databases()
    waiting = [(SJR, PERIOD - 1), (GIANT, PERIOD), (SJR, PERIOD), (CHAMPION, PERIOD)]
    batch_ids = [_start(engine, policies, p, period) for p, period in waiting]
    workers = BatchWorkers(engine, lambda: policies, RunSettings(chunk_size=CHUNK * 3, lease_seconds=2))
    workers.start()
    workers.wake()
    try:
        states = _until_draft(engine, batch_ids, 120)
    finally:
        workers.stop(60)
    assert set(states.values()) == {"DRAFT"}, states
    by_period = {period: _first_round(engine, policies, period) for period in (PERIOD - 1, PERIOD)}
    for batch_id, (policy_id, period) in zip(batch_ids, waiting):
        assert _paid(engine, batch_id) == by_period[period][policy_id], (policy_id, period)


def test_a_batch_that_fails_does_not_hold_up_the_other_batches_waiting_with_it(
    databases: Callable[[], Engine], policies: PolicySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FAILED before the fix: the healthy batch of 2025 never reaches DRAFT while a batch of 2024 fails.

    `BatchWorkers._scan` now runs every batch it finds waiting in ONE thread (`run_batches`),
    and `run_batches` runs the groups one after the other without catching anything but
    LeaseLostError: the first group's exception (here an injected engine failure of the 2024
    batch's chunks - any error that recurs: a rule text that no longer loads, a pack the engine
    refuses) ends the call before the later groups start, and the batches are not even given
    back, so they wait out their lease and are taken again - together, failing again. A batch
    of another period, which shares nothing with the failing one, is held up for good. Before
    this change each waiting batch ran in a thread of its own and the healthy one finished."""
    engine = databases()
    broken = _start(engine, policies, SJR, PERIOD - 1)
    healthy = _start(engine, policies, SJR, PERIOD)
    real_read = chunks.read_chunk  # what partitions calls: it imports it from chunks (no re-export)

    def failing_for_the_broken(conn: Any, usccs: Sequence[str], fact_years: Sequence[int]) -> Any:
        if PERIOD - 2 in fact_years:  # the 2024 batch reads 2023 (stable-jobs-refund: the previous year)
            raise RuntimeError("injected: the engine refuses the 2024 batch's chunk")
        return real_read(conn, usccs, fact_years)

    monkeypatch.setattr(partitions, "read_chunk", failing_for_the_broken)
    workers = BatchWorkers(engine, lambda: policies, RunSettings(chunk_size=CHUNK * 3, lease_seconds=1), max_parallel=2)
    workers.start()
    workers.wake()
    try:
        states = _until_draft(engine, [healthy], 30)
    finally:
        workers.stop(60)
    assert get_batch(engine, broken).state == "RUNNING", "the failing batch cannot end"
    assert states == {healthy: "DRAFT"}, "the healthy batch waits behind the failing one"
    assert _paid(engine, healthy) == _first_round(engine, policies)[SJR]


# -- 4. a joint chunk fails, is lost or stopped: every batch where it was -----------------------------------


def test_an_exception_between_two_batches_writes_of_a_joint_chunk_commits_none_of_it(
    databases: Callable[[], Engine], policies: PolicySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The third chunk fails after the giant batch's part of it was written and before the
    champion's: nothing of that chunk may stay (no batch advanced, no record), and the
    restarted coordinator ends every batch as one-by-one runs do."""
    wanted = [GIANT, CHAMPION, SJR]
    settings = RunSettings(chunk_size=CHUNK, partitions=1)
    expected = _one_by_one(databases(), policies, wanted, settings)
    engine = databases()
    batch_ids = [_start(engine, policies, p) for p in wanted]
    real_write, writes = ChunkOutcome.write, Counter[str]()

    def write(self: ChunkOutcome, conn: Any, evaluator: ChunkEvaluator, stored: set[str]) -> None:
        writes[evaluator.batch_id] += 1
        if evaluator.batch_id == batch_ids[1] and writes[evaluator.batch_id] == 3:
            raise RuntimeError("injected: the coordinator dies between two batches' writes")
        real_write(self, conn, evaluator, stored)

    monkeypatch.setattr(ChunkOutcome, "write", write)
    with pytest.raises(RuntimeError, match="injected"):
        run_batches(engine, policies, batch_ids, worker="coord", settings=settings)
    monkeypatch.undo()
    assert writes[batch_ids[0]] == 3, "the giant batch's part of the third chunk was written first"
    registered = _registered(engine)
    for batch_id in batch_ids:
        (part,) = _partition_rows(engine, batch_id)
        assert (part.cursor, part.done) == (registered[2 * CHUNK - 1], 0), batch_id
        assert get_batch(engine, batch_id).evaluated_count == 2 * CHUNK
        assert {u for u, _ in _records_per_enterprise(engine, batch_id)} <= set(registered[: 2 * CHUNK])
    assert sorted(run_batches(engine, policies, batch_ids, worker="coord", settings=settings)) == sorted(batch_ids)
    assert {get_batch(engine, b).policy_id: _outcome(engine, b) for b in batch_ids} == expected


def test_a_batch_taken_over_in_the_middle_of_a_joint_run_leaves_its_partners_where_they_were(
    databases: Callable[[], Engine], policies: PolicySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another server takes the champion batch (its lease ran out) while the third chunk is
    evaluated: that chunk commits for no batch, the partners are given back, and each batch,
    finished by whoever holds it, ends as one-by-one runs do - nobody evaluated twice."""
    wanted = [GIANT, CHAMPION, SJR]
    settings = RunSettings(chunk_size=CHUNK, partitions=1)
    expected = _one_by_one(databases(), policies, wanted, settings)
    engine = databases()
    batch_ids = [_start(engine, policies, p) for p in wanted]
    taken = batch_ids[1]
    real_evaluate, calls = partitions.evaluate_together, [0]

    def evaluate_then_lose(engine_: Engine, evaluators: Sequence[ChunkEvaluator], usccs: Sequence[str]) -> Any:
        calls[0] += 1
        if calls[0] == 3:
            with engine.begin() as conn:
                conn.execute(
                    update(payout_batch)
                    .where(payout_batch.c.batch_id == taken)
                    .values(worker="other-server", lease_until=now_ms() + 60_000)
                )
        return real_evaluate(engine_, evaluators, usccs)

    monkeypatch.setattr(partitions, "evaluate_together", evaluate_then_lose)
    assert run_batches(engine, policies, batch_ids, worker="coord", settings=settings) == []
    monkeypatch.undo()
    registered = _registered(engine)
    for batch_id in batch_ids:
        (part,) = _partition_rows(engine, batch_id)
        assert part.cursor == registered[2 * CHUNK - 1], batch_id
        assert get_batch(engine, batch_id).evaluated_count == 2 * CHUNK
    assert [_batch_row(engine, b).worker for b in batch_ids] == [None, "other-server", None]

    assert run_batch(engine, policies, taken, worker="other-server", settings=settings)
    rest = [batch_ids[0], batch_ids[2]]
    assert sorted(run_batches(engine, policies, rest, worker="coord-2", settings=settings)) == sorted(rest)
    assert {get_batch(engine, b).policy_id: _outcome(engine, b) for b in batch_ids} == expected


def test_a_stopped_joint_run_resumed_alone_and_beside_a_new_batch_evaluates_nobody_twice(
    databases: Callable[[], Engine], policies: PolicySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three batches stop in the middle of their first partition. The giant batch is resumed
    alone, the champion batch beside a high-tech batch created only now, the stable-jobs batch
    last: each ends as one-by-one runs do, every enterprise decided once per batch."""
    wanted, later = [GIANT, CHAMPION, SJR], "high-tech-reward"
    settings = RunSettings(chunk_size=CHUNK, partitions=2)
    expected = _one_by_one(databases(), policies, [*wanted, later], settings)
    engine = databases()
    batch_ids = [_start(engine, policies, p) for p in wanted]
    stop, real_evaluate, calls = threading.Event(), partitions.evaluate_together, [0]

    def evaluate_then_stop(engine_: Engine, evaluators: Sequence[ChunkEvaluator], usccs: Sequence[str]) -> Any:
        calls[0] += 1
        if calls[0] == 4:
            stop.set()  # this chunk commits, then the run stops
        return real_evaluate(engine_, evaluators, usccs)

    monkeypatch.setattr(partitions, "evaluate_together", evaluate_then_stop)
    assert run_batches(engine, policies, batch_ids, worker="coord-1", settings=settings, stop=stop) == []
    monkeypatch.undo()
    registered = _registered(engine)
    layouts = {
        tuple((p.after_uscc, p.last_uscc, p.cursor, p.done) for p in _partition_rows(engine, b)) for b in batch_ids
    }
    assert len(layouts) == 1, layouts
    ((first, second),) = layouts
    assert first[2] == registered[4 * CHUNK - 1] and second[2] == second[0], "stopped inside partition 0"
    assert all(_batch_row(engine, b).worker is None for b in batch_ids), "given back"

    assert run_batch(engine, policies, batch_ids[0], worker="coord-2", settings=settings)
    new = _start(engine, policies, later)
    assert sorted(run_batches(engine, policies, [batch_ids[1], new], worker="coord-3", settings=settings)) == sorted(
        [batch_ids[1], new]
    )
    assert run_batch(engine, policies, batch_ids[2], worker="coord-4", settings=settings)
    got = {get_batch(engine, b).policy_id: _outcome(engine, b) for b in [*batch_ids, new]}
    assert got == expected
    for batch_id in [*batch_ids, new]:
        assert set(_records_per_enterprise(engine, batch_id).values()) == {1}, "decided twice into a batch"


# -- 5. rivals' texts, errors, batches created meanwhile ---------------------------------------------------


def _reloaded_with(tmp_path: Path, policy_id: str, old: str, new: str) -> PolicySet:
    """The reference pack reloaded from a copy in which `policy_id`'s text has `old` (once) as `new`."""
    folder = tmp_path / "reloaded"
    folder.mkdir()
    for source in POLICIES_DIR.glob("*.yaml"):
        content = source.read_text(encoding="utf-8")
        if source.name == f"{policy_id}.yaml":
            assert content.count(old) == 1, old
            content = content.replace(old, new)
        (folder / source.name).write_text(content, encoding="utf-8")
    return load_policy_dir(folder, CATALOGUE, require_tests=False)


def test_batches_whose_pinned_rival_text_differs_run_apart_in_one_call_and_each_decides_as_alone(
    databases: Callable[[], Engine], policies: PolicySet, tmp_path: Path
) -> None:
    """The giant batch started under the champion's award of 100万元; the rules were reloaded
    with 150万元 and the champion batch started under that. Both in one call: one pass cannot
    decide the champion under two texts, so they run apart (the stable-jobs batch joins the
    first), and each decides and pays as it does when run alone under its own texts."""
    reloaded = _reloaded_with(tmp_path, CHAMPION, "value: 100万元", "value: 150万元")
    settings = RunSettings(chunk_size=CHUNK, partitions=2)
    reference = databases()
    expected = {
        GIANT: _one_by_one(reference, policies, [GIANT], settings)[GIANT],
        CHAMPION: _one_by_one(reference, reloaded, [CHAMPION], settings)[CHAMPION],
        SJR: _one_by_one(reference, policies, [SJR], settings)[SJR],
    }
    engine = databases()
    giant, sjr = _start(engine, policies, GIANT), _start(engine, policies, SJR)
    champion = _start(engine, reloaded, CHAMPION)
    runs = [runner._Run.load(engine, reloaded, b, "coord", settings) for b in (giant, champion, sjr)]
    assert [[r.batch_id for r in g.runs] for g in runner.together(engine, runs, settings)] == [[giant, sjr], [champion]]
    assert sorted(run_batches(engine, reloaded, [giant, champion, sjr], worker="coord", settings=settings)) == sorted(
        [giant, champion, sjr]
    )
    got = {get_batch(engine, b).policy_id: _outcome(engine, b) for b in (giant, champion, sjr)}
    assert got == expected
    # The giant batch's records of the champion are of the text it pinned, the champion's own of the new one.
    giant_rival = {r[2] for r in got[GIANT][8] if r[1] == CHAMPION}
    own = {r[2] for r in got[CHAMPION][8] if r[1] == CHAMPION}
    assert giant_rival == {policies.get(CHAMPION).sha256} and own == {reloaded.get(CHAMPION).sha256}


def _hide_from_the_engine(monkeypatch: pytest.MonkeyPatch, victim: str, policy_id: str) -> None:
    """The engine is asserted the victim's fact without `policy_id`'s properties: its clause
    rules cannot fire where the trace holds them true - the cross-check's error for that policy."""
    from service.evaluation import decide

    original = decide.engine_facts

    def facts_without(members: Any, decisions: Any) -> list[dict[str, Any]]:
        facts = original(members, decisions)
        usccs = next(iter(decisions.values())).columns.usccs
        hidden = {packed for m in members if m.policy_id == policy_id for packed in m.properties.values()}
        for row, uscc in enumerate(usccs):
            if uscc == victim:
                facts[row] = {k: v for k, v in facts[row].items() if k not in hidden}
        return facts

    monkeypatch.setattr(decide, "engine_facts", facts_without)


def test_an_engine_disagreement_on_a_rival_counts_the_same_errors_together_as_one_by_one(
    databases: Callable[[], Engine], policies: PolicySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An enterprise holding both titles whose champion decision the engine contradicts: the
    champion batch counts it an error (its own), the giant batch too (its rival failed while it
    is eligible), no other batch - and neither title pays it; together as one by one."""
    settings = RunSettings(chunk_size=CHUNK, partitions=1)
    wanted = _in_force(policies)
    reference = databases()
    both = sorted(set(_awards(reference, policies.get(GIANT))) & set(_awards(reference, policies.get(CHAMPION))))
    victim = both[0]
    _hide_from_the_engine(monkeypatch, victim, CHAMPION)
    expected = _one_by_one(reference, policies, wanted, settings)
    assert {p: o[4] for p, o in expected.items()} == {p: int(p in (GIANT, CHAMPION)) for p in wanted}
    assert victim not in expected[GIANT][7] and victim not in expected[CHAMPION][7]
    joint = databases()
    made = _together(joint, policies, wanted, settings)
    assert {batch.policy_id: _outcome(joint, batch.batch_id) for batch in made} == expected


def test_a_batch_created_while_a_joint_run_goes_on_runs_beside_it_and_the_group_pays_each_title_once(
    databases: Callable[[], Engine], policies: PolicySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BatchWorkers runs the giant and stable-jobs batches together; the champion batch is
    created after their first chunk and runs in a thread of its own meanwhile. However their
    ends interleave, the conflict group pays each enterprise the higher award once, and each
    batch ends as one-by-one runs do."""
    settings = RunSettings(chunk_size=CHUNK, partitions=1, lease_seconds=2)
    expected = _one_by_one(databases(), policies, [GIANT, SJR, CHAMPION], settings)
    engine = databases()
    first = [_start(engine, policies, p) for p in (GIANT, SJR)]
    later: list[str] = []
    workers = BatchWorkers(engine, lambda: policies, settings, max_parallel=2)
    real_evaluate = partitions.evaluate_together

    def evaluate_then_create(engine_: Engine, evaluators: Sequence[ChunkEvaluator], usccs: Sequence[str]) -> Any:
        if not later and any(e.batch_id == first[0] for e in evaluators):
            later.append(_start(engine, policies, CHAMPION))
            workers.wake()
        return real_evaluate(engine_, evaluators, usccs)

    monkeypatch.setattr(partitions, "evaluate_together", evaluate_then_create)
    workers.start()
    workers.wake()
    try:
        deadline = time.monotonic() + 120
        while not later and time.monotonic() < deadline:
            time.sleep(0.1)
        states = _until_draft(engine, [*first, *later], 120)
    finally:
        workers.stop(60)
    assert later and set(states.values()) == {"DRAFT"}, states
    got = {get_batch(engine, b).policy_id: _outcome(engine, b) for b in [*first, *later]}
    assert got == expected
    giants, champions = _paid(engine, first[0]), _paid(engine, later[0])
    awards = {p: _awards(engine, policies.get(p)) for p in (GIANT, CHAMPION)}
    for uscc in set(awards[GIANT]) | set(awards[CHAMPION]):
        assert giants.get(uscc, 0) + champions.get(uscc, 0) == max(
            awards[GIANT].get(uscc, 0), awards[CHAMPION].get(uscc, 0)
        ), uscc


# -- 6. the streamed end: standing grants, pages, budgets --------------------------------------------------


def test_standing_grants_of_a_chunk_are_its_enterprises_grants_and_no_others_of_the_range(
    databases: Callable[[], Engine], policies: PolicySet
) -> None:
    """`standing_grants` reads the USCC range a chunk spans: grants inside the range but of
    enterprises outside the chunk (not in it, or not registered at all) must not be returned,
    and every grant of the chunk's enterprises must."""
    engine = databases()
    made = _together(engine, policies, _in_force(policies), RunSettings(chunk_size=50))
    assert all(b.state == "DRAFT" for b in made)
    registered = _registered(engine)
    with engine.begin() as conn:
        line = dict(lines_of(conn, next(b.batch_id for b in made if b.line_count))[0])
        stranger = registered[21][:-1] + ("0" if registered[21][-1] != "0" else "1")  # between two registered
        assert stranger not in registered and registered[10] < stranger < registered[30]
        conn.execute(grant.insert().values({**line, "grant_id": "stranger-000001", "uscc": stranger}))
        every = conn.execute(
            select(grant.c.uscc, grant.c.policy_id, grant.c.grant_id).where(
                grant.c.period == PERIOD, grant.c.released == ""
            )
        ).all()
        assert len({u for u, _, _ in every}) > 10
        for chunk in (
            registered[10:30],
            registered[10:30:3],
            registered[5:6],
            [registered[0], registered[-1]],
            registered,
        ):
            want: dict[str, dict[str, str]] = {}
            for uscc, policy_id, grant_id in every:
                if uscc in chunk:
                    want.setdefault(uscc, {})[policy_id] = grant_id
            assert standing_grants(conn, PERIOD, chunk) == want
        conn.rollback()


@pytest.mark.parametrize("victim_at", [2, 3, -1], ids=["last-of-page-1", "first-of-page-2", "last-page"])
def test_a_candidate_altered_on_any_page_is_not_paid_and_the_others_are_paid_as_the_reference_pays(
    databases: Callable[[], Engine], policies: PolicySet, tiny_pages: None, victim_at: int
) -> None:
    from service.audit.merkle import root

    engine = databases()
    batch_id = _start(engine, policies, SJR)
    settings = RunSettings(chunk_size=CHUNK, partitions=1)
    evaluators, task = _joint_task(engine, policies, [batch_id], "coord", settings)
    assert run_partition_with(engine, evaluators, task) == ENTERPRISES
    with engine.begin() as conn:
        founded = list(
            conn.execute(
                select(payout_candidate.c.uscc)
                .where(payout_candidate.c.batch_id == batch_id, payout_candidate.c.error.is_(None))
                .order_by(payout_candidate.c.uscc)
            ).scalars()
        )
        victim = founded[victim_at]
        conn.execute(
            update(payout_candidate)
            .where(payout_candidate.c.batch_id == batch_id, payout_candidate.c.uscc == victim)
            .values(full_fen=payout_candidate.c.full_fen + 100)
        )
    assert run_batch(engine, policies, batch_id, worker="coord", settings=settings)
    expected = dict(_first_round(engine, policies)[SJR])
    assert victim in expected and len(expected) > 3 * 4, "the victim was owed money; several pages"
    del expected[victim]
    assert _paid(engine, batch_id) == expected
    outcome = _outcome(engine, batch_id)
    assert (outcome[5], outcome[6]) == (len(expected), sum(expected.values()))
    with engine.connect() as conn:
        lines = sorted(lines_of(conn, batch_id), key=lambda line: str(line["grant_id"]))
    assert get_batch(engine, batch_id).merkle_root == root([bytes.fromhex(x["record_sha256"]) for x in lines]).hex()


def _budget_batch(engine: Engine, policies: PolicySet, request_id: str) -> str:
    return create_batch(
        engine,
        policies,
        policy_id=BUDGET_POLICY,
        period=PERIOD,
        request_id=request_id,
        actor=OPERATOR,
        today=TODAY,
        settings=RunSettings(chunk_size=2),
    ).batch_id


@pytest.mark.parametrize(
    ("earlier", "later", "page", "shares"),
    [
        # 3 x 50万 in 100万: 33,333,333.33 each; the 1 fen left goes to the lowest USCC (equal remainders).
        (0, 3, 1, [33_333_334, 33_333_333, 33_333_333]),
        (0, 3, 2, [33_333_334, 33_333_333, 33_333_333]),
        # 4 x 50万 in 100万: exactly 25万 each, the budget spent exactly at the end of page 2.
        (0, 4, 2, [25_000_000] * 4),
        # an earlier batch spent 50万: 3 x 50万 in the 50万 left, 2 fen left over to the two lowest USCCs.
        (1, 3, 1, [16_666_667, 16_666_667, 16_666_666]),
        (1, 3, 2, [16_666_667, 16_666_667, 16_666_666]),
    ],
)
def test_a_budget_pro_rated_over_candidates_read_page_by_page_gives_the_shares_computed_by_hand(
    db_engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    earlier: int,
    later: int,
    page: int,
    shares: list[int],
) -> None:
    from testkit.money_fixtures import titled
    from testkit.money_fixtures import uscc as money_uscc

    budget = budget_policies(tmp_path / "budget-rules")
    create_payout_schema(db_engine)
    monkeypatch.setattr(runner, "_CANDIDATES_PER_PAGE", page)
    monkeypatch.setattr(seals, "_LINES_PER_PAGE", page)
    first = [money_uscc(n, "MA4R") for n in range(1, earlier + 1)]
    if first:
        load_records([r for n, code in enumerate(first, start=1) for r in titled(code, n, PERIOD)], db_engine)
        assert _paid(db_engine, _budget_batch(db_engine, budget, "budget-first")) == dict.fromkeys(first, GIANT_FEN)
    codes = sorted(money_uscc(n, "MA4T") for n in range(1, later + 1))
    load_records([r for n, code in enumerate(codes, start=10) for r in titled(code, n, PERIOD)], db_engine)
    batch_id = _budget_batch(db_engine, budget, "budget-second")
    assert _paid(db_engine, batch_id) == dict(zip(codes, shares, strict=True))
    assert get_batch(db_engine, batch_id).total_fen == sum(shares)
    with db_engine.connect() as conn:
        assert verify_payouts(conn) == []
