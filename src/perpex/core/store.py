"""The stored state by key: markets, accounts, ledger, funds, clock, counters; and its limits.

Units: prices in ticks, sizes in lots, money in atoms, time in ns. `Store` is what the order
path (`order_path`, `settlement`, `accounts`) writes directly; the passes that run after a
command see it through `perpex.core.state.ExchangeState`, which adds the operations they may
perform.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Final

from perpex.core.funding_config import FundingConfig
from perpex.core.insurance import InsuranceFunds
from perpex.core.ledger import Ledger
from perpex.core.markets import MarketSpec
from perpex.core.oracle import DEFAULT_INDEX_CONFIG, IndexConfig, MarkConfig, MarkMode
from perpex.core.records import Account, MarketState, Position
from perpex.core.units import Rounding, div

# Limits (every loop and collection has one).
MAX_ACCOUNTS: Final = 10_000_000
MAX_ACCOUNT_NAME: Final = 64
MAX_CLIENT_ORDER_ID: Final = 36
MAX_AMOUNT_ATOMS: Final = 2**62  # no single deposit, withdrawal or transfer is larger
MARK_MODES: Final = tuple(m.value for m in MarkMode)  # "binance", "index", "last"

# What may be stored. The state hash and the snapshot encode integers as MessagePack (msgspec:
# -2^63 <= v < 2^64), so every stored integer must stay within that. The root of the balances
# is T, the money that came in from outside: deposits - withdrawals + the insurance funds'
# deposits and seed = -EXTERNAL. Deposit, DepositInsurance and the engine's seed refuse to take
# T past MAX_TOTAL_ATOMS = 2^62 (`accounts.within_total`, `Engine.__init__`). The rest:
# - A position: |size| <= max_position_lots; |cost basis| and the notional of its open orders
#   on a side <= max position x max price <= 2^60 (`markets.compile_market` proves it per
#   market); its isolated margin and order margin are a small multiple of that.
# - The ledger sums to zero: wallets + margins + FEES + INSURANCE + FUNDING = T - SETTLEMENT,
#   and SETTLEMENT = -(sum of the open cost bases) = the net uPnL of all open positions (the
#   same at every price: long lots = short lots). While every account's equity is >= 0 (what
#   the liquidation pass restores) the losers' margin covers their open losses, so
#   FEES + INSURANCE + FUNDING + the winners' uPnL <= T, and one wallet <= T + its own open
#   loss. A deficit the fund cannot pay stays on a wallet: at most a position's notional.
# - SETTLEMENT itself (and with it the sum of the wallets) is bounded by the losses locked in
#   open positions, each backed by its own margin, not by a check: passing 2^63 needs more
#   than 9.2 trillion USDT of margin behind losing positions at once, which T <= 2^62 allows
#   only if money is recycled through withdrawals on a scale no run reaches. A cap on open
#   interest would make it a checked bound.
# - Prices are within each market's range, sizes within its limits; ids and the ledger's
#   transfer count grow by a bounded amount per command; the clock and funding times are at
#   most MAX_CLOCK_NS (`AdvanceClock` and `SetFundingRate` refuse later ones).
MAX_TOTAL_ATOMS: Final = 2**62
MAX_CLOCK_NS: Final = 2**62  # about the year 2116: every stored time fits int64


class EngineError(Exception):
    """A command the engine cannot even represent (a bug at the edge, not a user mistake)."""


def _no_listener(account: str, symbol: str) -> None:
    """Nobody listens for positions going flat (until the conditional orders do)."""


class Store:
    """Markets, accounts, ledger, funds, clock and counters of one engine."""

    __slots__ = (
        "accounts",
        "clock_ns",
        "conditional_client_ids",
        "funds",
        "holders",
        "index_config",
        "ledger",
        "mark_mode",
        "markets",
        "next_order_id",
        "next_trade_id",
        "on_position_flat",
    )

    def __init__(
        self,
        markets: Sequence[MarketSpec],
        mark_mode: str,
        index: IndexConfig | None,
        funding: Mapping[str, FundingConfig] | None,
    ) -> None:
        if mark_mode not in MARK_MODES:
            raise EngineError(f"mark_mode {mark_mode!r} is not one of {', '.join(MARK_MODES)}")
        self.mark_mode = mark_mode
        mark_config = MarkConfig(MarkMode(mark_mode))
        self.index_config = index or DEFAULT_INDEX_CONFIG
        self.markets: dict[str, MarketState] = {}
        funding = funding or {}
        for spec in markets:
            if spec.symbol in self.markets:
                raise EngineError(f"market {spec.symbol} listed twice")
            config = funding.get(spec.symbol) or FundingConfig()
            self.markets[spec.symbol] = MarketState(spec, mark_config, config)
        for symbol in funding:
            if symbol not in self.markets:
                raise EngineError(f"funding configured for {symbol}, which is not listed")
        self.accounts: dict[str, Account] = {}
        self.ledger = Ledger()
        self.funds = InsuranceFunds(self.ledger)
        self.clock_ns = 0
        self.next_order_id = 1
        self.next_trade_id = 1
        # Accounts with a non-zero position, per symbol: who the risk pass screens. Kept where
        # sizes change (`settlement.settle_fill`), rebuilt on restore, recomputed by the
        # invariants.
        self.holders: dict[str, set[str]] = {symbol: set() for symbol in self.markets}
        # Client order ids of waiting conditional orders: account -> client id -> order id. A
        # client id is unique across an account's open and conditional orders; the conditional
        # orders keep this index (derived: rebuilt on restore, checked by their invariants).
        self.conditional_client_ids: dict[str, dict[str, int]] = {}
        # Told (account, symbol) when a position goes to zero or flips through it in one fill
        # (the conditional orders cancel their reduce-only stops).
        self.on_position_flat: Callable[[str, str], None] = _no_listener

    # -- reads --------------------------------------------------------------------------------
    def market(self, symbol: str) -> MarketState:
        return self.markets[symbol]

    def position_of(self, account: str, symbol: str) -> Position | None:
        acct = self.accounts.get(account)
        return None if acct is None else acct.positions.get(symbol)

    def settings_of(self, account: str, symbol: str) -> tuple[int, bool]:
        """(leverage, isolated) in force for the pair, defaults when never set."""
        pos = self.position_of(account, symbol)
        if pos is None:
            return self.markets[symbol].spec.default_leverage, False
        return pos.leverage, pos.isolated

    def owns_conditional_client_id(self, account: str, client_order_id: str) -> bool:
        mine = self.conditional_client_ids.get(account)
        return mine is not None and client_order_id in mine

    def cross_sums(self, acct: Account) -> tuple[int, int, int]:
        """(uPnL, IM at mark, MM) of the account's cross positions."""
        upnl = im = mm = 0
        for pos in acct.positions.values():
            if not pos.size_lots or pos.isolated:
                continue
            market = self.markets[pos.symbol]
            spec, mark = market.spec, market.mark_ticks
            notional = abs(pos.size_lots) * mark * spec.atoms_per_tick_lot
            upnl += pos.size_lots * mark * spec.atoms_per_tick_lot - pos.cost_atoms
            im += div(notional, pos.leverage, Rounding.CEIL)
            mm += spec.maintenance_margin_atoms(notional)
        return upnl, im, mm

    def available_atoms(self, acct: Account) -> int:
        """Cross wallet + cross uPnL - cross IM at mark - order margin (the pre-trade check).

        `cross_sums` without the maintenance margin, inlined: it runs for every order."""
        available = acct.wallet.balance - acct.reserved_atoms
        for pos in acct.positions.values():
            size = pos.size_lots
            if not size or pos.isolated:
                continue
            market = self.markets[pos.symbol]
            value = size * market.mark_ticks * market.atoms_per_tick_lot
            # + uPnL - ceil(|value| / leverage), i.e. div(..., CEIL) inlined as the floor of
            # -|value| / leverage (leverage > 0)
            available += (
                value
                - pos.cost_atoms
                + (-value // pos.leverage if value > 0 else value // pos.leverage)
            )
        return available

    # -- writes every step shares -------------------------------------------------------------
    @staticmethod
    def valid_name(name: str) -> bool:
        return isinstance(name, str) and 0 < len(name) <= MAX_ACCOUNT_NAME

    def account_for_write(self, name: str) -> Account:
        """The account, created (empty) if new."""
        acct = self.accounts.get(name)
        if acct is None:
            if len(self.accounts) >= MAX_ACCOUNTS:
                raise EngineError("account limit reached")
            acct = self.accounts[name] = Account(name)
        return acct

    def position_for_write(self, acct: Account, symbol: str) -> Position:
        """The account's position in `symbol`, created (flat, default settings) if new."""
        pos = acct.positions.get(symbol)
        if pos is None:
            spec = self.markets[symbol].spec
            pos = acct.positions[symbol] = Position(acct.name, symbol, spec.default_leverage)
        return pos


__all__ = [
    "MARK_MODES",
    "MAX_ACCOUNTS",
    "MAX_ACCOUNT_NAME",
    "MAX_AMOUNT_ATOMS",
    "MAX_CLIENT_ORDER_ID",
    "MAX_CLOCK_NS",
    "MAX_TOTAL_ATOMS",
    "EngineError",
    "Store",
]
