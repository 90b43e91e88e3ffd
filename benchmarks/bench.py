"""The province benchmark: N synthetic enterprises, the six reference policies, one run.

Phases, every rate in enterprise-policy pairs per second:
  load      the synthetic registry built and loaded (or reused: the figure of the run that built it)
  engine    the engine alone: the same packed rulesets and worker processes, asserting the same
            facts held in memory - no database, no trace (the baseline of this run)
  period    a payout batch to DRAFT for each policy in force, every evaluation recorded and sealed
  lookups   ExplainEligibility against Health/Check at 1, 8 and 32 clients (benchmarks/bench_api.py)
Then it checks its own work: each batch recorded exactly N decisions of its policy, the audit log
verifies, a random sample of records replays identically. It prints one table and writes
bench/results/latest.json.

Usage: python benchmarks/bench.py [--n 1000000] [--db sqlite|postgresql] [--workers 2]
       (make bench N=... DB=... WORKERS=...). Nothing is asserted about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import secrets
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date
from multiprocessing import get_context
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
CACHE = REPO_ROOT / "var" / "bench"
RESULTS = REPO_ROOT / "bench" / "results"
RULES_DIR = REPO_ROOT / "rules"
PG_URL = os.environ.get("BENEFITS_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PERIOD = 2025
TODAY = date(2026, 3, 2)
SEED = 7
ENGINE_SAMPLE = 20_000  # enterprises per worker whose engine facts are held in memory
REPLAY_SAMPLE = 30


@dataclass
class Phase:
    name: str
    pairs: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.pairs / self.seconds if self.seconds else 0.0


# ---------------------------------------------------------------------------------------------
# The registry: built once per (N, seed, database), reused after.


def registry(n: int, db: str) -> tuple[str, Phase]:
    from bench_registry import load_feed, write_feed
    from sqlalchemy import text

    from enterprise_registry.db import make_engine

    CACHE.mkdir(parents=True, exist_ok=True)
    stem = CACHE / f"registry-{n}-{SEED}"
    feed = stem.with_suffix(".jsonl")
    if db == "sqlite":
        url, marker = f"sqlite:///{stem.with_suffix('.db')}", stem.with_suffix(".loaded.json")
    else:
        schema = f"bench_{n}_{SEED}"
        url, marker = f"{PG_URL}?options=-csearch_path%3D{schema}", stem.with_suffix(f".{schema}.json")
    if not feed.exists():
        write_feed(feed, n, SEED)
    if marker.exists():
        saved = json.loads(marker.read_text())
        print(f"registry: reusing {url} ({saved['records']:,} records; delete {marker} to rebuild)", flush=True)
        return url, Phase("load", saved["records"], saved["seconds"])
    if db == "sqlite":
        for suffix in (".db", ".db-wal", ".db-shm"):
            stem.with_suffix(suffix).unlink(missing_ok=True)
    else:
        admin = make_engine(PG_URL)
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        admin.dispose()
    report = load_feed(url, feed)
    marker.write_text(json.dumps({"records": report.records, "seconds": report.seconds}))
    print(f"registry: loaded {report.records:,} records in {report.seconds:.1f} s", flush=True)
    return url, Phase("load", report.records, report.seconds)


def fresh_audit_trail(url: str) -> None:
    """Drop every table but the registry's: each run pays its batches from an empty ledger."""
    from sqlalchemy import MetaData
    from sqlmodel import SQLModel

    import enterprise_registry.models  # noqa: F401  (registers the registry's tables in SQLModel.metadata)
    from enterprise_registry.db import make_engine
    from service.payouts.tables import create_payout_schema

    engine = make_engine(url)
    try:
        keep = set(SQLModel.metadata.tables)
        found = MetaData()
        found.reflect(engine)
        doomed = [t for name, t in found.tables.items() if name not in keep]
        found.drop_all(engine, tables=doomed)
        create_payout_schema(engine)
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------------------------
# The engine alone, in worker processes.


def _engine_alone(url: str, skip: int, count: int) -> tuple[int, float]:
    """In a worker: hold the engine facts of `count` enterprises in memory, then assert them all."""
    from sqlalchemy import select
    from sqlmodel import col

    from enterprise_registry.db import make_engine
    from enterprise_registry.models import Enterprise
    from service.evaluation.chunks import read_chunk
    from service.evaluation.decide import decide_chunk, engine_facts, plan_for

    plan = plan_for(_policies_in_force(), PERIOD)
    engine = make_engine(url)
    with engine.connect() as conn:
        usccs = list(
            conn.execute(select(col(Enterprise.uscc)).order_by(Enterprise.uscc).offset(skip).limit(count)).scalars()
        )
        facts: list[tuple[Any, list[dict[str, Any]]]] = []
        for start in range(0, len(usccs), 2000):
            columns = read_chunk(conn, usccs[start : start + 2000], plan.fact_years).columns
            decisions = decide_chunk(plan, columns, today=TODAY)
            for packed in plan.packs:
                facts.append((packed, engine_facts(packed.members, decisions)))
    engine.dispose()
    pairs = sum(len(packed.members) * len(chunk) for packed, chunk in facts)
    started = time.perf_counter()
    for packed, chunk in facts:
        packed.ruleset.fire_each(chunk)
    return pairs, time.perf_counter() - started


