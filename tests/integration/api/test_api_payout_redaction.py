"""Red-team review: nothing sensitive in the log of a real `benefits serve` (a child process; its
log is the file it writes) or in any error or verification it returns, across the payout calls,
on SQLite and PostgreSQL.

The walk: a batch reaches DRAFT; a feed changes one enterprise's account; the export is refused
for the changed payee; the changed lines are listed and withdrawn; the rest is exported; status
reports with bad content are refused; results with a NUL line id and an over-long return reason
(both INTERNAL on PostgreSQL, so the failure reaches the log with its traceback); an attacker
rewrites a line's payee and the stored bank file; VerifyAuditLog and `benefits audit verify`
report them. No account number (old, new, forged), tax figure or token may appear in the log,
in an error's details or debug string, or in a verification report.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path

import grpc
import pytest
from benefits.v1 import payout_service_pb2 as pb
from benefits.v1 import registry_service_pb2
from sqlalchemy import update
from testkit.api_fixtures import (
    TAX_FEED_TOKEN,
    TOKENS,
    Stubs,
    as_role,
    bearer,
    load_registry,
    tax_record,
    write_auth_file,
)
from testkit.grpc_stubs import debuggable
from testkit.money_fixtures import GIANT, Money, enterprise, pain002, title, uscc, write_payers
from testkit.server_process import server_process

from enterprise_registry.db import make_engine
from service import cli
from service.payouts.tables import grant, payout_export

E = [uscc(n, "MA4X") for n in (1, 2, 3)]
ACCOUNTS = ["6222031415926535897", "6222027182818284590", "6222016180339887498"]
NEW_ACCOUNT = "6222014142135623730"
FORGED_ACCOUNT = "6222017320508075688"
TAX_PAID_FEN = 736251849302
SECRET_TOKEN = "unknown-secret-token-9b2d7e4c10"


def _records() -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for code, account in zip(E, ACCOUNTS):
        out += [enterprise(code, account), title(code, 2025), tax_record(code, tax_paid_fen=TAX_PAID_FEN)]
    return out


def _failure(call: Callable[[], object]) -> str:
    try:
        call()
    except grpc.RpcError as err:
        seen = debuggable(err)
        return f"{seen.code()} {seen.details()} {seen.debug_error_string()}"
    return "OK"


def _export_csv(stubs: Stubs, batch_id: str, metadata: list[tuple[str, str]]) -> list[pb.ExportPayoutBatchResponse]:
    return list(
        stubs.payout.ExportPayoutBatch(
            pb.ExportPayoutBatchRequest(batch_id=batch_id, format=pb.EXPORT_FORMAT_CSV), metadata=metadata, timeout=20
        )
    )


def test_no_account_tax_figure_or_token_leaks_along_the_payout_path(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_registry(db_url, _records())
    log_file = tmp_path / "server.log"
    said: list[str] = []
    with server_process(
        db_url,
        write_auth_file(tmp_path / "auth.yaml"),
        log_file,
        "--payers",
        str(write_payers(tmp_path)),
        "--batch-chunk",
        "2",
    ) as (_, port):
        stubs = Stubs.connect(port)
        try:
            money = Money(stubs)
            batch = money.create(GIANT, 2025, "review-redact-0001")
            assert batch.line_count == 3
            lines = {line.uscc: line.line_id for line in money.lines(batch.batch_id)}
            moved = stubs.registry.ImportFacts(
                iter(
                    [
                        registry_service_pb2.ImportFactsRequest(
                            record_json=json.dumps(
                                enterprise(E[0], NEW_ACCOUNT, as_of="2026-01-15"), ensure_ascii=False
                            )
                        )
                    ]
                ),
                metadata=as_role("registry_feed"),
                timeout=30,
            )
            assert moved.stored_count == 1
            money.approve(batch.batch_id)
            refused = _failure(lambda: money.export(batch.batch_id))
            assert "FAILED_PRECONDITION" in refused and lines[E[0]] in refused
            said.append(refused)
            said.append(str(money.lines(batch.batch_id, payee_changed=True)))
            said.append(str(money.lines(batch.batch_id)))
            said.append(str(money.withdraw(batch.batch_id, [lines[E[0]]], "账户变更")))
            said.append(str(money.export(batch.batch_id, "csv")[:0]))
            msg = "MSG" + batch.batch_id[3:]
            for data in (
                pain002(msg, [("pb_unknown-000001", "ACSC", None)]),
                pain002("MSG000000000000000000000000", [(lines[E[1]], "ACSC", None)]),
                pain002(msg, [(lines[E[1]], "XXXX", None)]),
                b"<Document><unclosed>",
                pain002(msg, [(lines[E[0]], "ACSC", None)]),
            ):  # a withdrawn line
                said.append(_failure(partial(money.status_report, batch.batch_id, data)))
            said.append(_failure(lambda: money.results(batch.batch_id, [(lines[E[1]] + "\x00", "PAID", "")])))
            long_reason = "AC04" + "x" * 296
            said.append(_failure(lambda: money.results(batch.batch_id, [(lines[E[2]], "RETURNED", long_reason)])))
            said.append(_failure(lambda: money.results(batch.batch_id, [(lines[E[0]], "PAID", "")])))
            for metadata in (bearer(SECRET_TOKEN), [("authorization", SECRET_TOKEN)], bearer(TAX_FEED_TOKEN)):
                said.append(_failure(partial(_export_csv, stubs, batch.batch_id, metadata)))
            # The attacker: a line's payee and the stored bank file rewritten.
            engine = make_engine(db_url)
            try:
                with engine.begin() as conn:
                    conn.execute(
                        update(grant)
                        .where(grant.c.grant_id == lines[E[1]])
                        .values(payee_account_no=FORGED_ACCOUNT, payee_name="伪造收款人")
                    )
                    conn.execute(
                        update(payout_export)
                        .where(payout_export.c.batch_id == batch.batch_id)
                        .values(csv=b"forged," + FORGED_ACCOUNT.encode())
                    )
            finally:
                engine.dispose()
            verdict = money.verify()
            assert not verdict.valid and {p.row for p in verdict.problems} >= {lines[E[1]], batch.batch_id}
            said.append(str(verdict))
        finally:
            stubs.channel.close()
    assert cli.main(["audit", "verify", "--db", db_url]) != 0
    said.append(capsys.readouterr().out)
    log = log_file.read_text(encoding="utf-8")
    secrets = {
        **{f"account {a}": a for a in [*ACCOUNTS, NEW_ACCOUNT, FORGED_ACCOUNT]},
        "tax figure": str(TAX_PAID_FEN),
        "unknown token": SECRET_TOKEN,
        "tax feed token": TAX_FEED_TOKEN,
        **{f"{role} token": token for role, token in TOKENS.items()},
    }
    for what, secret in secrets.items():
        assert secret not in log, f"the server log holds the {what}"
        for text in said:
            assert secret not in text, f"a reply holds the {what}: {text[:300]}"
