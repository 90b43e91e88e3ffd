"""`benefits batch ...`: payout batches over gRPC, as the finance bureau runs them.

Every command prints what it did and exits non-zero with the server's status on failure.
"""

from __future__ import annotations

import argparse
import csv
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from benefits.v1 import payout_service_pb2 as pb

from service.api.enums import BATCH_STATES, LINE_STATES
from service.batch_client import FORMATS, BatchClient, connected, describe, watch_with_progress
from service.client import print_error
from service.errors import InvalidArgumentError
from service.payouts.export import batch_id_for_message
from service.payouts.states import LineState
from service.tls import Endpoint, add_connection_arguments


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], *, run: Callable[[argparse.Namespace], int]
) -> None:
    """The `benefits batch ...` subcommands; `run` executes one (it resolves the token)."""
    batch = commands.add_parser("batch", help="payout batches over gRPC (finance bureau)").add_subparsers(title="batch")

    def command(name: str, help_text: str, *, with_batch_id: bool = True) -> argparse.ArgumentParser:
        parser = batch.add_parser(name, help=help_text)
        add_connection_arguments(parser)  # --target, and --ca/--cert/--key for TLS
        parser.add_argument("--token", default=None, help="bearer token (default: $BENEFITS_TOKEN)")
        if with_batch_id:
            parser.add_argument("batch_id")
        parser.set_defaults(run=run, command=name)
        return parser

    create = command("create", "create a batch for a policy and period and follow it to DRAFT", with_batch_id=False)
    create.add_argument("--policy", required=True)
    create.add_argument("--period", type=int, required=True)
    create.add_argument(
        "--request-id",
        default=None,
        help="idempotency key; repeat it to resume or re-read the same batch (default: a new UUID)",
    )
    create.add_argument("--no-wait", action="store_true", help="return while the batch is RUNNING")
    create.add_argument("--quiet", action="store_true", help="no progress bar")
    watch = command("watch", "follow a running batch with a progress bar")
    watch.add_argument("--quiet", action="store_true", help="no progress bar")
    command("get", "show a batch")
    lines = command("lines", "print a batch's lines as CSV (payee accounts masked)")
    lines.add_argument(
        "--payee-changed",
        action="store_true",
        help="only pending lines whose payee is no longer the registry's account",
    )
    command("approve", "approve a DRAFT batch (not its creator)")
    cancel = command("cancel", "cancel a DRAFT batch, or (approver) an APPROVED one not exported")
    cancel.add_argument("--reason", required=True, help="why (sealed in the ledger)")
    withdraw = command("withdraw", "withdraw pending lines before export (approver); their grants are released")
    withdraw.add_argument("line_ids", nargs="*", help="line ids to withdraw")
    withdraw.add_argument(
        "--payee-changed", action="store_true", help="every line whose payee is no longer the registry's account"
    )
    withdraw.add_argument("--reason", required=True, help="why (sealed in the ledger)")
    confirm = command("confirm-returns", "confirm returns recorded by another principal (approver)")
    confirm.add_argument("line_ids", nargs="*", help="line ids (default: every return awaiting confirmation)")
    report = command("status-report", "record the bank's pain.002 status report", with_batch_id=False)
    report.add_argument("file", type=Path, help="pain.002.001.10 XML")
    report.add_argument("--batch", default=None, help="batch id (default: from the report's original message id)")
    export = command("export", "write the bank file of an APPROVED batch")
    export.add_argument("--format", choices=("csv", "pain001"), default="pain001")
    export.add_argument("--out", type=Path, required=True)
    results = command("results", "record the bank's results of an EXPORTED batch")
    source = results.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", type=Path, help="CSV with line_id,state,return_reason (state PAID or RETURNED)")
    source.add_argument("--all-paid", action="store_true", help="mark every pending line PAID (demonstrations)")


def run(command: str, target: str | Endpoint, token: str, args: Any) -> int:
    """One `benefits batch` command; 0 on success, 1 with the server's status on failure."""
    try:
        with connected(target, token) as client:
            return _COMMANDS[command](client, args)
    except grpc.RpcError as exc:
        print_error(exc)
        return 1
    except (OSError, ValueError) as exc:  # a results file that cannot be read or is malformed
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except InvalidArgumentError as exc:  # a status report that is not a pain.002 document
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _create(client: BatchClient, args: Any) -> int:
    request_id = args.request_id or str(uuid.uuid4())
    batch = client.create(args.policy, args.period, request_id)
    print(
        f"batch {batch.batch_id} ({BATCH_STATES.from_proto.get(batch.state, '?')}), request id {request_id} "
        "(repeat the command with --request-id to resume or re-read it)"
    )
    if args.no_wait:
        return 0
    if batch.state == pb.BATCH_STATE_RUNNING:
        batch = watch_with_progress(client, batch.batch_id, quiet=args.quiet)
    print(describe(batch))
    return 0


def _watch(client: BatchClient, args: Any) -> int:
    print(describe(watch_with_progress(client, args.batch_id, quiet=args.quiet)))
    return 0


