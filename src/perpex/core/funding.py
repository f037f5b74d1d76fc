"""Funding: the premium index sampled from the book, the funding rate, and its settlement.

Units: prices in ticks, sizes in lots, money in atoms, time in ns of the virtual clock, premiums
and funding rates in 1e-8 (`FUNDING_RATE_SCALE`; Binance publishes "0.00010000" = 10_000).
Impact prices are exact rationals in ticks, `(numerator, denominator > 0)`, as in oracle.py.

The rule (MECHANICS.md §1.7, Binance USDⓈ-M; §2.1 BitMEX, §4 Hyperliquid, §5.4 dYdX):

    premium sample  P = [max(0, impact bid − index) − max(0, index − impact ask)] / index
    average         P̄ = Σ wᵢ·Pᵢ / Σ wᵢ  over the samples of the settlement period
    rate            F = clamp(P̄ + clamp(I − P̄, −clamp, +clamp), floor, cap)
    payment         |size| × mark × F, a positive F makes longs pay shorts

Public API (all pure; nothing reads a clock, a file or a global random generator):

* `FundingConfig` — per-market parameters (msgspec struct, validated; part of the state hash).
* `impact_prices(book, impact_notional_atoms, atoms_per_tick_lot, *, allow_partial=False)`
  → `(impact_bid, impact_ask)`, each `(num, den)` ticks or None.
* `premium_e8(impact_bid, impact_ask, index_ticks)` → one premium sample.
* `sample_premium_e8(book, index_ticks, impact_notional_atoms, atoms_per_tick_lot,
  shortfall)` → the sample the state records at a grid point, or None (skipped).
* `funding_rate_e8(average_premium_e8, config)` → F.
* `FundingState` — the accumulating premium of one market: `advance(now_ns, book,
  index_ticks) -> list[FundingSettlement]` is all an engine needs; `on_sample`,
  `on_premium`, `due_settlements`, `settle_rate`, `predicted_rate_e8`, `record` and
  `from_record` are the pieces it is made of.
* `FundingSettlement` — what one settlement charges: `rate_e8` (F, per funding interval) and
  `rate_divisor` (8 when Hyperliquid-style hourly settlement charges F/8).
* `funding_payments(size_lots, mark_ticks, atoms_per_tick_lot, rate_e8, rate_divisor=1)`
  → `(payment_atoms per position, dust_atoms)`, NumPy int64; `funding_payments_scalar` is
  its plain-int twin (the specification; a property test holds the two equal).
* `FundingSchedule` — historical rates by settlement time (replay of real funding).

How an engine uses it. Per market, `state = FundingState.for_market(spec, start_ns, config)`.
On every command at time `now`, *before* the command changes the book or the index, call
`settlements = state.advance(now, market.book, index_ticks)`: the book and the index passed are
the ones that held since the previous command, so they are the samples of every 5-s grid point
in between; every funding time that was reached is settled in time order. For each settlement,
with the mark that held at that time, `payments, dust = funding_payments(sizes, mark, k,
s.rate_e8, s.rate_divisor)` over *all* open positions of the symbol (they net to zero lots);
debit each position's payment from its margin (isolated) or wallet (cross), and credit the
sum of the payments (= dust, ≥ 0) to the FUNDING ledger bucket, so the ledger still sums to
zero. `state.predicted_rate_e8()` is Binance's "lastFundingRate" of GET /fapi/v1/premiumIndex
(the estimate for the coming settlement) and is the funding rate Price 1 of the mark uses
(`compute_mark(funding_rate_e8=..., time_to_funding_ns=state.next_funding_ns - now,
funding_interval_ns=config.interval_ns)`). `state.record()` goes into the snapshot;
`FundingState.from_record(record, config, impact_notional_atoms=..., atoms_per_tick_lot=...)`
restores it exactly.

Decisions (where the sources are silent or disagree):

* Funding times are the multiples of the settlement period since the Unix epoch (00:00, 08:00,
  16:00 UTC for 8 h). The interval must divide 24 h, so the schedule restarts every UTC day.
  A period covers the grid points in (previous funding time, funding time]: 5,760 samples of
  5 s for 8 h, the point at the funding time itself included.
* Weighting: Binance's 1, 2, …, n (a sample's weight is its position in the period, so later
  samples count more; MECHANICS.md §1.7 and §8.1 mark it UNSURE, but perpex follows Binance by
  default) or EQUAL (the arithmetic mean of BitMEX, Hyperliquid and dYdX). Memory is three
  integers whatever the period length: Σ w·P, Σ w and the count.
* A side of the book that cannot fill the impact notional skips the sample (SKIP, default): a
  thin book does not show a premium anyone can trade, and averaging a partial fill would let a
  small order set the rate. PARTIAL averages what there is (handy for small simulated books);
  a side with nothing on it skips the sample either way. So does a missing index. A skipped
  point counts in neither sum (it is not zero-padded as dYdX does); with no sample at all in a
  period P̄ = 0 and F = I (within the cap).
* Rounding: a premium sample and P̄ are truncated toward zero: the same size of premium rounds
  the same way for longs and shorts, and is never overstated. A sample is clamped to ±100 %
  (dYdX clamps premium votes too), which keeps Σ w·P inside int64 for any allowed config.
* Interest for an interval shorter than 8 h: 0.03 %/day pro rata (10_000 per 8 h, 5_000 per
  4 h, 1_250 per 1 h) unless `interest_rate_e8` is given. Binance states the daily figure;
  **UNSURE** that it scales shorter intervals this way. The clamp, cap and floor are not scaled:
  Binance publishes them per symbol together with its interval (fundingInfo).
* Cap and floor default to ±0.3 %: 0.75 × the 0.4 % MMR of BTCUSDT's max-leverage bracket, the
  historical rule (MECHANICS.md §1.7; the shipped 2019-2026 BTCUSDT history never leaves
  ±0.3 %). **UNSURE** for BTCUSDT today; set them per market.
* Hourly split (Hyperliquid, MECHANICS.md §4): F is still an interval (8 h) rate, computed from
  the premium averaged over the hour, and every hour charges F/8. The 1/8 is never rounded on
  its own: the payment is |size| × mark × F / (8 × 1e8), rounded once, in atoms.
* Payment rounding: toward the payer. A payer pays the ceiling, a receiver receives the floor
  (both are `ceil` of the signed payment), so Σ paid ≥ Σ received; the difference (dust, 0 ≤
  dust < number of positions) is booked in the FUNDING bucket, never lost.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Callable, Iterable, Sequence
from math import gcd
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgspec
import numpy as np
import numpy.typing as npt

from perpex.core.oracle import FUNDING_RATE_SCALE, NS_PER_SECOND
from perpex.core.units import ATOMS_PER_UNIT, NOTIONAL_BOUND_ATOMS, Rounding, div

if TYPE_CHECKING:
    from perpex.core.markets import MarketSpec

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
MAX_RATE_DIVISOR: Final = 24  # hourly settlement of a 24 h rate
MAX_IMPACT_LEVELS: Final = 10_000  # book levels walked per side for one impact price
MAX_SETTLEMENTS_PER_ADVANCE: Final = 100_000  # > 11 years of hourly funding in one jump
MAX_SCHEDULE_RATES: Final = 250_000  # > 28 years of hourly funding

_INT64_MIN: Final = -(2**63)
_INT64_SAFE: Final = 2**62  # sums below this cannot wrap int64

# A rational price in ticks: (numerator, denominator > 0).
Ratio = tuple[int, int]


class PremiumWeighting(enum.Enum):
    LINEAR = "linear"  # Binance: weights 1, 2, …, n, later samples count more
    EQUAL = "equal"  # BitMEX, Hyperliquid, dYdX: the arithmetic mean


class ImpactShortfall(enum.Enum):
    SKIP = "skip"  # a side that cannot fill the impact notional skips the sample
    PARTIAL = "partial"  # average what there is; an empty side still skips


def _is_int(value: object) -> bool:
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
            if not _is_int(getattr(self, name)):
                raise ValueError(f"funding {name} must be an int, got {getattr(self, name)!r}")
        if not _is_int(self.impact_margin_atoms):
            raise ValueError("funding impact_margin_atoms must be an int")
        if self.interest_rate_e8 is not None and not _is_int(self.interest_rate_e8):
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


# -- impact prices and the premium ----------------------------------------------------------


class DepthSource(Protocol):
    """What the premium needs of a book: OrderBook.depth (and the tests' ReferenceBook)."""

    def depth(self, levels: int = ...) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]: ...


