"""Exit ladders: targets for parts of a position, and a stop that moves as they fill (rules).

Units: prices in ticks, sizes in lots, money in atoms, rates in ppm. A ladder
(`PlaceExitLadder`) is, for an open position, reduce-only TAKE_PROFIT_MARKET targets (market
orders, so a target has filled, or not, in the step it fires; a partial fill counts) for
fractions of the position (rounded down to the lot; the last target takes the rest, so the
parts sum to the position) and a close-position STOP_MARKET. Once `move_stop_to_entry_after`
targets have filled, the stop is replaced by one at break-even: the tick where closing the
rest with a taker order gives back its cost basis plus its share of the entry fee (taken at
the taker rate, the most the entry can have paid) plus the taker fee of that close, rounded
against the trader (up for a long, down for a short) so stopping out there loses nothing.
Once `trail_after` targets have filled, a reduce-only TRAILING_STOP_MARKET for the rest (the
ladder's callback rate, trailing from that moment) replaces the stop, and the stop is not
moved again. A replacement stop that would fire at once fires at once. If the owner cancels
the ladder's stop, the ladder stops managing one. The ladder ends with its last order.

This module is pure: the rules and the orders a ladder places. Keeping ladders (their state,
the stop replacement when a target fills) is `perpex.core.conditional`'s.
"""

from __future__ import annotations

from typing import Final

import msgspec

from perpex.core.book import BUY, SELL
from perpex.core.markets import MarketSpec
from perpex.core.messages import Event, PlaceExitLadder, Reason, TradeExecuted
from perpex.core.trigger_rules import (
    CALLBACK_RATE_STEP_PPM,
    MAX_CALLBACK_RATE_PPM,
    MIN_CALLBACK_RATE_PPM,
    ConditionalKind,
    ConditionalOrder,
    WorkingType,
)
from perpex.core.units import PPM, Rounding, div

# An exit ladder's targets; with its stop they fit the per-account conditional-order limit.
MAX_LADDER_TARGETS: Final = 9
# Ticks the break-even search may step past its closed form (the per-fill fee rounds up by
# less than an atom, which a tick always covers once a position is worth a few atoms a tick).
MAX_BREAK_EVEN_STEPS: Final = 8

STAGE_STOP: Final = 0  # the ladder's stop is the one it was placed with
STAGE_BREAK_EVEN: Final = 1
STAGE_TRAILING: Final = 2


class ExitLadder(msgspec.Struct, kw_only=True, array_like=True):
    """One position's exit ladder (mutable: it counts fills and follows its stop)."""

    account: str
    symbol: str
    side: int  # the closing side: SELL for a long, BUY for a short
    target_ids: list[int]  # in target order, fired or not
    stop_order_id: int  # the stop it manages now; 0 once it has none (fired or canceled)
    move_stop_to_entry_after: int  # 0 = never
    trail_after: int  # 0 = never
    callback_rate_ppm: int
    working_type: WorkingType
    targets_filled: int = 0
    stage: int = STAGE_STOP


def break_even_price_ticks(spec: MarketSpec, size_lots: int, cost_atoms: int) -> int:
    """The stop price at which closing the whole position with a taker order loses nothing.

    Long (size > 0, cost C > 0): the lowest tick p with
        s·p·k − ceil(s·p·k·f) ≥ C + ceil(C·f)
    short: the highest tick p with
        s·p·k + ceil(s·p·k·f) ≤ |C| − ceil(|C|·f),
    where f is the taker fee (for the close, and for the entry, whose actual fee is not kept
    per position: the taker rate is the most it can have been). Closed form first (exact
    division, rounded against the trader), then at most a few ticks for the per-fill rounding.
    """
    assert size_lots != 0
    k = spec.atoms_per_tick_lot
    fee = spec.taker_fee_ppm
    lots = abs(size_lots)
    entry_fee_atoms = div(abs(cost_atoms) * fee, PPM, Rounding.CEIL)

    def close_fee(price_ticks: int) -> int:
        return div(lots * price_ticks * k * fee, PPM, Rounding.CEIL)

    if size_lots > 0:
        need = cost_atoms + entry_fee_atoms
        price = div(need * PPM, lots * k * (PPM - fee), Rounding.CEIL)
        for _ in range(MAX_BREAK_EVEN_STEPS):
            if lots * price * k - close_fee(price) >= need:
                return price
            price += 1
        raise AssertionError("break-even search did not converge")
    have = -cost_atoms - entry_fee_atoms
    price = div(have * PPM, lots * k * (PPM + fee), Rounding.FLOOR)
    for _ in range(MAX_BREAK_EVEN_STEPS):
        if lots * price * k + close_fee(price) <= have:
            return price
        price -= 1
    raise AssertionError("break-even search did not converge")


