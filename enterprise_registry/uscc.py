"""Unified social credit codes (统一社会信用代码, GB 32100-2015) and their GB 11714 organisation code."""

from __future__ import annotations

from enterprise_registry.errors import InvalidUsccError

# Values 0..30 in this order; I, O, S, V and Z are never used (they read like 1, 0, 5, U, 2).
CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
LENGTH = 18

_VALUE = {char: value for value, char in enumerate(CHARSET)}
# Position i (1-based) weighs 3^(i-1) mod 31.
_WEIGHTS = tuple(pow(3, i, 31) for i in range(17))

# GB 11714: digits are themselves, letters A=10 .. Z=35, weights over the first eight characters.
_ORG_VALUE = {char: value for value, char in enumerate("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")}
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)


def check_character(first17: str) -> str:
    """The GB 32100 check character for the first 17 characters of a code."""
    if len(first17) != LENGTH - 1:
        raise InvalidUsccError(first17, f"need 17 characters for a check, got {len(first17)}")
    total = 0
    for position, (char, weight) in enumerate(zip(first17, _WEIGHTS), start=1):
        value = _VALUE.get(char)
        if value is None:
            raise InvalidUsccError(first17, _bad_character(char, position))
        total += value * weight
    return CHARSET[(31 - total % 31) % 31]


def validate(code: object) -> None:
    """Raise InvalidUsccError, with the precise reason, unless `code` is a valid USCC."""
    if not isinstance(code, str):
        raise InvalidUsccError(code, f"must be a string, got {type(code).__name__}")
    if len(code) != LENGTH:
        raise InvalidUsccError(code, f"must be 18 characters, got {len(code)}")
    for position, char in enumerate(code, start=1):
        if char not in _VALUE:
            raise InvalidUsccError(code, _bad_character(char, position))
    expected = check_character(code[:17])
    if code[17] != expected:
        raise InvalidUsccError(code, f"wrong check character: expected {expected}, got {code[17]}")


def is_valid(code: object) -> bool:
    """True when `code` passes `validate`."""
    try:
        validate(code)
    except InvalidUsccError:
        return False
    return True


def make(first17: str) -> str:
    """The full 18-character code: `first17` followed by its check character."""
    return first17 + check_character(first17)


def organisation_check_character(first8: str) -> str:
    """The GB 11714 check character for the first eight characters of an organisation code."""
    if len(first8) != 8:
        raise ValueError(f"need 8 characters, got {len(first8)}")
    total = 0
    for char, weight in zip(first8, _ORG_WEIGHTS):
        value = _ORG_VALUE.get(char)
        if value is None:
            raise ValueError(f"character {char!r} is not allowed in an organisation code")
        total += value * weight
    check = 11 - total % 11
    return "X" if check == 10 else "0" if check == 11 else str(check)


def organisation_code_ok(code: str) -> bool:
    """GB 11714 check of the organisation code: positions 9-17 of a USCC, or a bare 9-char code.

    Only a warning when it fails: codes issued to some kinds of units (individual businesses,
    for one) do not always carry a valid organisation code, while the GB 32100 check is binding.
    """
    organisation = code[8:17] if len(code) == LENGTH else code
    if len(organisation) != 9:
        return False
    try:
        return organisation_check_character(organisation[:8]) == organisation[8]
    except ValueError:
        return False


def _bad_character(char: str, position: int) -> str:
    hint = ""
    if char.islower():
        hint = " (letters must be upper case)"
    elif char in "IOSVZ":
        hint = " (I, O, S, V and Z are never used)"
    return f"character {char!r} at position {position} is not allowed{hint}"
