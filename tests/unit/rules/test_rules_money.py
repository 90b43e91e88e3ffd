"""rules.money: exact rounding to the fen (half-up, not Python's half-to-even) and formatting."""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from fractions import Fraction

import pytest

from rules.money import format_yuan, to_fen


def test_whole_fen_pass_through_unchanged() -> None:
    assert to_fen(37_037_015) == 37_037_015
    assert to_fen(-5) == -5
    assert to_fen(Fraction(42)) == 42
    assert to_fen(Decimal(42)) == 42


@pytest.mark.parametrize(
    ("exact", "fen"),
    [
        (Fraction(370_370_145, 10), 37_037_015),  # 370,370.145 yuan: the half goes up
        (Fraction(370_370_144, 10), 37_037_014),  # .xx4 goes down
        (Fraction(370_370_146, 10), 37_037_015),
        (Fraction(5, 2), 3),  # round() would give 2 (half to even)
        (Fraction(9, 2), 5),
        (Fraction(1, 2), 1),
        (Fraction(49_999, 100_000), 0),
        (Fraction(1, 3), 0),
        (Fraction(2, 3), 1),
    ],
)
def test_half_up_on_fractions(exact: Fraction, fen: int) -> None:
    assert to_fen(exact) == fen
    assert to_fen(exact, "half_up") == fen


def test_python_round_is_not_what_is_used() -> None:
    # The trap the module exists to avoid: banker's rounding.
    assert round(2.5) == 2
    assert to_fen(Fraction(5, 2)) == 3
    assert to_fen(Decimal("2.5")) == 3


@pytest.mark.parametrize(
    ("exact", "fen"),
    [
        (Fraction(-5, 2), -3),
        (Fraction(-370_370_145, 10), -37_037_015),
        (Fraction(-370_370_144, 10), -37_037_014),
    ],
)
def test_half_up_is_away_from_zero_for_negatives(exact: Fraction, fen: int) -> None:
    assert to_fen(exact) == fen


@pytest.mark.parametrize(
    ("exact", "fen"),
    [
        (Fraction(370_370_149, 10), 37_037_014),
        (Fraction(-370_370_149, 10), -37_037_014),
        (Fraction(99, 100), 0),
    ],
)
def test_round_down_truncates_towards_zero(exact: Fraction, fen: int) -> None:
    assert to_fen(exact, "down") == fen


@pytest.mark.parametrize("rounding", ["half_up", "down"])
def test_fraction_and_decimal_paths_agree(rounding: str) -> None:
    mode = {"half_up": ROUND_HALF_UP, "down": ROUND_DOWN}[rounding]
    for denominator in (2, 10, 1000, 8):
        for numerator in range(-3001, 3002, 7):
            exact = Fraction(numerator, denominator)
            as_decimal = Decimal(numerator) / Decimal(denominator)
            expected = int(as_decimal.quantize(Decimal(1), rounding=mode))
            assert to_fen(exact, rounding) == expected, exact
            assert to_fen(as_decimal, rounding) == expected, as_decimal


def test_fraction_rounding_has_no_precision_limit() -> None:
    huge = 10**40
    assert to_fen(Fraction(2 * huge + 1, 2)) == huge + 1
    assert to_fen(Fraction(2 * huge + 1, 2), "down") == huge
    assert to_fen(Fraction(3 * huge + 1, 3)) == huge


@pytest.mark.parametrize(
    ("fen", "text"),
    [
        (0, "0.00元"),
        (5, "0.05元"),
        (100, "1.00元"),
        (12_345, "123.45元"),
        (123_456_715, "1,234,567.15元"),
        (-5, "-0.05元"),
        (-123_456, "-1,234.56元"),
    ],
)
def test_format_yuan(fen: int, text: str) -> None:
    assert format_yuan(fen) == text
