"""The load run (`make load`): a bounded mixed load on loopback, judged.

The server runs as a real child process (`python -m service.cli serve`, bench_server.py) on a
fresh database filled with the synthetic registry (COUNT enterprises, cached feed), with its own
auth file (admin, auditor, a registry feed for every department, a finance operator and
approver, several enterprises of the registry) and ledger key. CLIENTS clients (threads, each
with its own channel, spread over --client-procs spawned processes so one GIL is not the
bottleneck) make the weighted mix of load_calls.py until CALLS calls are done; when the warm-up
(the first 20 % of the calls) ends, one payout batch is created and watched to DRAFT while the
rest runs. The server's VmRSS is sampled every 0.5 s. After the run VerifyAuditLog must answer
VALID, and every decision ExplainEligibility answered must be stored under its evaluation id as
answered (read from the database once the server has stopped).

Per method: calls, status codes, p50/p99/max latency (ms) of the OK calls after the warm-up.
RESOURCE_EXHAUSTED (rate limits) is counted apart; every other non-OK status, or an OK reply
that does not answer the request, is an error. Exit status 1 when there is any error, the RSS
grew by 10 % or more from the end of the warm-up to the end, the audit log is not VALID or an
answered decision is not stored as answered.
Figures, machine, date and git commit go to bench/results/load-latest.json (and
load-latest-<db>.json).

Usage: python benchmarks/load_run.py [--calls 50000] [--clients 32] [--count 2000]
                                     [--db sqlite|postgresql] [--client-procs 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import secrets
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from bench_server import (
    CACHE,
    REPO_ROOT,
    ServerProcess,
    cached_feed,
    own_cpu,
    policies_in_force,
    registry_usccs,
    wait_serving,
)
from load_calls import (
    CALL_TIMEOUT,
    CLIENT_OPTIONS,
    MIX,
    OK,
    RATE_LIMITED,
    WRONG_ANSWER,
    Decisions,
    MethodStats,
    Stats,
    TicketCounter,
    Tokens,
    Workload,
    merge_decisions,
    merge_stats,
    record,
    run_client,
)

PG_URL = os.environ.get("BENEFITS_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PG_SCHEMA = "load_run"
RESULTS = REPO_ROOT / "bench" / "results"
RUN_DIR = CACHE / "load"
WARMUP_SHARE = 0.20
RSS_INTERVAL = 0.5  # seconds between samples of the server's VmRSS
RSS_LIMIT = 0.10  # growth after the warm-up that fails the run
PROGRESS_EVERY = 20  # RSS samples between progress lines (10 s)
SERVER_WORKERS = 16


# ---------------------------------------------------------------------------------------------
# The database, the principals, the ledger key: fresh for every run.
def fresh_database(db: str, feed: Path) -> str:
    """A new database holding the registry feed; its URL."""
    from bench_registry import load_feed
    from sqlalchemy import text

    from enterprise_registry.db import make_engine

    if db == "sqlite":
        url = f"sqlite:///{RUN_DIR / 'load.db'}"
    else:
        admin = make_engine(PG_URL)
        try:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{PG_SCHEMA}" CASCADE'))
                conn.execute(text(f'CREATE SCHEMA "{PG_SCHEMA}"'))
        finally:
            admin.dispose()
        url = f"{PG_URL}?options=-csearch_path%3D{PG_SCHEMA}"
    report = load_feed(url, feed)
    print(f"database: {db}, {report.records:,} records loaded in {report.seconds:.1f} s", flush=True)
    return url


def write_auth_file(path: Path, usccs: list[str], enterprises: int) -> Tokens:
    """An auth file with a principal of every role the mix calls as; no rate limits."""
    from enterprise_registry.kinds import DEPARTMENTS

    def token() -> str:
        return secrets.token_urlsafe(24)

    tokens = Tokens(
        admin=token(),
        auditor=token(),
        feed=token(),
        operator=token(),
        approver=token(),
        enterprises=tuple((uscc, token()) for uscc in usccs[:: max(1, len(usccs) // enterprises)][:enterprises]),
    )
    principals: list[dict[str, Any]] = [
        {"principal": "load-admin", "role": "admin", "token": tokens.admin},
        {"principal": "load-auditor", "role": "auditor", "token": tokens.auditor},
        {"principal": "load-feed", "role": "registry_feed", "sources": list(DEPARTMENTS), "token": tokens.feed},
        {"principal": "load-operator", "role": "finance_operator", "token": tokens.operator},
        {"principal": "load-approver", "role": "finance_approver", "token": tokens.approver},
    ]
    for number, (uscc, secret) in enumerate(tokens.enterprises):
        principals.append(
            {"principal": f"load-enterprise-{number}", "role": "enterprise", "uscc": uscc, "token": secret}
        )
    path.write_text(yaml.safe_dump({"principals": principals}, sort_keys=False), encoding="utf-8")
    path.chmod(0o600)
    return tokens


def make_ledger_key(path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "service.cli", "audit", "keygen", "--out", str(path)],
        cwd=REPO_ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )


# ---------------------------------------------------------------------------------------------
# Watching the server: its resident memory, and the one payout batch.
@dataclass
class RssSample:
    seconds: float
    calls_started: int
    kib: int


class RssSampler(threading.Thread):
    """The server's VmRSS every RSS_INTERVAL seconds, with the calls started by then; a progress
    line every PROGRESS_EVERY samples."""

    def __init__(self, server: ServerProcess, started: Any, calls: int) -> None:
        super().__init__(daemon=True)
        self.server, self.started, self.calls = server, started, calls
        self.samples: list[RssSample] = []
        self.done = threading.Event()
        self._t0 = time.perf_counter()

    def sample(self) -> None:
        kib = self.server.rss_kib()
        if kib is not None:
            self.samples.append(RssSample(time.perf_counter() - self._t0, int(self.started.value), kib))

    def run(self) -> None:
        while not self.done.is_set():
            self.sample()
            if self.samples and len(self.samples) % PROGRESS_EVERY == 0:
                last = self.samples[-1]
                print(
                    f"  {last.seconds:5.0f} s: {last.calls_started:,} of {self.calls:,} calls started, "
                    f"server RSS {last.kib / 1024:,.0f} MB",
                    flush=True,
                )
            self.done.wait(RSS_INTERVAL)

    def stop(self) -> None:
        """Stop sampling, with one last sample (the end of the run)."""
        self.done.set()
        self.join()
        self.sample()


@dataclass
class BatchWatch:
    """The payout batch created when the warm-up ends and watched to DRAFT."""

    stats: Stats = field(default_factory=dict)
    batch_id: str = ""
    state: str = ""
    lines: int = 0
    total_fen: int = 0
    evaluated: int = 0
    seconds: float = 0.0


def run_batch(target: str, tokens: Tokens, policy: str, period: int, started: Any, warmup: int) -> BatchWatch:
    import grpc
    from benefits.v1 import payout_service_pb2 as pb
    from benefits.v1 import payout_service_pb2_grpc

    watch = BatchWatch()
    while int(started.value) < warmup:
        time.sleep(0.05)
    channel = grpc.insecure_channel(target, options=CLIENT_OPTIONS)
    metadata = (("authorization", f"Bearer {tokens.operator}"),)
    try:
        stub = payout_service_pb2_grpc.PayoutServiceStub(channel)
        begun = time.perf_counter()
        try:
            batch = stub.CreatePayoutBatch(
                pb.CreatePayoutBatchRequest(policy_id=policy, period=period, request_id=f"load-{uuid.uuid4().hex}"),
                metadata=metadata,
                timeout=CALL_TIMEOUT,
            )
        except grpc.RpcError as err:
            record(watch.stats, "CreatePayoutBatch", err.code().name, time.perf_counter() - begun, True)
            return watch
        record(watch.stats, "CreatePayoutBatch", OK, time.perf_counter() - begun, True)
        watch.batch_id = batch.batch_id
        watching = time.perf_counter()
        code = OK
        try:
            for progress in stub.WatchPayoutBatch(
                pb.WatchPayoutBatchRequest(batch_id=batch.batch_id), metadata=metadata, timeout=600
            ):
                watch.state = pb.BatchState.Name(progress.batch.state)
                watch.lines, watch.total_fen = progress.batch.line_count, progress.batch.total_fen
                watch.evaluated = progress.evaluated_count
        except grpc.RpcError as err:
            code = err.code().name
        if code == OK and watch.state != "BATCH_STATE_DRAFT":
            code = WRONG_ANSWER
            watch.stats.setdefault("WatchPayoutBatch", MethodStats()).wrong.append(f"batch ended {watch.state}")
        watch.seconds = time.perf_counter() - begun
        record(watch.stats, "WatchPayoutBatch", code, time.perf_counter() - watching, True)
    finally:
        channel.close()
    return watch


# ---------------------------------------------------------------------------------------------
# The clients: threads in spawned processes.
def _client_process(work: Workload, first: int, count: int, started: Any, results: Any) -> None:
    tickets = TicketCounter(started, work.calls)
    per_thread: list[Stats] = [{} for _ in range(count)]
    answered: list[Decisions] = [{} for _ in range(count)]

    def client(slot: int) -> None:
        try:
            run_client(work, first + slot, tickets, per_thread[slot], answered[slot])
        except Exception as exc:  # a client that died is an error of the run, never a hang
            record(per_thread[slot], "client", type(exc).__name__, 0.0, False)

    cpu_before = own_cpu()
    threads = [threading.Thread(target=client, args=(slot,)) for slot in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    merged: Stats = {}
    decisions: Decisions = {}
    conflicts: list[str] = []
    for stats, theirs in zip(per_thread, answered, strict=True):
        merge_stats(merged, stats)
        conflicts += merge_decisions(decisions, theirs)
    results.put((merged, decisions, conflicts, own_cpu() - cpu_before))


@dataclass
class RunFigures:
    stats: Stats
    wall: float
    client_cpu: float  # seconds, every client process
    server_cpu: float | None  # seconds
    batch: BatchWatch
    rss: list[RssSample]
    decisions: Decisions  # every ExplainEligibility answer, by evaluation id
    conflicts: list[str]  # evaluation ids answered with two different decisions


def run_load(work: Workload, clients: int, procs: int, server: ServerProcess, batch_policy: str) -> RunFigures:
    ctx = multiprocessing.get_context("spawn")
    started = ctx.Value("q", 0)  # calls taken so far, over every process
    results = ctx.Queue()
    sampler = RssSampler(server, started, work.calls)
    holder: dict[str, BatchWatch] = {}
    batch = threading.Thread(
        target=lambda: holder.update(
            w=run_batch(work.target, work.tokens, batch_policy, work.period, started, work.warmup_calls)
        ),
        daemon=True,
    )
    procs = max(1, min(procs, clients))
    shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    children, first = [], 0
    server_before, wall_before = server.cpu_seconds(), time.perf_counter()
    sampler.start()
    batch.start()
    for share in shares:
        child = ctx.Process(target=_client_process, args=(work, first, share, started, results), daemon=True)
        child.start()
        children.append(child)
        first += share
    stats: Stats = {}
    decisions: Decisions = {}
    conflicts: list[str] = []
    client_cpu = 0.0
    for _ in children:
        part, theirs, their_conflicts, cpu = results.get()
        merge_stats(stats, part)
        conflicts += their_conflicts + merge_decisions(decisions, theirs)
        client_cpu += cpu
    for child in children:
        child.join()
    wall = time.perf_counter() - wall_before
    server_after = server.cpu_seconds()
    sampler.stop()
    batch.join(timeout=600)
    watch = holder.get("w", BatchWatch())
    if "w" not in holder:
        record(watch.stats, "WatchPayoutBatch", "NOT_FINISHED", 0.0, False)
    merge_stats(stats, watch.stats)
    server_cpu = None if server_before is None or server_after is None else server_after - server_before
    return RunFigures(stats, wall, client_cpu, server_cpu, watch, sampler.samples, decisions, conflicts)


def verify_audit_log(target: str, tokens: Tokens) -> dict[str, Any]:
    import grpc
    from benefits.v1 import audit_service_pb2, audit_service_pb2_grpc

    channel = grpc.insecure_channel(target)
    try:
        begun = time.perf_counter()
        reply = audit_service_pb2_grpc.AuditServiceStub(channel).VerifyAuditLog(
            audit_service_pb2.VerifyAuditLogRequest(),
            metadata=(("authorization", f"Bearer {tokens.auditor}"),),
            timeout=600,
        )
        return {
            "valid": reply.valid,
            "entries_checked": reply.entries_checked,
            "fault": audit_service_pb2.LedgerFault.Name(reply.fault),
            "detail": reply.detail,
            "problems": len(reply.problems),
            "seconds": time.perf_counter() - begun,
        }
    finally:
        channel.close()


def stored_decisions(url: str, decisions: Decisions) -> dict[str, Any]:
    """Whether every decision answered is stored as answered: the records of the answered
    evaluation ids, read from the database after the server has stopped."""
    from sqlalchemy import select

    from enterprise_registry.db import make_engine
    from service.audit.record_tables import evaluation_record as table

    ids = sorted(decisions)
    stored: Decisions = {}
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            for start in range(0, len(ids), 500):
                rows = conn.execute(
                    select(
                        table.c.evaluation_id,
                        table.c.uscc,
                        table.c.policy_id,
                        table.c.period,
                        table.c.outcome,
                        table.c.amount_fen,
                    ).where(table.c.evaluation_id.in_(ids[start : start + 500]))
                )
                for row in rows:
                    stored[row[0]] = (row[1], row[2], int(row[3]), str(row[4]), int(row[5]))
    finally:
        engine.dispose()
    differing = [key for key, decision in stored.items() if decisions[key] != decision]
    return {
        "answered": len(ids),
        "stored": len(stored),
        "missing": len(ids) - len(stored),
        "differing": len(differing),
        "differing_samples": differing[:5],
    }


# ---------------------------------------------------------------------------------------------
# The report.
def _percentile_ms(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def method_figures(stats: Stats) -> dict[str, dict[str, Any]]:
    order = [name for name, _ in MIX] + ["CreatePayoutBatch", "WatchPayoutBatch"]
    figures: dict[str, dict[str, Any]] = {}
    for method in sorted(stats, key=lambda m: order.index(m) if m in order else len(order)):
        entry = stats[method]
        latencies = sorted(entry.latencies)
        calls = sum(entry.codes.values())
        figures[method] = {
            "calls": calls,
            "ok": entry.codes[OK],
            "rate_limited": entry.codes[RATE_LIMITED],
            "errors": calls - entry.codes[OK] - entry.codes[RATE_LIMITED],
            "measured": len(latencies),
            "p50_ms": _percentile_ms(latencies, 0.50),
            "p99_ms": _percentile_ms(latencies, 0.99),
            "max_ms": latencies[-1] * 1000 if latencies else None,
            "codes": dict(entry.codes),
            "wrong_samples": entry.wrong,
        }
    return figures


def rss_figures(samples: list[RssSample], warmup_calls: int) -> dict[str, Any]:
    after = [s for s in samples if s.calls_started >= warmup_calls]
    if not after:
        return {"samples": len(samples), "warmup_mb": None, "end_mb": None, "max_mb": None, "growth_pct": None}
    warm, end = after[0], after[-1]
    return {
        "samples": len(samples),
        "start_mb": samples[0].kib / 1024,
        "warmup_mb": warm.kib / 1024,
        "warmup_at_s": warm.seconds,
        "end_mb": end.kib / 1024,
        "max_mb": max(s.kib for s in samples) / 1024,
        "growth_pct": (end.kib - warm.kib) / warm.kib * 100,
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def print_table(methods: dict[str, dict[str, Any]]) -> None:
    print(
        f"{'method':<22}{'calls':>8}{'OK':>8}{'limited':>8}{'errors':>7}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}  codes"
    )
    for method, f in methods.items():
        codes = ", ".join(f"{code} {n}" for code, n in sorted(f["codes"].items()))
        print(
            f"{method:<22}{f['calls']:>8,}{f['ok']:>8,}{f['rate_limited']:>8,}{f['errors']:>7,}"
            f"{_ms(f['p50_ms']):>9}{_ms(f['p99_ms']):>9}{_ms(f['max_ms']):>9}  {codes}"
        )
        for sample in f["wrong_samples"]:
            print(f"{'':<22}wrong: {sample}")


def git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        # changed tracked files but the results themselves (each run rewrites them)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty.strip() else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50_000, help="calls in all, over every client")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients, each with its own channel")
    parser.add_argument("--client-procs", type=int, default=2, help="processes the client threads are spread over")
    parser.add_argument("--count", type=int, default=2_000, help="synthetic enterprises in the registry")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--period", type=int, default=2025)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--batch-policy", default="stable-jobs-refund", help="the policy of the one payout batch")
    parser.add_argument("--enterprises", type=int, default=8, help="enterprise principals (USCCs of the registry)")
    parser.add_argument("--import-size", type=int, default=10, help="records per ImportFacts stream")
    parser.add_argument("--out", type=Path, default=RESULTS / "load-latest.json")
    args = parser.parse_args()
    if args.calls < 1 or args.clients < 1:
        parser.error("--calls and --clients must be at least 1")

    shutil.rmtree(RUN_DIR, ignore_errors=True)
    RUN_DIR.mkdir(parents=True)
    feed = cached_feed(args.count, args.seed)
    url = fresh_database(args.db, feed)
    usccs = registry_usccs(url)
    policies = policies_in_force(args.period)
    if args.batch_policy not in policies:
        parser.error(f"--batch-policy {args.batch_policy} is not in force for {args.period}: {', '.join(policies)}")
    auth_file = RUN_DIR / "auth.yaml"
    tokens = write_auth_file(auth_file, usccs, args.enterprises)
    key = RUN_DIR / "ledger-key.pem"
    make_ledger_key(key)
    warmup_calls = int(args.calls * WARMUP_SHARE)
    server = ServerProcess(
        url,
        auth_file,
        SERVER_WORKERS,
        "--ledger-key",
        str(key),
        "--checkpoints",
        str(RUN_DIR / "checkpoints.jsonl"),
        log_path=RUN_DIR / "server.log",
    )
    try:
        wait_serving(server.target)
        work = Workload(
            target=server.target,
            calls=args.calls,
            warmup_calls=warmup_calls,
            period=args.period,
            policies=tuple(policies),
            usccs=tuple(usccs),
            tokens=tokens,
            feed_lines=tuple(feed.read_text(encoding="utf-8").splitlines()),
            import_size=args.import_size,
        )
        print(
            f"server pid {server.process.pid} on {server.target}, {len(usccs):,} enterprises ({args.db}); "
            f"{args.calls:,} calls by {args.clients} clients in {args.client_procs} processes; "
            f"warm-up {warmup_calls:,} calls; {os.cpu_count()} CPUs",
            flush=True,
        )
        figures = run_load(work, args.clients, args.client_procs, server, args.batch_policy)
        verdict = verify_audit_log(server.target, tokens)
    finally:
        server_exit = server.stop()
    ledger = stored_decisions(url, figures.decisions)
    ledger["conflicting_answers"] = len(figures.conflicts)

    methods = method_figures(figures.stats)
    rss = rss_figures(figures.rss, warmup_calls)
    calls = sum(f["calls"] for f in methods.values())
    errors = sum(f["errors"] for f in methods.values())
    limited = sum(f["rate_limited"] for f in methods.values())
    rss_ok = rss["growth_pct"] is not None and rss["growth_pct"] < RSS_LIMIT * 100
    ledger_ok = ledger["missing"] == ledger["differing"] == ledger["conflicting_answers"] == 0
    passed = errors == 0 and rss_ok and bool(verdict["valid"]) and ledger_ok

    print()
    print(
        f"load run: {calls:,} calls ({args.calls:,} of the mix + the batch's) in {figures.wall:.1f} s, "
        f"{calls / figures.wall:,.0f} calls/s; {args.clients} clients; {args.db}, {len(usccs):,} enterprises; "
        f"latencies of OK calls after the warm-up"
    )
    print_table(methods)
    print(
        f"CPU (share of one core): server {_share(figures.server_cpu, figures.wall)}, "
        f"clients {_share(figures.client_cpu, figures.wall)} ({args.client_procs} processes), {os.cpu_count()} CPUs"
    )
    b = figures.batch
    print(
        f"payout batch {b.batch_id or '-'} ({args.batch_policy} {args.period}): {b.state or '-'}, "
        f"{b.evaluated:,} evaluated, {b.lines:,} lines, {b.total_fen:,} fen, {b.seconds:.1f} s from create"
    )
    growth = "-" if rss["growth_pct"] is None else f"{rss['growth_pct']:.1f} %"
    print(
        f"server RSS: start {_mb(rss.get('start_mb'))}, end of warm-up {_mb(rss['warmup_mb'])}, "
        f"end {_mb(rss['end_mb'])}, max {_mb(rss['max_mb'])}; growth after warm-up {growth} "
        f"(limit < {RSS_LIMIT * 100:.0f} %); {rss['samples']} samples"
    )
    print(
        f"VerifyAuditLog: {'VALID' if verdict['valid'] else 'NOT VALID'}, {verdict['entries_checked']:,} entries, "
        f"{verdict['fault']}, {verdict['problems']} problems, {verdict['seconds']:.1f} s"
        + (f" ({verdict['detail']})" if verdict["detail"] else "")
    )
    print(
        f"decisions answered by ExplainEligibility: {ledger['answered']:,} evaluation ids, {ledger['stored']:,} "
        f"stored as answered, {ledger['missing']:,} missing, {ledger['differing']:,} stored otherwise, "
        f"{ledger['conflicting_answers']:,} answered twice differently"
    )
    print(f"errors: {errors:,}; rate limited (RESOURCE_EXHAUSTED, apart): {limited:,}; server exit {server_exit}")

    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "db": args.db,
        "enterprises": len(usccs),
        "calls": calls,
        "mix_calls": args.calls,
        "warmup_calls": warmup_calls,
        "clients": args.clients,
        "client_procs": args.client_procs,
        "mix": dict(MIX),
        "wall_s": figures.wall,
        "calls_per_s": calls / figures.wall,
        "server_cpu_s": figures.server_cpu,
        "client_cpu_s": figures.client_cpu,
        "methods": methods,
        "errors": errors,
        "rate_limited": limited,
        "rss": rss,
        "batch": {
            "batch_id": b.batch_id,
            "policy": args.batch_policy,
            "state": b.state,
            "evaluated": b.evaluated,
            "lines": b.lines,
            "total_fen": b.total_fen,
            "seconds": b.seconds,
        },
        "verify": verdict,
        "decisions": ledger,
        "server_exit": server_exit,
        "passed": passed,
    }
    # the newest run, and the newest on this database (a PostgreSQL run keeps the SQLite one's)
    written = [args.out, args.out.with_name(f"{args.out.stem}-{args.db}.json")]
    for path in written:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"written: {', '.join(str(path) for path in written)}; {'PASSED' if passed else 'FAILED'}")
    return 0 if passed else 1


def _share(seconds: float | None, wall: float) -> str:
    return "n/a" if seconds is None else f"{seconds / wall * 100:.0f} %"


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} MB"


if __name__ == "__main__":
    sys.exit(main())
