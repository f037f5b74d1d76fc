"""Settlement: fills to positions, realized PnL, fees, and the margin they reserve and release.

Units: prices in ticks, sizes in lots, money in atoms, rates in ppm; k = atoms_per_tick_lot.
Rounding in favour of the exchange: fees up, the closed part's cost basis up (realized PnL
rounds against the trader), an isolated position's released margin down. Realized PnL moves
through the ledger's SETTLEMENT bucket, which holds minus the open cost basis of all positions.

This is the engine's hot path (every fill of every order): the helpers are inlined where they
run per fill, and each inlined copy names the function it copies.
"""

from __future__ import annotations

from typing import Final

from perpex.core.book import BUY, Fill
from perpex.core.markets import MarketSpec
from perpex.core.messages import Event, PositionChanged, TradeExecuted
from perpex.core.records import Account, MarketState, Order, Position, unregister
from perpex.core.store import Store
from perpex.core.units import PPM, Rounding, div

_CEIL: Final = Rounding.CEIL
_FLOOR: Final = Rounding.FLOOR
# The events of every fill as Final names: in the compiled build a C static, where the class
# (defined in the uncompiled messages module) is a lookup in the module's dictionary.
_TRADE_EXECUTED: Final = TradeExecuted
_POSITION_CHANGED: Final = PositionChanged


