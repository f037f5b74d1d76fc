"""Account commands: deposits and withdrawals, leverage, margin mode and isolated margin.

The insurance fund's deposits too; each command validated completely before it changes
anything.

Units: money in atoms. A refusal is a `RequestRejected` event and changes nothing. The money
on the exchange is bounded (`store.MAX_TOTAL_ATOMS`, where the bound is argued): a deposit
that would take the total past it is refused, so every stored integer stays storable.
"""

from __future__ import annotations

from perpex.core.insurance import COMMON_FUND
from perpex.core.messages import (
    AdjustIsolatedMargin,
    Deposit,
    Deposited,
    DepositInsurance,
    Event,
    FundReason,
    IsolatedMarginChanged,
    LeverageChanged,
    MarginModeChanged,
    Reason,
    RequestRejected,
    SetLeverage,
    SetMarginMode,
    Withdraw,
    Withdrawn,
)
from perpex.core.reserve import reserve_orders
from perpex.core.store import MAX_AMOUNT_ATOMS, MAX_TOTAL_ATOMS, Store
from perpex.core.units import Rounding, div


def within_total(state: Store, amount_atoms: int) -> bool:
    """Whether `amount_atoms` more from outside keeps the money on the exchange (minus the
    EXTERNAL bucket: deposits - withdrawals + the insurance fund's deposits and seed) within
    `MAX_TOTAL_ATOMS`, the bound every stored balance rests on."""
    return -state.ledger.external.balance + amount_atoms <= MAX_TOTAL_ATOMS


def deposit(state: Store, cmd: Deposit) -> list[Event]:
    """Money from outside into the account's cross wallet (the account is created)."""
    if not state.valid_name(cmd.account):
        return [RequestRejected(str(cmd.account), "", Reason.UNKNOWN_ACCOUNT)]
    if not 0 < cmd.amount_atoms <= MAX_AMOUNT_ATOMS:
        return [RequestRejected(cmd.account, "", Reason.INVALID_AMOUNT)]
    if not within_total(state, cmd.amount_atoms):
        return [RequestRejected(cmd.account, "", Reason.TOTAL_DEPOSITS_LIMIT)]
    acct = state.account_for_write(cmd.account)
    state.ledger.transfer(state.ledger.external, acct.wallet, cmd.amount_atoms)
    return [Deposited(cmd.account, cmd.amount_atoms, acct.wallet.balance)]


def withdraw(state: Store, cmd: Withdraw) -> list[Event]:
    """Money out of the cross wallet, at most what is available and already realized."""
    acct = state.accounts.get(cmd.account)
    if acct is None:
        return [RequestRejected(cmd.account, "", Reason.INSUFFICIENT_BALANCE)]
    if not 0 < cmd.amount_atoms <= MAX_AMOUNT_ATOMS:
        return [RequestRejected(cmd.account, "", Reason.INVALID_AMOUNT)]
    upnl, im, _ = state.cross_sums(acct)
    available = acct.wallet.balance + upnl - im - acct.reserved_atoms
    # Unrealized profit counts as margin but cannot leave the exchange before it is realized.
    if cmd.amount_atoms > min(available, available - upnl):
        return [RequestRejected(cmd.account, "", Reason.INSUFFICIENT_BALANCE)]
    state.ledger.transfer(acct.wallet, state.ledger.external, cmd.amount_atoms)
    return [Withdrawn(cmd.account, cmd.amount_atoms, acct.wallet.balance)]


def set_leverage(state: Store, cmd: SetLeverage) -> list[Event]:
    """The pair's leverage, if its exposure fits the new cap; its order margin re-priced."""
    market = state.markets.get(cmd.symbol)
    if market is None:
        return [RequestRejected(cmd.account, cmd.symbol, Reason.UNKNOWN_SYMBOL)]
    if not state.valid_name(cmd.account):
        return [RequestRejected(str(cmd.account), cmd.symbol, Reason.UNKNOWN_ACCOUNT)]
    spec = market.spec
    if not 1 <= cmd.leverage <= spec.max_leverage:
        return [RequestRejected(cmd.account, cmd.symbol, Reason.INVALID_LEVERAGE)]
    pos = state.position_of(cmd.account, cmd.symbol)
    if pos is not None:
        exposure_lots = max(
            pos.size_lots + pos.open_buy_lots, -pos.size_lots + pos.open_sell_lots, 0
        )
        price = max(market.mark_ticks, 1)
        notional = exposure_lots * price * spec.atoms_per_tick_lot
        if notional > spec.max_notional_atoms_at(cmd.leverage):
            return [RequestRejected(cmd.account, cmd.symbol, Reason.POSITION_OVER_LEVERAGE_CAP)]
    acct = state.account_for_write(cmd.account)
    state.position_for_write(acct, cmd.symbol).leverage = cmd.leverage
    state.ledger.touched.add(acct.name)  # the risk mirror keeps leverage too
    reserve_orders(acct, cmd.symbol, market)
    return [LeverageChanged(cmd.account, cmd.symbol, cmd.leverage)]


