"""A real `benefits serve` (a child process; its log is read from the file it writes), on SQLite
and PostgreSQL: a bank account, a tax figure and tokens appear neither in its log nor in the
errors it returns, even when the database refuses a write and the error reaches the log."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import grpc
from benefits.v1 import registry_service_pb2
from sqlalchemy import text
from testkit.api_fixtures import (
    BANK,
    TAX_FEED_TOKEN,
    TOKENS,
    Stubs,
    as_role,
    bearer,
    enterprise_record,
    import_facts,
    load_registry,
    rpc_error,
    tax_record,
    write_auth_file,
)
from testkit.grpc_stubs import debuggable
from testkit.server_process import server_process

from enterprise_registry.db import make_engine
from enterprise_registry.uscc import make

ACCOUNT = "6222021803009876543"  # recognisable bank account number
TAX_PAID_FEN = 918273645546  # recognisable tax figure
SECRET_TOKEN = "unknown-secret-token-7f3a9c2e51"
FIRST, SECOND = make("91420600MA4K70001"), make("91420600MA4K70002")
REFERENCE = re.compile(r"^internal error \(reference ([0-9a-f]{12})\)$")


def _reply(err: grpc.RpcError) -> str:
    """What a client sees of an error: its details and its debug string."""
    seen = debuggable(err)
    return f"{seen.details()} {seen.debug_error_string()}"


def _internal_reference(err: grpc.RpcError) -> str:
    assert err.code() == grpc.StatusCode.INTERNAL, (err.code(), err.details())
    match = REFERENCE.match(err.details() or "")
    assert match, err.details()
    return match.group(1)


def test_no_account_tax_figure_or_token_in_the_log_or_the_errors(db_url: str, tmp_path: Path) -> None:
    load_registry(db_url, [])  # the schema only: the feed below brings the one account
    # Stand-ins for a constraint the schema does not have, so that the database itself refuses
    # a second enterprise with the same account and a second tax record with the same figure,
    # and PostgreSQL's DETAIL would name the value (`Key (bank_account_no)=(...) already exists`).
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("create unique index uq_redact_account on enterprise (bank_account_no)"))
            conn.execute(text("create unique index uq_redact_tax on tax_year (tax_paid_fen)"))
    finally:
        engine.dispose()
    account = {**BANK, "account_no": ACCOUNT}
    log_file = tmp_path / "server.log"
    replies: list[str] = []
    with server_process(db_url, write_auth_file(tmp_path / "auth.yaml"), log_file) as (_, port):
        stubs = Stubs.connect(port)
        try:
            first = import_facts(
                stubs,
                [enterprise_record(FIRST, bank_account=account), tax_record(FIRST, tax_paid_fen=TAX_PAID_FEN)],
                as_role("registry_feed"),
            )
            assert (first.stored_count, list(first.rejects)) == (2, [])
            references = []
            for records, token in (
                ([enterprise_record(SECOND, bank_account=account)], TOKENS["registry_feed"]),
                ([tax_record(SECOND, tax_paid_fen=TAX_PAID_FEN)], TAX_FEED_TOKEN),
            ):
                err = rpc_error(partial(import_facts, stubs, records, bearer(token)))
                references.append(_internal_reference(err))
                replies.append(_reply(err))
            for metadata in (
                bearer(SECRET_TOKEN),
                [("authorization", f"bearer {SECRET_TOKEN}")],
                [("authorization", SECRET_TOKEN)],
            ):
                err = rpc_error(
                    partial(
                        stubs.registry.GetEnterprise,
                        registry_service_pb2.GetEnterpriseRequest(uscc=FIRST),
                        metadata=metadata,
                        timeout=20,
                    )
                )
                assert err.code() == grpc.StatusCode.UNAUTHENTICATED
                replies.append(_reply(err))
            # Nothing of the refused enterprise was stored.
            err = rpc_error(
                lambda: stubs.registry.GetEnterprise(
                    registry_service_pb2.GetEnterpriseRequest(uscc=SECOND), metadata=as_role("auditor"), timeout=20
                )
            )
            assert err.code() == grpc.StatusCode.NOT_FOUND
        finally:
            stubs.channel.close()
    log = log_file.read_text(encoding="utf-8")
    # The failures did reach the log, with their references, class and primary message ...
    for reference in references:
        assert f"internal error {reference}: " in log
    constraint = "uq_redact_account" if db_url.startswith("postgresql") else "enterprise.bank_account_no"
    assert constraint in log and "Traceback (most recent call last)" in log
    # ... and nothing that identifies money, accounts or callers.
    secrets = {
        "account": ACCOUNT,
        "tax figure": str(TAX_PAID_FEN),
        "unknown token": SECRET_TOKEN,
        "tax feed token": TAX_FEED_TOKEN,
        **{f"{role} token": t for role, t in TOKENS.items()},
    }
    for what, secret in secrets.items():
        assert secret not in log, f"the server log holds the {what}"
        for reply in replies:
            assert secret not in reply, f"an error returned holds the {what}: {reply}"
    assert "DETAIL" not in log and "already exists" not in log
