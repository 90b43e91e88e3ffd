"""The commands on a local database and policy folder: `registry`, `rules`, `evaluate`,
`evaluate-period` and `serve` (the gRPC server itself)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

from enterprise_registry.db import DEFAULT_TIMEOUTS, DatabaseTimeouts
from service.cli.defaults import DEFAULT_DB_URL, DEFAULT_LISTEN, DEFAULT_RULES, load_policies, open_database
from service.config import REQUEST_IDLE_SECONDS


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    registry = commands.add_parser("registry", help="enterprise facts").add_subparsers(title="registry")
    load = registry.add_parser("load", help="load a JSONL fact feed (all-or-nothing per file)")
    load.add_argument("file", type=Path)
    load.add_argument("--db", default=DEFAULT_DB_URL)
    load.set_defaults(run=_registry_load)
    synth = registry.add_parser("synth", help="write a deterministic synthetic Xiangyang registry")
    synth.add_argument("--count", type=int, required=True)
    synth.add_argument("--seed", type=int, default=1)
    synth.add_argument("--out", type=Path, required=True)
    synth.set_defaults(run=_registry_synth)

    rules = commands.add_parser("rules", help="policy files").add_subparsers(title="rules")
    check = rules.add_parser("check", help="validate policy files")
    check.add_argument("dir", type=Path, nargs="?", default=DEFAULT_RULES)
    check.set_defaults(run=_rules_check)
    test = rules.add_parser("test", help="run the test cases beside each policy")
    test.add_argument("dir", type=Path, nargs="?", default=DEFAULT_RULES)
    test.set_defaults(run=_rules_test)

    evaluate = commands.add_parser("evaluate", help="evaluate one enterprise under one policy")
    evaluate.add_argument("--db", default=DEFAULT_DB_URL)
    evaluate.add_argument("--rules", type=Path, default=DEFAULT_RULES)
    evaluate.add_argument("--uscc", required=True)
    evaluate.add_argument("--policy", required=True)
    evaluate.add_argument("--period", type=int, required=True)
    evaluate.add_argument("--as-of", type=date.fromisoformat, default=None, help="evaluation date (default: today)")
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(run=_evaluate)

    period = commands.add_parser(
        "evaluate-period", help="evaluate every enterprise under every policy; print a summary"
    )
    period.add_argument("--db", default=DEFAULT_DB_URL)
    period.add_argument("--rules", type=Path, default=DEFAULT_RULES)
    period.add_argument("--period", type=int, required=True)
    period.add_argument("--policy", action="append", help="only this policy (repeatable)")
    period.add_argument("--as-of", type=date.fromisoformat, default=None)
    period.add_argument("--json", action="store_true")
    period.set_defaults(run=_evaluate_period)

    serve = commands.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--db", default=DEFAULT_DB_URL)
    serve.add_argument("--rules", type=Path, default=DEFAULT_RULES)
    serve.add_argument(
        "--listen", default=DEFAULT_LISTEN, help="host:port; beyond loopback only with TLS (or --insecure)"
    )
    serve.add_argument(
        "--tls-cert",
        type=Path,
        default=None,
        help="certificate chain (PEM, leaf first) to serve TLS with; needs --tls-key",
    )
    serve.add_argument("--tls-key", type=Path, default=None, help="the private key (PEM) of --tls-cert")
    serve.add_argument(
        "--client-ca", type=Path, default=None, help="CA (PEM) whose client certificates are required: mutual TLS"
    )
    serve.add_argument(
        "--insecure", action="store_true", help="allow plaintext on a non-loopback address (logged as a warning)"
    )
    serve.add_argument("--auth-file", type=Path, required=True)
    serve.add_argument(
        "--workers", type=int, default=16, help="threads doing the calls' blocking work (database, engine)"
    )
    serve.add_argument(
        "--request-idle-seconds",
        type=float,
        default=REQUEST_IDLE_SECONDS,
        help="the longest wait for a call's request message; a caller silent longer is ended (DEADLINE_EXCEEDED)",
    )
    serve.add_argument(
        "--ledger-key",
        type=Path,
        default=None,
        help="Ed25519 key (PEM) signing ledger checkpoints, made by `benefits audit keygen`",
    )
    serve.add_argument("--checkpoints", type=Path, default=None, help="file the signed checkpoints are appended to")
    serve.add_argument(
        "--payers", type=Path, default=None, help="YAML of paying accounts by funding, needed to export bank files"
    )
    serve.add_argument(
        "--batch-chunk", type=int, default=200, help="enterprises a running payout batch commits at a time"
    )
    serve.add_argument(
        "--batch-workers",
        type=int,
        default=1,
        help="worker processes evaluating a payout batch's partitions (1: in the server)",
    )
    serve.add_argument(
        "--dask-scheduler",
        metavar="ADDRESS",
        help="run payout batch partitions on this Dask cluster (e.g. tcp://10.0.0.5:8786); "
        "its workers need this package and one thread each",
    )
    serve.add_argument(
        "--batch-lease-seconds",
        type=float,
        default=30.0,
        help="a payout batch whose worker is silent this long is taken over (after a crash)",
    )
    timeouts = DEFAULT_TIMEOUTS  # seconds; docs/operations.md, "The database"
    for name, default, what in (
        ("connect", timeouts.connect, "PostgreSQL: to connect (0: no limit)"),
        ("statement", timeouts.statement, "PostgreSQL statement_timeout (0: no limit)"),
        ("lock", timeouts.lock, "PostgreSQL lock_timeout (0: no limit)"),
        ("busy", timeouts.busy, "SQLite: a writer waits this long for another's write transaction"),
    ):
        serve.add_argument(f"--db-{name}-timeout", type=_seconds, default=default, help=f"seconds; {what}")
    serve.set_defaults(run=_serve)


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds (0 or more)")
    return seconds


def _registry_load(args: argparse.Namespace) -> int:
    from enterprise_registry.clock import Clock
    from enterprise_registry.errors import ImportRejectedError
    from enterprise_registry.importer import load_jsonl

    try:
        with open_database(args.db) as engine:
            report = load_jsonl(args.file, engine, today=Clock().today())
    except ImportRejectedError as exc:
        for error in exc.errors:
            print(str(error), file=sys.stderr)
        print(f"refused: {len(exc.errors)} error(s) shown; nothing of {args.file} was stored", file=sys.stderr)
        return 1
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(report.by_kind.items()))
    print(
        f"loaded {report.records} records ({kinds}) in {report.seconds:.1f} s: "
        f"{report.rate:,.0f} records/s; stored {report.stored}, kept newer {report.stale}"
    )
    for warning in report.warnings[:20]:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _registry_synth(args: argparse.Namespace) -> int:
    import time

    from enterprise_registry.synthetic import write_jsonl

    started = time.perf_counter()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    written = write_jsonl(args.out, args.count, args.seed)
    seconds = time.perf_counter() - started
    print(f"wrote {written} records for {args.count} enterprises to {args.out} in {seconds:.1f} s (seed {args.seed})")
    return 0


def _rules_check(args: argparse.Namespace) -> int:
    policies = load_policies(args.dir)
    for policy in policies:
        periods = policy.model.effective
        span = ", ".join(str(p) for p in periods.listed()) + (
            " onwards" if periods.periods is None and periods.last_period is None else ""
        )
        print(
            f"ok  {policy.id:26} v{policy.version:8} {policy.model.title}  periods {span}  sha256 {policy.sha256[:12]}"
        )
    print(f"{len(policies)} policies valid")
    return 0


def _rules_test(args: argparse.Namespace) -> int:
    from service.policy_tests import run_policy_tests

    failed = total = 0
    for result in run_policy_tests(load_policies(args.dir)):
        total += 1
        if result.passed:
            print(f"PASS {result.policy_id}: {result.name}")
        else:
            failed += 1
            print(f"FAIL {result.policy_id}: {result.name}")
            for problem in result.problems:
                print(f"     {problem}")
    print(f"{total - failed} passed, {failed} failed")
    return 1 if failed else 0


def _evaluate(args: argparse.Namespace) -> int:
    import getpass

    from service.audit.records import Actor, create_audit_schema
    from service.evaluation.lookups import Lookups
    from service.evaluation.recorder import Recorder
    from service.explain import as_json, as_text

    policies = load_policies(args.rules)
    with open_database(args.db) as engine:
        create_audit_schema(engine)  # every evaluation is recorded, this one too
        with Recorder(engine) as recorder:  # the lookup path of the API: same decision, same record
            answer = Lookups(engine, recorder).explain(
                policies,
                uscc=args.uscc,
                policy_id=args.policy,
                period=args.period,
                today=args.as_of or date.today(),
                actor=Actor(f"cli:{getpass.getuser()}", "local"),
            )
    result, title = answer.evaluation, answer.policy.model.title
    if args.json:
        print(
            json.dumps({**as_json(result, title), "evaluation_id": answer.evaluation_id}, ensure_ascii=False, indent=2)
        )
    else:
        print(as_text(result, title))
    return 0


def _evaluate_period(args: argparse.Namespace) -> int:
    from rules.money import format_yuan
    from rules.values import Outcome
    from service.evaluation.period import evaluate_period

    policies = load_policies(args.rules)
    with open_database(args.db) as engine:
        summary = evaluate_period(
            policies, engine, period=args.period, policy_ids=args.policy, today=args.as_of or date.today()
        )
    if args.json:
        print(
            json.dumps(
                {
                    "period": summary.period,
                    "enterprises": summary.enterprises,
                    "evaluations": summary.evaluations,
                    "seconds": summary.seconds,
                    "evaluations_per_second": summary.rate,
                    "policies": [vars(p) for p in summary.policies],
                    "errors": summary.error_samples,
                },
                ensure_ascii=False,
                indent=2,
            )
        )
        return 1 if summary.error_samples else 0
    print(
        f"period {summary.period}: {summary.enterprises} enterprises, {summary.evaluations} "
        f"evaluations in {summary.seconds:.1f} s ({summary.rate:,.0f} evaluations/s)"
    )
    header = (
        f"{'policy':26} {'eligible':>9} {'ineligible':>10} {'undetermined':>12} {'held':>6} "
        f"{'errors':>6} {'eligible total':>20} {'held total':>16}"
    )
    print(header)
    for p in summary.policies:
        c = p.counts
        print(
            f"{p.policy_id:26} {c[Outcome.ELIGIBLE]:>9} {c[Outcome.INELIGIBLE]:>10} {c[Outcome.UNDETERMINED]:>12} "
            f"{c[Outcome.HELD]:>6} {p.errors:>6} {format_yuan(p.eligible_fen):>20} "
            f"{format_yuan(p.held_fen):>16}"
        )
    for sample in summary.error_samples:
        print(f"error: {sample}", file=sys.stderr)
    return 1 if summary.error_samples else 0


def _serve(args: argparse.Namespace) -> int:
    import logging

    from service.config import ServeConfig
    from service.server import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    serve(
        ServeConfig(
            db_url=args.db,
            rules_dir=args.rules,
            auth_file=args.auth_file,
            db_timeouts=DatabaseTimeouts(
                connect=args.db_connect_timeout,
                statement=args.db_statement_timeout,
                lock=args.db_lock_timeout,
                busy=args.db_busy_timeout,
            ),
            listen=args.listen,
            max_workers=args.workers,
            request_idle_seconds=args.request_idle_seconds,
            ledger_key=args.ledger_key,
            checkpoint_file=args.checkpoints,
            payers_file=args.payers,
            batch_chunk_size=args.batch_chunk,
            batch_lease_seconds=args.batch_lease_seconds,
            batch_workers=args.batch_workers,
            dask_scheduler=args.dask_scheduler,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            client_ca=args.client_ca,
            insecure=args.insecure,
        )
    )
    return 0
