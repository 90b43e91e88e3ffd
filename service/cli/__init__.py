"""The `benefits` command: registry, rules and evaluation tasks (subcommands)."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from sqlalchemy.engine import Engine

import rules as rules_package
from enterprise_registry.db import DEFAULT_DB_URL, create_schema, error_text, is_database_error, make_engine
from rules.errors import RuleError
from rules.loader import PolicySet, load_policy_dir
from service.catalogue import CATALOGUE
from service.errors import ServiceError
from service.tls import add_connection_arguments, endpoint_from_args

DEFAULT_RULES = Path(rules_package.__file__).resolve().parent


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except (RuleError, ServiceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except _registry_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not is_database_error(exc):
            raise
        # Not the traceback: its chained messages hold PostgreSQL's DETAIL (the row's values).
        print(f"error: database: {error_text(exc)}", file=sys.stderr)
        return 2


def _registry_errors() -> tuple[type[BaseException], ...]:
    from enterprise_registry.errors import RegistryError
    return (RegistryError,)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benefits", description="Apply-free benefits (免申即享) service")
    sub = parser.add_subparsers(title="commands")

    registry = sub.add_parser("registry", help="enterprise facts").add_subparsers(title="registry")
    load = registry.add_parser("load", help="load a JSONL fact feed (all-or-nothing per file)")
    load.add_argument("file", type=Path)
    load.add_argument("--db", default=DEFAULT_DB_URL)
    load.set_defaults(run=_registry_load)
    synth = registry.add_parser("synth", help="write a deterministic synthetic Xiangyang registry")
    synth.add_argument("--count", type=int, required=True)
    synth.add_argument("--seed", type=int, default=1)
    synth.add_argument("--out", type=Path, required=True)
    synth.set_defaults(run=_registry_synth)

    rules = sub.add_parser("rules", help="policy files").add_subparsers(title="rules")
    check = rules.add_parser("check", help="validate policy files")
    check.add_argument("dir", type=Path, nargs="?", default=DEFAULT_RULES)
    check.set_defaults(run=_rules_check)
    test = rules.add_parser("test", help="run the test cases beside each policy")
    test.add_argument("dir", type=Path, nargs="?", default=DEFAULT_RULES)
    test.set_defaults(run=_rules_test)

    evaluate = sub.add_parser("evaluate", help="evaluate one enterprise under one policy")
    evaluate.add_argument("--db", default=DEFAULT_DB_URL)
    evaluate.add_argument("--rules", type=Path, default=DEFAULT_RULES)
    evaluate.add_argument("--uscc", required=True)
    evaluate.add_argument("--policy", required=True)
    evaluate.add_argument("--period", type=int, required=True)
    evaluate.add_argument("--as-of", type=date.fromisoformat, default=None,
                          help="evaluation date (default: today)")
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(run=_evaluate)

    period = sub.add_parser("evaluate-period",
                            help="evaluate every enterprise under every policy; print a summary")
    period.add_argument("--db", default=DEFAULT_DB_URL)
    period.add_argument("--rules", type=Path, default=DEFAULT_RULES)
    period.add_argument("--period", type=int, required=True)
    period.add_argument("--policy", action="append", help="only this policy (repeatable)")
    period.add_argument("--as-of", type=date.fromisoformat, default=None)
    period.add_argument("--json", action="store_true")
    period.set_defaults(run=_evaluate_period)

    serve = sub.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--db", default=DEFAULT_DB_URL)
    serve.add_argument("--rules", type=Path, default=DEFAULT_RULES)
    serve.add_argument("--listen", default="127.0.0.1:50051",
                       help="host:port; beyond loopback only with TLS (or --insecure)")
    serve.add_argument("--tls-cert", type=Path, default=None,
                       help="certificate chain (PEM, leaf first) to serve TLS with; needs --tls-key")
    serve.add_argument("--tls-key", type=Path, default=None, help="the private key (PEM) of --tls-cert")
    serve.add_argument("--client-ca", type=Path, default=None,
                       help="CA (PEM) whose client certificates are required: mutual TLS")
    serve.add_argument("--insecure", action="store_true",
                       help="allow plaintext on a non-loopback address (logged as a warning)")
    serve.add_argument("--auth-file", type=Path, required=True)
    serve.add_argument("--workers", type=int, default=16)
    serve.add_argument("--ledger-key", type=Path, default=None,
                       help="Ed25519 key (PEM) signing ledger checkpoints, made by `benefits audit keygen`")
    serve.add_argument("--checkpoints", type=Path, default=None,
                       help="file the signed checkpoints are appended to")
    serve.add_argument("--payers", type=Path, default=None,
                       help="YAML of paying accounts by funding, needed to export bank files")
    serve.add_argument("--batch-chunk", type=int, default=200,
                       help="enterprises a running payout batch commits at a time")
    serve.add_argument("--batch-workers", type=int, default=1,
                       help="worker processes evaluating a payout batch's partitions (1: in the server)")
    serve.add_argument("--dask-scheduler", metavar="ADDRESS",
                       help="run payout batch partitions on this Dask cluster (e.g. tcp://10.0.0.5:8786); "
                            "its workers need this package and one thread each")
    serve.add_argument("--batch-lease-seconds", type=float, default=30.0,
                       help="a payout batch whose worker is silent this long is taken over (after a crash)")
    serve.set_defaults(run=_serve)

    from service.batch_client import add_batch_commands

    add_batch_commands(sub, run=_batch)

    audit = sub.add_parser("audit", help="the audit trail").add_subparsers(title="audit")
    verify = audit.add_parser("verify", help="verify the ledger, every record, and the newest checkpoint")
    verify.add_argument("--db", default=DEFAULT_DB_URL)
    key_source = verify.add_mutually_exclusive_group()
    key_source.add_argument("--public-key", type=Path, default=None,
                            help="the ledger key's public half (PEM, FILE.pub of `benefits audit keygen`)")
    key_source.add_argument("--ledger-key", type=Path, default=None,
                            help="or the private key itself, for its public half")
    verify.add_argument("--checkpoints", type=Path, default=None, help="the signed checkpoints (JSON lines)")
    verify.set_defaults(run=_audit_verify)
    keygen = audit.add_parser("keygen", help="make the Ed25519 key that signs ledger checkpoints (once)")
    keygen.add_argument("--out", type=Path, required=True,
                        help="private key file (created with mode 0600, never overwritten); "
                             "the public key goes to FILE.pub")
    keygen.set_defaults(run=_audit_keygen)
    prove = audit.add_parser("prove", help="prove a payout line is in its batch, or an evaluation record in the "
                                           "ledger (Merkle inclusion proofs)")
    prove.add_argument("--db", default=DEFAULT_DB_URL)
    prove.add_argument("line_id", help="the line's id (its end-to-end id in the bank file), or an evaluation id "
                                       "(ev_...)")
    prove.set_defaults(run=_audit_prove)

    lookup = sub.add_parser("lookup", help="an enterprise's benefits and explanations (gRPC client)")
    lookup.add_argument("--uscc", required=True)
    lookup.add_argument("--policy")
    lookup.add_argument("--period", type=int, default=date.today().year - 1)
    add_connection_arguments(lookup)
    lookup.add_argument("--token", default=None,
                        help="bearer token (default: the BENEFITS_TOKEN environment variable)")
    lookup.set_defaults(run=_lookup)

    demo = sub.add_parser("demo-auth", help="write an auth file with a demo token for every role")
    demo.add_argument("--db", default=DEFAULT_DB_URL)
    demo.add_argument("--out", type=Path, required=True)
    demo.add_argument("--listen", default="127.0.0.1:50051", help="for the printed examples")
    demo.add_argument("--period", type=int, default=2025, help="for the printed examples")
    demo.set_defaults(run=_demo_auth)
    return parser


@contextmanager
def _database(url: str) -> Iterator[Engine]:
    """An engine with the schema in place, disposed afterwards (no connection left open)."""
    engine = make_engine(url)
    try:
        create_schema(engine)
        yield engine
    finally:
        engine.dispose()


def _policies(root: Path) -> PolicySet:
    return load_policy_dir(root, CATALOGUE)


def _registry_load(args: argparse.Namespace) -> int:
    from enterprise_registry.clock import Clock
    from enterprise_registry.errors import ImportRejectedError
    from enterprise_registry.importer import load_jsonl

    try:
        with _database(args.db) as engine:
            report = load_jsonl(args.file, engine, today=Clock().today())
    except ImportRejectedError as exc:
        for error in exc.errors:
            print(str(error), file=sys.stderr)
        print(f"refused: {len(exc.errors)} error(s) shown; nothing of {args.file} was stored",
              file=sys.stderr)
        return 1
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(report.by_kind.items()))
    print(f"loaded {report.records} records ({kinds}) in {report.seconds:.1f} s: "
          f"{report.rate:,.0f} records/s; stored {report.stored}, kept newer {report.stale}")
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
    print(f"wrote {written} records for {args.count} enterprises to {args.out} "
          f"in {seconds:.1f} s (seed {args.seed})")
    return 0


def _rules_check(args: argparse.Namespace) -> int:
    policies = _policies(args.dir)
    for policy in policies:
        periods = policy.model.effective
        span = ", ".join(str(p) for p in periods.listed()) + \
            (" onwards" if periods.periods is None and periods.last_period is None else "")
        print(f"ok  {policy.id:26} v{policy.version:8} {policy.model.title}  periods {span}  "
              f"sha256 {policy.sha256[:12]}")
    print(f"{len(policies)} policies valid")
    return 0


def _rules_test(args: argparse.Namespace) -> int:
    from service.policy_tests import run_policy_tests

    failed = total = 0
    for result in run_policy_tests(_policies(args.dir)):
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

    policies = _policies(args.rules)
    with _database(args.db) as engine:
        create_audit_schema(engine)  # every evaluation is recorded, this one too
        with Recorder(engine) as recorder:   # the lookup path of the API: same decision, same record
            answer = Lookups(engine, recorder).explain(
                policies, uscc=args.uscc, policy_id=args.policy, period=args.period,
                today=args.as_of or date.today(), actor=Actor(f"cli:{getpass.getuser()}", "local"))
    result, title = answer.evaluation, answer.policy.model.title
    if args.json:
        print(json.dumps({**as_json(result, title), "evaluation_id": answer.evaluation_id},
                         ensure_ascii=False, indent=2))
    else:
        print(as_text(result, title))
    return 0


def _evaluate_period(args: argparse.Namespace) -> int:
    from rules.money import format_yuan
    from service.evaluation.period import evaluate_period

    policies = _policies(args.rules)
    with _database(args.db) as engine:
        summary = evaluate_period(policies, engine, period=args.period,
                                  policy_ids=args.policy, today=args.as_of or date.today())
    if args.json:
        print(json.dumps({"period": summary.period, "enterprises": summary.enterprises,
                          "evaluations": summary.evaluations, "seconds": summary.seconds,
                          "evaluations_per_second": summary.rate,
                          "policies": [vars(p) for p in summary.policies],
                          "errors": summary.error_samples}, ensure_ascii=False, indent=2))
        return 1 if summary.error_samples else 0
    print(f"period {summary.period}: {summary.enterprises} enterprises, {summary.evaluations} "
          f"evaluations in {summary.seconds:.1f} s ({summary.rate:,.0f} evaluations/s)")
    header = f"{'policy':26} {'eligible':>9} {'ineligible':>10} {'undetermined':>12} {'held':>6} " \
             f"{'errors':>6} {'eligible total':>20} {'held total':>16}"
    print(header)
    for p in summary.policies:
        c = p.counts
        print(f"{p.policy_id:26} {c['ELIGIBLE']:>9} {c['INELIGIBLE']:>10} {c['UNDETERMINED']:>12} "
              f"{c['HELD']:>6} {p.errors:>6} {format_yuan(p.eligible_fen):>20} "
              f"{format_yuan(p.held_fen):>16}")
    for sample in summary.error_samples:
        print(f"error: {sample}", file=sys.stderr)
    return 1 if summary.error_samples else 0


def _serve(args: argparse.Namespace) -> int:
    import logging

    from service.config import ServeConfig
    from service.server import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    serve(ServeConfig(db_url=args.db, rules_dir=args.rules, auth_file=args.auth_file,
                      listen=args.listen, max_workers=args.workers, ledger_key=args.ledger_key,
                      checkpoint_file=args.checkpoints, payers_file=args.payers,
                      batch_chunk_size=args.batch_chunk, batch_lease_seconds=args.batch_lease_seconds,
                      batch_workers=args.batch_workers, dask_scheduler=args.dask_scheduler,
                      tls_cert=args.tls_cert, tls_key=args.tls_key, client_ca=args.client_ca,
                      insecure=args.insecure))
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    from service.audit import checkpoints
    from service.audit.ledger import read_snapshot
    from service.audit.verification import verify_audit_log
    from service.payouts.tables import create_payout_schema

    public_key = checkpoints.load_public_key(args.public_key) if args.public_key else \
        checkpoints.load_private_key(args.ledger_key).public_key() if args.ledger_key else None
    with _database(args.db) as engine:
        create_payout_schema(engine)  # the audit trail's tables included
        with read_snapshot(engine) as conn:
            verdict = verify_audit_log(conn, checkpoint_file=args.checkpoints, public_key=public_key)
    where = f" at entry {verdict.first_bad_entry}" if verdict.first_bad_entry else ""  # 0: the checkpoints file
    state = "VALID" if verdict.valid else f"INVALID ({verdict.fault}{where})"
    print(f"{state}: {verdict.entries_checked} entries checked, head {verdict.head_hash}")
    print(verdict.detail)
    for problem in verdict.problems:   # each altered row, named
        print(f"  {problem.fault} {problem}")
    return 0 if verdict.valid else 1


def _audit_keygen(args: argparse.Namespace) -> int:
    from service.audit import checkpoints

    key = checkpoints.generate_key(args.out)
    print(f"wrote {args.out} (private, mode 0600: give it to `benefits serve --ledger-key`, keep it out of "
          f"the database and its backups) and {checkpoints.public_key_path(args.out)} (public: for "
          "`benefits audit verify --public-key`)")
    print(f"key id {checkpoints.key_id(key.public_key())}")
    return 0


def _audit_prove(args: argparse.Namespace) -> int:
    from service.audit.record_proofs import RecordProof, prove_record
    from service.errors import EvaluationNotFoundError
    from service.payouts.proofs import prove_line

    def show_record(proof: RecordProof) -> None:
        print(f"  record {proof.evaluation_id}: leaf {proof.leaf_index} of {proof.tree_size}, "
              f"sha256 {proof.record_sha256}")
        for sibling in proof.path:
            print(f"    sibling {sibling}")
        print(f"    sealed root {proof.sealed_root} (ledger entry {proof.ledger_seq})")

    with _database(args.db) as engine, engine.connect() as conn:
        if args.line_id.startswith("ev_"):
            record = prove_record(conn, args.line_id)
            if record is None:
                raise EvaluationNotFoundError(args.line_id)
            show_record(record)
            print("VERIFIED: the record is sealed in the ledger" if record.verified
                  else f"NOT VERIFIED: {record.problem}")
            return 0 if record.verified else 1
        proof = prove_line(conn, args.line_id)
    print(f"line {proof.line_id} of batch {proof.batch_id}: evaluation {proof.evaluation_id}")
    print(f"  leaf {proof.leaf_index} of {proof.tree_size}, record sha256 {proof.record_sha256}")
    for sibling in proof.proof:
        print(f"  sibling {sibling}")
    print(f"  sealed root {proof.sealed_root} (ledger entry {proof.ledger_seq})")
    if proof.record is not None:
        show_record(proof.record)
    print("VERIFIED: the line is in its batch" if proof.verified else f"NOT VERIFIED: {proof.problem}")
    return 0 if proof.verified else 1


def _batch(args: argparse.Namespace) -> int:
    from service.batch_client import run

    token = _token(args)
    return run(args.command, endpoint_from_args(args), token, args) if token else 2


def _token(args: argparse.Namespace) -> str | None:
    import os

    token: str | None = args.token or os.environ.get("BENEFITS_TOKEN")
    if not token:
        print("error: give --token or set BENEFITS_TOKEN", file=sys.stderr)
    return token


def _lookup(args: argparse.Namespace) -> int:
    from service.client import lookup

    token = _token(args)
    if not token:
        return 2
    return lookup(endpoint_from_args(args), token, uscc=args.uscc, policy_id=args.policy, period=args.period)


def _demo_auth(args: argparse.Namespace) -> int:
    from service.demo import write_demo_auth

    with _database(args.db) as engine:
        principals = write_demo_auth(engine, args.out)
    enterprise = next(p for p in principals if p["role"] == "enterprise")
    admin = next(p for p in principals if p["role"] == "admin")
    print(f"wrote {args.out}: a demo token for every role")
    print("Call the server as the demo enterprise (it may read only its own USCC):")
    print(f"  BENEFITS_TOKEN={enterprise['token']} .venv/bin/benefits lookup --target {args.listen} "
          f"--uscc {enterprise['uscc']} --period {args.period}")
    print(f"  BENEFITS_TOKEN={enterprise['token']} .venv/bin/benefits lookup --target {args.listen} "
          f"--uscc {enterprise['uscc']} --policy stable-jobs-refund --period {args.period}")
    print("Any language, from proto/ alone (reflection and health are served too), e.g. with buf:")
    print(f"  .venv/bin/buf curl --protocol grpc --http2-prior-knowledge "
          f"-H 'authorization: Bearer {admin['token']}' "
          f"--reflect-header 'authorization: Bearer {admin['token']}' "
          f"-d '{{\"uscc\":\"{enterprise['uscc']}\",\"policy_id\":\"stable-jobs-refund\","
          f"\"period\":{args.period}}}' "
          f"http://{args.listen}/benefits.v1.BenefitService/ExplainEligibility")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
