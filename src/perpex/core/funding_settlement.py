"""What one funding time charges: the settlement record, and every position's payment in one
NumPy int64 vector pass with its plain-int twin (the specification).

Units: prices in ticks, sizes in lots, money in atoms, rates in 1e-8 (`FUNDING_RATE_SCALE`).
payment = |size| × mark × rate / (1e8 × rate_divisor), a positive rate making longs pay shorts,
rounded toward the payer; the dust (0 <= dust < positions) goes to the FUNDING bucket.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import msgspec
import numpy as np
import numpy.typing as npt

from perpex.core.funding_config import MAX_RATE_E8, is_int
from perpex.core.oracle import FUNDING_RATE_SCALE
from perpex.core.units import NOTIONAL_BOUND_ATOMS, Rounding, div

MAX_RATE_DIVISOR: Final = 24  # hourly settlement of a 24 h rate

_INT64_MIN: Final = -(2**63)
_INT64_SAFE: Final = 2**62  # sums below this cannot wrap int64


class FundingSettlement(msgspec.Struct, frozen=True, array_like=True):
    """One funding time reached: every open position pays |size| × mark × rate_e8 / (1e8 ×
    rate_divisor) (a positive rate: longs pay). `premium_e8` is P̄ and `samples` the count of
    premium samples it averaged (0: none, P̄ = 0)."""

    time_ns: int
    rate_e8: int
    rate_divisor: int
    premium_e8: int
    samples: int


def _check_payment_inputs(
    mark_ticks: int, atoms_per_tick_lot: int, rate_e8: int, rate_divisor: int
) -> None:
    if not is_int(mark_ticks) or mark_ticks <= 0:
        raise ValueError(f"mark {mark_ticks!r} ticks must be a positive int")
    if not is_int(atoms_per_tick_lot) or atoms_per_tick_lot <= 0:
        raise ValueError("atoms_per_tick_lot must be a positive int")
    if mark_ticks * atoms_per_tick_lot > NOTIONAL_BOUND_ATOMS:
        raise ValueError("one lot at this mark exceeds the 2^60-atom notional bound")
    if not is_int(rate_e8) or abs(rate_e8) > MAX_RATE_E8:
        raise ValueError(f"funding rate {rate_e8!r} must be an int within ±1e8")
    if not is_int(rate_divisor) or not 1 <= rate_divisor <= MAX_RATE_DIVISOR:
        raise ValueError(f"rate_divisor {rate_divisor!r} must be in [1, {MAX_RATE_DIVISOR}]")


def funding_payments_scalar(
    size_lots: Sequence[int],
    mark_ticks: int,
    atoms_per_tick_lot: int,
    rate_e8: int,
    rate_divisor: int = 1,
) -> tuple[list[int], int]:
    """The specification of `funding_payments`, in plain ints: (payments, dust).

    payment = size × mark × k × rate / (1e8 × rate_divisor), positive = the position pays.
    """
    _check_payment_inputs(mark_ticks, atoms_per_tick_lot, rate_e8, rate_divisor)
    if sum(size_lots) != 0:
        raise ValueError("funding needs every open position of the symbol: sizes must net to 0")
    notional_per_lot_atoms = mark_ticks * atoms_per_tick_lot
    for size in size_lots:
        if abs(size) * notional_per_lot_atoms > NOTIONAL_BOUND_ATOMS:
            raise ValueError(f"position of {size} lots exceeds the 2^60-atom notional bound")
    scale = FUNDING_RATE_SCALE * rate_divisor
    # CEIL toward the payer: a payer (positive) pays the ceiling, a receiver (negative) gets
    # the floor of its amount; the surplus is the dust the FUNDING bucket keeps.
    payments = [
        div(size * notional_per_lot_atoms * rate_e8, scale, Rounding.CEIL) for size in size_lots
    ]
    return payments, sum(payments)


def funding_payments(
    size_lots: npt.NDArray[np.int64],
    mark_ticks: int,
    atoms_per_tick_lot: int,
    rate_e8: int,
    rate_divisor: int = 1,
) -> tuple[npt.NDArray[np.int64], int]:
    """Every position's funding in one vector pass: (payment_atoms, dust_atoms).

    `size_lots` holds every open position of the symbol (signed; they must net to zero);
    payment = ceil(size × mark × k × rate / (1e8 × rate_divisor)): positive = the position
    pays. dust = Σ payments, 0 ≤ dust < len(size_lots), goes to the FUNDING bucket.

    int64 bound: |size| × mark × k ≤ 2^60 (checked; the market compiler proves it for any
    position it accepts). With S = 1e8 × rate_divisor ≤ 2.4e9 and |rate| ≤ 1e8, the product
    n × rate (up to 2^87) is never formed: n = q·S + r (0 ≤ r < S), so
    n × rate / S = q × rate + r × rate / S, where |q × rate| ≤ 2^60 + 1e8 and
    |r × rate| < S × 1e8 ≤ 2.4e17, both far below 2^63.
    """
    _check_payment_inputs(mark_ticks, atoms_per_tick_lot, rate_e8, rate_divisor)
    sizes = np.asarray(size_lots)
    if sizes.dtype != np.int64 or sizes.ndim != 1:
        raise ValueError("size_lots must be a 1-d int64 array")
    count = int(sizes.shape[0])
    if count == 0:
        return np.zeros(0, dtype=np.int64), 0
    if int(sizes.min()) == _INT64_MIN:
        raise ValueError("size_lots holds int64 min")
    max_abs_lots = int(np.abs(sizes).max())
    notional_per_lot_atoms = mark_ticks * atoms_per_tick_lot
    if max_abs_lots * notional_per_lot_atoms > NOTIONAL_BOUND_ATOMS:
        raise ValueError(f"a position of {max_abs_lots} lots exceeds the 2^60-atom bound")
    if max_abs_lots * count < _INT64_SAFE:
        net_lots = int(sizes.sum())
    else:
        net_lots = sum(int(x) for x in sizes.tolist())
    if net_lots != 0:
        raise ValueError("funding needs every open position of the symbol: sizes must net to 0")
    scale = np.int64(FUNDING_RATE_SCALE * rate_divisor)
    rate = np.int64(rate_e8)
    notional_atoms = sizes * np.int64(notional_per_lot_atoms)  # |.| <= 2^60, signed
    quotient = np.floor_divide(notional_atoms, scale)
    remainder = notional_atoms - quotient * scale  # in [0, scale)
    # CEIL toward the payer (see funding_payments_scalar): ceil(a / s) = -floor(-a / s).
    payments = quotient * rate - np.floor_divide(-(remainder * rate), scale)
    max_abs_payment = int(np.abs(payments).max())
    if max_abs_payment * count < _INT64_SAFE:
        dust_atoms = int(payments.sum())
    else:
        dust_atoms = sum(int(x) for x in payments.tolist())
    assert 0 <= dust_atoms < count, f"funding dust {dust_atoms} out of [0, {count})"
    return payments, dust_atoms
