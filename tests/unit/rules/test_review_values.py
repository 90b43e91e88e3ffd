"""Independent review of Outcome and Truth (rules/values.py) where they leave the evaluator: the
words every writer sees (explanations, JSON, canonical JSON, masks, policy test files), members
sent to other processes, numpy arrays of them, and the amount's int64 bound against the
importer's bounds."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import orjson
import pytest
from rules_testkit import TODAY, compile_text, document, load_text, policy_yaml

from enterprise_registry.kinds import KINDS
from rules.compiler import INT64_MAX
from rules.errors import PolicyFileError
from rules.evaluator import Evaluation, evaluate
from rules.schema import Expectation
from rules.values import Outcome, Truth
from service.audit.canonical import canonical_json, canonical_json_of_typed
from service.audit.decision import mask_of
from service.catalogue import CATALOGUE
from service.explain import as_json, as_text


def _evaluated(tmp_path: Path, layoffs: int | None) -> Evaluation:
    text = policy_yaml(["si.layoffs >= 1", "si.insured_start >= 0"], payable=["enterprise.has_bank_account"])
    facts = document({"si.layoffs": layoffs, "si.insured_start": 10, "enterprise.has_bank_account": True})
    return evaluate(compile_text(tmp_path, text), facts, today=TODAY)


@pytest.mark.parametrize(
    ("layoffs", "outcome", "mask"),
    [(1, Outcome.ELIGIBLE, "TT/T"), (0, Outcome.INELIGIBLE, "FT/T"), (None, Outcome.UNDETERMINED, "UT/T")],
)
def test_an_evaluation_is_written_out_in_its_words(
    tmp_path: Path, layoffs: int | None, outcome: Outcome, mask: str
) -> None:
    result = _evaluated(tmp_path, layoffs)
    assert result.outcome is outcome
    assert mask_of(result.conditions, result.payable) == mask
    for text in (as_text(result, "演示"), json.dumps(as_json(result, "演示"), ensure_ascii=False)):
        assert "Outcome." not in text and "Truth." not in text
    data = as_json(result)
    assert data["outcome"] == str(outcome) and type(orjson.loads(orjson.dumps(data))["outcome"]) is str
    assert [c["result_text"] for c in data["conditions"]] == [
        {"T": "true", "F": "false", "U": "unknown"}[m] for m in mask.split("/")[0]
    ]


def test_members_and_their_words_give_the_same_canonical_bytes() -> None:
    members = {"outcome": Outcome.HELD, "results": [Truth.TRUE, Truth.UNKNOWN]}
    words = {"outcome": "HELD", "results": ["true", "unknown"]}
    assert canonical_json(members) == canonical_json(words) == canonical_json_of_typed(members)


def test_a_member_is_no_dict_key_of_canonical_json() -> None:
    """Pinned: orjson takes only exact str keys, so a dict keyed by members (PolicySummary.counts,
    PolicyDecisions.tally) cannot be sealed as it is; its keys must be made words first."""
    with pytest.raises(TypeError, match="str"):
        canonical_json({Outcome.ELIGIBLE: 1})
    assert canonical_json({str(Outcome.ELIGIBLE): 1}) == b'{"ELIGIBLE":1}'


def test_a_dict_keyed_by_members_is_read_by_the_words() -> None:
    """Code that still says counts["ELIGIBLE"] finds the member's entry."""
    counts: dict[str, int] = dict.fromkeys(Outcome, 0)  # as a caller typed before the enum sees it
    counts[Outcome.HELD] += 2
    assert counts["HELD"] == 2 and "UNDETERMINED" in counts


@pytest.mark.parametrize("member", [*Outcome, *Truth])
def test_a_member_sent_to_another_process_comes_back_as_itself(member: Outcome | Truth) -> None:
    assert pickle.loads(pickle.dumps(member)) is member


def test_an_array_of_members_is_an_array_of_their_words() -> None:
    outcomes = np.array([Outcome.ELIGIBLE, Outcome.HELD, Outcome.INELIGIBLE])
    assert outcomes.dtype.kind == "U"
    assert (outcomes == Outcome.HELD).tolist() == [False, True, False]
    assert (outcomes == "HELD").tolist() == [False, True, False]
    assert outcomes.tolist() == ["ELIGIBLE", "HELD", "INELIGIBLE"]


def test_a_member_formats_as_its_word_but_repr_names_the_member() -> None:
    """repr is the one spelling that leaks the class: messages quote str(member), never repr."""
    assert f"{Outcome.HELD}|{Outcome.HELD:>6}|%s" % Truth.FALSE == "HELD|  HELD|false"
    assert repr(Outcome.HELD) == "<Outcome.HELD: 'HELD'>"
    assert repr(str(Outcome.HELD)) == "'HELD'"


def test_a_policy_test_file_gives_the_words() -> None:
    expected = Expectation.model_validate({"outcome": "HELD", "conditions": {"c0": "unknown"}})
    assert expected.outcome is Outcome.HELD and expected.conditions == {"c0": Truth.UNKNOWN}
    for wrong in ({"outcome": "held"}, {"outcome": "ELIGIBLE", "conditions": {"c0": "TRUE"}}):
        with pytest.raises(ValueError):
            Expectation.model_validate(wrong)


# --- the amount's int64 bound against the importer's bounds ---------------------------------------
def test_every_integer_fact_is_bounded_as_the_importer_bounds_it() -> None:
    """evaluate raises OverflowError beyond int64 "only from facts beyond the catalogue's bounds":
    that holds for imported data only while every bound is the importer's, and far below int64."""
    for spec in KINDS.values():
        if spec.collection:
            continue
        for field in spec.fields:
            if field.type == "int" and field.fact:
                name = f"{spec.group}.{field.name}"
                assert field.max_abs is not None, name
                assert CATALOGUE.facts[name].max_abs == field.max_abs < INT64_MAX, name


def test_an_amount_that_bounded_facts_can_take_beyond_int64_is_refused_at_load(tmp_path: Path) -> None:
    text = policy_yaml(["si.layoffs >= 0"], amount="si.ui_premium_paid_fen * 10000")
    with pytest.raises(PolicyFileError, match="64-bit"):
        load_text(tmp_path, text)


def test_an_amount_at_the_importers_bounds_is_decided(tmp_path: Path) -> None:
    bound = CATALOGUE.facts["si.ui_premium_paid_fen"].max_abs
    text = policy_yaml(["si.layoffs >= 0"], amount="si.ui_premium_paid_fen * 1000")
    result = evaluate(
        compile_text(tmp_path, text), document({"si.layoffs": 0, "si.ui_premium_paid_fen": bound}), today=TODAY
    )
    assert result.outcome is Outcome.ELIGIBLE and result.amount_fen == bound * 1000 <= INT64_MAX
