"""One market's funding parameters (`FundingConfig`), validated, and the limits that every
funding module checks against.

Units: time in ns of the virtual clock, rates in 1e-8 (`FUNDING_RATE_SCALE`), money in atoms.
The rule these parameters feed is in `perpex.core.funding`'s docstring (MECHANICS.md §1.7).
"""

from __future__ import annotations

import enum
from typing import Final

import msgspec

from perpex.core.oracle import FUNDING_RATE_SCALE, NS_PER_SECOND
from perpex.core.units import ATOMS_PER_UNIT, NOTIONAL_BOUND_ATOMS, Rounding, div

NS_PER_HOUR: Final = 3_600 * NS_PER_SECOND
NS_PER_DAY: Final = 24 * NS_PER_HOUR
DEFAULT_INTERVAL_NS: Final = 8 * NS_PER_HOUR
DEFAULT_SAMPLE_INTERVAL_NS: Final = 5 * NS_PER_SECOND
INTEREST_PER_DAY_E8: Final = 30_000  # 0.03 %/day = 0.01 % per 8 h (MECHANICS.md §1.7)
DEFAULT_CLAMP_E8: Final = 50_000  # ±0.05 %
DEFAULT_CAP_E8: Final = 300_000  # 0.3 % = 0.75 x 0.4 % MMR of BTCUSDT's first bracket
DEFAULT_IMPACT_MARGIN_ATOMS: Final = 200 * ATOMS_PER_UNIT  # 200 USDT of initial margin
MAX_RATE_E8: Final = FUNDING_RATE_SCALE  # |rate|, cap and floor stay within ±100 %
MAX_SAMPLE_PREMIUM_E8: Final = FUNDING_RATE_SCALE  # a sample is clamped to ±100 %
MAX_SAMPLES_PER_INTERVAL: Final = 86_400  # 1 s samples over 24 h


class PremiumWeighting(enum.Enum):
    LINEAR = "linear"  # Binance: weights 1, 2, …, n, later samples count more
    EQUAL = "equal"  # BitMEX, Hyperliquid, dYdX: the arithmetic mean


class ImpactShortfall(enum.Enum):
    SKIP = "skip"  # a side that cannot fill the impact notional skips the sample
    PARTIAL = "partial"  # average what there is; an empty side still skips


