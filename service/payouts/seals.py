"""The money path sealed in the ledger: one entry per money event, in the transaction that makes
the change, with its actor.

An event's entry (kind `payout`) holds the batch as it now stands (`SEALED_BATCH_COLUMNS`) and,
when lines changed, the RFC 6962 Merkle root of the changed lines' leaves in line-id order. Each
leaf (the canonical JSON of every column of the line) is also stored in `payout_line_seal`
beside its position, so that verification can say which row was altered: the newest seal of
every line must equal the live line, and the seals of each entry must give its root. One entry
per event, never one per line, so a batch of a million lines stays one transaction of bounded
cost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from enum import StrEnum
from typing import Any

import orjson
from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from service.audit import signatures
from service.audit.canonical import canonical_json, sha256_hex
from service.audit.ledger import LedgerEntry, append, ledger_entry
from service.audit.merkle import RootBuilder
from service.audit.records import Actor
from service.payouts.tables import SEALED_BATCH_COLUMNS, grant, in_lists, payout_batch, payout_line_seal

MONEY_EVENT_KIND = "payout"
LINE_COLUMNS = tuple(str(column.name) for column in grant.columns)  # plain str: canonical JSON keys
# Never written into a verification report: they identify the payee's bank account.
PRIVATE_LINE_COLUMNS = frozenset({"payee_account_no", "payee_name"})
_ROWS_PER_INSERT = 1000
_LINES_PER_PAGE = 5000


class MoneyEvent(StrEnum):
    START = "start"  # a RUNNING batch was created
    DRAFT = "draft"  # its lines (and payees) were written
    APPROVE = "approve"
    WITHDRAW = "withdraw"  # lines taken out before export
    CANCEL = "cancel"
    EXPORT = "export"  # the bank files' SHA-256
    RESULTS = "results"  # the bank's answers (PAID, RETURN_PENDING)
    CONFIRM_RETURNS = "confirm_returns"  # returns confirmed by a second principal: grants released


def line_leaf(line: Mapping[str, Any]) -> bytes:
    """The Merkle leaf of a line: the canonical JSON of all its columns."""
    return canonical_json({column: line[column] for column in LINE_COLUMNS})


def export_digest(message_id: str, csv_bytes: bytes, xml: bytes, exported_at: str) -> dict[str, str]:
    """What the ledger seals of a stored export."""
    return {
        "message_id": message_id,
        "csv_sha256": sha256_hex(csv_bytes),
        "pain001_sha256": sha256_hex(xml),
        "exported_at": exported_at,
    }


def batch_snapshot(connection: Connection, batch_id: str) -> dict[str, Any]:
    row = connection.execute(
        select(*(payout_batch.c[c] for c in SEALED_BATCH_COLUMNS)).where(payout_batch.c.batch_id == batch_id)
    ).one()
    return {column: row._mapping[column] for column in SEALED_BATCH_COLUMNS}


def read_lines(connection: Connection, line_ids: Iterable[str]) -> list[dict[str, Any]]:
    """Lines by id, as stored (in id order)."""
    out: list[dict[str, Any]] = []
    for chunk in in_lists(sorted(set(line_ids))):
        out += [dict(r._mapping) for r in connection.execute(select(grant).where(grant.c.grant_id.in_(chunk)))]
    return sorted(out, key=lambda line: str(line["grant_id"]))


def unsealed(connection: Connection, lines: Sequence[Mapping[str, Any]]) -> list[str]:
    """The ids of those lines that differ from their newest seal (or have none): rows someone
    changed outside a money event. The money path consults this before it acts on a line (pays
    it, or pays an enterprise again because its earlier grant is released)."""
    by_id = {str(line["grant_id"]): line for line in lines}
    newest: dict[str, tuple[int, str]] = {}
    ids = sorted(by_id)
    for chunk in in_lists(ids):
        for line_id, seq, leaf in connection.execute(
            select(payout_line_seal.c.line_id, payout_line_seal.c.ledger_seq, payout_line_seal.c.leaf).where(
                payout_line_seal.c.line_id.in_(chunk)
            )
        ):
            if line_id not in newest or seq > newest[line_id][0]:
                newest[line_id] = (seq, leaf)
    return [
        line_id for line_id in ids if line_id not in newest or newest[line_id][1] != line_leaf(by_id[line_id]).decode()
    ]


def money_event(connection: Connection, batch_id: str, event: MoneyEvent) -> tuple[int, dict[str, Any]] | None:
    """(seq, payload) of the batch's first ledger entry of `event`, or None."""
    for seq, payload in connection.execute(
        select(ledger_entry.c.seq, ledger_entry.c.payload)
        .where(ledger_entry.c.kind == MONEY_EVENT_KIND, ledger_entry.c.payload.contains(f'"batch_id":"{batch_id}"'))
        .order_by(ledger_entry.c.seq)
    ):
        found: dict[str, Any] = orjson.loads(payload)
        if found.get("batch_id") == batch_id and found.get("event") == event:
            return int(seq), found
    return None