def settle_match(
    state: Store,
    market: MarketState,
    taker_acct: Account,
    taker_pos: Position,
    taker: Order,
    fills: list[Fill],
    events: list[Event],
    touched: dict[str, Account],
    *,
    taker_fee_ppm: int | None = None,  # a liquidation order pays none
    liquidation: bool = False,
    sizes_before: dict[str, int] | None = None,  # filled in: each maker's size before
) -> None:
    """Settle the fills of one taker order: both sides' orders, fees, positions, trades."""
    symbol = market.symbol
    k = market.atoms_per_tick_lot
    ledger = state.ledger
    fees = ledger.fees
    settlement = ledger.settlement
    touched_owners = ledger.touched
    accounts = state.accounts
    taker_ppm = market.taker_fee_ppm if taker_fee_ppm is None else taker_fee_ppm
    maker_ppm = market.maker_fee_ppm
    side = taker.side
    taker_name = taker_acct.name
    for maker, lots, price in fills:
        assert isinstance(maker, Order)
        notional = price * lots * k
        maker_name = maker.account
        maker_acct = accounts[maker_name]
        maker_pos = maker_acct.positions[symbol]
        if sizes_before is not None and maker_name not in sizes_before:
            sizes_before[maker_name] = maker_pos.size_lots
        touched[maker_name] = maker_acct
        # `consume` of the maker's order, inlined: the book already took `lots` off it
        maker.filled_lots += lots
        maker.filled_quote_ticks += lots * price
        if side == BUY:  # the maker sells
            maker_pos.open_sell_lots -= lots
            maker_side = maker_pos.margin_sells
        else:
            maker_pos.open_buy_lots -= lots
            maker_side = maker_pos.margin_buys
        reserved = maker.reserved_atoms
        if reserved:
            left = maker.remaining_lots
            if left:  # what is left holds a share of the old margin, not the re-priced one
                release = reserved * lots // (left + lots)
                maker_side.unpriced[maker.order_id] = maker
            else:  # filled: `unregister` follows
                release = reserved
            maker.reserved_atoms = reserved - release
            maker_acct.reserved_atoms -= release
        elif not maker.reduce_only and maker.order_id <= maker_side.head_last_id:
            maker_side.head_lots -= lots  # a fill in the closed head
        # `consume` of the taker's order, inlined (never in a closed head: it is newer than
        # every order priced before its fills)
        taker.filled_lots += lots
        taker.filled_quote_ticks += lots * price
        if side == BUY:
            taker_pos.open_buy_lots -= lots
        else:
            taker_pos.open_sell_lots -= lots
        before = taker.remaining_lots
        reserved = taker.reserved_atoms
        if reserved:
            if lots == before:
                release = reserved
            else:
                release = reserved * lots // before
                taker_side = taker_pos.margin_buys if side == BUY else taker_pos.margin_sells
                taker_side.unpriced[taker.order_id] = taker
            taker.reserved_atoms = reserved - release
            taker_acct.reserved_atoms -= release
        taker.remaining_lots = before - lots
        # Fees first: an isolated position pays from its own margin, and a fill that closes
        # it then releases what is left, so no fee residue stays behind in the bucket.
        # Rounded up, i.e. div(..., CEIL) inlined: -(-a // b) is the ceiling for b > 0.
        taker_fee = -(-(notional * taker_ppm) // PPM)
        maker_fee = -(-(notional * maker_ppm) // PPM)
        # `ledger.transfer`, inlined: the payer's bucket (owned by its account, which
        # `net_fill` below marks touched) to FEES
        if taker_fee:
            payer = taker_pos.margin if taker_pos.isolated else taker_acct.wallet
            payer.balance -= taker_fee
            fees.balance += taker_fee
            ledger.transfers += 1
        if maker_fee:
            payer = maker_pos.margin if maker_pos.isolated else maker_acct.wallet
            payer.balance -= maker_fee
            fees.balance += maker_fee
            ledger.transfers += 1
        if taker_pos.isolated:
            taker_pnl = net_fill(state, taker_acct, taker_pos, k, side, lots, price)
        else:  # `net_fill` of a cross position, inlined
            size = taker_pos.size_lots
            taker_pnl = 0
            open_lots = lots
            if size * side < 0:  # closes (some of) the position
                held = -size if size < 0 else size
                close = lots if lots < held else held
                cost = taker_pos.cost_atoms
                part_cost = cost if close == held else -(-(cost * close) // held)
                taker_pnl = -side * close * price * k - part_cost
                taker_pos.size_lots = size + side * close
                taker_pos.cost_atoms = cost - part_cost
                open_lots = lots - close
                if taker_pnl:  # `ledger.transfer`, inlined (SETTLEMENT to the wallet)
                    settlement.balance -= taker_pnl
                    taker_acct.wallet.balance += taker_pnl
                    ledger.transfers += 1
            if open_lots:
                taker_pos.size_lots += side * open_lots
                taker_pos.cost_atoms += side * open_lots * price * k
            size_after = taker_pos.size_lots
            if not size or not size_after:  # opened from flat or closed to flat
                update_holder(state, taker_name, taker_pos)
            elif size * size_after < 0:  # flipped through zero in this one fill
                state.on_position_flat(taker_name, symbol)
            touched_owners.add(taker_name)
        if maker_pos.isolated:
            maker_pnl = net_fill(state, maker_acct, maker_pos, k, -side, lots, price)
        else:  # `net_fill` of a cross position, inlined
            size = maker_pos.size_lots
            maker_pnl = 0
            open_lots = lots
            if size * side > 0:  # closes (some of) the position (a maker sells to a buy)
                held = -size if size < 0 else size
                close = lots if lots < held else held
                cost = maker_pos.cost_atoms
                part_cost = cost if close == held else -(-(cost * close) // held)
                maker_pnl = side * close * price * k - part_cost
                maker_pos.size_lots = size - side * close
                maker_pos.cost_atoms = cost - part_cost
                open_lots = lots - close
                if maker_pnl:  # `ledger.transfer`, inlined (SETTLEMENT to the wallet)
                    settlement.balance -= maker_pnl
                    maker_acct.wallet.balance += maker_pnl
                    ledger.transfers += 1
            if open_lots:
                maker_pos.size_lots -= side * open_lots
                maker_pos.cost_atoms -= side * open_lots * price * k
            size_after = maker_pos.size_lots
            if not size or not size_after:  # opened from flat or closed to flat
                update_holder(state, maker_name, maker_pos)
            elif size * size_after < 0:  # flipped through zero in this one fill
                state.on_position_flat(maker_name, symbol)
            touched_owners.add(maker_name)
        trade_id = state.next_trade_id
        state.next_trade_id = trade_id + 1
        market.last_trade_ticks = price
        events.append(
            _TRADE_EXECUTED(
                symbol,
                trade_id,
                price,
                lots,
                side,
                taker.order_id,
                maker.order_id,
                taker_name,
                maker_name,
                taker_fee,
                maker_fee,
                taker_pnl,
                maker_pnl,
                liquidation,
            )
        )
        events.append(
            _POSITION_CHANGED(
                maker_name,
                symbol,
                maker_pos.size_lots,
                maker_pos.cost_atoms,
                maker_pos.margin.balance,
            )
        )
        if maker.remaining_lots == 0:
            unregister(maker_acct, maker_pos, maker)
    events.append(
        _POSITION_CHANGED(
            taker_name,
            symbol,
            taker_pos.size_lots,
            taker_pos.cost_atoms,
            taker_pos.margin.balance,
        )
    )
    if taker.remaining_lots == 0:
        unregister(taker_acct, taker_pos, taker)


def consume(acct: Account, pos: Position, order: Order, lots: int, price: int, before: int) -> None:
    """Book a fill of `lots` against an order that had `before` lots left: its open lots and
    its share of the order margin go. (`settle_match` has it inlined, for the maker and the
    taker of every fill: keep the three in step.)"""
    order.filled_lots += lots
    order.filled_quote_ticks += lots * price
    if order.side == BUY:
        pos.open_buy_lots -= lots
    else:
        pos.open_sell_lots -= lots
    if order.reserved_atoms:
        if lots == before:  # filled: `unregister` follows
            release = order.reserved_atoms
        else:
            release = order.reserved_atoms * lots // before  # floor, as div(..., FLOOR)
            # what is left is a share of the old margin, not the re-priced one
            margin_orders = pos.margin_buys if order.side == BUY else pos.margin_sells
            margin_orders.unpriced[order.order_id] = order
        order.reserved_atoms -= release
        acct.reserved_atoms -= release
    elif not order.reduce_only:  # it may be in the closed head (which holds nothing)
        margin_orders = pos.margin_buys if order.side == BUY else pos.margin_sells
        if order.order_id <= margin_orders.head_last_id:
            margin_orders.head_lots -= lots


def settle_fill(
    state: Store,
    acct: Account,
    pos: Position,
    spec: MarketSpec,
    side: int,
    lots: int,
    price: int,
) -> int:
    """Net one fill into the position; returns the realized PnL in atoms."""
    return net_fill(state, acct, pos, spec.atoms_per_tick_lot, side, lots, price)


def net_fill(
    state: Store,
    acct: Account,
    pos: Position,
    atoms_per_tick_lot: int,
    side: int,
    lots: int,
    price: int,
) -> int:
    """`settle_fill` with the market's atoms per tick x lot (k) given, as settlement has it.
    (`settle_match` has its cross case inlined, for the taker and the maker of every fill:
    keep the three in step.)"""
    k = atoms_per_tick_lot
    ledger = state.ledger
    size = pos.size_lots
    realized = 0
    open_lots = lots
    if size * side < 0:  # closes (some of) the position
        held = -size if size < 0 else size
        close = lots if lots < held else held
        # The closed part's cost basis, rounded up: realized PnL rounds against the trader.
        # (div(..., CEIL) inlined: held > 0.)
        part_cost = pos.cost_atoms if close == held else -(-(pos.cost_atoms * close) // held)
        realized = -side * close * price * k - part_cost  # -side: the sign of the position
        pos.size_lots = size + side * close
        pos.cost_atoms -= part_cost
        open_lots = lots - close
        if pos.isolated:
            margin = pos.margin
            ledger.transfer(ledger.settlement, margin, realized)
            if close == held:
                release = margin.balance
            else:
                release = div(margin.balance * close, held, _FLOOR) if margin.balance > 0 else 0
            if release:
                ledger.transfer(margin, acct.wallet, release)
        elif realized:  # `ledger.transfer`, inlined (the account is marked touched below)
            ledger.settlement.balance -= realized
            acct.wallet.balance += realized
            ledger.transfers += 1
    if open_lots:
        notional = open_lots * price * k
        pos.size_lots += side * open_lots
        pos.cost_atoms += side * notional
        if pos.isolated:
            ledger.transfer(acct.wallet, pos.margin, div(notional, pos.leverage, _CEIL))
    size_after = pos.size_lots
    if not size or not size_after:  # opened from flat or closed to flat
        update_holder(state, acct.name, pos)
    elif size * size_after < 0:  # flipped through zero in this one fill
        state.on_position_flat(acct.name, pos.symbol)  # old-side stops go
    ledger.touched.add(acct.name)  # the risk mirror refreshes this account (risk.py)
    return realized


def update_holder(state: Store, account: str, pos: Position) -> None:
    """Keep the holder index of the position's symbol (who the risk pass screens)."""
    if pos.size_lots:
        state.holders[pos.symbol].add(account)
    else:
        state.holders[pos.symbol].discard(account)
        state.on_position_flat(account, pos.symbol)  # its stops go too


def cover_flat_deficit(state: Store, acct: Account, symbol: str, events: list[Event]) -> None:
    """A flat account whose wallet ended below zero (a resting close filled past bankruptcy,
    or a few atoms of per-fill rounding): the insurance fund of `symbol` pays the deficit,
    as much as it holds (non-recourse, DESIGN.md §6 promise 4)."""
    if any(p.size_lots for p in acct.positions.values()):
        return  # margin balance, not the wallet, is what must stay >= 0 with positions open
    state.funds.pay_deficit(acct.wallet, -acct.wallet.balance, acct.name, symbol, events)


__all__ = [
    "consume",
    "cover_flat_deficit",
    "net_fill",
    "settle_fill",
    "settle_match",
    "update_holder",
]
