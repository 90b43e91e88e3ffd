"""Processes killed with SIGKILL in the middle of an import, for real: `benefits registry load`
(one transaction per file, SQLite and PostgreSQL) leaves nothing of the file behind and a rerun
stores every record once; a `benefits serve` killed during an ImportFacts stream keeps what it
committed, and resending the whole stream after a restart stores each record once. A server
stopped with SIGTERM during a payout batch exits 0 and gives the batch back; the next server
finishes it, each enterprise evaluated once.

SIGTERM during other calls is tested in test_api_shutdown.py, SIGKILL during a payout batch in
tests/integration/payouts/test_payout_crash.py, SIGHUP in test_policy_reload.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from benefits.v1 import payout_service_pb2 as pb
from benefits.v1 import registry_service_pb2
from sqlalchemy import func, select
from testkit.api_fixtures import Stubs, as_role, load_registry, write_auth_file
from testkit.databases import BACKENDS, fresh_database
from testkit.paths import REPO_ROOT
from testkit.server_process import server_process

from enterprise_registry.db import create_schema, make_engine
from enterprise_registry.models import MODEL_BY_KIND, table_for
from enterprise_registry.synthetic import generate, write_jsonl
from service.audit.records import evaluation_record
from service.config import ServeConfig
from service.payouts.tables import payout_batch

CLI_ENTERPRISES = 8000  # ~100,000 lines: the load runs for a second or two
KILL_AT = 0.3  # fraction of the file read when the loader is killed
STREAM_ENTERPRISES = 300  # ~3,700 records, a few ImportFacts chunks
HELD_AFTER = 2500  # records the stream sends before it waits (and the server is killed)
WAIT_SECONDS = 60.0
BATCH_ENTERPRISES = 1000
GRACE = ServeConfig.shutdown_grace_seconds  # what `benefits serve` uses
OPERATOR = as_role("finance_operator")


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database(request.param, tmp_path) as url:
        engine = make_engine(url)
        try:
            create_schema(engine)
        finally:
            engine.dispose()
        yield url


def _row_counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {
                kind: conn.execute(select(func.count()).select_from(table_for(kind))).scalar_one()
                for kind in MODEL_BY_KIND
            }
    finally:
        engine.dispose()


def _kinds(records: list[dict[str, object]]) -> dict[str, int]:
    counts = Counter(str(r["kind"]) for r in records)
    return {kind: counts.get(kind, 0) for kind in MODEL_BY_KIND}


def _load(feed: Path, url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", "registry", "load", str(feed), "--db", url],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_position(pid: int, path: Path) -> int | None:
    """How far process `pid` has read the file `path` (Linux /proc), or None while it has not
    opened it."""
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        for fd in os.listdir(fd_dir):
            if os.readlink(fd_dir / fd) == str(path):
                fdinfo = (Path(f"/proc/{pid}/fdinfo") / fd).read_text()
                return int(fdinfo.split("pos:", 1)[1].split()[0])
    except (FileNotFoundError, ProcessLookupError):  # the process or the fd went in between
        return None
    return None


@pytest.mark.skipif(not Path("/proc/self/fdinfo").is_dir(), reason="reads the loader's file position in /proc")
def test_sigkill_during_registry_load_stores_nothing_and_a_rerun_stores_everything_once(
    db_url: str, tmp_path: Path
) -> None:
    feed = (tmp_path / "registry.jsonl").resolve()
    write_jsonl(feed, CLI_ENTERPRISES, seed=7)
    expected = _kinds([orjson.loads(line) for line in feed.read_bytes().splitlines() if line.strip()])
    size = feed.stat().st_size

    loader = _load(feed, db_url)
    deadline = time.monotonic() + WAIT_SECONDS
    while (position := _read_position(loader.pid, feed)) is None or position < size * KILL_AT:
        assert loader.poll() is None, f"the load ended before the kill: {loader.communicate()}"
        assert time.monotonic() < deadline, "the loader never got a third into the file"
        time.sleep(0.005)  # polling the loader's progress, not waiting for it
    loader.send_signal(signal.SIGKILL)
    out, _ = loader.communicate(timeout=30)
    assert loader.returncode == -signal.SIGKILL
    assert "loaded" not in out
    assert _row_counts(db_url) == dict.fromkeys(MODEL_BY_KIND, 0), "all or nothing: nothing"

    again = _load(feed, db_url)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert f"stored {sum(expected.values())}," in out
    assert _row_counts(db_url) == expected, "every record once"


def _stream(records: list[bytes], hold: threading.Event | None) -> Iterator[registry_service_pb2.ImportFactsRequest]:
    for index, record in enumerate(records):
        if hold is not None and index == HELD_AFTER:
            hold.wait(timeout=WAIT_SECONDS)  # the server is killed while the stream waits here
            return
        yield registry_service_pb2.ImportFactsRequest(record_json=record.decode())


def test_sigkill_of_the_server_during_import_facts_then_resending_stores_each_record_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    engine = make_engine(url)
    create_schema(engine)
    engine.dispose()
    auth_file = write_auth_file(tmp_path / "auth.yaml")
    log_file = tmp_path / "server.log"
    records = list(generate(STREAM_ENTERPRISES, seed=11))
    lines = [orjson.dumps(r) for r in records]
    expected = _kinds(records)

    hold = threading.Event()
    with server_process(url, auth_file, log_file) as (child, port):
        stubs = Stubs.connect(port)
        try:
            in_flight = stubs.registry.ImportFacts.future(
                _stream(lines, hold), metadata=as_role("registry_feed"), timeout=WAIT_SECONDS
            )
            deadline = time.monotonic() + WAIT_SECONDS
            while sum(_row_counts(url).values()) == 0:  # a chunk of the stream is committed
                assert not in_flight.done(), in_flight.exception()
                assert time.monotonic() < deadline, "no chunk of the stream was committed"
                time.sleep(0.02)
            child.proc.send_signal(signal.SIGKILL)
            assert child.proc.wait(timeout=30) == -signal.SIGKILL
            assert in_flight.exception(timeout=30) is not None, "the stream cannot have succeeded"
        finally:
            hold.set()
            stubs.channel.close()
    committed = sum(_row_counts(url).values())
    assert 0 < committed <= HELD_AFTER

    with server_process(url, auth_file, log_file) as (_child, port):
        stubs = Stubs.connect(port)
        try:
            reply = stubs.registry.ImportFacts(
                _stream(lines, None), metadata=as_role("registry_feed"), timeout=WAIT_SECONDS
            )
            assert (reply.received_count, reply.rejected_count) == (len(records), 0)
            assert reply.stored_count + reply.stale_count == len(records)
            assert _row_counts(url) == expected, "each record once"
            enterprises = [r for r in records if r["kind"] == "enterprise"]
            assert records.index(enterprises[-1]) >= HELD_AFTER
            for record in (enterprises[0], enterprises[-1]):  # one the killed stream committed, one it never sent
                got = stubs.registry.GetEnterprise(
                    registry_service_pb2.GetEnterpriseRequest(uscc=str(record["uscc"])),
                    metadata=as_role("admin"),
                    timeout=10,
                )
                assert got.name == record["name"]
        finally:
            stubs.channel.close()


def _create_batch(stubs: Stubs) -> pb.PayoutBatch:
    batch: pb.PayoutBatch = stubs.payout.CreatePayoutBatch(
        pb.CreatePayoutBatchRequest(policy_id="stable-jobs-refund", period=2025, request_id="req-sigterm-batch-01"),
        metadata=OPERATOR,
        timeout=30,
    )
    return batch


def _watch_until(stubs: Stubs, batch_id: str, evaluated_at_least: int) -> pb.PayoutBatchProgress:
    stream = stubs.payout.WatchPayoutBatch(
        pb.WatchPayoutBatchRequest(batch_id=batch_id), metadata=OPERATOR, timeout=120
    )
    progress: pb.PayoutBatchProgress
    try:
        for progress in stream:
            if progress.evaluated_count >= evaluated_at_least or progress.batch.state != pb.BATCH_STATE_RUNNING:
                return progress
    finally:
        stream.cancel()  # not left open: a server being stopped would give it the grace period
    raise AssertionError("the progress stream ended while the batch was RUNNING")


def test_sigterm_during_a_batch_exits_0_and_the_next_server_finishes_it_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    load_registry(url, list(generate(BATCH_ENTERPRISES, seed=11)))
    auth_file = write_auth_file(tmp_path / "auth.yaml")
    log_file = tmp_path / "server.log"
    # Small chunks: the batch runs for seconds; a long lease: only a batch given back on SIGTERM
    # is taken up again at once by the next server.
    serve_args = ("--batch-chunk", "10", "--batch-lease-seconds", "600")

    with server_process(url, auth_file, log_file, *serve_args) as (child, port):
        stubs = Stubs.connect(port)
        try:
            batch_id = _create_batch(stubs).batch_id
            progress = _watch_until(stubs, batch_id, BATCH_ENTERPRISES // 10)
            assert progress.batch.state == pb.BATCH_STATE_RUNNING, "the batch finished before SIGTERM"
            child.proc.send_signal(signal.SIGTERM)
            assert child.proc.wait(timeout=GRACE + 5) == 0
        finally:
            stubs.channel.close()
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            state, worker, evaluated = conn.execute(
                select(payout_batch.c.state, payout_batch.c.worker, payout_batch.c.evaluated_count).where(
                    payout_batch.c.batch_id == batch_id
                )
            ).one()
    finally:
        engine.dispose()
    assert (state, worker) == ("RUNNING", None), "stopped after its chunk and given back"
    assert evaluated < BATCH_ENTERPRISES

    with server_process(url, auth_file, log_file, *serve_args) as (_child, port):
        stubs = Stubs.connect(port)
        try:
            assert _create_batch(stubs).batch_id == batch_id  # the same request: the same batch
            final = _watch_until(stubs, batch_id, BATCH_ENTERPRISES + 1)
        finally:
            stubs.channel.close()
    assert final.batch.state == pb.BATCH_STATE_DRAFT
    assert (final.evaluated_count, final.error_count) == (BATCH_ENTERPRISES, 0)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            recorded = (
                conn.execute(select(evaluation_record.c.uscc).where(evaluation_record.c.batch_id == batch_id))
                .scalars()
                .all()
            )
    finally:
        engine.dispose()
    assert len(recorded) == len(set(recorded)) == BATCH_ENTERPRISES
