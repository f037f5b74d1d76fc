"""Binance's account figures: wallets, uPnL, margin balance, IM, MM, available, withdrawable.

Units: money in atoms, at the current marks. Initial margin rounds up (`div(..., CEIL)`), as
the pre-trade check does (`Store.available_atoms`); a view, never written to the state.
"""

from __future__ import annotations

import msgspec

from perpex.core.records import Account
from perpex.core.store import Store
from perpex.core.units import Rounding, div


class AccountFigures(msgspec.Struct, frozen=True):
    """Binance's account figures, in atoms (see `account_figures`)."""

    wallet_atoms: int  # cross wallet + isolated margins
    cross_wallet_atoms: int
    unrealized_pnl_atoms: int  # all positions
    cross_unrealized_pnl_atoms: int
    margin_balance_atoms: int  # wallet + uPnL
    maintenance_margin_atoms: int  # all positions
    position_initial_margin_atoms: int  # all positions, at mark
    open_order_margin_atoms: int
    available_atoms: int  # cross wallet + cross uPnL - cross IM - order margin
    max_withdraw_atoms: int


def account_figures(state: Store, name: str) -> AccountFigures:
    """The figures of `name` now (all zero for an account never seen)."""
    acct = state.accounts.get(name) or Account(name)
    cross_upnl, cross_im, cross_mm = state.cross_sums(acct)
    upnl, im, mm, iso_wallet = cross_upnl, cross_im, cross_mm, 0
    for pos in acct.positions.values():
        iso_wallet += pos.margin.balance
        if not pos.size_lots or not pos.isolated:
            continue
        market = state.markets[pos.symbol]
        spec, mark = market.spec, market.mark_ticks
        notional = abs(pos.size_lots) * mark * spec.atoms_per_tick_lot
        upnl += pos.size_lots * mark * spec.atoms_per_tick_lot - pos.cost_atoms
        im += div(notional, pos.leverage, Rounding.CEIL)
        mm += spec.maintenance_margin_atoms(notional)
    available = acct.wallet.balance + cross_upnl - cross_im - acct.reserved_atoms
    wallet = acct.wallet.balance + iso_wallet
    return AccountFigures(
        wallet_atoms=wallet,
        cross_wallet_atoms=acct.wallet.balance,
        unrealized_pnl_atoms=upnl,
        cross_unrealized_pnl_atoms=cross_upnl,
        margin_balance_atoms=wallet + upnl,
        maintenance_margin_atoms=mm,
        position_initial_margin_atoms=im,
        open_order_margin_atoms=acct.reserved_atoms,
        available_atoms=available,
        max_withdraw_atoms=max(0, min(available, available - cross_upnl)),
    )


__all__ = ["AccountFigures", "account_figures"]
