"""Evaluation records: every evaluation stored with its facts and rule text, chained in the ledger,
and replayable under the exact policy text that made it.

Each record is canonical JSON; the ledger entry of kind "evaluation" holds the record's SHA-256,
so editing a stored record (or the facts or rule text it points to) is caught by `verify_records`
even when the ledger itself is intact.
"""
from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import orjson
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, Text, insert, or_, select
from sqlalchemy.engine import Connection, Engine

from rules.evaluator import Evaluation, evaluate
from rules.facts import Catalogue, Fact, FactsDocument, Record
from rules.loader import LoadedPolicy, load_policy_text
from service.audit.canonical import canonical_json, sha256_hex
from service.audit.ledger import Fault, append_many, create_ledger_schema, ledger_entry, ledger_transaction
from service.audit.problems import AuditProblem

SERVICE_VERSION = "benefits 0.1.0"
metadata = MetaData()

policy_version = Table(
    "policy_version", metadata,
    Column("rule_sha256", String(64), primary_key=True),
    Column("policy_id", String(100), nullable=False),
    Column("version", String(50), nullable=False),
    Column("source", Text, nullable=False),
    Column("first_seen", String(40), nullable=False))

facts_snapshot = Table(
    "facts_snapshot", metadata,
    Column("facts_sha256", String(64), primary_key=True),
    Column("document", Text, nullable=False))

