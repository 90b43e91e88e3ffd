"""Tests of the GB 32100 unified social credit code and its GB 11714 organisation code."""

from __future__ import annotations

import pytest

from enterprise_registry import uscc
from enterprise_registry.errors import InvalidUsccError

# Published codes of real institutions (valid under both checks of enterprise_registry/uscc.py):
# used only to test validation, never to attach facts to.
PUBLISHED = [
    "914403001922038216",
    "9144030071526726XG",
    "91440300708461136T",
    "91110000802100433B",
    "91330100716105852F",
    "91110108551385082Q",
    "91440300192317458F",
    "91310000132260250X",
    "12100000425006133D",
]


def test_charset_leaves_out_confusable_letters() -> None:
    assert len(uscc.CHARSET) == 31
    assert not set("IOSVZ") & set(uscc.CHARSET)


def test_worked_example_of_the_standard() -> None:
    assert uscc.check_character("91350100M000100Y4") == "3"
    assert uscc.make("91350100M000100Y4") == "91350100M000100Y43"
    assert uscc.is_valid("91350100M000100Y43")
    assert not uscc.is_valid("91350100M000100Y4Z")


@pytest.mark.parametrize("code", PUBLISHED)
def test_published_codes_pass_both_checks(code: str) -> None:
    uscc.validate(code)
    assert uscc.is_valid(code)
    assert uscc.organisation_code_ok(code)
    assert uscc.make(code[:17]) == code


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("91350100M000100Y4Z", "character 'Z' at position 18 is not allowed"),
        ("914403001922038217", "wrong check character: expected 6, got 7"),
        ("91440300192203821", "must be 18 characters, got 17"),
        ("9144030019220382166", "must be 18 characters, got 19"),
        ("", "must be 18 characters, got 0"),
        ("914403001922O38216", "character 'O' at position 13 is not allowed"),
        ("91440300I92203821X", "character 'I' at position 9 is not allowed"),
        ("9144030071526726xG", "'x' at position 17 is not allowed (letters must be upper case)"),
        ("91440300S92203821X", "(I, O, S, V and Z are never used)"),
        ("91440300V92203821X", "(I, O, S, V and Z are never used)"),
        ("９１４４０３００１９２２０３８２１６", "character '９' at position 1 is not allowed"),
    ],
)
def test_invalid_codes_name_the_problem(code: str, reason: str) -> None:
    assert not uscc.is_valid(code)
    with pytest.raises(InvalidUsccError) as info:
        uscc.validate(code)
    assert reason in info.value.reason
    assert info.value.code == code


def test_non_string_is_invalid() -> None:
    assert not uscc.is_valid(914403001922038216)
    with pytest.raises(InvalidUsccError, match="must be a string"):
        uscc.validate(None)


def test_every_single_character_change_is_caught() -> None:
    # The check character catches any one wrong character: try them all on one code.
    code = "91350100M000100Y43"
    for position in range(18):
        for char in uscc.CHARSET:
            if char != code[position]:
                changed = code[:position] + char + code[position + 1 :]
                assert not uscc.is_valid(changed), changed


def test_check_character_refuses_bad_input() -> None:
    with pytest.raises(InvalidUsccError, match="need 17 characters"):
        uscc.check_character("9135010")
    with pytest.raises(InvalidUsccError, match="'I' at position 9"):
        uscc.check_character("91350100I000100Y4")


def test_organisation_code_check() -> None:
    assert uscc.organisation_check_character("M000100Y") == "4"
    assert uscc.organisation_check_character("71526726") == "X"
    assert uscc.organisation_code_ok("715267260") is False
    assert uscc.organisation_code_ok("71526726X") is True
    # Valid under GB 32100 with a wrong GB 11714 check: a warning case, not an error.
    code = uscc.make("91420600MA4T00090")
    assert uscc.is_valid(code)
    assert not uscc.organisation_code_ok(code)
    assert not uscc.organisation_code_ok("short")