def _reduced(numerator: int, denominator: int) -> Ratio:
    g = gcd(numerator, denominator)
    # Exact: g divides both.
    return div(numerator, g, Rounding.TRUNC), div(denominator, g, Rounding.TRUNC)


def _impact_price(
    levels: Sequence[tuple[int, int]], target_atoms: int, k: int, allow_partial: bool
) -> tuple[Ratio | None, bool]:
    """(average fill price of `target_atoms` of notional over `levels`, whether more levels
    could help). The last level is taken in part, by notional, so a fill may end between lots:
    the average is target / base quantity = N·p / (k·p·Q + R) ticks, exactly."""
    filled_atoms = 0
    full_lots = 0
    for price_ticks, lots in levels:
        level_atoms = price_ticks * lots * k
        if filled_atoms + level_atoms >= target_atoms:
            rest_atoms = target_atoms - filled_atoms
            return _reduced(
                target_atoms * price_ticks, k * price_ticks * full_lots + rest_atoms
            ), False
        filled_atoms += level_atoms
        full_lots += lots
    if allow_partial and full_lots:
        return _reduced(filled_atoms, k * full_lots), True
    return None, True


def impact_prices(
    book: DepthSource,
    impact_notional_atoms: int,
    atoms_per_tick_lot: int,
    *,
    allow_partial: bool = False,
) -> tuple[Ratio | None, Ratio | None]:
    """(impact bid, impact ask): the average price of a market sell / buy of the impact notional.

    Walks the book level by level, best first, through its public `depth`. A side that cannot
    fill the notional within `MAX_IMPACT_LEVELS` levels is None, unless `allow_partial`, when
    it is the average of all its depth (None only if the side is empty).
    """
    if impact_notional_atoms <= 0 or atoms_per_tick_lot <= 0:
        raise ValueError("impact notional and atoms_per_tick_lot must be positive")
    levels = 16
    bid: Ratio | None = None
    ask: Ratio | None = None
    bid_done = ask_done = False
    while True:
        bids, asks = book.depth(levels)
        if not bid_done:
            bid, more = _impact_price(bids, impact_notional_atoms, atoms_per_tick_lot, False)
            bid_done = not more or len(bids) < levels
        if not ask_done:
            ask, more = _impact_price(asks, impact_notional_atoms, atoms_per_tick_lot, False)
            ask_done = not more or len(asks) < levels
        if (bid_done and ask_done) or levels >= MAX_IMPACT_LEVELS:
            break
        levels = min(4 * levels, MAX_IMPACT_LEVELS)
    if allow_partial:
        if bid is None:
            bid, _ = _impact_price(bids, impact_notional_atoms, atoms_per_tick_lot, True)
        if ask is None:
            ask, _ = _impact_price(asks, impact_notional_atoms, atoms_per_tick_lot, True)
    return bid, ask