def ladder_shape(cmd: PlaceExitLadder, size_lots: int) -> Reason | None:
    """The ladder's own rules (the orders it makes are checked like any other)."""
    n = len(cmd.targets)
    if not 1 <= n <= MAX_LADDER_TARGETS:
        return Reason.INVALID_EXIT_LADDER
    assert size_lots
    rising = size_lots > 0  # a long takes profit as the price rises
    total_ppm = 0
    previous = None
    for price_ticks, fraction_ppm in cmd.targets:
        if not 0 < fraction_ppm <= PPM:
            return Reason.INVALID_EXIT_LADDER
        total_ppm += fraction_ppm
        if previous is not None and (
            price_ticks <= previous if rising else price_ticks >= previous
        ):
            return Reason.INVALID_EXIT_LADDER  # targets go away from the entry, in order
        previous = price_ticks
    if total_ppm != PPM:
        return Reason.INVALID_EXIT_LADDER
    if not (0 <= cmd.move_stop_to_entry_after <= n and 0 <= cmd.trail_after <= n):
        return Reason.INVALID_EXIT_LADDER
    if cmd.stop_price_ticks <= 0:
        return Reason.STOP_PRICE_MISSING
    rate = cmd.callback_rate_ppm
    if cmd.trail_after:
        if not rate:
            return Reason.CALLBACK_RATE_MISSING
        if (
            not MIN_CALLBACK_RATE_PPM <= rate <= MAX_CALLBACK_RATE_PPM
            or rate % CALLBACK_RATE_STEP_PPM
        ):
            return Reason.INVALID_CALLBACK_RATE
    elif rate:
        return Reason.CALLBACK_RATE_NOT_REQUIRED
    return None


def ladder_orders(cmd: PlaceExitLadder, size_lots: int, first_id: int) -> list[ConditionalOrder]:
    """The targets, then the stop, of a ladder that `ladder_shape` passed, ids from
    `first_id`; [] when a target would be less than a lot."""
    side = SELL if size_lots > 0 else BUY
    held = abs(size_lots)
    qtys: list[int] = []
    for _, fraction_ppm in cmd.targets[:-1]:
        qtys.append(div(held * fraction_ppm, PPM, Rounding.FLOOR))
    qtys.append(held - sum(qtys))
    if min(qtys) < 1:
        return []
    n = len(cmd.targets)
    orders = [
        ConditionalOrder(
            order_id=first_id + i,
            account=cmd.account,
            symbol=cmd.symbol,
            side=side,
            kind=ConditionalKind.TAKE_PROFIT_MARKET,
            working_type=WorkingType(cmd.working_type),
            qty_lots=qty,
            stop_price_ticks=price_ticks,
            reduce_only=True,
        )
        for i, ((price_ticks, _), qty) in enumerate(zip(cmd.targets, qtys, strict=True))
    ]
    orders.append(
        ConditionalOrder(
            order_id=first_id + n,
            account=cmd.account,
            symbol=cmd.symbol,
            side=side,
            kind=ConditionalKind.STOP_MARKET,
            working_type=WorkingType(cmd.working_type),
            qty_lots=0,
            stop_price_ticks=cmd.stop_price_ticks,
            close_position=True,
        )
    )
    return orders


def replacement_stop(
    ladder: ExitLadder, stage: int, spec: MarketSpec, size_lots: int, cost_atoms: int, order_id: int
) -> ConditionalOrder:
    """The stop that replaces the ladder's at `stage`: a trailing stop for the rest, or a
    close-position stop at break-even (within the market's price range)."""
    if stage == STAGE_TRAILING:
        return ConditionalOrder(
            order_id=order_id,
            account=ladder.account,
            symbol=ladder.symbol,
            side=ladder.side,
            kind=ConditionalKind.TRAILING_STOP_MARKET,
            working_type=ladder.working_type,
            qty_lots=abs(size_lots),
            reduce_only=True,
            callback_rate_ppm=ladder.callback_rate_ppm,
        )
    return ConditionalOrder(
        order_id=order_id,
        account=ladder.account,
        symbol=ladder.symbol,
        side=ladder.side,
        kind=ConditionalKind.STOP_MARKET,
        working_type=ladder.working_type,
        qty_lots=0,
        stop_price_ticks=clamp(spec, break_even_price_ticks(spec, size_lots, cost_atoms)),
        close_position=True,
    )


def members(ladder: ExitLadder) -> list[int]:
    """The ladder's orders that may still be waiting: its targets and the stop it manages."""
    return (
        [*ladder.target_ids, ladder.stop_order_id]
        if ladder.stop_order_id
        else list(ladder.target_ids)
    )


def taker_lots(events: list[Event], order_id: int) -> int:
    """Lots an order took as the taker in these events."""
    return sum(
        e.qty_lots for e in events if isinstance(e, TradeExecuted) and e.taker_order_id == order_id
    )


def clamp(spec: MarketSpec, price_ticks: int) -> int:
    """A price within the market's price range."""
    return min(max(price_ticks, spec.min_price_ticks), spec.max_price_ticks)


__all__ = [
    "MAX_BREAK_EVEN_STEPS",
    "MAX_LADDER_TARGETS",
    "STAGE_BREAK_EVEN",
    "STAGE_STOP",
    "STAGE_TRAILING",
    "ExitLadder",
    "break_even_price_ticks",
    "clamp",
    "ladder_orders",
    "ladder_shape",
    "members",
    "replacement_stop",
    "taker_lots",
]
