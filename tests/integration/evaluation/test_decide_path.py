"""Red-team review of the decide path and the partitioned batch run, on SQLite and PostgreSQL.

Every expectation is independent of the code under test: the reference evaluator
(`rules.evaluator.evaluate` over `service.facts_documents` documents) decides each enterprise
alone, and batches are checked enterprise by enterprise (evaluated exactly once, paid what the
reference pays, every record replaying to itself, the audit log VALID). Interruptions are real:
threads racing on one partition, a stale coordinator's task, a worker process killed by SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from datetime import date
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from sqlmodel import col
from testkit.paths import POLICIES_DIR

from enterprise_registry.db import create_schema, make_engine
from enterprise_registry.importer import load_records
from enterprise_registry.models import Enterprise, table_for
from enterprise_registry.synthetic import PERIOD_YEARS, generate
from rules.evaluator import Evaluation, evaluate
from rules.facts import FactsDocument
from rules.loader import LoadedPolicy, PolicySet, load_policy_dir
from rules.values import Outcome
from service.audit.ledger import ledger_entry, ledger_transaction
from service.audit.records import RECORDS_KIND, Actor, evaluation_record, render, snapshot_of
from service.audit.verification import verify_audit_log
from service.catalogue import CATALOGUE
from service.evaluation import decide
from service.evaluation.period import evaluate_period
from service.facts_documents import DocumentSource, EnterpriseRows, build_document
from service.payouts import partitions
from service.payouts.batches import create_payout_schema, get_batch, lines_of, start_batch
from service.payouts.partitions import (
    BatchTask,
    ChunkEvaluator,
    LeaseLostError,
    PartitionResult,
    PartitionTask,
    ensure_partitions,
    run_partition,
    run_partition_with,
)
from service.payouts.pools import ProcessPool
from service.payouts.runner import RunSettings, claim, release, run_batch
from service.payouts.tables import payout_batch, payout_candidate, payout_partition

ENTERPRISES, SEED = 400, 117  # seed 117: in 2024 giants alone, champions, and one holding both
TODAY = date(2026, 3, 31)
OPERATOR = Actor("operator-rev", "finance_operator")
SJR, GIANT, CHAMPION = "stable-jobs-refund", "little-giant-reward", "single-champion-reward"
CHUNK = 25
OUTCOME_NAMES = (Outcome.ELIGIBLE, Outcome.INELIGIBLE, Outcome.UNDETERMINED, Outcome.HELD)


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    return list(generate(ENTERPRISES, SEED))


def _usccs_of(records: Sequence[dict[str, Any]]) -> list[str]:
    return sorted({str(r["uscc"]) for r in records if r["kind"] == "enterprise"})


def _only(records: Sequence[dict[str, Any]], usccs: set[str]) -> list[dict[str, Any]]:
    return [r for r in records if r["uscc"] in usccs]


@pytest.fixture(scope="module")
def references(
    tmp_path_factory: pytest.TempPathFactory, records: list[dict[str, Any]], policies: PolicySet
) -> dict[tuple[str, int], dict[str, Evaluation]]:
    """(policy, period) -> the reference evaluation of every enterprise of the whole synthetic
    registry, for every period 2022-2025 each policy covers: computed once, on a registry of its
    own (so also before any test database is made)."""
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('reference') / 'registry.db'}")
    try:
        create_schema(engine)
        load_records(records, engine)
        registered = list(DocumentSource(engine).all_rows())
        return {
            (p.id, period): _reference(engine, p, period, registered)
            for period in PERIOD_YEARS
            for p in policies
            if p.covers(period)
        }
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def eligible_2025(references: dict[tuple[str, int], dict[str, Evaluation]]) -> list[str]:
    """The enterprises eligible for stable-jobs-refund 2025."""
    return sorted(u for u, e in references[(SJR, 2025)].items() if e.outcome == Outcome.ELIGIBLE)


@pytest.fixture
def empty(db_engine: Engine) -> Engine:
    """The registry and payout schemas, nothing loaded (SQLite and PostgreSQL)."""
    create_payout_schema(db_engine)
    return db_engine


@pytest.fixture
def registry(empty: Engine, records: list[dict[str, Any]]) -> Engine:
    load_records(records, empty)
    return empty


# -- the independent reference --------------------------------------------------------------------


def _reference(
    engine: Engine, policy: LoadedPolicy, period: int, registered: Sequence[EnterpriseRows] | None = None
) -> dict[str, Evaluation]:
    """Every registered enterprise (its rows read now, or given) evaluated alone by the
    reference evaluator."""
    compiled, year = policy.compiled(period), policy.fact_year(period)
    every = registered if registered is not None else DocumentSource(engine).all_rows()
    return {rows.uscc: evaluate(compiled, build_document(rows, year), today=TODAY) for rows in every}


def _document(source: DocumentSource, uscc: str, fact_year: int) -> FactsDocument:
    document = source.document(uscc, fact_year)
    assert document is not None, f"nothing on record for {uscc}"
    return document


def _awards(engine: Engine, policy: LoadedPolicy, period: int) -> dict[str, int]:
    return {u: e.amount_fen for u, e in _reference(engine, policy, period).items() if e.outcome == Outcome.ELIGIBLE}


def _expected_lines(engine: Engine, policies: PolicySet, policy_id: str, period: int) -> dict[str, int]:
    """What a first batch pays: eligible, and no rival of the conflict group awards as much
    (就高不重复). The reference pack has no budgets and no exclusions (asserted)."""
    policy = policies.get(policy_id)
    assert policy.budget_fen is None and not policies.excluded(policy_id)
    group = policy.model.conflict_group
    rivals = [
        _awards(engine, p, period)
        for p in policies
        if group and p.id != policy_id and p.model.conflict_group == group and p.covers(period)
    ]
    return {u: fen for u, fen in _awards(engine, policy, period).items() if all(r.get(u, 0) < fen for r in rivals)}


def _start(engine: Engine, policies: PolicySet, policy_id: str, period: int, request_id: str) -> str:
    return start_batch(
        engine, policies, policy_id=policy_id, period=period, request_id=request_id, actor=OPERATOR, today=TODAY
    ).batch_id


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def _batch_row(engine: Engine, batch_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(payout_batch).where(payout_batch.c.batch_id == batch_id)).one()


def _partition_rows(engine: Engine, batch_id: str) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(payout_partition)
                .where(payout_partition.c.batch_id == batch_id)
                .order_by(payout_partition.c.partition_no)
            )
        )


def _task(
    engine: Engine, batch_id: str, number: int, coordinator: str, sources: tuple[str, ...], settings: RunSettings
) -> PartitionTask:
    return PartitionTask(_url(engine), (BatchTask(batch_id, sources, ()),), number, coordinator, settings)


class _Claimed(NamedTuple):
    batch_id: str
    settings: RunSettings
    evaluator: ChunkEvaluator
    task: PartitionTask  # partition 0, run as "coord"


def _claimed(registry: Engine, policies: PolicySet, request_id: str, partition_count: int) -> _Claimed:
    """A stable-jobs-refund 2025 batch claimed by "coord" (30 s lease) and cut into partitions."""
    batch_id = _start(registry, policies, SJR, 2025, request_id)
    settings = RunSettings(chunk_size=CHUNK, partitions=partition_count)
    assert claim(registry, batch_id, "coord", 30)
    ensure_partitions(registry, [batch_id], partition_count)[batch_id]
    policy = policies.get(SJR)
    evaluator = ChunkEvaluator.for_batch(_batch_row(registry, batch_id), policy, [], [])
    return _Claimed(batch_id, settings, evaluator, _task(registry, batch_id, 0, "coord", (policy.source,), settings))


def _sleep_past_lease(engine: Engine, batch_id: str) -> None:
    time.sleep(max(_batch_row(engine, batch_id).lease_until / 1000 - time.time(), 0) + 0.05)


def _recorded(engine: Engine, batch_id: str, policy_id: str) -> Counter[str]:
    with engine.connect() as conn:
        return Counter(
            conn.execute(
                select(evaluation_record.c.uscc).where(
                    evaluation_record.c.batch_id == batch_id, evaluation_record.c.policy_id == policy_id
                )
            ).scalars()
        )


def _assert_batch(
    engine: Engine,
    batch_id: str,
    *,
    evaluated: Sequence[str],
    recorded: Sequence[str],
    lines: dict[str, int],
    errors: int = 0,
) -> None:
    """DRAFT; every enterprise of `evaluated` counted once, `recorded` each with exactly one
    record of the batch's policy; the lines are `lines`; every record of the batch replays to
    itself; the whole audit log is VALID."""
    batch = get_batch(engine, batch_id)
    assert batch.state == "DRAFT", batch
    assert (batch.evaluated_count, batch.error_count) == (len(evaluated), errors)
    per_enterprise = _recorded(engine, batch_id, batch.policy_id)
    twice = sorted(u for u, n in per_enterprise.items() if n > 1)
    assert not twice, f"evaluated twice into the batch: {twice[:5]}"
    assert sorted(per_enterprise) == sorted(recorded)
    with engine.connect() as conn:
        candidates = list(
            conn.execute(select(payout_candidate.c.uscc).where(payout_candidate.c.batch_id == batch_id)).scalars()
        )
        paid = {line["uscc"]: line["amount_fen"] for line in lines_of(conn, batch_id)}
        stored = [
            orjson.loads(r)
            for r in conn.execute(
                select(evaluation_record.c.record).where(evaluation_record.c.batch_id == batch_id)
            ).scalars()
        ]
        # Replayed as AuditService.ReplayEvaluation does (`replay`), in one connection.
        differing = [(r["evaluation_id"], d) for r in stored if (d := render(conn, r, CATALOGUE).differences)]
        verdict = verify_audit_log(conn)
    assert len(candidates) == len(set(candidates))
    assert paid == lines
    assert (batch.line_count, batch.total_fen) == (len(lines), sum(lines.values()))
    assert verdict.valid, (verdict.fault, verdict.detail, verdict.problems[:3])
    assert not differing, differing[:3]


# -- 1. evaluate-period against the reference evaluator ---------------------------------------------


def _reference_summary(
    evaluations: dict[str, Evaluation], leave_out: frozenset[str] = frozenset()
) -> tuple[dict[Outcome, int], int, int]:
    counts = dict.fromkeys(OUTCOME_NAMES, 0)
    eligible_fen = held_fen = 0
    for uscc, e in evaluations.items():
        if uscc in leave_out:
            continue
        counts[e.outcome] += 1
        eligible_fen += e.amount_fen if e.outcome == Outcome.ELIGIBLE else 0
        held_fen += e.amount_fen if e.outcome == Outcome.HELD else 0
    return counts, eligible_fen, held_fen


def test_evaluate_period_totals_equal_the_reference_evaluator_for_every_policy_and_period(
    registry: Engine, policies: PolicySet, references: dict[tuple[str, int], dict[str, Evaluation]]
) -> None:
    compared = 0
    for period in PERIOD_YEARS:
        summary = evaluate_period(policies, registry, period=period, today=TODAY, chunk_size=150)
        covering = sorted(p.id for p in policies if p.covers(period))
        assert sorted(s.policy_id for s in summary.policies) == covering
        assert summary.enterprises == ENTERPRISES and summary.evaluations == ENTERPRISES * len(covering)
        assert summary.error_samples == []
        for s in summary.policies:
            want = _reference_summary(references[(s.policy_id, period)])
            assert (s.counts, s.eligible_fen, s.held_fen, s.errors) == (*want, 0), (s.policy_id, period)
            compared += 1
    assert compared >= 20  # every policy in (almost) every period: 2022-2025


def test_an_engine_disagreement_in_evaluate_period_is_an_error_left_out_of_the_totals(
    registry: Engine,
    policies: PolicySet,
    references: dict[tuple[str, int], dict[str, Evaluation]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    period = 2025
    reference = {p.id: references[(p.id, period)] for p in policies if p.covers(period)}
    victim = sorted(u for u, e in reference[SJR].items() if e.outcome == Outcome.ELIGIBLE)[3]
    _show_the_engine_nothing_of(monkeypatch, victim, lambda member: True)

    summary = evaluate_period(policies, registry, period=period, today=TODAY)

    for s in summary.policies:
        own = reference[s.policy_id][victim]
        # An empty fact fires none of the clause rules: an error wherever the trace holds a clause true.
        disagrees = any(c.result == "true" for c in [*own.conditions, *own.payable])
        left_out = frozenset({victim}) if disagrees else frozenset()
        want = _reference_summary(reference[s.policy_id], left_out)
        assert (s.counts, s.eligible_fen, s.held_fen, s.errors) == (*want, int(disagrees)), s.policy_id
    assert any(f"{SJR} {victim}: engine and trace disagree" in e for e in summary.error_samples)


def _show_the_engine_nothing_of(monkeypatch: pytest.MonkeyPatch, victim: str, which: Callable[[Any], bool]) -> None:
    """The engine is asserted the victim's fact without the properties of the members `which`
    selects: their clause rules cannot fire, and the cross-check must catch it."""
    original = decide.engine_facts

    def facts_without(members: Any, decisions: Any) -> list[dict[str, Any]]:
        facts = original(members, decisions)
        usccs = next(iter(decisions.values())).columns.usccs
        hidden = {packed for m in members if which(m) for packed in m.properties.values()}
        for row, uscc in enumerate(usccs):
            if uscc == victim:
                facts[row] = {k: v for k, v in facts[row].items() if k not in hidden}
        return facts

    monkeypatch.setattr(decide, "engine_facts", facts_without)


# -- 2. partition boundaries ----------------------------------------------------------------------


@pytest.mark.parametrize(("size", "wanted"), [(0, 3), (1, 4), (3, 5), (10, 3)])
def test_partitions_tile_any_registry_and_the_batch_pays_what_the_reference_pays(
    empty: Engine, records: list[dict[str, Any]], policies: PolicySet, size: int, wanted: int
) -> None:
    chosen = _usccs_of(records)[:size]
    if chosen:
        load_records(_only(records, set(chosen)), empty)
    batch_id = _start(empty, policies, SJR, 2025, f"req-tile-{size}")
    settings = RunSettings(chunk_size=2, partitions=wanted)
    assert run_batch(empty, policies, batch_id, worker="coord", settings=settings)

    rows = _partition_rows(empty, batch_id)
    assert len(rows) == max(1, min(wanted, size))
    assert rows[0].after_uscc == "" and rows[-1].last_uscc is None and all(r.done for r in rows)
    assert all(rows[i].last_uscc == rows[i + 1].after_uscc for i in range(len(rows) - 1))
    sizes = [sum(1 for u in chosen if r.after_uscc < u and (r.last_uscc is None or u <= r.last_uscc)) for r in rows]
    assert sum(sizes) == size and (size == 0 or max(sizes) - min(sizes) <= 1), sizes
    _assert_batch(empty, batch_id, evaluated=chosen, recorded=chosen, lines=_expected_lines(empty, policies, SJR, 2025))
    # Compact records: one ledger entry per committed chunk, sealing exactly that chunk's records.
    with empty.connect() as conn:
        per_entry = Counter(
            conn.execute(
                select(evaluation_record.c.ledger_seq).where(evaluation_record.c.batch_id == batch_id)
            ).scalars()
        )
        entries = {e.seq: e for e in conn.execute(select(ledger_entry).where(ledger_entry.c.seq.in_(list(per_entry))))}
    chunks = [min(settings.chunk_size, n - start) for n in sizes for start in range(0, n, settings.chunk_size)]
    assert sorted(per_entry.values()) == sorted(chunks)
    started_under = _batch_row(empty, batch_id).rule_sha256
    for seq, count in per_entry.items():
        payload = orjson.loads(entries[seq].payload)
        assert (entries[seq].kind, payload["count"], payload["policy_id"], payload["rule_sha256"]) == (
            RECORDS_KIND,
            count,
            SJR,
            started_under,
        )


# -- 3. duplicates and racing coordinators --------------------------------------------------------


def test_a_duplicate_task_run_concurrently_records_every_enterprise_once(
    registry: Engine, policies: PolicySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_id, settings, evaluator, task = _claimed(registry, policies, "req-duplicate", 2)

    # Both copies read the partition at the same cursor before either commits its first chunk.
    meet, original = threading.Barrier(2, timeout=30), partitions.next_chunk
    first_read: set[str] = set()

    def next_chunk(conn: Any, part: Any, limit: int) -> list[str]:
        found = original(conn, part, limit)
        name = threading.current_thread().name
        if name not in first_read:
            first_read.add(name)
            meet.wait()
        return found

    monkeypatch.setattr(partitions, "next_chunk", next_chunk)
    outcomes: dict[str, object] = {}

    def copy(name: str) -> None:
        try:
            outcomes[name] = run_partition_with(registry, [evaluator], task)
        except Exception as exc:  # the loser's LeaseLostError, checked below
            outcomes[name] = exc

    threads = [threading.Thread(target=copy, args=(f"copy-{k}",), name=f"copy-{k}") for k in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    monkeypatch.undo()

    lost = [o for o in outcomes.values() if isinstance(o, LeaseLostError)]
    won = [o for o in outcomes.values() if isinstance(o, int)]
    assert len(lost) == 1 and len(won) == 1, outcomes
    assert _partition_rows(registry, batch_id)[0].done == 1
    assert run_batch(registry, policies, batch_id, worker="coord", settings=settings)
    everyone = _registered(registry)
    _assert_batch(
        registry, batch_id, evaluated=everyone, recorded=everyone, lines=_expected_lines(registry, policies, SJR, 2025)
    )


def _registered(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(col(Enterprise.uscc)).order_by(col(Enterprise.uscc))).scalars())


def test_coordinators_starting_one_batch_at_once_run_it_exactly_once(registry: Engine, policies: PolicySet) -> None:
    batch_id = _start(registry, policies, SJR, 2025, "req-race")
    settings = RunSettings(chunk_size=CHUNK, partitions=3)
    meet = threading.Barrier(3, timeout=30)
    results: dict[str, bool | Exception] = {}

    def coordinator(name: str) -> None:
        meet.wait()
        try:
            results[name] = run_batch(registry, policies, batch_id, worker=name, settings=settings)
        except Exception as exc:
            results[name] = exc

    threads = [threading.Thread(target=coordinator, args=(f"coord-{k}",)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(map(str, results.values())) == ["False", "False", "True"], results
    everyone = _registered(registry)
    _assert_batch(
        registry, batch_id, evaluated=everyone, recorded=everyone, lines=_expected_lines(registry, policies, SJR, 2025)
    )


def test_a_stale_coordinators_late_task_leaves_the_batch_holders_partition_alone(
    registry: Engine, policies: PolicySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Coordinator A lost the batch (its lease ran out) and B holds it now; one of A's tasks that
    was still queued (behind others in a pool, or on a Dask cluster) starts late. It must not
    disturb B: B runs the batch to DRAFT without waiting for any lease."""
    batch_id = _start(registry, policies, SJR, 2025, "req-stale")
    settings = RunSettings(chunk_size=CHUNK, partitions=2, lease_seconds=30)
    assert claim(registry, batch_id, "coord-A", 0.2)
    ensure_partitions(registry, [batch_id], 2)[batch_id]
    _sleep_past_lease(registry, batch_id)

    policy = policies.get(SJR)
    evaluator = ChunkEvaluator.for_batch(_batch_row(registry, batch_id), policy, [], [])
    stale = _task(registry, batch_id, 1, "coord-A", (policy.source,), settings)
    original = partitions.next_chunk
    seen: dict[str, LeaseLostError | None] = {}

    def next_chunk(conn: Any, part: Any, limit: int) -> list[str]:
        if part.partition_no == 1 and part.cursor and "stale" not in seen:  # B is inside partition 1
            seen["stale"] = None
            try:
                run_partition_with(registry, [evaluator], stale)
            except LeaseLostError as exc:
                seen["stale"] = exc
        return original(conn, part, limit)

    monkeypatch.setattr(partitions, "next_chunk", next_chunk)
    finished = run_batch(registry, policies, batch_id, worker="coord-B", settings=settings)
    monkeypatch.undo()

    assert isinstance(seen.get("stale"), LeaseLostError), "the stale task must not commit anything"
    holder = _partition_rows(registry, batch_id)[1].worker
    assert finished, (
        f"coord-B did not finish: the stale task took partition 1 (now held by {holder!r}); "
        "the batch stays RUNNING until coord-B's lease runs out"
    )
    everyone = _registered(registry)
    _assert_batch(
        registry, batch_id, evaluated=everyone, recorded=everyone, lines=_expected_lines(registry, policies, SJR, 2025)
    )


