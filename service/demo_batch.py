"""`make run` finale: one payout batch through the running server, as the finance bureau makes it.

create (with its progress bar) -> approve by a second principal -> export the pain.001 bank file
-> record the bank's results. Each step prints the `benefits batch` command that does the same.
Run again on the same database, the new batch pays nobody twice: it has no lines.
"""
from __future__ import annotations

import argparse
import uuid
from pathlib import Path

import grpc
import yaml

from service.batch_client import FORMATS, all_paid, connected, describe, watch_with_progress
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
    print(f"$ BENEFITS_TOKEN=<finance_operator> {say.format('create')} --policy {args.policy} "
          f"--period {args.period} --request-id {request_id}")
    with connected(args.target, operator) as client:
        batch = client.create(args.policy, args.period, request_id)
        batch = watch_with_progress(client, batch.batch_id)
    print(describe(batch))
    if batch.line_count == 0:
        print("No lines: every eligible enterprise of this policy and period is already granted "
              "(a grant is unique per enterprise, policy and period).")
        return 0
    print(f"\n$ BENEFITS_TOKEN=<finance_approver> {say.format('approve')} {batch.batch_id}")
    with connected(args.target, approver) as client:
        print(describe(client.approve(batch.batch_id)))
    bank_file = args.out / f"{batch.batch_id}.pain001.xml"
    print(f"\n$ BENEFITS_TOKEN=<finance_operator> {say.format('export')} {batch.batch_id} --format pain001 "
          f"--out {bank_file}")
    with connected(args.target, operator) as client:
        data = client.export(batch.batch_id, FORMATS["pain001"])
        bank_file.write_bytes(data)
        print(f"wrote {bank_file}: {len(data):,} bytes, {batch.line_count} credit transfers "
              "(validated against the ISO 20022 XSD by the server)")
        print(f"\n$ BENEFITS_TOKEN=<finance_operator> {say.format('results')} {batch.batch_id} --all-paid"
              "   # the bank's answer, simulated: every line paid")
        print(describe(client.record_results(batch.batch_id, all_paid(client, batch.batch_id))))
    print("\nThe auditor's check of the ledger, every record and the signed checkpoint: make audit-verify")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
