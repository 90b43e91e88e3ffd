"""The durable-rules driver: the only module that imports the engine.

It drives the C module directly (no `Host`: the stock host starts timer threads that race with
the caller and lose actions). One fact is asserted per evaluation, every fired rule is drained,
and the fact is retracted before the lock is released, so a ruleset never holds more than one
live fact and state id "0" is reused forever. The engine is process-global C state and gives
wrong answers when threads share a ruleset: each ruleset has its own lock.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Sequence
from typing import Any

import durable_rules_engine as _engine
import orjson

from rules.compiler import DECISION
from rules.errors import EngineError

ENGINE_VERSION = "durable-rules 2.0.28"

_registry: dict[str, DurableRuleset] = {}
_registry_lock = threading.Lock()


class DurableRuleset:
    """One registered ruleset. Rulesets cannot be replaced or deleted in durable-rules, so each
    policy version and period is registered once under its own name and reused."""

    def __init__(self, name: str, definition: dict[str, Any]) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._serial = itertools.count()
        try:
            self._handle = _engine.create_ruleset(name, json.dumps(definition, ensure_ascii=False))
        except Exception as exc:  # durable raises bare Exception with an error code
            raise EngineError(f"durable-rules refused ruleset {name}: {exc}") from exc

    def fire(self, properties: dict[str, Any], decide_on: Sequence[str] = ()) -> frozenset[str]:
        """Assert the evaluation's fact and run every rule it matches; then assert the decision
        fact recording which of the `decide_on` rules fired, and run the rules it matches.
        Both facts are retracted before the lock is released. Returns every fired rule name."""
        with self._lock:
            serial = str(next(self._serial))
            fired = self._once({**properties, "_eval": serial, "_zero": 0})
            if decide_on:
                fired |= self._once({DECISION: serial, **{r: r in fired for r in decide_on}})
            return frozenset(fired)

    def fire_each(self, facts: Sequence[dict[str, Any]]) -> list[frozenset[str]]:
        """Assert each fact alone (one per enterprise, no decision fact) and run every rule it
        matches, holding the lock once for the whole sequence: the fired rule names of each.
        The dictionaries are the caller's to give away (their `_eval` and `_zero` are set here)."""
        with self._lock:
            out = []
            for properties in facts:
                properties["_eval"] = str(next(self._serial))
                properties["_zero"] = 0
                out.append(frozenset(self._once(properties)))
            return out

    def _once(self, fact: dict[str, Any]) -> set[str]:
        text = orjson.dumps(fact).decode()
        try:
            code, state = _engine.assert_fact(self._handle, text)
        except Exception as exc:
            raise EngineError(f"{self.name}: assert failed: {exc}") from exc
        if code == 1:
            raise EngineError(f"{self.name}: no rule handled the fact")
        if code == 2:
            raise EngineError(f"{self.name}: the engine reported the fact as a duplicate")
        try:
            return set(self._drain(state))
        finally:
            try:
                _engine.retract_fact(self._handle, text)
            except Exception as exc:
                raise EngineError(f"{self.name}: retract failed: {exc}") from exc

    def _drain(self, state: int) -> frozenset[str]:
        fired: set[str] = set()
        try:
            started = _engine.start_action_for_state(self._handle, state)
            message = started[1] if started else None
            while message:
                fired.add(_rule_name(message))
                message = _engine.complete_and_start_action(self._handle, state)
        except Exception as exc:
            raise EngineError(f"{self.name}: running actions failed: {exc}") from exc
        return frozenset(fired)


def _rule_name(message: str) -> str:
    """The rule an action message is for: `{"<rule>":{"m":{...the fact...}}}`. Rule names are the
    compiler's (no quotes or escapes), so the name ends at the first closing quote; parsing the
    whole message, which repeats the fact, cost more than the assertion itself."""
    if not message.startswith('{"'):
        raise EngineError(f"unexpected action message {message[:40]!r}")
    return message[2 : message.index('"', 2)]


def ruleset(name: str, definition: dict[str, Any]) -> DurableRuleset:
    """The ruleset registered under `name`, registering it on first use."""
    with _registry_lock:
        existing = _registry.get(name)
        if existing is None:
            existing = _registry[name] = DurableRuleset(name, definition)
        return existing
