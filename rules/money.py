"""Exact money: amounts are integer fen; rates are Decimal; rounding happens once, per payee."""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from fractions import Fraction

_MODES = {"half_up": ROUND_HALF_UP, "down": ROUND_DOWN}


def to_fen(amount: int | Decimal | Fraction, rounding: str = "half_up") -> int:
    """Round an exact amount in fen to a whole fen. `half_up`: 370,370.145 yuan -> 370,370.15."""
    if isinstance(amount, int):
        return amount
    if isinstance(amount, Fraction):
        return _round_fraction(amount, rounding)
    return int(amount.quantize(Decimal(1), rounding=_MODES[rounding]))


def format_yuan(fen: int) -> str:
    """12345 -> '123.45元', with thousands separators."""
    sign = "-" if fen < 0 else ""
    yuan, cents = divmod(abs(fen), 100)
    return f"{sign}{yuan:,}.{cents:02d}元"


def _round_fraction(amount: Fraction, rounding: str) -> int:
    """Exact rounding of a fraction (no decimal context, so no precision limit)."""
    magnitude = abs(amount)
    whole = magnitude.numerator // magnitude.denominator
    if rounding == "half_up" and magnitude - whole >= Fraction(1, 2):
        whole += 1
    return whole if amount >= 0 else -whole
