"""The demonstration commands (`make run`): `demo-auth` writes demo tokens and prints how to call
the server with them."""

from __future__ import annotations

import argparse
from pathlib import Path

from service.cli.defaults import DEFAULT_DB_URL, DEFAULT_LISTEN, open_database


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser("demo-auth", help="write an auth file with a demo token for every role")
    demo.add_argument("--db", default=DEFAULT_DB_URL)
    demo.add_argument("--out", type=Path, required=True)
    demo.add_argument("--listen", default=DEFAULT_LISTEN, help="for the printed examples")
    demo.add_argument("--period", type=int, default=2025, help="for the printed examples")
    demo.set_defaults(run=_demo_auth)


def _demo_auth(args: argparse.Namespace) -> int:
    from service.demo_auth import write_demo_auth

    with open_database(args.db) as engine:
        principals = write_demo_auth(engine, args.out)
    enterprise = next(p for p in principals if p["role"] == "enterprise")
    admin = next(p for p in principals if p["role"] == "admin")
    print(f"wrote {args.out}: a demo token for every role")
    print("Call the server as the demo enterprise (it may read only its own USCC):")
    print(
        f"  BENEFITS_TOKEN={enterprise['token']} .venv/bin/benefits lookup --target {args.listen} "
        f"--uscc {enterprise['uscc']} --period {args.period}"
    )
    print(
        f"  BENEFITS_TOKEN={enterprise['token']} .venv/bin/benefits lookup --target {args.listen} "
        f"--uscc {enterprise['uscc']} --policy stable-jobs-refund --period {args.period}"
    )
    print("Any language, from proto/ alone (reflection and health are served too), e.g. with buf:")
    print(
        f"  .venv/bin/buf curl --protocol grpc --http2-prior-knowledge "
        f"-H 'authorization: Bearer {admin['token']}' "
        f"--reflect-header 'authorization: Bearer {admin['token']}' "
        f'-d \'{{"uscc":"{enterprise["uscc"]}","policy_id":"stable-jobs-refund",'
        f'"period":{args.period}}}\' '
        f"http://{args.listen}/benefits.v1.BenefitService/ExplainEligibility"
    )
    return 0