def premium_e8(impact_bid: Ratio, impact_ask: Ratio, index_ticks: int) -> int:
    """P = [max(0, bid − index) − max(0, index − ask)] / index in 1e-8, truncated toward zero.

    At most one term is non-zero for a bid below the ask; for a crossed pair (bid ≥ ask) both
    may be, and the formula is applied as written.
    """
    if index_ticks <= 0:
        raise ValueError(f"index {index_ticks} ticks is not positive")
    (bid_num, bid_den), (ask_num, ask_den) = impact_bid, impact_ask
    if bid_den <= 0 or ask_den <= 0:
        raise ValueError("impact price denominators must be positive")
    over_num = max(0, bid_num - index_ticks * bid_den)  # (bid − index) × bid_den, if > 0
    under_num = max(0, index_ticks * ask_den - ask_num)  # (index − ask) × ask_den, if > 0
    numerator = (over_num * ask_den - under_num * bid_den) * FUNDING_RATE_SCALE
    # Truncated toward zero: a premium and a discount of the same size round alike, and the
    # sample never claims more premium than the book shows.
    return div(numerator, bid_den * ask_den * index_ticks, Rounding.TRUNC)


def sample_premium_e8(
    book: DepthSource | None,
    index_ticks: int | None,
    impact_notional_atoms: int,
    atoms_per_tick_lot: int,
    shortfall: ImpactShortfall = ImpactShortfall.SKIP,
) -> int | None:
    """The premium sample a grid point records, clamped to ±100 %; None = the point is skipped
    (no index, no book, or a side that cannot give an impact price)."""
    if book is None or index_ticks is None or index_ticks <= 0:
        return None
    bid, ask = impact_prices(
        book,
        impact_notional_atoms,
        atoms_per_tick_lot,
        allow_partial=shortfall is ImpactShortfall.PARTIAL,
    )
    if bid is None or ask is None:
        return None
    sample = premium_e8(bid, ask, index_ticks)
    return min(max(sample, -MAX_SAMPLE_PREMIUM_E8), MAX_SAMPLE_PREMIUM_E8)


