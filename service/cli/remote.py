"""The gRPC client commands: `lookup` (an enterprise's benefits) and `batch ...` (payout batches,
`service.cli.batch`). Each needs a bearer token: --token or $BENEFITS_TOKEN."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date

from service.tls import add_connection_arguments, endpoint_from_args


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from service.cli import batch  # the gRPC stubs load with the parser, not on import

    batch.add_commands(commands, run=_batch)

    lookup = commands.add_parser("lookup", help="an enterprise's benefits and explanations (gRPC client)")
    lookup.add_argument("--uscc", required=True)
    lookup.add_argument("--policy")
    lookup.add_argument("--period", type=int, default=date.today().year - 1)
    add_connection_arguments(lookup)
    lookup.add_argument("--token", default=None, help="bearer token (default: the BENEFITS_TOKEN environment variable)")
    lookup.set_defaults(run=_lookup)


def _token(args: argparse.Namespace) -> str | None:
    token: str | None = args.token or os.environ.get("BENEFITS_TOKEN")
    if not token:
        print("error: give --token or set BENEFITS_TOKEN", file=sys.stderr)
    return token


def _batch(args: argparse.Namespace) -> int:
    from service.cli.batch import run

    token = _token(args)
    return run(args.command, endpoint_from_args(args), token, args) if token else 2


def _lookup(args: argparse.Namespace) -> int:
    from service.client import lookup

    token = _token(args)
    if not token:
        return 2
    return lookup(endpoint_from_args(args), token, uscc=args.uscc, policy_id=args.policy, period=args.period)
