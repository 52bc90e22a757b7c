"""Money as Decimal in the program and as integer micro-dollars in the database."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

MICROS = Decimal(1_000_000)


def to_micros(amount: Decimal) -> int:
    """Decimal dollars to integer micro-dollars, rounding up so a cap is never understated."""
    return int((amount * MICROS).to_integral_value(rounding=ROUND_CEILING))


def from_micros(micros: int) -> Decimal:
    """Integer micro-dollars back to Decimal dollars, without trailing noise."""
    return (Decimal(micros) / MICROS).quantize(Decimal("0.0001")).normalize() + Decimal("0.00")


def shown(amount: Decimal) -> str:
    """An amount for people: at least two decimals (``1.80``, not ``1.8``), more only if held."""
    exact = amount.normalize()
    exponent = exact.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2:
        return str(exact)
    return str(amount.quantize(Decimal("0.01")))