def test_a_task_carrying_another_rule_text_than_the_batchs_writes_and_pays_nothing(
    registry: Engine, policies: PolicySet
) -> None:
    """The batch runs under the rule text it started with (its rule_sha256). A task whose text
    differs (a coordinator with reloaded rules, a tampered message) must not record or pay."""
    batch_id = _start(registry, policies, SJR, 2025, "req-foreign")
    policy = policies.get(SJR)
    edited = policy.source.replace("      2023: 60%", "      2023: 70%")
    assert edited != policy.source
    settings = RunSettings(chunk_size=CHUNK, partitions=1)
    assert claim(registry, batch_id, "coord", 30)
    ensure_partitions(registry, [batch_id], 1)[batch_id]

    # Refusing in any way is fine; what the task left behind is checked below.
    with contextlib.suppress(Exception):
        run_partition(_task(registry, batch_id, 0, "coord", (edited,), settings))

    started_under = _batch_row(registry, batch_id).rule_sha256
    with registry.connect() as conn:
        foreign = Counter(
            conn.execute(
                select(evaluation_record.c.rule_sha256).where(
                    evaluation_record.c.batch_id == batch_id, evaluation_record.c.rule_sha256 != started_under
                )
            ).scalars()
        )
    assert not foreign, f"records of batch {batch_id} made under another rule text: {dict(foreign)}"
    assert run_batch(registry, policies, batch_id, worker="coord", settings=settings)
    everyone = _registered(registry)
    _assert_batch(
        registry, batch_id, evaluated=everyone, recorded=everyone, lines=_expected_lines(registry, policies, SJR, 2025)
    )


