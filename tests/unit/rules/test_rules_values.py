"""The words of a decision (rules/values.py): the very strings records store and the ledger seals,
and the vectorised trace's codes for them."""

from __future__ import annotations

import json

import numpy as np
import orjson

from rules.values import OUTCOME_CODES, OUTCOME_OF_CODE, TRUTH_CODES, TRUTH_OF_CODE, Outcome, Truth


def test_the_stored_words_never_change() -> None:
    assert [str(o) for o in Outcome] == ["ELIGIBLE", "INELIGIBLE", "UNDETERMINED", "HELD"]
    assert [str(t) for t in Truth] == ["true", "false", "unknown"]


def test_a_member_is_written_as_its_bare_word() -> None:
    words = {"outcome": Outcome.HELD, "result": Truth.UNKNOWN}
    assert json.dumps(words) == '{"outcome": "HELD", "result": "unknown"}'
    assert orjson.dumps(words) == b'{"outcome":"HELD","result":"unknown"}'
    assert f"{Outcome.ELIGIBLE} {Truth.FALSE}" == "ELIGIBLE false"
    assert Outcome("UNDETERMINED") is Outcome.UNDETERMINED and Truth("true") is Truth.TRUE


def test_every_member_has_one_code_and_a_code_is_its_index() -> None:
    for by_code, codes in ((OUTCOME_OF_CODE, OUTCOME_CODES), (TRUTH_OF_CODE, TRUTH_CODES)):
        assert {member: np.int8(i) for i, member in enumerate(by_code)} == codes
        assert len(set(by_code)) == len(by_code)
    assert set(OUTCOME_CODES) == set(Outcome) and set(TRUTH_CODES) == set(Truth)
    assert all(type(code) is np.int8 for code in [*OUTCOME_CODES.values(), *TRUTH_CODES.values()])


def test_a_boolean_array_is_its_own_truth_code() -> None:
    """The vectorised trace writes a known clause's booleans as codes without a lookup."""
    codes = np.array([False, True]).astype(np.int8)
    assert [TRUTH_OF_CODE[c] for c in codes.tolist()] == [Truth.FALSE, Truth.TRUE]
