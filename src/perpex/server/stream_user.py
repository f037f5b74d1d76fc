"""User streams: which account each committed batch speaks to, and what it says to it.

Writer thread only (BINANCE_API.md §6.3). The account history builds ORDER_TRADE_UPDATE and
ALGO_UPDATE payloads itself (`AccountHistory.user_messages`); they are drained here after every
batch, whether anyone listens or not, so that list never grows. ACCOUNT_UPDATE (one per account
and reason: the balance and the positions the batch touched), ACCOUNT_CONFIG_UPDATE (leverage)
and MARGIN_CALL are made here from the batch's events, only for accounts with a listener.

Units: money in atoms until the wire (8 dp strings); times on the wire in ms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from perpex.core.markets import MarketSpec
from perpex.core.messages import (
    AutoDeleveraged,
    Deposited,
    Event,
    FundingPaid,
    IsolatedMarginChanged,
    LeverageChanged,
    MarginCall,
    MarginModeChanged,
    PositionChanged,
    TradeExecuted,
    Withdrawn,
)
from perpex.core.units import atoms_to_decimal
from perpex.exchange import Exchange
from perpex.server import stream_payloads as wire_ws
from perpex.server.account_history import AccountHistory
from perpex.server.stream_demand import Demand, Encode, UserItem


class UserStreams:
    """Encodes what a batch means to the accounts listened to [writer].

    `specs` is the publisher's map; `accounts` (the order updates' source) is set when the hub
    is bound."""

    def __init__(self, specs: Mapping[str, MarketSpec], text: Encode) -> None:
        self._specs = specs
        self._text = text
        self.accounts: AccountHistory | None = None

    def drain_order_updates(self, demand: Demand, out: list[UserItem]) -> None:
        """Take the account history's pending payloads; keep those of accounts listened to."""
        history = self.accounts
        if history is None:
            return
        pending = history.user_messages
        if not pending:
            return
        taken = pending[:]
        pending.clear()
        wanted = demand.accounts
        if not wanted:
            return
        for account, payload in taken:
            if account in wanted:
                out.append((account, self._text(payload)))

    def account_events(
        self,
        events: Sequence[Event],
        ex: Exchange,
        demand: Demand,
        now_ms: int,
        tx_ms: int,
        out: list[UserItem],
    ) -> None:
        """ACCOUNT_UPDATE per (account, reason), then leverage changes and margin calls."""
        wanted = demand.accounts
        updates: dict[tuple[str, str], _AccountChange] = {}
        adl: dict[tuple[str, str], None] = {}
        extra: list[UserItem] = []

        def touch(account: str, reason: str, symbol: str | None = None) -> _AccountChange:
            change = updates.get((account, reason))
            if change is None:
                change = updates[(account, reason)] = _AccountChange()
            if symbol is not None:
                change.symbols[symbol] = None
            return change

        for event in events:
            if isinstance(event, Deposited | Withdrawn):
                if event.account in wanted:
                    sign = 1 if isinstance(event, Deposited) else -1
                    reason = "DEPOSIT" if sign > 0 else "WITHDRAW"
                    touch(event.account, reason).change_atoms += sign * event.amount_atoms
            elif isinstance(event, TradeExecuted):
                for account in (event.taker_account, event.maker_account):
                    if account in wanted:
                        touch(account, "ORDER", event.symbol)
            elif isinstance(event, PositionChanged):
                if event.account in wanted:
                    reason = "ADL" if (event.account, event.symbol) in adl else "ORDER"
                    touch(event.account, reason, event.symbol)
            elif isinstance(event, AutoDeleveraged):
                for account in (event.liquidated_account, event.counterparty_account):
                    adl[(account, event.symbol)] = None
                    if account in wanted:
                        touch(account, "ADL", event.symbol)
            elif isinstance(event, FundingPaid):
                if event.account in wanted:
                    touch(event.account, "FUNDING_FEE", event.symbol)
            elif isinstance(event, IsolatedMarginChanged):
                if event.account in wanted:
                    touch(event.account, "MARGIN_TRANSFER", event.symbol)
            elif isinstance(event, MarginModeChanged):
                if event.account in wanted:
                    touch(event.account, "MARGIN_TYPE_CHANGE", event.symbol)
            elif isinstance(event, LeverageChanged):
                if event.account in wanted:
                    payload = wire_ws.account_config_update(
                        now_ms, tx_ms, event.symbol, event.leverage
                    )
                    extra.append((event.account, self._text(payload)))
            elif isinstance(event, MarginCall) and event.account in wanted:
                extra.append((event.account, self._margin_call(ex, event, now_ms)))
        accounts = ex.engine.accounts
        specs = self._specs
        for (account, reason), change in updates.items():
            if account not in accounts:
                continue
            balances = [wire_ws.balance_row(ex.account(account), change.amount)]
            positions = [
                wire_ws.position_row(specs[s], ex.position(account, s))
                for s in change.symbols
                if s in specs
            ]
            payload = wire_ws.account_update(now_ms, tx_ms, reason, balances, positions)
            out.append((account, self._text(payload)))
        out.extend(extra)

    def _margin_call(self, ex: Exchange, event: MarginCall, now_ms: int) -> str:
        account = event.account
        specs = self._specs
        if event.isolated:
            symbols = [event.symbol]
        else:
            symbols = [
                s
                for s in specs
                if ex.position(account, s).size != 0
                and ex.position(account, s).margin_mode != "ISOLATED"
            ]
        rows = [(specs[s], ex.position(account, s)) for s in symbols if s in specs]
        return self._text(wire_ws.margin_call(now_ms, ex.account(account), rows))


@dataclass
class _AccountChange:
    symbols: dict[str, None] = field(default_factory=dict)
    change_atoms: int = 0

    @property
    def amount(self) -> Decimal:
        return atoms_to_decimal(self.change_atoms)


__all__ = ["UserStreams"]
