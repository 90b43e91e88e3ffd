"""A stored record's full evaluation - trace and Chinese explanation - rendered on demand: its
facts snapshot replayed under its rule text by the reference evaluator, on the day it was made.

The rendering is checked against the record: the decision it replays to (outcome, amount, mask
and what the decision is of) must be the record's, and the snapshot and rule text must still
have the hashes the record names. Every difference is listed; callers that show the evaluation
as the stored one refuse to when there is any (`RecordMismatchError`), never hiding it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from rules.errors import RuleError
from rules.evaluator import Evaluation, evaluate
from rules.facts import Catalogue
from rules.loader import LoadedPolicy, load_policy_text
from service.audit.canonical import sha256_hex
from service.audit.decision import DECISION_FIELDS, Decision
from service.audit.facts_json import document_from_json
from service.audit.record_tables import evaluation_record, facts_snapshot, policy_version
from service.errors import RecordMismatchError

_POLICY_CACHE_SIZE = 32  # rule texts kept loaded (each version of each policy is one)


@dataclass(frozen=True)
class Rendering:
    evaluation_id: str
    evaluation: Evaluation  # as replayed
    differences: list[str]  # record vs replay, and texts vs their hashes; empty when faithful


@dataclass(frozen=True)
class ReplayResult:
    identical: bool
    replayed: Evaluation
    differences: list[str]


def render(connection: Connection, record: Mapping[str, Any], catalogue: Catalogue) -> Rendering:
    """Replay a stored record; raises `RecordMismatchError` when it cannot be replayed at all (its
    facts snapshot or rule text is missing or no longer loads)."""
    evaluation_id = str(record.get("evaluation_id"))
    try:
        stored = Decision.from_record(record)
        facts_sha, rule_sha = str(record["facts_sha256"]), stored.rule_sha256
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordMismatchError(evaluation_id, [f"the record is malformed: {exc}"]) from exc
    source = connection.execute(
        select(policy_version.c.source).where(policy_version.c.rule_sha256 == rule_sha)
    ).scalar()
    facts = connection.execute(
        select(facts_snapshot.c.document).where(facts_snapshot.c.facts_sha256 == facts_sha)
    ).scalar()
    missing = [
        f"its {what} {digest[:12]} is not stored"
        for what, digest, text in (("rule text", rule_sha, source), ("facts snapshot", facts_sha, facts))
        if text is None
    ]
    if missing:
        raise RecordMismatchError(evaluation_id, missing)
    assert source is not None and facts is not None
    differences = [
        f"{what}: the stored text no longer has SHA-256 {digest[:12]} (edited)"
        for what, digest, text in (("rule text", rule_sha, source), ("facts snapshot", facts_sha, facts))
        if sha256_hex(text.encode()) != digest
    ]
    try:
        policy = _policy(source, catalogue)
        document = document_from_json(orjson.loads(facts), catalogue)
        again = evaluate(policy.compiled(stored.period), document, today=date.fromisoformat(stored.evaluated_on))
    # ArithmeticError: stored facts (edited, or beyond the importer's bounds) giving an amount beyond int64
    except (RuleError, orjson.JSONDecodeError, KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise RecordMismatchError(evaluation_id, [*differences, f"it cannot be replayed: {exc}"]) from exc
    replayed = Decision.of(again)
    # The engine's version is not compared: a newer engine replaying an old decision is no fault.
    differences += [
        f"{name}: stored {stored.shown(name)}, replayed {replayed.shown(name)}"
        for name in DECISION_FIELDS
        if name != "engine" and getattr(stored, name) != getattr(replayed, name)
    ]
    return Rendering(evaluation_id, again, differences)


def render_faithful(connection: Connection, record: Mapping[str, Any], catalogue: Catalogue) -> Evaluation:
    """The rendered evaluation of a record, refusing (`RecordMismatchError`) one that does not
    replay to what the record says."""
    rendering = render(connection, record, catalogue)
    if rendering.differences:
        raise RecordMismatchError(rendering.evaluation_id, rendering.differences)
    return rendering.evaluation


def replay(engine: Engine, evaluation_id: str, catalogue: Catalogue) -> ReplayResult | None:
    """Re-run a stored evaluation on its stored facts under its stored rule text; None when no
    record has that id."""
    with engine.connect() as conn:
        row = conn.execute(
            select(evaluation_record.c.record).where(evaluation_record.c.evaluation_id == evaluation_id)
        ).first()
        if row is None:
            return None
        rendering = render(conn, orjson.loads(row.record), catalogue)
    return ReplayResult(not rendering.differences, rendering.evaluation, rendering.differences)


_policies: OrderedDict[str, tuple[Catalogue, LoadedPolicy]] = OrderedDict()
_policies_lock = threading.Lock()


def _policy(source: str, catalogue: Catalogue) -> LoadedPolicy:
    """The policy of a stored rule text, loaded once: keyed by the text's own hash, so an edited
    text is never answered by the genuine one's cache entry."""
    key = sha256_hex(source.encode())
    with _policies_lock:
        cached = _policies.get(key)
        if cached is not None and cached[0] is catalogue:
            _policies.move_to_end(key)
            return cached[1]
    policy = load_policy_text(source.encode(), catalogue, origin=f"policy_version {key[:12]}")
    with _policies_lock:
        _policies[key] = (catalogue, policy)
        while len(_policies) > _POLICY_CACHE_SIZE:
            _policies.popitem(last=False)
    return policy