# -- 4. the registry changing under a running batch -----------------------------------------------


def test_enterprises_registered_during_a_run_are_evaluated_at_most_once_and_never_paid_twice(
    empty: Engine,
    records: list[dict[str, Any]],
    policies: PolicySet,
    eligible_2025: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    everyone = _usccs_of(records)
    early, late = eligible_2025[1], eligible_2025[-2]  # both eligible; registered only mid-run
    load_records([r for r in records if r["uscc"] not in {early, late}], empty)
    batch_id = _start(empty, policies, SJR, 2025, "req-grow")
    stop, original = threading.Event(), partitions.next_chunk

    def next_chunk(conn: Any, part: Any, limit: int) -> list[str]:
        found = original(conn, part, limit)
        if found and found[-1] > early:
            stop.set()  # this chunk (past where `early` belongs) still commits, then the run stops
        return found

    monkeypatch.setattr(partitions, "next_chunk", next_chunk)
    settings = RunSettings(chunk_size=CHUNK, partitions=1)
    assert not run_batch(empty, policies, batch_id, worker="coord-1", settings=settings, stop=stop)
    monkeypatch.undo()
    cursor = _partition_rows(empty, batch_id)[0].cursor
    assert early < cursor < late

    load_records(_only(records, {early, late}), empty)  # registered while the batch runs
    assert run_batch(empty, policies, batch_id, worker="coord-2", settings=settings)
    evaluated = [u for u in everyone if u != early]  # behind the cursor: left to a later batch
    expected = _expected_lines(empty, policies, SJR, 2025)
    first_lines = {u: fen for u, fen in expected.items() if u != early}
    _assert_batch(empty, batch_id, evaluated=evaluated, recorded=evaluated, lines=first_lines)

    later = _start(empty, policies, SJR, 2025, "req-grow-later")
    assert run_batch(empty, policies, later, worker="coord-3", settings=settings)
    _assert_batch(
        empty,
        later,
        evaluated=everyone,
        recorded=[u for u in everyone if u not in first_lines],
        lines={early: expected[early]},
    )


def test_a_registry_changed_between_partitioning_and_the_run_is_evaluated_as_it_then_stands(
    empty: Engine, records: list[dict[str, Any]], policies: PolicySet, eligible_2025: list[str]
) -> None:
    """Partitions are USCC ranges, not lists: an enterprise registered after they were made is
    in the range it falls in, and one removed (by hand: the registry has no delete) leaves a hole
    - even when it was a range's bound."""
    added = eligible_2025[len(eligible_2025) // 2]
    load_records([r for r in records if r["uscc"] != added], empty)
    batch_id = _start(empty, policies, SJR, 2025, "req-reshaped")
    assert claim(empty, batch_id, "coord", 30)
    bounds = [r.last_uscc for r in ensure_partitions(empty, [batch_id], 3)[batch_id]][:-1]
    removed = {bounds[0], eligible_2025[-1]}
    with empty.begin() as conn:
        enterprises = table_for("enterprise")
        conn.execute(enterprises.delete().where(enterprises.c.uscc.in_(sorted(removed))))
    load_records(_only(records, {added}), empty)

    assert run_batch(empty, policies, batch_id, worker="coord", settings=RunSettings(chunk_size=CHUNK, partitions=3))
    now = _registered(empty)
    assert added in now and not removed & set(now)
    _assert_batch(empty, batch_id, evaluated=now, recorded=now, lines=_expected_lines(empty, policies, SJR, 2025))


# -- 5. engine disagreement inside a batch --------------------------------------------------------


def test_a_rivals_disagreement_is_counted_never_paid_and_a_later_batch_pays(
    registry: Engine, policies: PolicySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    period = 2024
    expected = _expected_lines(registry, policies, GIANT, period)
    champions = _awards(registry, policies.get(CHAMPION), period)
    alone = sorted(u for u in expected if u not in champions)
    assert len(alone) >= 2, "the seed's registry holds giants without a champion title"
    victim = alone[0]
    _show_the_engine_nothing_of(monkeypatch, victim, lambda member: member.policy_id == CHAMPION)
    settings = RunSettings(chunk_size=20, partitions=3)

    first = _start(registry, policies, GIANT, period, "req-rival-1")
    assert run_batch(registry, policies, first, worker="coord", settings=settings)
    everyone = _registered(registry)
    _assert_batch(
        registry,
        first,
        evaluated=everyone,
        recorded=[u for u in everyone if u != victim],
        lines={u: fen for u, fen in expected.items() if u != victim},
        errors=1,
    )
    with registry.connect() as conn:
        error = conn.execute(
            select(payout_candidate.c.error).where(
                payout_candidate.c.batch_id == first, payout_candidate.c.uscc == victim
            )
        ).scalar_one()
    assert error.startswith(f"{CHAMPION}: engine and trace disagree"), error

    monkeypatch.undo()
    second = _start(registry, policies, GIANT, period, "req-rival-2")
    assert run_batch(registry, policies, second, worker="coord", settings=settings)
    not_granted = [u for u in everyone if u not in expected or u == victim]
    _assert_batch(registry, second, evaluated=everyone, recorded=not_granted, lines={victim: expected[victim]})


def _champion_title(uscc: str, period: int) -> dict[str, object]:
    return {
        "kind": "qualification",
        "uscc": uscc,
        "source": "industry_it",
        "as_of": f"{period}-12-31",
        "type": "single_champion",
        "level": "national",
        "first_time": True,
        "granted_on": f"{period}-07-01",
        "certificate_no": f"SC-rev-{uscc[-6:]}",
    }


def _reloaded_with(tmp_path: Path, policy_id: str, *edits: tuple[str, str]) -> PolicySet:
    """The reference pack reloaded from a copy in which `policy_id`'s text has each `old`
    (occurring once) replaced by its `new`."""
    folder = tmp_path / "reloaded"
    folder.mkdir()
    for source in POLICIES_DIR.glob("*.yaml"):
        text = source.read_text(encoding="utf-8")
        if source.name == f"{policy_id}.yaml":
            for old, new in edits:
                assert text.count(old) == 1, old
                text = text.replace(old, new)
        (folder / source.name).write_text(text, encoding="utf-8")
    return load_policy_dir(folder, CATALOGUE, require_tests=False)


def test_a_batch_resumed_after_the_rivals_were_reloaded_decides_as_one_run_would(
    registry: Engine, policies: PolicySet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """就高不重复 reads the conflict group's rivals. A batch stopped, then resumed after the rules
    were reloaded with a rival's award changed, must decide every enterprise under one version
    of that rival: the one it started with, or the new one - not some under each, depending on
    where the run happened to stop."""
    period = 2024
    alone = sorted(
        set(_expected_lines(registry, policies, GIANT, period)) - set(_awards(registry, policies.get(CHAMPION), period))
    )
    first, last = alone[0], alone[-1]
    load_records([_champion_title(first, period), _champion_title(last, period)], registry)
    reloaded = _reloaded_with(tmp_path, CHAMPION, ("value: 100万元", "value: 40万元"))
    assert reloaded.get(GIANT).sha256 == policies.get(GIANT).sha256
    as_started = _expected_lines(registry, policies, GIANT, period)
    as_reloaded = _expected_lines(registry, reloaded, GIANT, period)
    assert first not in as_started and last not in as_started  # the champion's 100万 is the higher award
    assert first in as_reloaded and last in as_reloaded  # 40万 is not

    batch_id = _start(registry, policies, GIANT, period, "req-reloaded-rival")
    stop, original = threading.Event(), partitions.next_chunk

    def next_chunk(conn: Any, part: Any, limit: int) -> list[str]:
        found = original(conn, part, limit)
        if found and found[0] <= first <= found[-1]:
            stop.set()  # the chunk holding `first` commits, then the run stops
        return found

    monkeypatch.setattr(partitions, "next_chunk", next_chunk)
    settings = RunSettings(chunk_size=CHUNK, partitions=1)
    assert not run_batch(registry, policies, batch_id, worker="coord-1", settings=settings, stop=stop)
    monkeypatch.undo()
    assert first <= _partition_rows(registry, batch_id)[0].cursor < last

    assert run_batch(registry, reloaded, batch_id, worker="coord-2", settings=settings)
    with registry.connect() as conn:
        paid = {line["uscc"]: line["amount_fen"] for line in lines_of(conn, batch_id)}
    assert paid in (as_started, as_reloaded), (
        f"{first} was decided under the rival's text as started ({'paid' if first in paid else 'not paid'}), "
        f"{last} under the reloaded one ({'paid' if last in paid else 'not paid'})"
    )


SI_CONDITION = """  - id: premiums-paid
    text: 上年度足额缴纳失业保险费满12个月
    citation: 审查用例
    expr: si.ui_months_paid >= 12

payable:"""


def test_a_rival_reading_another_fact_year_is_decided_on_that_years_facts(registry: Engine, tmp_path: Path) -> None:
    """The batch's policy reads the period's facts, its rival (reloaded so) the year before's:
    one packed ruleset, two fact years, run in worker processes. Each decision is the
    reference's on its own year, and each record's snapshot is the document of the year it names."""
    period = 2024
    rules = _reloaded_with(
        tmp_path, CHAMPION, ("fact_year: period", "fact_year: previous"), ("\npayable:", "\n" + SI_CONDITION)
    )
    assert (rules.get(CHAMPION).fact_year(period), rules.get(GIANT).fact_year(period)) == (period - 1, period)
    giants = sorted(_awards(registry, rules.get(GIANT), period))
    load_records([_champion_title(u, period) for u in giants], registry)  # every giant is a champion too
    expected = _expected_lines(registry, rules, GIANT, period)
    champions = _reference(registry, rules.get(CHAMPION), period)
    source = DocumentSource(registry)
    on_the_period = {
        u: evaluate(rules.get(CHAMPION).compiled(period), _document(source, u, period), today=TODAY) for u in giants
    }
    assert any(champions[u].outcome != on_the_period[u].outcome for u in giants), (
        "the fact year decides some giant's rival award (else this test could not tell the years apart)"
    )

    batch_id = _start(registry, rules, GIANT, period, "req-fact-years")
    pool = ProcessPool(2)  # the workers get the rule texts with the task, never the reloaded folder
    try:
        assert run_batch(
            registry,
            rules,
            batch_id,
            worker="coord",
            pool=pool,
            settings=RunSettings(chunk_size=CHUNK, partitions=3, workers=2),
        )
    finally:
        pool.close()
    everyone = _registered(registry)
    _assert_batch(registry, batch_id, evaluated=everyone, recorded=everyone, lines=expected)
    with registry.connect() as conn:
        rival_records = [
            orjson.loads(r)
            for r in conn.execute(
                select(evaluation_record.c.record).where(
                    evaluation_record.c.batch_id == batch_id, evaluation_record.c.policy_id == CHAMPION
                )
            ).scalars()
        ]
    assert sorted(r["uscc"] for r in rival_records) == sorted(_awards(registry, rules.get(GIANT), period))
    for record in rival_records:
        assert record["fact_year"] == period - 1
        assert (record["outcome"], record["amount_fen"]) == (
            champions[record["uscc"]].outcome,
            champions[record["uscc"]].amount_fen,
        )
        assert record["facts_sha256"] == snapshot_of(_document(source, record["uscc"], period - 1))[1]


def test_evaluate_period_reports_a_policy_named_twice_once_or_twice_but_never_with_zero_counts(
    registry: Engine, references: dict[tuple[str, int], dict[str, Evaluation]], capsys: pytest.CaptureFixture[str]
) -> None:
    from service.cli import main

    want = _reference_summary(references[(SJR, 2025)])
    code = main(
        [
            "evaluate-period",
            "--db",
            _url(registry),
            "--rules",
            str(POLICIES_DIR),
            "--period",
            "2025",
            "--policy",
            SJR,
            "--policy",
            SJR,
            "--as-of",
            TODAY.isoformat(),
            "--json",
        ]
    )
    report = orjson.loads(capsys.readouterr().out)
    assert code == 0 and report["enterprises"] == ENTERPRISES
    rows = [(p["counts"], p["eligible_fen"], p["held_fen"], p["errors"]) for p in report["policies"]]
    assert rows and all(row == (*want, 0) for row in rows), rows


def test_batch_snapshots_are_the_documents_a_lookup_stores(
    registry: Engine, records: list[dict[str, Any]], policies: PolicySet
) -> None:
    """A record's facts snapshot does not depend on how the facts were read (chunk columns and
    rows, or one enterprise's document) nor on the database's row order: re-importing rows with
    a newer as_of moves them in PostgreSQL's heap."""
    newer = [{**r, "as_of": "2026-01-05"} for r in records if r["kind"] in ("hire", "qualification")][::2]
    load_records(newer, registry)
    batch_id = _start(registry, policies, SJR, 2025, "req-snapshots")
    assert run_batch(registry, policies, batch_id, worker="coord", settings=RunSettings(chunk_size=60, partitions=2))
    source, year = DocumentSource(registry), policies.get(SJR).fact_year(2025)
    with registry.connect() as conn:
        stored = dict(
            conn.execute(
                select(evaluation_record.c.uscc, evaluation_record.c.facts_sha256).where(
                    evaluation_record.c.batch_id == batch_id
                )
            ).all()
        )
    assert len(stored) == ENTERPRISES
    differing = [u for u, sha in stored.items() if snapshot_of(_document(source, u, year))[1] != sha]
    assert not differing, differing[:5]


# -- 6. worker processes: a stopped run, a killed worker ------------------------------------------


class _InterruptingPool(ProcessPool):
    """A ProcessPool whose heartbeat (the coordinator's, every interval) calls `act` once some
    chunk has committed, until it returns True."""

    def __init__(self, workers: int, engine: Engine, batch_id: str) -> None:
        super().__init__(workers)
        self.engine, self.batch_id = engine, batch_id
        self.act: Callable[[], bool] = lambda: True
        self.acted = False

    def run(
        self,
        tasks: Sequence[PartitionTask],
        *,
        heartbeat: Callable[[], None],
        stopped: Callable[[], bool],
        interval: float,
    ) -> list[PartitionResult] | None:
        def beat() -> None:
            heartbeat()
            if not self.acted and 0 < get_batch(self.engine, self.batch_id).evaluated_count < ENTERPRISES:
                self.acted = self.act()

        return super().run(tasks, heartbeat=beat, stopped=stopped, interval=interval)

    def processes(self) -> list[Any]:
        assert self._executor is not None
        return list(self._executor._processes.values())  # the processes, to kill one


def _wait_until_gone(pid: int, timeout: float = 30) -> None:
    """Until the process has exited (the pool's own thread reaps it: joining it here as well
    would race that thread's waitpid)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                state = stat.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return
        if state in ("Z", "X"):
            return
        assert time.monotonic() < deadline, f"process {pid} still running"
        time.sleep(0.02)


def test_a_worker_process_killed_mid_batch_leaves_a_batch_its_coordinator_resumes_exactly_once(
    registry: Engine, policies: PolicySet
) -> None:
    batch_id = _start(registry, policies, SJR, 2025, "req-kill")
    # Small chunks: the run lasts long enough for the heartbeat (every 0.2 s) to act mid-batch.
    settings = RunSettings(chunk_size=4, lease_seconds=0.6, workers=2, partitions=3)
    pool, victims = _InterruptingPool(2, registry, batch_id), []

    def kill() -> bool:
        victims.extend(pool.processes())
        os.kill(victims[0].pid, signal.SIGKILL)
        return True

    pool.act = kill
    try:
        with pytest.raises(BrokenProcessPool):
            run_batch(registry, policies, batch_id, worker="coord", settings=settings, pool=pool)
        for process in victims:  # the pool ends its other processes too; wait until they are gone
            _wait_until_gone(process.pid)
        assert 0 < get_batch(registry, batch_id).evaluated_count < ENTERPRISES, "killed mid-batch"
    finally:
        pool.close()

    # The same coordinator resumes at once (its partitions' leases are its own), in this thread.
    in_thread = RunSettings(chunk_size=CHUNK, lease_seconds=30, partitions=3)
    assert run_batch(registry, policies, batch_id, worker="coord", settings=in_thread)
    everyone = _registered(registry)
    _assert_batch(
        registry, batch_id, evaluated=everyone, recorded=everyone, lines=_expected_lines(registry, policies, SJR, 2025)
    )


def test_worker_processes_stopped_give_the_batch_back_and_another_coordinator_finishes_it(
    registry: Engine, policies: PolicySet
) -> None:
    """The stop cancels only the tasks not yet started: those running go on until their next
    commit fails, so `release` races their chunk commits. On PostgreSQL it then deadlocks now
    and then (see the test below, which makes the interleaving certain)."""
    batch_id = _start(registry, policies, SJR, 2025, "req-stop-pool")
    settings = RunSettings(chunk_size=4, lease_seconds=0.6, workers=2, partitions=3)
    pool, stop = _InterruptingPool(2, registry, batch_id), threading.Event()

    def stop_the_run() -> bool:
        stop.set()
        return True

    pool.act = stop_the_run
    try:
        assert (
            run_batch(registry, policies, batch_id, worker="coord-1", settings=settings, stop=stop, pool=pool) is False
        )
    finally:
        pool.close()
    assert pool.acted
    row = _batch_row(registry, batch_id)
    assert (row.state, row.worker, row.lease_until) == ("RUNNING", None, 0), "a stopped run gives the batch back"
    assert 0 < row.evaluated_count < ENTERPRISES

    in_thread = RunSettings(chunk_size=CHUNK, lease_seconds=30, partitions=3)
    assert run_batch(registry, policies, batch_id, worker="coord-2", settings=in_thread)
    everyone = _registered(registry)
    _assert_batch(
        registry, batch_id, evaluated=everyone, recorded=everyone, lines=_expected_lines(registry, policies, SJR, 2025)
    )


class _PausingConnection:
    """A chunk's connection that pauses once, after its first statement (`_advance` has then
    updated - and on PostgreSQL row-locked - the partition, and not yet the batch)."""

    def __init__(self, conn: Any, pause: Callable[[], None]) -> None:
        self._conn = conn
        self._pause: Callable[[], None] | None = pause

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        result = self._conn.execute(*args, **kwargs)
        pause, self._pause = self._pause, None
        if pause is not None:
            pause()
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def _until_a_partition_update_waits(engine: Engine) -> None:
    """Until some session waits for a row lock of payout_partition (PostgreSQL), or a moment."""
    if engine.dialect.name != "postgresql":
        time.sleep(0.3)
        return
    deadline = time.monotonic() + 10
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                text(
                    "select count(*) from pg_stat_activity where wait_event_type = 'Lock' "
                    "and query ilike '%payout_partition%'"
                )
            ).scalar_one()
            conn.rollback()
            if waiting:
                time.sleep(0.1)
                return
            time.sleep(0.02)


def test_giving_a_batch_back_while_one_of_its_chunks_commits_does_not_deadlock(
    registry: Engine, policies: PolicySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`release` (a stopped coordinator giving the batch back) updates the batch row, then the
    partitions; a chunk's commit (`_advance`) updates its partition, then the batch row. Run
    them interleaved - the chunk holding its partition when `release` starts - and either may
    win, but neither may fail for any other reason than losing the lease."""
    batch_id, _, evaluator, task = _claimed(registry, policies, "req-release-race", 1)
    holding = threading.Event()
    outcomes: dict[str, int | str | Exception] = {}  # chunks run, "released", or what was raised
    real_transaction = ledger_transaction  # what partitions calls: it imports it from the ledger (no re-export)

    @contextlib.contextmanager
    def pausing_transaction(engine: Engine) -> Any:
        with real_transaction(engine) as conn:

            def pause() -> None:
                holding.set()
                _until_a_partition_update_waits(registry)

            yield _PausingConnection(conn, pause)

    monkeypatch.setattr(partitions, "ledger_transaction", pausing_transaction)
    chunks = iter([False, True])  # one chunk, then stop

    def commit_one_chunk() -> None:
        try:
            outcomes["chunk"] = run_partition_with(registry, [evaluator], task, stop=lambda: next(chunks))
        except Exception as exc:
            outcomes["chunk"] = exc

    def give_back() -> None:
        try:
            release(registry, batch_id, "coord")
            outcomes["release"] = "released"
        except Exception as exc:
            outcomes["release"] = exc

    chunk = threading.Thread(target=commit_one_chunk)
    chunk.start()
    assert holding.wait(60)
    giver = threading.Thread(target=give_back)
    giver.start()
    chunk.join(60)
    giver.join(60)
    monkeypatch.undo()

    assert outcomes["release"] == "released", outcomes
    assert outcomes["chunk"] == CHUNK or isinstance(outcomes["chunk"], LeaseLostError), outcomes
    row = _batch_row(registry, batch_id)
    assert (row.worker, row.lease_until) == (None, 0)