def is_int(value: object) -> bool:
    """An int and not a bool (True would pass for 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


class FundingConfig(msgspec.Struct, frozen=True, array_like=True):
    """One market's funding parameters. Rates in 1e-8 per funding interval, times in ns.

    interval_ns: the funding interval; it must divide 24 h (1, 2, 4, 8 h …), default 8 h.
    sample_interval_ns: premium sampling grid (5 s); it must divide the settlement period.
    interest_rate_e8: I per interval; None = 0.03 %/day pro rata (10_000 for 8 h).
    clamp_e8: the ±bound on I − P̄ (0.05 %). cap_e8 / floor_e8: the bounds of F (±0.3 %).
    impact_margin_atoms: impact notional = this × the market's max leverage (200 USDT → 25,000
    USDT for BTCUSDT at 125x). weighting, shortfall: see the module docstring.
    hourly_split: settle every hour at (1 h / interval) of F, Hyperliquid style.
    """

    interval_ns: int = DEFAULT_INTERVAL_NS
    sample_interval_ns: int = DEFAULT_SAMPLE_INTERVAL_NS
    interest_rate_e8: int | None = None
    clamp_e8: int = DEFAULT_CLAMP_E8
    cap_e8: int = DEFAULT_CAP_E8
    floor_e8: int = -DEFAULT_CAP_E8
    impact_margin_atoms: int = DEFAULT_IMPACT_MARGIN_ATOMS
    weighting: PremiumWeighting = PremiumWeighting.LINEAR
    shortfall: ImpactShortfall = ImpactShortfall.SKIP
    hourly_split: bool = False

    def __post_init__(self) -> None:
        for name in ("interval_ns", "sample_interval_ns", "clamp_e8", "cap_e8", "floor_e8"):
            if not is_int(getattr(self, name)):
                raise ValueError(f"funding {name} must be an int, got {getattr(self, name)!r}")
        if not is_int(self.impact_margin_atoms):
            raise ValueError("funding impact_margin_atoms must be an int")
        if self.interest_rate_e8 is not None and not is_int(self.interest_rate_e8):
            raise ValueError("funding interest_rate_e8 must be an int or None")
        if not isinstance(self.weighting, PremiumWeighting):
            raise ValueError(f"funding weighting must be a PremiumWeighting: {self.weighting!r}")
        if not isinstance(self.shortfall, ImpactShortfall):
            raise ValueError(f"funding shortfall must be an ImpactShortfall: {self.shortfall!r}")
        if not isinstance(self.hourly_split, bool):
            raise ValueError("funding hourly_split must be a bool")
        if self.interval_ns <= 0 or NS_PER_DAY % self.interval_ns:
            raise ValueError(
                f"funding interval_ns {self.interval_ns} must divide 24 h "
                f"({NS_PER_DAY} ns): 1, 2, 3, 4, 6, 8, 12 or 24 h, or a divisor of an hour"
            )
        if self.hourly_split and self.interval_ns % NS_PER_HOUR:
            raise ValueError("hourly_split needs an interval_ns that is a whole number of hours")
        period_ns = self.period_ns
        if self.sample_interval_ns <= 0 or period_ns % self.sample_interval_ns:
            raise ValueError(
                f"funding sample_interval_ns {self.sample_interval_ns} must be positive and "
                f"divide the settlement period ({period_ns} ns)"
            )
        # Comparing interval > MAX x sample avoids a division.
        if self.interval_ns > MAX_SAMPLES_PER_INTERVAL * self.sample_interval_ns:
            raise ValueError(
                f"funding: more than {MAX_SAMPLES_PER_INTERVAL} samples per interval; "
                "use a longer sample_interval_ns"
            )
        if self.interest_rate_e8 is None:
            # Exact: the interval divides the day (checked above).
            periods_per_day = div(NS_PER_DAY, self.interval_ns, Rounding.TRUNC)
            if INTEREST_PER_DAY_E8 % periods_per_day:
                raise ValueError(
                    f"funding: 0.03 %/day is not a whole number of 1e-8 per "
                    f"{self.interval_ns} ns interval; give interest_rate_e8 explicitly"
                )
        elif abs(self.interest_rate_e8) > MAX_RATE_E8:
            raise ValueError("funding interest_rate_e8 must be within ±100 % (±1e8)")
        if not 0 <= self.clamp_e8 <= MAX_RATE_E8:
            raise ValueError("funding clamp_e8 must be in [0, 1e8]")
        if not -MAX_RATE_E8 <= self.floor_e8 <= 0 <= self.cap_e8 <= MAX_RATE_E8:
            raise ValueError(
                f"funding needs -1e8 <= floor_e8 <= 0 <= cap_e8 <= 1e8, got floor "
                f"{self.floor_e8}, cap {self.cap_e8}"
            )
        if not 0 < self.impact_margin_atoms <= NOTIONAL_BOUND_ATOMS:
            raise ValueError("funding impact_margin_atoms must be positive (and below 2^60)")

    @property
    def period_ns(self) -> int:
        """Time between two settlements: 1 h with hourly_split, else the funding interval."""
        return NS_PER_HOUR if self.hourly_split else self.interval_ns

    @property
    def rate_divisor(self) -> int:
        """Settlements per funding interval: each one charges F / rate_divisor."""
        # Exact: the period is the interval, or 1 h and the interval is whole hours.
        return div(self.interval_ns, self.period_ns, Rounding.TRUNC)

    @property
    def interest_e8(self) -> int:
        """I per funding interval, the pro-rata default resolved."""
        if self.interest_rate_e8 is not None:
            return self.interest_rate_e8
        # Exact: __post_init__ checked that the periods per day divide the daily rate.
        periods_per_day = div(NS_PER_DAY, self.interval_ns, Rounding.TRUNC)
        return div(INTEREST_PER_DAY_E8, periods_per_day, Rounding.TRUNC)