def funding_rate_e8(average_premium_e8: int, config: FundingConfig) -> int:
    """F = P̄ + clamp(I − P̄, −clamp, +clamp), then bounded to [floor, cap] (MECHANICS.md §1.7)."""
    interest_gap_e8 = config.interest_e8 - average_premium_e8
    bounded_gap_e8 = min(max(interest_gap_e8, -config.clamp_e8), config.clamp_e8)
    rate = average_premium_e8 + bounded_gap_e8
    return min(max(rate, config.floor_e8), config.cap_e8)


# -- settlement -----------------------------------------------------------------------------


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
    if not _is_int(mark_ticks) or mark_ticks <= 0:
        raise ValueError(f"mark {mark_ticks!r} ticks must be a positive int")
    if not _is_int(atoms_per_tick_lot) or atoms_per_tick_lot <= 0:
        raise ValueError("atoms_per_tick_lot must be a positive int")
    if mark_ticks * atoms_per_tick_lot > NOTIONAL_BOUND_ATOMS:
        raise ValueError("one lot at this mark exceeds the 2^60-atom notional bound")
    if not _is_int(rate_e8) or abs(rate_e8) > MAX_RATE_E8:
        raise ValueError(f"funding rate {rate_e8!r} must be an int within ±1e8")
    if not _is_int(rate_divisor) or not 1 <= rate_divisor <= MAX_RATE_DIVISOR:
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


# -- history --------------------------------------------------------------------------------


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


_MONTH_DAYS: Final = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def format_utc(time_ns: int) -> str:
    """'2021-01-01T08:00:00Z' for a whole second, with the ns appended otherwise.

    Plain calendar arithmetic (the core may not import datetime, the clock's module); only
    error messages use it, so stepping a year at a time from 1970 is fast enough.
    """
    # FLOOR: times before 1970 belong to the day that started before them.
    days = div(time_ns, 86_400 * NS_PER_SECOND, Rounding.FLOOR)
    rest_ns = time_ns - days * 86_400 * NS_PER_SECOND
    year = 1970
    while days < 0:
        year -= 1
        days += 366 if _is_leap(year) else 365
    while days >= (366 if _is_leap(year) else 365):
        days -= 366 if _is_leap(year) else 365
        year += 1
    month = 1
    for month_days in _MONTH_DAYS:
        length = month_days + (1 if month == 2 and _is_leap(year) else 0)
        if days < length:
            break
        days -= length
        month += 1
    # FLOOR on a non-negative time of day: whole hours, minutes and seconds elapsed.
    day_seconds = div(rest_ns, NS_PER_SECOND, Rounding.FLOOR)
    ns = rest_ns - day_seconds * NS_PER_SECOND
    hours = div(day_seconds, 3_600, Rounding.FLOOR)
    minutes = div(day_seconds - hours * 3_600, 60, Rounding.FLOOR)
    seconds = day_seconds - hours * 3_600 - minutes * 60
    text = f"{year:04d}-{month:02d}-{days + 1:02d}T{hours:02d}:{minutes:02d}:{seconds:02d}"
    return f"{text}.{ns:09d}Z" if ns else f"{text}Z"


