"""The funding pass: at a funding time every open position pays or receives, through FUNDING.

Also the replayed history rates that stand in for the computed ones.

Units: prices in ticks, money in atoms, rates in 1e-8, time in ns. Isolated positions pay from
their isolated margin, cross ones from the wallet; payers round up and receivers down
(`funding_settlement.funding_payments`), and the dust stays in FUNDING (DESIGN.md §2: booked,
not lost). A replayed rate (`SetFundingRate`) is charged whole, per interval, at the
settlement it names.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from perpex.core.funding_settlement import FundingSettlement, funding_payments
from perpex.core.messages import (
    Event,
    FundingPaid,
    FundingSettled,
    Reason,
    RequestRejected,
    SetFundingRate,
)
from perpex.core.state import ExchangeState, MarketState
from perpex.core.store import MAX_CLOCK_NS

MAX_FUNDING_OVERRIDES: Final = 10_000  # replayed rates waiting for their settlement, per market
MAX_RATE_E8: Final = 100_000_000  # |funding rate| <= 100 %


def settle_funding(
    state: ExchangeState,
    symbol: str,
    market: MarketState,
    settlement: FundingSettlement,
    events: list[Event],
) -> None:
    """Every open position of `symbol` pays (or receives) its funding at the mark."""
    rate_e8, divisor = settlement.rate_e8, settlement.rate_divisor
    override = market.funding_overrides.pop(settlement.time_ns, None)
    if override is not None:  # a replayed history rate is charged whole, per interval
        rate_e8, divisor = override, 1
    market.last_funding_rate_e8 = rate_e8
    mark = market.mark_ticks
    spec = market.spec
    names = sorted(state.holders[symbol])
    accounts = state.accounts
    positions = [accounts[name].positions[symbol] for name in names]
    dust = 0
    if positions:
        sizes = np.fromiter((p.size_lots for p in positions), np.int64, len(positions))
        payments, dust = funding_payments(sizes, mark, spec.atoms_per_tick_lot, rate_e8, divisor)
        funding = state.ledger.funding
        for name, pos, paid in zip(names, positions, payments.tolist(), strict=True):
            if not paid:
                continue
            source = pos.margin if pos.isolated else accounts[name].wallet
            state.transfer(source, funding, paid)
            events.append(
                FundingPaid(
                    name, symbol, settlement.time_ns, paid, rate_e8, pos.size_lots, pos.isolated
                )
            )
    events.append(
        FundingSettled(
            symbol,
            settlement.time_ns,
            rate_e8,
            divisor,
            mark,
            settlement.premium_e8,
            dust,
        )
    )


def set_funding_rate(state: ExchangeState, cmd: SetFundingRate) -> list[Event]:
    """Charge a replayed history rate at a funding time still to come (no event)."""
    market = state.markets.get(cmd.symbol)
    if market is None:
        return [RequestRejected("", cmd.symbol, Reason.UNKNOWN_SYMBOL)]
    period_ns = market.funding_config.period_ns
    if (
        abs(cmd.rate_e8) > MAX_RATE_E8
        or cmd.funding_time_ns <= state.clock_ns  # only a settlement still to come
        or cmd.funding_time_ns > MAX_CLOCK_NS  # a time the clock can reach (and store)
        or cmd.funding_time_ns % period_ns
        or market.funding_config.hourly_split  # a history rate is per whole interval
        or (
            cmd.funding_time_ns not in market.funding_overrides
            and len(market.funding_overrides) >= MAX_FUNDING_OVERRIDES
        )
    ):
        return [RequestRejected("", cmd.symbol, Reason.INVALID_FUNDING_RATE)]
    market.funding_overrides[cmd.funding_time_ns] = cmd.rate_e8
    return []


__all__ = ["MAX_FUNDING_OVERRIDES", "MAX_RATE_E8", "set_funding_rate", "settle_funding"]