def set_margin_mode(state: Store, cmd: SetMarginMode) -> list[Event]:
    """Cross or isolated, for a pair with no position and no open orders."""
    if cmd.symbol not in state.markets:
        return [RequestRejected(cmd.account, cmd.symbol, Reason.UNKNOWN_SYMBOL)]
    if not state.valid_name(cmd.account):
        return [RequestRejected(str(cmd.account), cmd.symbol, Reason.UNKNOWN_ACCOUNT)]
    pos = state.position_of(cmd.account, cmd.symbol)
    current = pos.isolated if pos is not None else False
    if current == cmd.isolated:
        return [RequestRejected(cmd.account, cmd.symbol, Reason.MARGIN_TYPE_UNCHANGED)]
    if pos is not None and pos.open_orders:
        return [RequestRejected(cmd.account, cmd.symbol, Reason.MARGIN_TYPE_OPEN_ORDERS)]
    if pos is not None and pos.size_lots:
        return [RequestRejected(cmd.account, cmd.symbol, Reason.MARGIN_TYPE_POSITION)]
    acct = state.account_for_write(cmd.account)
    pos = state.position_for_write(acct, cmd.symbol)
    if pos.margin.balance:  # leftover isolated margin (e.g. rounding) goes home
        state.ledger.transfer(pos.margin, acct.wallet, pos.margin.balance)
    pos.isolated = cmd.isolated
    return [MarginModeChanged(cmd.account, cmd.symbol, cmd.isolated)]


def adjust_isolated_margin(state: Store, cmd: AdjustIsolatedMargin) -> list[Event]:
    """Move money between the cross wallet and an isolated position's margin."""
    market = state.markets.get(cmd.symbol)
    if market is None:
        return [RequestRejected(cmd.account, cmd.symbol, Reason.UNKNOWN_SYMBOL)]
    acct = state.accounts.get(cmd.account)
    pos = None if acct is None else acct.positions.get(cmd.symbol)
    if acct is None or pos is None or not pos.isolated or not pos.size_lots:
        return [RequestRejected(cmd.account, cmd.symbol, Reason.NO_ISOLATED_POSITION)]
    delta = cmd.delta_atoms
    if delta == 0 or abs(delta) > MAX_AMOUNT_ATOMS:
        return [RequestRejected(cmd.account, cmd.symbol, Reason.INVALID_AMOUNT)]
    spec = market.spec
    if delta > 0:
        if delta > state.available_atoms(acct):
            return [RequestRejected(cmd.account, cmd.symbol, Reason.CROSS_BALANCE_INSUFFICIENT)]
    else:
        notional = abs(pos.size_lots) * market.mark_ticks * spec.atoms_per_tick_lot
        upnl = pos.size_lots * market.mark_ticks * spec.atoms_per_tick_lot - pos.cost_atoms
        im = div(notional, pos.leverage, Rounding.CEIL)
        # Removal only down to the initial margin, counting an open loss against it.
        if pos.margin.balance + delta + min(0, upnl) < im:
            return [RequestRejected(cmd.account, cmd.symbol, Reason.ISOLATED_BALANCE_INSUFFICIENT)]
    state.ledger.transfer(acct.wallet, pos.margin, delta)
    return [IsolatedMarginChanged(cmd.account, cmd.symbol, delta, pos.margin.balance)]


def deposit_insurance(state: Store, cmd: DepositInsurance) -> list[Event]:
    """Into the fund of `cmd.symbol` (its own, or the common one), or the common fund."""
    symbol = cmd.symbol
    if symbol != COMMON_FUND and symbol not in state.markets:
        return [RequestRejected("", str(symbol), Reason.UNKNOWN_SYMBOL)]
    if not 0 < cmd.amount_atoms <= MAX_AMOUNT_ATOMS:
        return [RequestRejected("", symbol, Reason.INVALID_AMOUNT)]
    if not within_total(state, cmd.amount_atoms):
        return [RequestRejected("", symbol, Reason.TOTAL_DEPOSITS_LIMIT)]
    events: list[Event] = []
    state.funds.move(
        state.ledger.external, cmd.amount_atoms, FundReason.DEPOSIT, "", symbol, events
    )
    return events


__all__ = [
    "adjust_isolated_margin",
    "deposit",
    "deposit_insurance",
    "set_leverage",
    "set_margin_mode",
    "withdraw",
    "within_total",
]
