"""The premium index of one market accumulated over each settlement period, and the funding
times it comes due at (`FundingState`); the entry point to funding, which re-exports the rest.

Units: prices in ticks, sizes in lots, money in atoms, time in ns of the virtual clock, premiums
and funding rates in 1e-8 (`FUNDING_RATE_SCALE`; Binance publishes "0.00010000" = 10_000).
Impact prices are exact rationals in ticks, `(numerator, denominator > 0)`, as in oracle.py.

The rule (MECHANICS.md §1.7, Binance USDⓈ-M; §2.1 BitMEX, §4 Hyperliquid, §5.4 dYdX):

    premium sample  P = [max(0, impact bid − index) − max(0, index − impact ask)] / index
    average         P̄ = Σ wᵢ·Pᵢ / Σ wᵢ  over the samples of the settlement period
    rate            F = clamp(P̄ + clamp(I − P̄, −clamp, +clamp), floor, cap)
    payment         |size| × mark × F, a positive F makes longs pay shorts

Public API (all pure; nothing reads a clock, a file or a global random generator), by module:

* `funding_config`: `FundingConfig` — per-market parameters (msgspec struct, validated; part
  of the state hash), and the limits.
* `funding_premium`: `impact_prices(book, impact_notional_atoms, atoms_per_tick_lot, *,
  allow_partial=False)` → `(impact_bid, impact_ask)`, each `(num, den)` ticks or None.
* `premium_e8(impact_bid, impact_ask, index_ticks)` → one premium sample.
* `sample_premium_e8(book, index_ticks, impact_notional_atoms, atoms_per_tick_lot,
  shortfall)` → the sample the state records at a grid point, or None (skipped).
* `funding_rate_e8(average_premium_e8, config)` → F.
* this module: `FundingState` — the accumulating premium of one market: `advance(now_ns, book,
  index_ticks) -> list[FundingSettlement]` is all an engine needs; `on_sample`,
  `on_premium`, `due_settlements`, `settle_rate`, `predicted_rate_e8`, `record` and
  `from_record` are the pieces it is made of.
* `funding_settlement`: `FundingSettlement` — what one settlement charges: `rate_e8` (F, per
  funding interval) and `rate_divisor` (8 when Hyperliquid-style hourly settlement charges F/8).
* `funding_payments(size_lots, mark_ticks, atoms_per_tick_lot, rate_e8, rate_divisor=1)`
  → `(payment_atoms per position, dust_atoms)`, NumPy int64; `funding_payments_scalar` is
  its plain-int twin (the specification; a property test holds the two equal).
* `funding_history`: `FundingSchedule` — historical rates by settlement time (replay of real
  funding), and `format_utc`.

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

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from perpex.core.funding_config import (
    DEFAULT_CAP_E8,
    DEFAULT_CLAMP_E8,
    DEFAULT_IMPACT_MARGIN_ATOMS,
    DEFAULT_INTERVAL_NS,
    DEFAULT_SAMPLE_INTERVAL_NS,
    INTEREST_PER_DAY_E8,
    MAX_RATE_E8,
    MAX_SAMPLE_PREMIUM_E8,
    MAX_SAMPLES_PER_INTERVAL,
    NS_PER_DAY,
    NS_PER_HOUR,
    FundingConfig,
    ImpactShortfall,
    PremiumWeighting,
    is_int,
)
from perpex.core.funding_history import (
    MAX_SCHEDULE_RATES,
    FundingRateMissing,
    FundingSchedule,
    format_utc,
)
from perpex.core.funding_premium import (
    MAX_IMPACT_LEVELS,
    DepthSource,
    Ratio,
    funding_rate_e8,
    impact_notional_atoms,
    impact_prices,
    premium_e8,
    sample_premium_e8,
)
from perpex.core.funding_settlement import (
    MAX_RATE_DIVISOR,
    FundingSettlement,
    funding_payments,
    funding_payments_scalar,
)
from perpex.core.oracle import FUNDING_RATE_SCALE
from perpex.core.units import Rounding, div

if TYPE_CHECKING:
    from perpex.core.markets import MarketSpec

MAX_SETTLEMENTS_PER_ADVANCE: Final = 100_000  # > 11 years of hourly funding in one jump


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
        if not is_int(impact_notional_atoms) or impact_notional_atoms <= 0:
            raise ValueError("impact_notional_atoms must be a positive int")
        if not is_int(atoms_per_tick_lot) or atoms_per_tick_lot <= 0:
            raise ValueError("atoms_per_tick_lot must be a positive int")
        if not is_int(start_ns) or start_ns < 0:
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
            if not is_int(premium_e8):
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
        if not is_int(now_ns):
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
            if not is_int(value):
                raise ValueError(f"funding record field {value!r} is not an int")
        if last_settled is not None and not is_int(last_settled):
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