def engine_phase(url: str, n: int, workers: int) -> Phase:
    per_worker = min(ENGINE_SAMPLE, n // workers)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        results = list(
            pool.map(_engine_alone, [url] * workers, [i * per_worker for i in range(workers)], [per_worker] * workers)
        )
    # The workers assert side by side: pairs over the slowest worker's time.
    return Phase("engine", sum(p for p, _ in results), max(s for _, s in results))


def _policies_in_force() -> list[Any]:
    from rules.loader import load_policy_dir
    from service.catalogue import CATALOGUE

    return [p for p in load_policy_dir(RULES_DIR, CATALOGUE) if p.covers(PERIOD)]


# ---------------------------------------------------------------------------------------------
# The period run: one payout batch per policy, to DRAFT.


def period_phase(url: str, n: int, workers: int, chunk: int) -> tuple[Phase, list[tuple[str, str, float]]]:
    """The six batches started together and run together (one pass over the registry), as a
    finance bureau's period job does."""
    from enterprise_registry.db import make_engine
    from rules.loader import load_policy_dir
    from service.audit.records import Actor
    from service.catalogue import CATALOGUE
    from service.payouts.runner import RunSettings, create_batches

    policies = load_policy_dir(RULES_DIR, CATALOGUE)
    engine = make_engine(url)
    settings = RunSettings(chunk_size=chunk, workers=workers)
    in_force = [p.id for p in policies if p.covers(PERIOD)]
    started = time.perf_counter()
    try:
        made = create_batches(
            engine,
            policies,
            [(policy_id, f"bench-{policy_id}") for policy_id in in_force],
            period=PERIOD,
            actor=Actor("bench", "finance_operator"),
            today=TODAY,
            settings=settings,
        )
    finally:
        engine.dispose()
    seconds = time.perf_counter() - started
    for policy_id, batch in zip(in_force, made):
        print(f"  batch {policy_id}: {batch.state}, {batch.line_count:,} lines", flush=True)
    batches = [(policy_id, batch.batch_id, seconds) for policy_id, batch in zip(in_force, made)]
    return Phase("period", n * len(batches), seconds), batches


def check_work(url: str, n: int, batches: list[tuple[str, str, float]]) -> dict[str, Any]:
    """Records = N x policies, the audit log verifies, a sample of records replays identically."""
    from sqlalchemy import func, select

    from enterprise_registry.db import make_engine
    from service.audit.ledger import read_snapshot
    from service.audit.records import evaluation_record, replay
    from service.audit.verification import verify_audit_log
    from service.catalogue import CATALOGUE

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            recorded = {
                policy_id: int(
                    conn.execute(
                        select(func.count(func.distinct(evaluation_record.c.uscc))).where(
                            evaluation_record.c.batch_id == batch_id, evaluation_record.c.policy_id == policy_id
                        )
                    ).scalar_one()
                )
                for policy_id, batch_id, _ in batches
            }
            sample = _sample_of_records(conn, REPLAY_SAMPLE)
        with read_snapshot(engine) as conn:
            verdict = verify_audit_log(conn)
        replayed = [replay(engine, evaluation_id, CATALOGUE) for evaluation_id in sample]
    finally:
        engine.dispose()
    return {
        "records_per_policy": recorded,
        "records_ok": all(v == n for v in recorded.values()),
        "audit_valid": verdict.valid,
        "audit_detail": verdict.detail,
        "replayed": len(replayed),
        "replay_identical": all(r is not None and r.identical for r in replayed),
    }


def _sample_of_records(conn: Any, size: int) -> list[str]:
    """Random records by their place in the ledger (a chunk's entry, a leaf of it), without
    holding every id of millions in memory."""
    from sqlalchemy import func, select

    from service.audit.records import evaluation_record

    chunks = conn.execute(
        select(evaluation_record.c.ledger_seq, func.count()).group_by(evaluation_record.c.ledger_seq)
    ).all()
    rng = random.Random(SEED)
    places = (
        {(seq, rng.randrange(count)) for seq, count in rng.choices(chunks, weights=[c for _, c in chunks], k=size)}
        if chunks
        else set()
    )
    return [
        conn.execute(
            select(evaluation_record.c.evaluation_id).where(
                evaluation_record.c.ledger_seq == seq, evaluation_record.c.leaf_index == index
            )
        ).scalar_one()
        for seq, index in sorted(places)
    ]


# ---------------------------------------------------------------------------------------------
# Lookups: ExplainEligibility against Health/Check.