def sealed_export(connection: Connection, batch_id: str) -> dict[str, Any] | None:
    """What the batch's export event sealed of its bank files (`export_digest`), or None."""
    found = money_event(connection, batch_id, MoneyEvent.EXPORT)
    return None if found is None else dict(found[1]["export"])


def seal_event(
    connection: Connection,
    event: MoneyEvent,
    batch_id: str,
    actor: Actor,
    *,
    lines: Sequence[Mapping[str, Any]] = (),
    **details: Any,
) -> LedgerEntry:
    """Seal a money event inside the caller's ledger transaction, after its change was written.

    `lines`: the lines the event changed, with all their columns as now stored. `details`: what
    else the event says (a reason, the exported files' hashes); canonical-JSON values only.
    """
    ordered = sorted(lines, key=lambda line: str(line["grant_id"]))
    return _seal(connection, event, batch_id, actor, lambda: iter([ordered] if ordered else []), details)


def seal_batch_lines(
    connection: Connection, event: MoneyEvent, batch_id: str, actor: Actor, **details: Any
) -> LedgerEntry:
    """`seal_event` for every line of the batch as stored, read a page at a time (twice: for
    the root, then for the seal rows), so that the DRAFT of a batch of any size holds one page
    of lines in memory, not all of them."""
    return _seal(connection, event, batch_id, actor, lambda: _line_pages(connection, batch_id), details)


def _seal(
    connection: Connection,
    event: MoneyEvent,
    batch_id: str,
    actor: Actor,
    pages: Callable[[], Iterator[Sequence[Mapping[str, Any]]]],
    details: Mapping[str, Any],
) -> LedgerEntry:
    # `pages()` gives the same lines in the same (line id) order each time it is called.
    builder = RootBuilder()
    for page in pages():
        for line in page:
            builder.add(line_leaf(line))
    payload: dict[str, Any] = {
        "event": event.value,
        "batch_id": batch_id,
        "actor": {"principal": actor.principal, "role": actor.role},
        "batch": batch_snapshot(connection, batch_id),
        **details,
    }
    if builder.count:
        payload["lines"] = {"count": builder.count, "root": builder.root().hex()}
    entry = append(connection, MONEY_EVENT_KIND, payload)
    signatures.sign(connection, entry)  # by the ledger key: an entry appended without it is refused
    index = 0
    for page in pages():
        rows = [
            {
                "ledger_seq": entry.seq,
                "leaf_index": index + offset,
                "batch_id": batch_id,
                "line_id": str(line["grant_id"]),
                "leaf": line_leaf(line).decode(),
            }
            for offset, line in enumerate(page)
        ]
        index += len(rows)
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            connection.execute(insert(payout_line_seal), rows[start : start + _ROWS_PER_INSERT])
    if index != builder.count:
        raise RuntimeError(f"batch {batch_id}: its lines changed while they were sealed")
    return entry


def _line_pages(connection: Connection, batch_id: str) -> Iterator[list[dict[str, Any]]]:
    """The batch's lines as stored, in line id order, `_LINES_PER_PAGE` at a time."""
    last = ""
    while True:
        page = [
            dict(r._mapping)
            for r in connection.execute(
                select(grant)
                .where(grant.c.batch_id == batch_id, grant.c.grant_id > last)
                .order_by(grant.c.grant_id)
                .limit(_LINES_PER_PAGE)
            )
        ]
        if not page:
            return
        yield page
        last = str(page[-1]["grant_id"])