class FundingRateMissing(LookupError):
    """A settlement time the history does not hold (replay needs an exact match)."""


class FundingSchedule:
    """Realised funding rates by settlement time, for replaying history (see perpex.history).

    `rate_at(time_ns)` needs an exact match: a time the history does not hold raises
    `FundingRateMissing`, naming the time and the covered range, rather than guessing.
    """

    __slots__ = ("_rates", "_times")

    def __init__(self, history: Iterable[tuple[int, int]]) -> None:
        times: list[int] = []
        rates: list[int] = []
        for time_ns, rate_e8 in history:
            if len(times) >= MAX_SCHEDULE_RATES:
                raise ValueError(f"a funding history holds at most {MAX_SCHEDULE_RATES} rates")
            if not _is_int(time_ns) or not _is_int(rate_e8):
                raise ValueError(f"funding history rows are (int, int), got {time_ns!r}")
            if times and time_ns <= times[-1]:
                raise ValueError(
                    f"funding history out of order at {format_utc(time_ns)} "
                    f"(after {format_utc(times[-1])})"
                )
            if abs(rate_e8) > MAX_RATE_E8:
                raise ValueError(f"funding rate {rate_e8} at {format_utc(time_ns)} beyond ±100 %")
            times.append(time_ns)
            rates.append(rate_e8)
        if not times:
            raise ValueError("a funding history needs at least one rate")
        self._times = tuple(times)
        self._rates = tuple(rates)

    def __len__(self) -> int:
        return len(self._times)

    @property
    def first_ns(self) -> int:
        return self._times[0]

    @property
    def last_ns(self) -> int:
        return self._times[-1]

    def get(self, time_ns: int) -> int | None:
        i = bisect.bisect_left(self._times, time_ns)
        if i < len(self._times) and self._times[i] == time_ns:
            return self._rates[i]
        return None

    def rate_at(self, time_ns: int) -> int:
        rate = self.get(time_ns)
        if rate is None:
            raise FundingRateMissing(
                f"no funding rate at {format_utc(time_ns)} in the history "
                f"({format_utc(self.first_ns)} .. {format_utc(self.last_ns)}, {len(self)} rates)"
            )
        return rate

    def between(self, start_ns: int, end_ns: int) -> list[tuple[int, int]]:
        """(time, rate) of every settlement with start <= time <= end, in time order."""
        lo = bisect.bisect_left(self._times, start_ns)
        hi = bisect.bisect_right(self._times, end_ns)
        return list(zip(self._times[lo:hi], self._rates[lo:hi], strict=True))


# -- state ----------------------------------------------------------------------------------


