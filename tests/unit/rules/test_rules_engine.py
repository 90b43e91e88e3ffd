"""rules.engine: the durable-rules driver (one live fact, every rule drained, errors wrapped)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from rules.engine import DurableRuleset, ruleset
from rules.errors import EngineError


def _rule(condition: dict[str, Any]) -> dict[str, Any]:
    return {"all": [{"m": {"$and": [{"$ex": {"_eval": 1}}, condition]}}]}


DEFINITION: dict[str, Any] = {
    "big": _rule({"$gt": {"x": 10}}),
    "small": _rule({"$lte": {"x": 10}}),
    "named": _rule({"$eq": {"s": "襄阳"}}),
    "seen": _rule({"$ex": {"_eval": 1}}),
}


def fresh_name() -> str:
    return f"test-{uuid.uuid4().hex}"


def test_fire_returns_every_rule_the_fact_matches() -> None:
    engine = DurableRuleset(fresh_name(), DEFINITION)
    assert engine.fire({"x": 11}) == {"big", "seen"}
    assert engine.fire({"x": 10, "s": "襄阳"}) == {"small", "named", "seen"}
    assert engine.fire({"s": "襄阳市"}) == {"seen"}  # missing x: no comparison holds
    assert engine.fire({}) == {"seen"}


def test_a_fact_no_rule_handles_is_an_engine_error() -> None:
    engine = DurableRuleset(fresh_name(), {"big": _rule({"$gt": {"x": 10}})})
    with pytest.raises(EngineError, match="no rule handled the fact"):
        engine.fire({"x": 1})
    assert engine.fire({"x": 11}) == {"big"}  # and the ruleset still works afterwards


def test_a_refused_definition_is_an_engine_error_with_its_cause() -> None:
    with pytest.raises(EngineError, match="refused ruleset") as info:
        DurableRuleset(fresh_name(), {"bad": {"all": [{"m": {"$nonsense": {"x": 1}}}]}})
    assert info.value.__cause__ is not None


def test_registry_returns_one_ruleset_per_name() -> None:
    name = fresh_name()
    first = ruleset(name, DEFINITION)
    assert ruleset(name, DEFINITION) is first
    assert ruleset(fresh_name(), DEFINITION) is not first


def test_identical_facts_are_never_duplicates_and_never_accumulate() -> None:
    """Without retraction durable-rules reports a false duplicate after some tens of thousands of
    live facts (at 81,985 for these facts when retraction is switched off); the driver retracts
    every fact, so 100,000 go through one ruleset."""
    engine = DurableRuleset(fresh_name(), DEFINITION)
    for i in range(100_000):
        fired = engine.fire({"x": i % 20})
        assert fired == ({"big", "seen"} if i % 20 > 10 else {"small", "seen"})


def test_properties_are_not_mutated() -> None:
    engine = DurableRuleset(fresh_name(), DEFINITION)
    properties = {"x": 3}
    engine.fire(properties)
    assert properties == {"x": 3}