evaluation_record = Table(
    "evaluation_record", metadata,
    Column("evaluation_id", String(40), primary_key=True),
    Column("uscc", String(18), nullable=False, index=True),
    Column("policy_id", String(100), nullable=False, index=True),
    Column("period", Integer, nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("batch_id", String(40), nullable=True, index=True),
    Column("record", Text, nullable=False),
    Column("record_sha256", String(64), nullable=False),
    Column("ledger_seq", BigInteger, nullable=False, unique=True))


@dataclass(frozen=True)
class Actor:
    principal: str
    role: str


@dataclass(frozen=True)
class ReplayResult:
    identical: bool
    replayed: Evaluation
    differences: list[str]


def create_audit_schema(engine: Engine) -> None:
    from service.audit.signatures import create_signature_schema

    create_ledger_schema(engine)
    create_signature_schema(engine)
    metadata.create_all(engine)


def remember_policy(connection: Connection, policy: LoadedPolicy) -> None:
    """Store a loaded policy version by the hash of its bytes (once)."""
    known = connection.execute(select(policy_version.c.rule_sha256)
                               .where(policy_version.c.rule_sha256 == policy.sha256)).first()
    if known is None:
        connection.execute(insert(policy_version).values(
            rule_sha256=policy.sha256, policy_id=policy.id, version=policy.version,
            source=policy.source, first_seen=_now()))


def record_evaluation(engine: Engine, evaluation: Evaluation, document: FactsDocument,
                      policy: LoadedPolicy, actor: Actor, *, batch_id: str | None = None) -> str:
    """Store one evaluation with its facts and rule text and chain it in the ledger; its id."""
    return record_with_hash(engine, evaluation, document, policy, actor, batch_id=batch_id)[0]


def record_with_hash(engine: Engine, evaluation: Evaluation, document: FactsDocument,
                     policy: LoadedPolicy, actor: Actor, *, batch_id: str | None = None) -> tuple[str, str]:
    """As `record_evaluation`, also returning the record's SHA-256 (a batch's Merkle leaf)."""
    prepared = prepare_record(evaluation, document, actor, batch_id=batch_id)
    with ledger_transaction(engine) as conn:
        write_records(conn, policy, [prepared])
    return prepared.evaluation_id, prepared.record_sha256


@dataclass(frozen=True)
class PreparedRecord:
    """An evaluation record encoded and hashed, ready to be written (see `write_records`)."""
    evaluation: Evaluation
    evaluation_id: str
    batch_id: str | None
    record_json: str
    record_sha256: str
    facts_json: str
    facts_sha256: str


def prepare_record(evaluation: Evaluation, document: FactsDocument, actor: Actor, *,
                   batch_id: str | None = None, payout_note: str | None = None) -> PreparedRecord:
    """Encode one evaluation's record outside any transaction (the costly part). `payout_note`
    says why a batch does not pay an eligible enterprise (it holds an excluded grant)."""
    facts_json = canonical_json(document_to_json(document)).decode()
    facts_sha = sha256_hex(facts_json.encode())
    evaluation_id = "ev_" + uuid.uuid4().hex  # random: concurrent records never collide
    record = {"evaluation_id": evaluation_id, "evaluation": evaluation.to_dict(),
              "facts_sha256": facts_sha, "service_version": SERVICE_VERSION,
              "actor": {"principal": actor.principal, "role": actor.role},
              "batch_id": batch_id, "recorded_at": _now()}
    if payout_note:
        record["payout_note"] = payout_note
    record_json = canonical_json(record).decode()
    return PreparedRecord(evaluation, evaluation_id, batch_id, record_json, sha256_hex(record_json.encode()),
                          facts_json, facts_sha)


def write_records(connection: Connection, policy: LoadedPolicy, prepared: list[PreparedRecord]) -> None:
    """Store prepared records of one policy and chain them in the ledger, inside the caller's
    `ledger_transaction` (so they commit, or vanish, with whatever else it writes)."""
    if not prepared:
        return
    remember_policy(connection, policy)
    wanted = {p.facts_sha256: p.facts_json for p in prepared}
    known: set[str] = set()
    digests = sorted(wanted)
    for start in range(0, len(digests), 500):
        known.update(connection.execute(select(facts_snapshot.c.facts_sha256).where(
            facts_snapshot.c.facts_sha256.in_(digests[start:start + 500]))).scalars())
    new = [{"facts_sha256": d, "document": wanted[d]} for d in digests if d not in known]
    if new:
        connection.execute(insert(facts_snapshot), new)
    entries = append_many(connection, [
        ("evaluation", {"evaluation_id": p.evaluation_id, "record_sha256": p.record_sha256,
                        "facts_sha256": p.facts_sha256, "rule_sha256": p.evaluation.rule_sha256})
        for p in prepared])
    connection.execute(insert(evaluation_record), [
        {"evaluation_id": p.evaluation_id, "uscc": p.evaluation.uscc, "policy_id": p.evaluation.policy_id,
         "period": p.evaluation.period, "outcome": p.evaluation.outcome, "amount_fen": p.evaluation.amount_fen,
         "batch_id": p.batch_id, "record": p.record_json, "record_sha256": p.record_sha256,
         "ledger_seq": entry.seq}
        for p, entry in zip(prepared, entries, strict=True)])


def load_record(connection: Connection, evaluation_id: str) -> dict[str, Any] | None:
    row = connection.execute(select(evaluation_record.c.record)
                             .where(evaluation_record.c.evaluation_id == evaluation_id)).first()
    return orjson.loads(row.record) if row else None


def verify_records(connection: Connection, *, limit: int = 100) -> list[AuditProblem]:
    """Every evaluation entry of the ledger has its stored record and every record its entry;
    each record, its filter columns, facts snapshot and rule text still match what the ledger
    holds. The problems found (at most `limit`), in ledger order, then records without entry."""
    problems: list[AuditProblem] = []
    texts_ok: dict[str, bool] = {}   # facts snapshot or rule text, by its SHA-256: each checked once
    sealed_by = evaluation_record.c.ledger_seq == ledger_entry.c.seq
    query = (select(ledger_entry.c.seq, ledger_entry.c.payload, evaluation_record)
             .select_from(ledger_entry.outerjoin(evaluation_record, sealed_by))
             .where(ledger_entry.c.kind == "evaluation").order_by(ledger_entry.c.seq))
    for row in connection.execution_options(stream_results=True, yield_per=2000).execute(query):
        sealed = orjson.loads(row.payload)
        problem = _record_problem(connection, row, sealed, texts_ok)
        if problem is not None:
            problems.append(problem)
            if len(problems) >= limit:
                return problems
    orphans = (select(evaluation_record.c.evaluation_id, evaluation_record.c.ledger_seq)
               .select_from(evaluation_record.outerjoin(ledger_entry, sealed_by))
               .where(or_(ledger_entry.c.seq.is_(None), ledger_entry.c.kind != "evaluation"))
               .order_by(evaluation_record.c.ledger_seq).limit(max(limit - len(problems), 0)))
    for evaluation_id, seq in connection.execute(orphans):
        problems.append(AuditProblem(evaluation_record.name, evaluation_id, Fault.INSERTED, 0,
                                     f"record claims ledger entry {seq}, which is no evaluation entry"))
    return problems


def _record_problem(conn: Connection, row: Any, sealed: dict[str, Any],
                    texts_ok: dict[str, bool]) -> AuditProblem | None:
    evaluation_id, seq = str(sealed.get("evaluation_id")), int(row.seq)

    def problem(fault: Fault, detail: str) -> AuditProblem:
        return AuditProblem(evaluation_record.name, evaluation_id, fault, seq, detail)

    if row.evaluation_id is None:
        return problem(Fault.DELETED, f"ledger entry {seq} seals this evaluation; its stored record is missing")
    if row.evaluation_id != evaluation_id or sha256_hex(row.record.encode()) != sealed.get("record_sha256"):
        return problem(Fault.EDITED, f"the stored record differs from ledger entry {seq}")
    record = orjson.loads(row.record)
    evaluation = record["evaluation"]
    expected = {"uscc": evaluation["uscc"], "policy_id": evaluation["policy_id"], "period": evaluation["period"],
                "outcome": evaluation["outcome"], "amount_fen": evaluation["amount_fen"],
                "batch_id": record.get("batch_id"), "record_sha256": sealed.get("record_sha256")}
    changed = [f"{column} is {getattr(row, column)!r}, sealed {value!r}" for column, value in expected.items()
               if getattr(row, column) != value]
    if changed:
        return problem(Fault.EDITED, "; ".join(changed) + f" (ledger entry {seq})")
    for what, table, column, key in (("facts snapshot", facts_snapshot, "document", "facts_sha256"),
                                     ("rule text", policy_version, "source", "rule_sha256")):
        if not _stored_text_holds(conn, table, column, key, sealed[key], texts_ok):
            return problem(Fault.EDITED, f"its {what} {sealed[key][:12]} is missing or edited")
    return None


def _stored_text_holds(conn: Connection, table: Table, column: str, key: str, digest: str,
                       known: dict[str, bool]) -> bool:
    """Whether the text stored under `digest` still has that SHA-256 (asked once per digest)."""
    if digest not in known:
        text = conn.execute(select(table.c[column]).where(table.c[key] == digest)).scalar()
        known[digest] = text is not None and sha256_hex(text.encode()) == digest
    return known[digest]


def replay(engine: Engine, evaluation_id: str, catalogue: Catalogue) -> ReplayResult | None:
    """Re-run a stored evaluation on its stored facts under its stored rule text."""
    with engine.connect() as conn:
        record = load_record(conn, evaluation_id)
        if record is None:
            return None
        stored = record["evaluation"]
        source = conn.execute(select(policy_version.c.source)
                              .where(policy_version.c.rule_sha256 == stored["rule_sha256"])).scalar_one()
        facts = conn.execute(select(facts_snapshot.c.document)
                             .where(facts_snapshot.c.facts_sha256 == record["facts_sha256"])).scalar_one()
    policy = load_policy_text(source.encode(), catalogue, origin=f"policy_version {stored['rule_sha256'][:12]}")
    document = document_from_json(orjson.loads(facts), catalogue)
    again = evaluate(policy.compiled(stored["period"]), document,
                     today=date.fromisoformat(stored["evaluated_on"]))
    differences = _differences(stored, orjson.loads(canonical_json(again.to_dict())), "")
    return ReplayResult(not differences, again, differences)


def document_to_json(document: FactsDocument) -> dict[str, Any]:
    return {"uscc": document.uscc, "fact_year": document.fact_year,
            "facts": {name: {"value": _plain(f.value), "source": f.source, "as_of": _plain(f.as_of)}
                      for name, f in sorted(document.facts.items())},
            "collections": {name: [{"ref": r.ref, "fields": {k: _plain(v) for k, v in r.fields.items()},
                                    "source": r.source, "as_of": _plain(r.as_of)} for r in records]
                            for name, records in sorted(document.collections.items())},
            "missing": dict(sorted(document.missing.items()))}


def document_from_json(data: Mapping[str, Any], catalogue: Catalogue) -> FactsDocument:
    """The inverse of `document_to_json`: dates restored by the catalogue's types."""
    facts = {name: Fact(_typed(f["value"], catalogue.facts[name].kind if name in catalogue.facts else ""),
                        f["source"], _date(f["as_of"]))
             for name, f in data["facts"].items()}
    collections = {}
    for name, records in data["collections"].items():
        types = catalogue.collections.get(name, {})
        collections[name] = [Record(r["ref"], {k: _typed(v, types[k].kind if k in types else "")
                                               for k, v in r["fields"].items()},
                                    r["source"], _date(r["as_of"])) for r in records]
    return FactsDocument(data["uscc"], data["fact_year"], facts, collections, dict(data["missing"]))


def _differences(before: Any, after: Any, path: str) -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for key in sorted(set(before) | set(after)):
            out += _differences(before.get(key), after.get(key), f"{path}.{key}" if path else key)
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [d for i, (b, a) in enumerate(zip(before, after)) for d in _differences(b, a, f"{path}[{i}]")]
    return [] if before == after else [f"{path}: stored {before!r}, replayed {after!r}"]


def _plain(value: object) -> object:
    return value.isoformat() if isinstance(value, date) else value


def _typed(value: Any, kind: str) -> Any:
    return date.fromisoformat(value) if kind == "date" and isinstance(value, str) else value


def _date(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def evaluation_from_dict(data: Mapping[str, Any]) -> Evaluation:
    """Rebuild an Evaluation from its stored dictionary (the inverse of `Evaluation.to_dict`)."""
    from rules.evaluator import AmountTrace, ClauseResult, CollectionRead, FactRead

    def clause(c: Mapping[str, Any]) -> ClauseResult:
        return ClauseResult(c["id"], c["text"], c["citation"], c["result"],
                            [FactRead(**r) for r in c["reads"]],
                            [CollectionRead(**k) for k in c["collections"]], list(c["notes"]))

    amount = data.get("amount")
    return Evaluation(
        **{k: data[k] for k in ("policy_id", "policy_version", "rule_sha256", "period", "fact_year",
                                "uscc", "evaluated_on", "outcome", "amount_fen", "conflict_group",
                                "engine")},
        conditions=[clause(c) for c in data["conditions"]], payable=[clause(c) for c in data["payable"]],
        missing=list(data["missing"]), held=list(data["held"]),
        amount=None if amount is None else AmountTrace(**{**amount, "reads": [FactRead(**r) for r in
                                                                               amount["reads"]]}))


def list_records(connection: Connection, *, uscc: str = "", policy_id: str = "", period: int = 0,
                 batch_id: str = "", outcome: str = "", offset: int = 0,
                 limit: int = 100) -> tuple[list[dict[str, Any]], int]:
    """Stored records matching the filters, newest first: one page, and the total count."""
    from sqlalchemy import func

    query = select(evaluation_record.c.record)
    count = select(func.count()).select_from(evaluation_record)
    for column, value in ((evaluation_record.c.uscc, uscc), (evaluation_record.c.policy_id, policy_id),
                          (evaluation_record.c.period, period), (evaluation_record.c.batch_id, batch_id),
                          (evaluation_record.c.outcome, outcome)):
        if value:
            query, count = query.where(column == value), count.where(column == value)
    rows = connection.execute(query.order_by(evaluation_record.c.ledger_seq.desc())
                              .offset(offset).limit(limit)).all()
    return [orjson.loads(r.record) for r in rows], int(connection.execute(count).scalar_one())