class FundingState:
    """The premium of one market accumulating over the current settlement period.

    Samples are due on the grid of multiples of `sample_interval_ns` since time 0; a period
    owns the points in (previous funding time, funding time]. `on_sample(now, book, index)`
    records one sample for each grid point in (previous call, now] with the values passed
    (they held over the gap, so call it before a command changes them), but never past the
    next funding time: `settle_rate` must close that period first (`advance` does both, in
    order). A point skipped (see `sample_premium_e8`) counts in neither sum. Memory: three
    integers, whatever the period length. Points a period never sampled before it was
    settled are lost, not moved into the next one.
    """

    __slots__ = (
        "_count",
        "_last_point",
        "_last_rate_e8",
        "_last_settlement_ns",
        "_next_funding_ns",
        "_weight_sum",
        "_weighted_sum_e8",
        "atoms_per_tick_lot",
        "config",
        "impact_notional_atoms",
        "schedule",
    )

    def __init__(
        self,
        config: FundingConfig,
        *,
        impact_notional_atoms: int,
        atoms_per_tick_lot: int,
        start_ns: int,
        schedule: FundingSchedule | None = None,
    ) -> None:
        if not _is_int(impact_notional_atoms) or impact_notional_atoms <= 0:
            raise ValueError("impact_notional_atoms must be a positive int")
        if not _is_int(atoms_per_tick_lot) or atoms_per_tick_lot <= 0:
            raise ValueError("atoms_per_tick_lot must be a positive int")
        if not _is_int(start_ns) or start_ns < 0:
            raise ValueError(f"start_ns {start_ns!r} must be an int >= 0")
        if schedule is not None and config.hourly_split:
            raise ValueError("a funding schedule charges its own rates; hourly_split must be off")
        self.config = config
        self.impact_notional_atoms = impact_notional_atoms
        self.atoms_per_tick_lot = atoms_per_tick_lot
        self.schedule = schedule
        period_ns = config.period_ns
        # The first funding time strictly after the start (nobody held a position before it).
        self._next_funding_ns = (
            div(start_ns, period_ns, Rounding.FLOOR) + 1
        ) * period_ns  # FLOOR: the period the start falls in
        # The start's own grid point is passed: nothing existed to sample before it.
        self._last_point = div(start_ns, config.sample_interval_ns, Rounding.FLOOR)
        self._weighted_sum_e8 = 0
        self._weight_sum = 0
        self._count = 0
        self._last_rate_e8 = 0
        self._last_settlement_ns: int | None = None

    @classmethod
    def for_market(
        cls,
        spec: MarketSpec,
        start_ns: int,
        config: FundingConfig | None = None,
        schedule: FundingSchedule | None = None,
    ) -> FundingState:
        """The state of `spec`'s market, its impact notional = impact margin × max leverage."""
        config = config or FundingConfig()
        return cls(
            config,
            impact_notional_atoms=impact_notional_atoms(config, spec),
            atoms_per_tick_lot=spec.atoms_per_tick_lot,
            start_ns=start_ns,
            schedule=schedule,
        )

    # -- reading ----------------------------------------------------------------------------
    @property
    def next_funding_ns(self) -> int:
        return self._next_funding_ns

    @property
    def last_rate_e8(self) -> int:
        """The rate charged at the last settlement (0 before the first)."""
        return self._last_rate_e8

    @property
    def last_settlement_ns(self) -> int | None:
        return self._last_settlement_ns

    @property
    def sample_count(self) -> int:
        return self._count

    def average_premium_e8(self) -> int:
        """P̄ of the samples so far in this period, truncated toward zero; 0 without samples."""
        if self._weight_sum == 0:
            return 0
        # TRUNC: symmetric for premium and discount (see premium_e8).
        return div(self._weighted_sum_e8, self._weight_sum, Rounding.TRUNC)

    def predicted_rate_e8(self) -> int:
        """The rate `settle_rate` would charge if the period ended with the samples so far
        (Binance's "lastFundingRate" estimate); with a schedule, the scheduled rate if any."""
        if self.schedule is not None:
            scheduled = self.schedule.get(self._next_funding_ns)
            if scheduled is not None:
                return scheduled
        return funding_rate_e8(self.average_premium_e8(), self.config)

    def due_settlements(self, now_ns: int) -> tuple[int, ...]:
        """Funding times reached by `now` and not yet settled, oldest first."""
        if now_ns < self._next_funding_ns:
            return ()
        period_ns = self.config.period_ns
        # FLOOR: the last funding time at or before now.
        count = div(now_ns - self._next_funding_ns, period_ns, Rounding.FLOOR) + 1
        if count > MAX_SETTLEMENTS_PER_ADVANCE:
            raise ValueError(
                f"{count} funding settlements due at once; advance the clock in smaller steps "
                f"(at most {MAX_SETTLEMENTS_PER_ADVANCE})"
            )
        return tuple(self._next_funding_ns + i * period_ns for i in range(count))

    # -- writing ----------------------------------------------------------------------------
    def on_sample(self, now_ns: int, book: DepthSource | None, index_ticks: int | None) -> None:
        """Record the premium of `book` against `index_ticks` at every grid point in (last
        call, now], up to the next funding time. The book is walked at most once per call."""
        self._sample_until(
            now_ns,
            lambda: sample_premium_e8(
                book,
                index_ticks,
                self.impact_notional_atoms,
                self.atoms_per_tick_lot,
                self.config.shortfall,
            ),
        )

    def on_premium(self, now_ns: int, premium_e8: int | None) -> None:
        """`on_sample` with the premium already computed (None: the points are skipped)."""
        if premium_e8 is not None:
            if not _is_int(premium_e8):
                raise ValueError(f"premium {premium_e8!r} must be an int")
            premium_e8 = min(max(premium_e8, -MAX_SAMPLE_PREMIUM_E8), MAX_SAMPLE_PREMIUM_E8)
        self._sample_until(now_ns, lambda: premium_e8)

    def settle_rate(self, funding_ns: int) -> FundingSettlement:
        """Close the period ending at `funding_ns` (must be `next_funding_ns`): its rate, then
        a fresh period. Call it only for a time the clock has reached (`due_settlements`)."""
        if funding_ns != self._next_funding_ns:
            raise ValueError(
                f"the next funding time is {format_utc(self._next_funding_ns)}, "
                f"not {format_utc(funding_ns)}"
            )
        premium = self.average_premium_e8()
        if self.schedule is not None:
            rate_e8 = self.schedule.rate_at(funding_ns)  # raises before anything changes
            rate_divisor = 1
        else:
            rate_e8 = funding_rate_e8(premium, self.config)
            rate_divisor = self.config.rate_divisor
        settlement = FundingSettlement(funding_ns, rate_e8, rate_divisor, premium, self._count)
        sample_ns = self.config.sample_interval_ns
        # Exact: the sample interval divides the period, so funding times are grid points.
        funding_point = div(funding_ns, sample_ns, Rounding.TRUNC)
        self._last_point = max(self._last_point, funding_point)
        self._next_funding_ns = funding_ns + self.config.period_ns
        self._weighted_sum_e8 = self._weight_sum = self._count = 0
        self._last_rate_e8 = rate_e8
        self._last_settlement_ns = funding_ns
        return settlement

    def advance(
        self, now_ns: int, book: DepthSource | None, index_ticks: int | None
    ) -> list[FundingSettlement]:
        """Sample up to `now` and settle every funding time reached, in order.

        `book` and `index_ticks` are the values that held since the previous call; the book
        is walked once, however many grid points and settlements the step spans.
        """
        self._check_clock(now_ns)
        due = self.due_settlements(now_ns)
        if self.schedule is not None:
            for funding_ns in due:  # validate before anything changes
                self.schedule.rate_at(funding_ns)
        cache: list[int | None] = []

        def premium() -> int | None:
            if not cache:
                cache.append(
                    sample_premium_e8(
                        book,
                        index_ticks,
                        self.impact_notional_atoms,
                        self.atoms_per_tick_lot,
                        self.config.shortfall,
                    )
                )
            return cache[0]

        settlements: list[FundingSettlement] = []
        for funding_ns in due:
            self._sample_until(funding_ns, premium)
            settlements.append(self.settle_rate(funding_ns))
        self._sample_until(now_ns, premium)
        return settlements

    def _check_clock(self, now_ns: int) -> None:
        if not _is_int(now_ns):
            raise ValueError(f"time {now_ns!r} must be an int")
        # FLOOR: the grid point at or before now.
        if div(now_ns, self.config.sample_interval_ns, Rounding.FLOOR) < self._last_point:
            raise ValueError(f"the clock went backwards: {now_ns} ns")

    def _sample_until(self, now_ns: int, premium: Callable[[], int | None]) -> None:
        self._check_clock(now_ns)
        sample_ns = self.config.sample_interval_ns
        # FLOOR: grid points at or before now; TRUNC is exact (funding times are grid points).
        point = div(now_ns, sample_ns, Rounding.FLOOR)
        last = min(point, div(self._next_funding_ns, sample_ns, Rounding.TRUNC))
        first = self._last_point + 1
        if last < first:
            return
        self._last_point = last
        value = premium()
        if value is None:
            return
        n = last - first + 1
        if self.config.weighting is PremiumWeighting.EQUAL:
            weight = n
        else:
            # Weight = the point's position in its period (1 … samples per period):
            # Σ_{i=a}^{b} i = (a + b)(b − a + 1) / 2, exact (one factor is even).
            period_start_point = div(
                self._next_funding_ns - self.config.period_ns, sample_ns, Rounding.TRUNC
            )
            a, b = first - period_start_point, last - period_start_point
            weight = div((a + b) * n, 2, Rounding.TRUNC)
        self._weighted_sum_e8 += weight * value
        self._weight_sum += weight
        self._count += n

    # -- snapshot (the period's sums shape the next rate, so they are part of the state) ----
    def record(self) -> list[int | None]:
        return [
            self._next_funding_ns,
            self._last_point,
            self._weighted_sum_e8,
            self._weight_sum,
            self._count,
            self._last_rate_e8,
            self._last_settlement_ns,
        ]

    @classmethod
    def from_record(
        cls,
        record: Sequence[Any],
        config: FundingConfig,
        *,
        impact_notional_atoms: int,
        atoms_per_tick_lot: int,
        schedule: FundingSchedule | None = None,
    ) -> FundingState:
        if len(record) != 7:
            raise ValueError(f"a funding record has 7 fields, got {len(record)}")
        next_ns, last_point, weighted, weights, count, last_rate, last_settled = record
        for value in (next_ns, last_point, weighted, weights, count, last_rate):
            if not _is_int(value):
                raise ValueError(f"funding record field {value!r} is not an int")
        if last_settled is not None and not _is_int(last_settled):
            raise ValueError(f"funding record last settlement {last_settled!r} is not an int")
        period_ns = config.period_ns
        sample_ns = config.sample_interval_ns
        if next_ns <= 0 or next_ns % period_ns:
            raise ValueError(f"funding record: {next_ns} is not a funding time of this config")
        # The last sampled point lies in the current period, its start point included.
        if not next_ns - period_ns <= last_point * sample_ns <= next_ns:
            raise ValueError("funding record: last sample point outside the current period")
        # Every sample weighs at least 1 (exactly 1 when EQUAL), and |P| <= 100 %.
        equal = config.weighting is PremiumWeighting.EQUAL
        if count < 0 or weights < count or (equal and weights != count):
            raise ValueError("funding record: inconsistent sample count and weights")
        if abs(weighted) > weights * MAX_SAMPLE_PREMIUM_E8:
            raise ValueError("funding record: weighted premium sum out of range")
        if abs(last_rate) > MAX_RATE_E8:
            raise ValueError("funding record: last rate beyond ±100 %")
        state = cls(
            config,
            impact_notional_atoms=impact_notional_atoms,
            atoms_per_tick_lot=atoms_per_tick_lot,
            start_ns=next_ns - period_ns,
            schedule=schedule,
        )
        state._next_funding_ns = next_ns
        state._last_point = last_point
        state._weighted_sum_e8 = weighted
        state._weight_sum = weights
        state._count = count
        state._last_rate_e8 = last_rate
        state._last_settlement_ns = last_settled
        return state