def _get(client: BatchClient, args: Any) -> int:
    print(describe(client.get(args.batch_id)))
    return 0


def _lines(client: BatchClient, args: Any) -> int:
    writer = csv.writer(sys.stdout)
    writer.writerow(
        [
            "line_id",
            "uscc",
            "amount_fen",
            "full_amount_fen",
            "evaluation_id",
            "supersedes_line_id",
            "state",
            "return_reason",
            "payee_name",
            "payee_account",
            "payee_bank",
            "payee_changed",
            "withdraw_reason",
        ]
    )
    for line in client.lines(args.batch_id, payee_changed=args.payee_changed):
        writer.writerow(
            [
                line.line_id,
                line.uscc,
                line.amount_fen,
                line.full_amount_fen,
                line.evaluation_id,
                line.supersedes_line_id,
                LINE_STATES.from_proto.get(line.state, "?"),
                line.return_reason,
                line.payee.account_name,
                line.payee.account_number_masked,
                line.payee.bank_name,
                "yes" if line.payee_changed else "",
                line.withdraw_reason,
            ]
        )
    return 0


def _approve(client: BatchClient, args: Any) -> int:
    print(describe(client.approve(args.batch_id)))
    return 0


def _cancel(client: BatchClient, args: Any) -> int:
    print(describe(client.cancel(args.batch_id, args.reason)))
    return 0


def _withdraw(client: BatchClient, args: Any) -> int:
    line_ids = list(args.line_ids)
    if args.payee_changed:
        line_ids += [line.line_id for line in client.lines(args.batch_id, payee_changed=True)]
    if not line_ids:
        print("no line to withdraw", file=sys.stderr)
        return 1
    batch = client.withdraw(args.batch_id, line_ids, args.reason)
    print(f"withdrew {len(line_ids)} line(s)")
    print(describe(batch))
    return 0


def _confirm_returns(client: BatchClient, args: Any) -> int:
    line_ids = list(args.line_ids) or [
        line.line_id for line in client.lines(args.batch_id) if line.state == pb.LINE_STATE_RETURN_PENDING
    ]
    if not line_ids:
        print("no return awaits confirmation", file=sys.stderr)
        return 1
    batch = client.confirm_returns(args.batch_id, line_ids)
    print(f"confirmed {len(line_ids)} return(s): their grants are released for a later batch")
    print(describe(batch))
    return 0


def _status_report(client: BatchClient, args: Any) -> int:
    from service.payouts.status_report import parse

    data = Path(args.file).read_bytes()
    batch_id = args.batch or batch_id_for_message(parse(data).original_message_id)
    answer = client.status_report(batch_id, data)
    print(
        f"status report {answer.message_id}: {answer.paid_count} paid, {answer.rejected_count} rejected "
        f"(awaiting a second principal's confirmation), {answer.unchanged_count} unchanged"
    )
    print(describe(answer.batch))
    return 0


def _export(client: BatchClient, args: Any) -> int:
    data = client.export(args.batch_id, FORMATS[args.format])
    Path(args.out).write_bytes(data)
    print(f"wrote {args.out}: {len(data):,} bytes ({args.format})")
    return 0


def _results(client: BatchClient, args: Any) -> int:
    results = all_paid(client, args.batch_id) if args.all_paid else read_results(Path(args.file))
    batch = client.record_results(args.batch_id, results)
    print(f"recorded {len(results)} results")
    if batch is not None:
        print(describe(batch))
    return 0


def all_paid(client: BatchClient, batch_id: str) -> list[pb.PayoutResult]:
    """A PAID result for every pending line (demonstrations: the bank's answer, simulated)."""
    return [
        pb.PayoutResult(line_id=line.line_id, state=pb.LINE_STATE_PAID)
        for line in client.lines(batch_id)
        if line.state == pb.LINE_STATE_PENDING
    ]


def read_results(path: Path) -> list[pb.PayoutResult]:
    """The bank's results file: CSV with a header `line_id,state,return_reason`, state PAID or
    RETURNED (the server checks each; a malformed row is named by its line)."""
    results = []
    with path.open(encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.DictReader(handle), start=2):
            state = (row.get("state") or "").strip().upper()
            if state not in (LineState.PAID, LineState.RETURNED) or not row.get("line_id"):
                raise ValueError(f"{path}:{number}: needs a line_id and a state PAID or RETURNED")
            results.append(
                pb.PayoutResult(
                    line_id=row["line_id"].strip(),
                    state=LINE_STATES.to_proto[LineState(state)],
                    return_reason=(row.get("return_reason") or "").strip(),
                )
            )
    return results


_COMMANDS = {
    "create": _create,
    "watch": _watch,
    "get": _get,
    "lines": _lines,
    "approve": _approve,
    "cancel": _cancel,
    "withdraw": _withdraw,
    "confirm-returns": _confirm_returns,
    "status-report": _status_report,
    "export": _export,
    "results": _results,
}
