"""`make run` finale: one payout batch through the running server, as the finance bureau makes it.

create (with its progress bar) -> approve by a second principal -> export the pain.001 bank file
-> the bank's pain.002 status report (simulated: one transfer rejected, account closed) -> the
return confirmed by a second principal -> SETTLED. Each step prints the `benefits batch` command
that does the same. Run again on the same database, the new batch pays only the enterprise whose
transfer came back (its grant was released), and nobody twice.
"""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path

import grpc
import yaml

from service import demo_bank
from service.batch_client import FORMATS, connected, describe, watch_with_progress
from service.client import print_error


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--auth-file", type=Path, required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--policy", default="stable-jobs-refund")
    parser.add_argument("--period", type=int, required=True)
    parser.add_argument("--out", type=Path, default=Path("var"))
    args = parser.parse_args()
    tokens = {p["role"]: p["token"] for p in yaml.safe_load(args.auth_file.read_text(encoding="utf-8"))["principals"]}
    operator, approver = tokens["finance_operator"], tokens["finance_approver"]
    try:
        return _cycle(args, operator, approver)
    except grpc.RpcError as exc:
        print_error(exc)
        return 1


def _cycle(args: argparse.Namespace, operator: str, approver: str) -> int:
    request_id = str(uuid.uuid4())
    say = f".venv/bin/benefits batch {{}} --target {args.target}"
    print(
        f"$ BENEFITS_TOKEN=<finance_operator> {say.format('create')} --policy {args.policy} "
        f"--period {args.period} --request-id {request_id}"
    )
    with connected(args.target, operator) as client:
        batch = client.create(args.policy, args.period, request_id)
        batch = watch_with_progress(client, batch.batch_id)
    print(describe(batch))
    if batch.line_count == 0:
        print(
            "No lines: every eligible enterprise of this policy and period is already granted "
            "(a grant is unique per enterprise, policy and period)."
        )
        return 0
    with connected(args.target, operator) as client:
        lines = list(client.lines(batch.batch_id))
    print(
        f"  first line: {lines[0].line_id} {lines[0].uscc} pays {lines[0].payee.account_name}, account "
        f"{lines[0].payee.account_number_masked} ({lines[0].payee.bank_name}), the payee sealed at DRAFT"
    )
    print(f"\n$ BENEFITS_TOKEN=<finance_approver> {say.format('approve')} {batch.batch_id}")
    with connected(args.target, approver) as client:
        print(describe(client.approve(batch.batch_id)))
    bank_file = args.out / f"{batch.batch_id}.pain001.xml"
    print(
        f"\n$ BENEFITS_TOKEN=<finance_operator> {say.format('export')} {batch.batch_id} --format pain001 "
        f"--out {bank_file}"
    )
    with connected(args.target, operator) as client:
        data = client.export(batch.batch_id, FORMATS["pain001"])
        bank_file.write_bytes(data)
        print(
            f"wrote {bank_file}: {len(data):,} bytes, {batch.line_count} credit transfers "
            "(validated against the ISO 20022 XSD by the server)"
        )
        report_file = args.out / f"{batch.batch_id}.pain002.xml"
        rejected = lines[len(lines) // 2].line_id
        report_file.write_bytes(demo_bank.status_report(data, {rejected: "AC04"}))
        print(
            f"\n$ BENEFITS_TOKEN=<finance_operator> {say.format('status-report')} {report_file}"
            f"   # the bank's answer, simulated: every transfer settled but {rejected} (AC04 account closed)"
        )
        answer = client.status_report(batch.batch_id, report_file.read_bytes())
        print(
            f"status report: {answer.paid_count} paid, {answer.rejected_count} rejected (awaiting a second "
            "principal: the grant is not released yet)"
        )
        print(describe(answer.batch))
    print(f"\n$ BENEFITS_TOKEN=<finance_approver> {say.format('confirm-returns')} {batch.batch_id} {rejected}")
    with connected(args.target, approver) as client:
        print(describe(client.confirm_returns(batch.batch_id, [rejected])))
    print("  the returned enterprise's grant is released: the next batch pays it once, to its account then")
    print("\nThe auditor's check of the ledger, every record, every line and the signed checkpoint: make audit-verify")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