def impact_notional_atoms(config: FundingConfig, spec: MarketSpec) -> int:
    """Impact margin / initial margin rate at max leverage = impact margin × max leverage
    (MECHANICS.md §1.7: 200 USDT at 125x = 25,000 USDT for BTCUSDT)."""
    return config.impact_margin_atoms * spec.max_leverage


__all__ = [
    "DEFAULT_CAP_E8",
    "DEFAULT_CLAMP_E8",
    "DEFAULT_IMPACT_MARGIN_ATOMS",
    "DEFAULT_INTERVAL_NS",
    "DEFAULT_SAMPLE_INTERVAL_NS",
    "FUNDING_RATE_SCALE",
    "INTEREST_PER_DAY_E8",
    "MAX_IMPACT_LEVELS",
    "MAX_RATE_DIVISOR",
    "MAX_SAMPLES_PER_INTERVAL",
    "MAX_SAMPLE_PREMIUM_E8",
    "MAX_SCHEDULE_RATES",
    "MAX_SETTLEMENTS_PER_ADVANCE",
    "NS_PER_DAY",
    "NS_PER_HOUR",
    "DepthSource",
    "FundingConfig",
    "FundingRateMissing",
    "FundingSchedule",
    "FundingSettlement",
    "FundingState",
    "ImpactShortfall",
    "PremiumWeighting",
    "Ratio",
    "format_utc",
    "funding_payments",
    "funding_payments_scalar",
    "funding_rate_e8",
    "impact_notional_atoms",
    "impact_prices",
    "premium_e8",
    "sample_premium_e8",
]
