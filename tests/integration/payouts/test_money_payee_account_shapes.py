"""Red-team review: account numbers the registry accepts but the money path cannot carry,
in-process on SQLite and PostgreSQL.

The registry takes any `account_no` of 1-200 characters without control characters
(enterprise_registry/records.py `Text`, used by `BankAccount`). The line stores it in
`grant_award.payee_account_no VARCHAR(64)` (service/payouts/tables.py:96) and pain.001 carries
it in `CdtrAcct/Id/Othr/Id`, an ISO Max34Text.
"""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from testkit.money_fixtures import APPROVER, GIANT, OPERATOR, PAYER, enterprise, title, titled, uscc

from enterprise_registry.importer import load_records
from rules.loader import PolicySet
from service.errors import ServiceError
from service.payouts.batches import approve, create_payout_schema, lines_of
from service.payouts.export import export
from service.payouts.runner import create_batch

TODAY = date(2026, 1, 10)
ODD, PLAIN = uscc(1, "MA4Q"), uscc(2, "MA4Q")
FORTY = "6222" + "071828182845904523536028747135266249"  # 40 characters
SEVENTY = FORTY + "497757247093699959574966967627"  # 70 characters


def _registry(engine: Engine, account: str) -> None:
    create_payout_schema(engine)
    load_records([enterprise(ODD, account), title(ODD, 2025), *titled(PLAIN, 2, 2025)], engine)


def test_an_account_number_pain001_cannot_carry_is_named_by_its_line_when_refused(
    db_engine: Engine, policies: PolicySet
) -> None:
    """FAILS. A 40-character account reaches DRAFT and approval; the export then fails the XSD
    (Max34Text) with FAILED_PRECONDITION "pain.001 does not validate: <string>:54:0:...
    [facet 'maxLength'] The value has a length of '40'..." (service/payouts/export.py:207). The
    message does not hold the number (asserted first: passes with libxml2 2.14), but it names
    neither the line nor the enterprise - only a line of the generated XML - and the line is not
    "payee changed", so ListPayoutLines(payee_changed) does not show it either: the approver has
    nothing to withdraw by, and the batch cannot be exported. Expected: the refusal names the line
    (or the account is refused at DRAFT)."""
    assert len(FORTY) == 40
    _registry(db_engine, FORTY)
    batch = create_batch(
        db_engine, policies, policy_id=GIANT, period=2025, request_id="review-payee-0001", actor=OPERATOR, today=TODAY
    )
    assert batch.state == "DRAFT" and batch.line_count == 2
    approve(db_engine, batch.batch_id, APPROVER)
    with db_engine.connect() as conn:
        odd_line = next(str(line["grant_id"]) for line in lines_of(conn, batch.batch_id) if line["uscc"] == ODD)
    with pytest.raises(ServiceError) as refused:
        export(db_engine, batch.batch_id, PAYER, OPERATOR)
    message = str(refused.value)
    assert FORTY not in message, f"the export refusal quotes the payee's full account number: {message}"
    assert odd_line in message, f"the refusal does not name the line to withdraw: {message}"


def test_an_account_number_longer_than_the_line_column_does_not_wedge_the_batch(
    db_engine: Engine, policies: PolicySet
) -> None:
    """FAILS on PostgreSQL. A 70-character account: the DRAFT transaction's INSERT into
    payee_account_no VARCHAR(64) is refused (StringDataRightTruncation), so the whole batch
    never reaches DRAFT (service/payouts/runner.py `finish`, the insert at 300). Through the
    server see the next test. (SQLite ignores VARCHAR lengths and stores it.)
    Expected: the batch reaches DRAFT; the enterprise with the unusable account is left out (as one
    without an account is) or its line refused, and the other enterprise is paid."""
    assert len(SEVENTY) == 70
    _registry(db_engine, SEVENTY)
    try:
        batch = create_batch(
            db_engine,
            policies,
            policy_id=GIANT,
            period=2025,
            request_id="review-payee-0002",
            actor=OPERATOR,
            today=TODAY,
        )
    except Exception as exc:  # what the background worker meets on every retry
        pytest.fail(f"the batch cannot reach DRAFT: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    assert batch.state == "DRAFT"
    with db_engine.connect() as conn:
        assert PLAIN in {line["uscc"] for line in lines_of(conn, batch.batch_id)}


def test_through_the_server_one_long_account_holds_the_policy_and_period(api_db_url: str, tmp_path: Path) -> None:
    """FAILS on PostgreSQL. The same registry behind a real server (one market_regulation feed
    record is all it takes): the batch stays RUNNING - the worker logs "batch ... failed; it will
    be retried" and retries once the lease runs out, for ever - and holds its running key, so a
    new request for the policy and period is FAILED_PRECONDITION: nobody is paid."""
    import grpc
    from benefits.v1 import payout_service_pb2 as pb
    from testkit.api_fixtures import Stubs, as_role
    from testkit.money_fixtures import money_server

    records = [enterprise(ODD, SEVENTY), title(ODD, 2025), *titled(PLAIN, 2, 2025)]
    with money_server(api_db_url, records, tmp_path) as running:
        stubs = Stubs.connect(running.port)
        try:
            started = stubs.payout.CreatePayoutBatch(
                pb.CreatePayoutBatchRequest(policy_id=GIANT, period=2025, request_id="review-payee-grpc-0001"),
                metadata=as_role("finance_operator"),
                timeout=20,
            )
            deadline = time.monotonic() + 4
            batch = started
            while time.monotonic() < deadline and batch.state == pb.BATCH_STATE_RUNNING:
                time.sleep(0.2)
                batch = stubs.payout.GetPayoutBatch(
                    pb.GetPayoutBatchRequest(batch_id=started.batch_id),
                    metadata=as_role("finance_operator"),
                    timeout=20,
                )
            blocked = None
            if batch.state == pb.BATCH_STATE_RUNNING:
                try:
                    stubs.payout.CreatePayoutBatch(
                        pb.CreatePayoutBatchRequest(policy_id=GIANT, period=2025, request_id="review-payee-grpc-0002"),
                        metadata=as_role("finance_operator"),
                        timeout=20,
                    )
                except grpc.RpcError as err:
                    blocked = f"{err.code()}: {err.details()}"
        finally:
            stubs.channel.close()
    assert batch.state == pb.BATCH_STATE_DRAFT, (
        f"batch {started.batch_id} is still {pb.BatchState.Name(batch.state)} after 4 s; a new request: {blocked}"
    )