def lookup_phase(url: str, seconds: float) -> dict[int, tuple[float, float]]:
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    from bench_api import Job, run_phase
    from bench_server import ServerProcess, wait_serving
    from sqlalchemy import text

    from enterprise_registry.db import make_engine

    engine = make_engine(url)
    with engine.connect() as conn:
        usccs = [r[0] for r in conn.execute(text("select uscc from enterprise limit 100000"))]
    engine.dispose()
    token = secrets.token_urlsafe(24)
    auth_file = CACHE / "bench-auth.yaml"
    auth_file.write_text(
        f"principals:\n  - principal: bench-admin\n    role: admin\n    token: {token}\n", encoding="utf-8"
    )
    os.chmod(auth_file, 0o600)
    policy_ids = sorted(p.id for p in _policies_in_force())
    server = ServerProcess(url, auth_file, 16)
    out: dict[int, tuple[float, float]] = {}
    try:
        wait_serving(server.target)
        for clients in (1, 8, 32):
            rates = []
            for kind in ("health", "explain"):
                job = Job(kind, server.target, token, usccs, policy_ids, PERIOD, 1.0, seconds)
                rates.append(run_phase(job, clients, 1, server).rate)
            out[clients] = (rates[0], rates[1])
            print(
                f"  {clients:>2} clients: Health/Check {rates[0]:,.0f}/s, ExplainEligibility {rates[1]:,.0f}/s",
                flush=True,
            )
    finally:
        server.stop()
    return out


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024  # Linux: kilobytes


class MemorySampler:
    """The resident memory of this process and every process under it (worker processes, the
    lookup server), summed, sampled every `interval` seconds: the run's peak, which ru_maxrss
    misses for worker processes still alive at the end."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.peak_mb = 0.0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            sizes = [_rss_kb(pid) for pid in _descendants(os.getpid())]
            total = sum(sizes) / 1024
            if total > self.peak_mb:
                self.peak_mb, self.peak_processes = total, len(sizes)


def _descendants(root: int) -> list[int]:
    """`root` and every process under it, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended meanwhile
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, []))
    return found


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="synthetic enterprises")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--chunk", type=int, default=2000, help="enterprises per committed chunk")
    parser.add_argument("--lookup-seconds", type=float, default=5.0, help="measured seconds per lookup phase")
    parser.add_argument("--skip-lookups", action="store_true")
    args = parser.parse_args()

    wall = time.perf_counter()
    url, load = registry(args.n, args.db)
    fresh_audit_trail(url)
    with MemorySampler() as memory:
        print("engine alone ...", flush=True)
        engine = engine_phase(url, args.n, args.workers)
        print(f"  {engine.rate:,.0f} pairs/s", flush=True)
        print("period run ...", flush=True)
        with MemorySampler() as period_memory:
            period, batches = period_phase(url, args.n, args.workers, args.chunk)
        print("checks ...", flush=True)
        checks = check_work(url, args.n, batches)
        lookups = {} if args.skip_lookups else lookup_phase(url, args.lookup_seconds)
    result = {
        "n": args.n,
        "policies": len(batches),
        "workers": args.workers,
        "db": args.db,
        "chunk": args.chunk,
        "load_records_per_s": load.rate,
        "engine_evals_per_s": engine.rate,
        "batch_evals_per_s": period.rate,
        "ratio": period.rate / engine.rate if engine.rate else 0.0,
        "period_s": period.seconds,
        "batches": {policy_id: batch_id for policy_id, batch_id, _ in batches},
        "explain_per_s": {str(k): v[1] for k, v in lookups.items()},
        "health_per_s": {str(k): v[0] for k, v in lookups.items()},
        "explain_per_s_32": lookups.get(32, (0.0, 0.0))[1],
        "health_per_s_32": lookups.get(32, (0.0, 0.0))[0],
        # every process of the run, summed (coordinator, workers, lookup server); ru_maxrss of one
        "peak_rss_mb": memory.peak_mb,
        "period_peak_rss_mb": period_memory.peak_mb,
        "period_peak_processes": period_memory.peak_processes,
        "max_process_rss_mb": peak_rss_mb(),
        "wall_s": time.perf_counter() - wall,
        **checks,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print()
    print(f"N = {args.n:,}, {len(batches)} policies, {args.workers} workers, {args.db}, chunks of {args.chunk}")
    print(f"{'phase':<28}{'pairs/s':>12}{'seconds':>10}")
    print(f"{'load (records/s)':<28}{load.rate:>12,.0f}{load.seconds:>10.1f}")
    print(f"{'engine alone':<28}{engine.rate:>12,.0f}{engine.seconds:>10.1f}")
    print(f"{'period run (recorded)':<28}{period.rate:>12,.0f}{period.seconds:>10.1f}")
    print(f"{'ratio period / engine':<28}{result['ratio']:>12.2f}")
    for clients, (health, explain) in lookups.items():
        print(f"{f'explain / health @{clients}':<28}{explain:>12,.0f}{health:>10,.0f}")
    print(
        f"peak RSS, all processes summed: {result['peak_rss_mb']:,.0f} MB (period run "
        f"{result['period_peak_rss_mb']:,.0f} MB in {result['period_peak_processes']} processes); "
        f"wall {result['wall_s']:,.0f} s"
    )
    print(
        f"checks: records = N x policies {checks['records_ok']}, audit verify "
        f"{'VALID' if checks['audit_valid'] else 'INVALID'}, {checks['replayed']} replays identical "
        f"{checks['replay_identical']}"
    )
    print(f"written: {RESULTS / 'latest.json'}")


if __name__ == "__main__":
    main()
