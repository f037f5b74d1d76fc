"""Partial liquidation: one Fill-or-Kill order that first takes a high-bracket position down.

BitMEX, Bybit, OKX (MECHANICS.md §2.3, §3): at the bankruptcy price or better, down to a lower
bracket (or by a fraction), keeping the whole margin behind the rest.

Units: prices in ticks, sizes in lots, money in atoms, rates in ppm. Off by default
(`LiquidationConfig.partial_from_bracket` = 0), as Binance's published process closes the
whole position. The order goes through the book like the full liquidation order
(`ExchangeState.close_through_book`); the clearance fee is charged on the part closed only,
never more than the trader has left; if the order cannot fill in full, or the account is still
at or below its MM after it, the liquidation pass closes the whole position.
"""

from __future__ import annotations

from perpex.core.book import BUY, SELL
from perpex.core.liquidation_config import LiquidationConfig
from perpex.core.liquidation_screen import LiquidationScreen, upnl_mm
from perpex.core.messages import Event, FundReason, PositionChanged, TimeInForce
from perpex.core.state import Account, ExchangeState, Position
from perpex.core.units import PPM, Rounding, div


def partial_lots(state: ExchangeState, config: LiquidationConfig, pos: Position) -> int:
    """Lots a partial liquidation closes first (0: none, the whole position goes).

    Only for a position whose notional at the mark is in bracket `partial_from_bracket`
    or above. Either `partial_fraction_ppm` of it, rounded up to a lot, or what brings the
    notional below the cap of the bracket `partial_brackets_down` lower (a notional on a cap
    belongs to the bracket above, MECHANICS.md §1.2). Never all of it.
    """
    market = state.markets[pos.symbol]
    spec = market.spec
    lot_atoms = market.mark_ticks * spec.atoms_per_tick_lot
    held = abs(pos.size_lots)
    bracket = spec.bracket_for(held * lot_atoms)
    if not config.partial_from_bracket or bracket.index < config.partial_from_bracket:
        return 0
    if config.partial_fraction_ppm:
        # at least the configured share: whole lots, rounded up
        lots = div(held * config.partial_fraction_ppm, PPM, Rounding.CEIL)
    else:
        position_in_table = spec.brackets.index(bracket)
        target = spec.brackets[max(position_in_table - config.partial_brackets_down, 0)]
        # the most lots whose notional stays strictly below the target's cap: floor
        keep = div(target.cap_atoms - 1, lot_atoms, Rounding.FLOOR)
        lots = held - keep
    return lots if 0 < lots < held else 0


def reduce(
    screener: LiquidationScreen,
    config: LiquidationConfig,
    acct: Account,
    pos: Position,
    events: list[Event],
    dirty: set[str],
) -> bool:
    """The partial step (BitMEX/Bybit, MECHANICS.md §2.3, §3.1): one Fill-or-Kill order per
    eligible position (the isolated one, or the account's cross positions by symbol) at
    the bankruptcy price or better. True once the position (isolated) or the account
    (cross) is above its MM again."""
    if pos.isolated:
        candidates = [pos]
    else:
        candidates = [
            acct.positions[s]
            for s in sorted(acct.positions)
            if not acct.positions[s].isolated and acct.positions[s].size_lots
        ]
    for candidate in candidates:
        lots = partial_lots(screener.state, config, candidate)
        if lots and reduce_one(screener, config, acct, candidate, lots, events, dirty):
            equity, mm = screener.figures(acct, pos)
            if equity > mm:
                return True
    return False


def reduce_one(
    screener: LiquidationScreen,
    config: LiquidationConfig,
    acct: Account,
    pos: Position,
    lots: int,
    events: list[Event],
    dirty: set[str],
) -> bool:
    """Close `lots` of the position in one Fill-or-Kill order; False when it cannot fill."""
    state = screener.state
    market = state.markets[pos.symbol]
    spec = market.spec
    symbol = spec.symbol
    bust = screener.bankruptcy(acct, pos)
    if bust.equity_atoms <= 0 or bust.past_range:
        return False  # nothing left to keep behind a smaller position
    close_side = SELL if pos.size_lots > 0 else BUY
    fillable, _ = market.book.walk(close_side, bust.limit_ticks, lots, acct.name)
    if fillable < lots:
        return False  # Fill-or-Kill: all of it at bankruptcy or better, or nothing
    dirty.add(symbol)
    wallet_before = acct.wallet.balance
    quote_ticks = state.close_through_book(
        acct, pos, market, close_side, bust.limit_ticks, lots, events, TimeInForce.FOK
    )
    if pos.isolated:
        # A fill that reduces an isolated position releases its share of the margin to the
        # wallet; a liquidation keeps all of it behind the rest (BitMEX: the position moves
        # to a lower risk limit with its margin), so it goes back.
        released = acct.wallet.balance - wallet_before
        if released:
            state.transfer(acct.wallet, pos.margin, released)
        equity = pos.margin.balance + upnl_mm(spec, market.mark_ticks, pos)[0]
        source = pos.margin
    else:
        equity = screener.cross_figures(acct)[0]
        source = acct.wallet
    # The clearance fee on the part closed only (MECHANICS.md §1.8), rounded up for the
    # fund, never more than the trader has left.
    fee = div(
        quote_ticks * spec.atoms_per_tick_lot * config.clearance_fee_ppm,
        PPM,
        Rounding.CEIL,
    )
    fee = min(fee, max(equity, 0), max(source.balance, 0))
    if fee:
        state.move_to_fund(source, fee, FundReason.CLEARANCE_FEE, acct.name, symbol, events)
    events.append(
        PositionChanged(acct.name, symbol, pos.size_lots, pos.cost_atoms, pos.margin.balance)
    )
    return True


__all__ = ["partial_lots", "reduce", "reduce_one"]
