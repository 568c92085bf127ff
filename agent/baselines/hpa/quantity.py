"""Kubernetes ``resource.Quantity`` strings as exact fractions and milli-values.

The grammar and the rounding follow ``k8s.io/apimachinery/pkg/api/resource/quantity.go``:
a signed decimal number followed by a binary suffix (Ki, Mi, Gi, Ti, Pi, Ei), a decimal
suffix (n, u, m, "", k, M, G, T, P, E) or a decimal exponent (e3, E-2).
``MilliValue()`` rounds up, so ``milli_value("1n") == 1``.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Union

QuantityLike = Union[str, int, float]

_QUANTITY_PATTERN = re.compile(
    r"^(?P<number>[+-]?(?:\d+\.?\d*|\.\d+))"
    r"(?:(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)|[eE](?P<exponent>[+-]?\d+))?$"
)

_SUFFIX_SCALE: dict[str, Fraction] = {
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}


class QuantityError(ValueError):
    """Invalid Kubernetes quantity string."""


def parse_quantity(value: QuantityLike) -> Fraction:
    """Parse a quantity such as ``"500m"``, ``"1.5Gi"`` or ``"2e3"`` into an exact number.

    A Python int or float is taken as the number itself (``0.5`` equals ``"500m"``).
    Raises QuantityError naming the value when it does not match the Kubernetes grammar.
    """
    if isinstance(value, bool):
        raise QuantityError(f"invalid quantity {value!r}: expected a number or a string such as '500m'")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QuantityError(f"invalid quantity {value!r}: the number must be finite")
        return Fraction(str(value))
    if not isinstance(value, str):
        raise QuantityError(f"invalid quantity {value!r}: expected a number or a string such as '500m'")

    match = _QUANTITY_PATTERN.match(value.strip())
    if match is None:
        raise QuantityError(
            f"invalid quantity {value!r}: use a decimal number with an optional suffix "
            "(m, k, M, G, Ki, Mi, Gi, ...) or exponent (e3), for example '250m' or '1.5Gi'"
        )
    number = Fraction(match.group("number"))
    if match.group("suffix"):
        return number * _SUFFIX_SCALE[match.group("suffix")]
    if match.group("exponent"):
        return number * Fraction(10) ** int(match.group("exponent"))
    return number


def milli_value(value: QuantityLike) -> int:
    """Return ``ceil(quantity * 1000)``, the value of ``Quantity.MilliValue()`` upstream."""
    return math.ceil(parse_quantity(value) * 1000)


def format_milli(milli: int) -> str:
    """Format a milli-value the way ``resource.NewMilliQuantity(v, DecimalSI)`` prints it."""
    if milli % 1000 == 0:
        return str(milli // 1000)
    return f"{milli}m"
