"""The payout tables: batches, their candidates while running, lines (grants: the money), the
seals of the lines in the ledger, and the stored bank files."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Engine

from enterprise_registry.kinds import MAX_TEXT  # the registry's bound of what a payee field holds
from service.audit.ledger import create_append_only_triggers
from service.audit.records import create_audit_schema
from service.payouts.states import LineState

metadata = MetaData()
IN_LIST_SIZE = 500  # values per IN (...) list: well within every database's limits
MAX_REASON_LENGTH = 500  # a cancellation's or withdrawal's reason
MAX_RETURN_REASON_LENGTH = 200  # the bank's reason for a return (code and text)

payout_batch = Table(
    "payout_batch",
    metadata,
    Column("batch_id", String(40), primary_key=True),
    Column("request_id", String(100), nullable=False, unique=True),
    Column("policy_id", String(100), nullable=False),
    Column("policy_version", String(50), nullable=False),
    Column("rule_sha256", String(64), nullable=False),
    Column("period", Integer, nullable=False),
    Column("state", String(20), nullable=False),
    # "<exclusion family>/<period>" while RUNNING, NULL after: one running batch per policy (and
    # the policies it excludes) and period.
    Column("running_key", String(400), nullable=True, unique=True),
    Column("created_by", String(100), nullable=False),
    Column("created_role", String(40), nullable=False),
    Column("approved_by", String(100), nullable=True),
    Column("created_at", String(40), nullable=False),
    Column("evaluated_on", String(10), nullable=False),  # the day the rules' dates refer to
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
    # Set when the batch reaches DRAFT; line count and total change when lines are withdrawn.
    Column("line_count", BigInteger, nullable=False, server_default="0"),
    Column("total_fen", BigInteger, nullable=False, server_default="0"),
    Column("merkle_root", String(64), nullable=False, server_default=""),
    Column("cancelled_by", String(100), nullable=True),
    Column("cancel_reason", String(MAX_REASON_LENGTH), nullable=True),
    # The conflict group's other policies as the batch started ([[policy_id, rule_sha256], ...]):
    # every run of the batch stacks against these texts, whatever the rules were reloaded to.
    Column("rival_rules", Text, nullable=False, server_default="[]"),
)

# The columns of a batch that the ledger seals with every money event (`seals.batch_snapshot`);
# the progress columns of a running batch change with every chunk and decide no money.
SEALED_BATCH_COLUMNS = (
    "batch_id",
    "request_id",
    "policy_id",
    "policy_version",
    "rule_sha256",
    "period",
    "state",
    "created_by",
    "created_role",
    "approved_by",
    "created_at",
    "evaluated_on",
    "line_count",
    "total_fen",
    "merkle_root",
    "cancelled_by",
    "cancel_reason",
    "rival_rules",
)

# What a running batch found, enterprise by enterprise; committed with the evaluation records
# of the same chunk, so a restart resumes after the last committed enterprise.
payout_candidate = Table(
    "payout_candidate",
    metadata,
    Column("batch_id", String(40), nullable=False),
    Column("uscc", String(18), nullable=False),
    Column("full_fen", BigInteger, nullable=False),
    # Eligible amounts of the conflict group's policies (JSON {policy_id: fen}), stacked at DRAFT.
    Column("group_awards", Text, nullable=False, server_default="{}"),
    Column("evaluation_id", String(40), nullable=True),
    Column("record_sha256", String(64), nullable=True),
    Column("error", Text, nullable=True),  # an evaluation that failed: not paid
    PrimaryKeyConstraint("batch_id", "uscc", name="one_candidate_per_batch_enterprise"),
)

# A running batch's share of the registry: the enterprises after `after_uscc` up to `last_uscc`
# (NULL: to the end), each with its own cursor and lease, so that worker processes run partitions
# side by side and a dead worker's partition resumes after its last committed chunk.
payout_partition = Table(
    "payout_partition",
    metadata,
    Column("batch_id", String(40), nullable=False),
    Column("partition_no", Integer, nullable=False),
    Column("after_uscc", String(18), nullable=False),
    Column("last_uscc", String(18), nullable=True),
    Column("cursor", String(18), nullable=False),  # the last USCC whose chunk committed
    Column("done", Integer, nullable=False, server_default="0"),
    Column("worker", String(120), nullable=True),
    Column("lease_until", BigInteger, nullable=False, server_default="0"),
    PrimaryKeyConstraint("batch_id", "partition_no", name="one_row_per_batch_partition"),
)

# A line of a batch: one grant. Every column is sealed (`seals.line_leaf`).
grant = Table(
    "grant_award",
    metadata,
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
    # The payee as read from the registry when the batch reached DRAFT: approved, then paid.
    Column("payee_name", String(MAX_TEXT), nullable=False),
    Column("payee_account_no", String(MAX_TEXT), nullable=False),
    Column("payee_bank", String(MAX_TEXT), nullable=False),
    Column("state", String(20), nullable=False, server_default=LineState.PENDING.value),
    Column("return_reason", String(MAX_RETURN_REASON_LENGTH), nullable=True),
    Column("result_by", String(100), nullable=True),  # who recorded the bank's result
    Column("confirmed_by", String(100), nullable=True),  # who confirmed a return (never the recorder)
    Column("withdraw_reason", String(MAX_REASON_LENGTH), nullable=True),
    # '' while the grant stands; its own id once released (returned and confirmed, withdrawn or
    # cancelled), which frees the (enterprise, policy, period) for one new grant.
    Column("released", String(40), nullable=False, server_default=""),
    # Exactly once: whatever retries, restarts or concurrent calls do.
    UniqueConstraint("uscc", "policy_id", "period", "released", name="one_grant_per_enterprise_policy_period"),
)

# Each line as a money event sealed it: the leaves under the Merkle root in that event's ledger
# entry, in order. A line's newest seal must equal the live line. Append-only, like the ledger.
payout_line_seal = Table(
    "payout_line_seal",
    metadata,
    Column("ledger_seq", BigInteger, nullable=False),
    Column("leaf_index", Integer, nullable=False),
    Column("batch_id", String(40), nullable=False),
    Column("line_id", String(40), nullable=False),
    Column("leaf", Text, nullable=False),
    PrimaryKeyConstraint("ledger_seq", "leaf_index", name="one_leaf_per_seal_position"),
    Index("ix_payout_line_seal_line", "line_id", "ledger_seq"),
)

# The first export of a batch, kept: a re-export returns the same bytes, so a message id or an
# end-to-end id is never issued twice. Its files' SHA-256 are sealed by the export event.
payout_export = Table(
    "payout_export",
    metadata,
    Column("batch_id", String(40), primary_key=True),
    Column("message_id", String(35), nullable=False, unique=True),
    Column("csv", LargeBinary, nullable=False),
    Column("pain001", LargeBinary, nullable=False),
    Column("exported_at", String(40), nullable=False),
)


def create_payout_schema(engine: Engine) -> None:
    create_audit_schema(engine)
    metadata.create_all(engine)
    with engine.begin() as conn:
        create_append_only_triggers(conn, payout_line_seal.name)


_T = TypeVar("_T")


def in_lists(values: Sequence[_T]) -> Iterator[Sequence[_T]]:
    """`values` a chunk at a time, for queries of the form `column IN (...)`."""
    for start in range(0, len(values), IN_LIST_SIZE):
        yield values[start : start + IN_LIST_SIZE]
