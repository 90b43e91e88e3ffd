"""The payout tables: batches, their candidates while running, and grants (the money)."""
from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Engine

from service.audit.records import create_audit_schema

metadata = MetaData()

payout_batch = Table(
    "payout_batch", metadata,
    Column("batch_id", String(40), primary_key=True),
    Column("request_id", String(100), nullable=False, unique=True),
    Column("policy_id", String(100), nullable=False),
    Column("policy_version", String(50), nullable=False),
    Column("rule_sha256", String(64), nullable=False),
    Column("period", Integer, nullable=False),
    Column("state", String(20), nullable=False),
    # "<policy>/<period>" while RUNNING, NULL after: one running batch per policy and period.
    Column("running_key", String(120), nullable=True, unique=True),
    Column("created_by", String(100), nullable=False),
    Column("created_role", String(40), nullable=False),
    Column("approved_by", String(100), nullable=True),
    Column("created_at", String(40), nullable=False),
    Column("evaluated_on", String(10), nullable=False),    # the day the rules' dates refer to
    # Progress of the background run; the cursor is the last USCC whose evaluation committed.
    Column("enterprise_count", BigInteger, nullable=False, server_default="0"),
    Column("evaluated_count", BigInteger, nullable=False, server_default="0"),
    Column("eligible_count", BigInteger, nullable=False, server_default="0"),
    Column("eligible_fen", BigInteger, nullable=False, server_default="0"),
    Column("error_count", BigInteger, nullable=False, server_default="0"),
    Column("cursor", String(18), nullable=False, server_default=""),
    # The worker holding the run and until when (epoch ms); another may take over after that.
    Column("worker", String(120), nullable=True),
    Column("lease_until", BigInteger, nullable=False, server_default="0"),
    # Set when the batch reaches DRAFT.
    Column("line_count", BigInteger, nullable=False, server_default="0"),
    Column("total_fen", BigInteger, nullable=False, server_default="0"),
    Column("merkle_root", String(64), nullable=False, server_default=""))

# What a running batch found, enterprise by enterprise; committed with the evaluation records
# of the same chunk, so a restart resumes after the last committed enterprise.
payout_candidate = Table(
    "payout_candidate", metadata,
    Column("batch_id", String(40), nullable=False),
    Column("uscc", String(18), nullable=False),
    Column("full_fen", BigInteger, nullable=False),
    # Eligible amounts of the conflict group's policies (JSON {policy_id: fen}), stacked at DRAFT.
    Column("group_awards", Text, nullable=False, server_default="{}"),
    Column("evaluation_id", String(40), nullable=True),
    Column("record_sha256", String(64), nullable=True),
    Column("error", Text, nullable=True),                   # an evaluation that failed: not paid
    PrimaryKeyConstraint("batch_id", "uscc", name="one_candidate_per_batch_enterprise"))

grant = Table(
    "grant_award", metadata,
    Column("grant_id", String(40), primary_key=True),
    Column("uscc", String(18), nullable=False),
    Column("policy_id", String(100), nullable=False),
    Column("period", Integer, nullable=False),
    Column("conflict_group", String(100), nullable=True),
    Column("batch_id", String(40), nullable=False, index=True),
    Column("full_fen", BigInteger, nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("tops_up", String(100), nullable=True),
    Column("evaluation_id", String(40), nullable=False),
    Column("record_sha256", String(64), nullable=False),
    Column("state", String(12), nullable=False, server_default="PENDING"),   # PENDING, PAID, RETURNED
    Column("return_reason", String(200), nullable=True),
    # '' while the grant stands; its own id once the bank returned it, which frees the
    # (enterprise, policy, period) for one new grant after the account is corrected.
    Column("released", String(40), nullable=False, server_default=""),
    # Exactly once: whatever retries, restarts or concurrent calls do.
    UniqueConstraint("uscc", "policy_id", "period", "released", name="one_grant_per_enterprise_policy_period"))


def create_payout_schema(engine: Engine) -> None:
    from service.payouts.export import create_export_schema

    create_audit_schema(engine)
    metadata.create_all(engine)
    create_export_schema(engine)
