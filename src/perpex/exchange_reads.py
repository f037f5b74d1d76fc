"""The read side of the `Exchange` facade: positions, accounts, orders, the book, funding,
the insurance fund, the event log and the state hash, as decimal views (`perpex.views`); and
the conversions between a market's decimals and its integer units for users of `submit`.
"""

from __future__ import annotations

from decimal import Decimal

from perpex.convert import (
    account_view,
    conditional_view,
    order_of_record,
    position_view,
)
from perpex.core.messages import Event, FundingPaid, InsuranceFundChanged
from perpex.core.units import atoms_to_decimal
from perpex.exchange_base import ExchangeBase
from perpex.parse import price_ticks, qty_lots
from perpex.views import (
    Account,
    FundingPayment,
    FundingRate,
    InsuranceFundChange,
    Order,
    Position,
)


class ExchangeReads(ExchangeBase):
    """`Exchange`'s views: nothing here changes the state."""

    _log_start_ns: int  # the clock where the event log begins (start, recovery, take_events)

    # -- units, for users of `submit` -------------------------------------------------------
    def to_ticks(self, symbol: str, price: object) -> int:
        """A decimal price in the symbol's ticks, parsed as `place_order` parses it."""
        market = self._market(symbol)
        return price_ticks(market.price, price)

    def to_lots(self, symbol: str, quantity: object) -> int:
        """A decimal quantity in the symbol's lots, parsed as `place_order` parses it."""
        market = self._market(symbol)
        return qty_lots(market.qty, quantity)

    def from_ticks(self, symbol: str, ticks: int) -> Decimal:
        """An event's price (ticks) as a Decimal."""
        return self._spec(symbol).price_to_decimal(ticks)

    def from_lots(self, symbol: str, lots: int) -> Decimal:
        """An event's quantity (lots) as a Decimal."""
        return self._spec(symbol).qty_to_decimal(lots)

    def index_price(self, symbol: str) -> Decimal:
        spec = self._spec(symbol)
        return spec.price_to_decimal(self.engine.markets[spec.symbol].index_ticks)

    # -- funding ------------------------------------------------------------------------------
    def funding_rate(self, symbol: str) -> FundingRate:
        """Mark, index, the last and the predicted funding rate and the next funding time."""
        spec = self._spec(symbol)
        market = self.engine.markets[spec.symbol]
        rate = Decimal(1).scaleb(-8)  # rates are integers in 1e-8
        funding = market.funding
        config = market.funding_config
        next_ns = (
            funding.next_funding_ns
            if funding is not None
            else (self.engine.clock_ns // config.period_ns + 1) * config.period_ns
        )
        return FundingRate(
            symbol=spec.symbol,
            mark_price=spec.price_to_decimal(market.mark_ticks),
            index_price=spec.price_to_decimal(market.index_ticks),
            last_funding_rate=market.last_funding_rate_e8 * rate,
            predicted_funding_rate=self.engine.predicted_funding_rate_e8(market) * rate,
            next_funding_time_ns=next_ns,
            interest_rate=config.interest_e8 * rate,
        )

    def funding_history(self, account: str, symbol: str | None = None) -> list[FundingPayment]:
        """Every funding payment of the account (optionally one symbol), oldest first."""
        name = self._account(account)
        if symbol is not None:
            symbol = self._spec(symbol).symbol
        rate = Decimal(1).scaleb(-8)
        return [
            FundingPayment(
                e.time_ns,
                e.symbol,
                -atoms_to_decimal(e.payment_atoms),
                e.rate_e8 * rate,
                self._specs[e.symbol].qty_to_decimal(e.size_lots),
            )
            for e in self._events
            if isinstance(e, FundingPaid)
            and e.account == name
            and (symbol is None or e.symbol == symbol)
        ]

    @property
    def time_ns(self) -> int:
        return self.engine.clock_ns

    # -- orders ---------------------------------------------------------------------------
    def open_orders(self, account: str, symbol: str | None = None) -> list[Order]:
        """Open orders and open conditional orders (as Binance lists them, typed STOP_MARKET
        etc.), by ascending order id."""
        acct = self.engine.accounts.get(account) if isinstance(account, str) else None
        if acct is None:
            return []
        specs = self._specs
        views = [
            order_of_record(specs[o.symbol], o)
            for oid, o in sorted(acct.orders.items())
            if symbol is None or o.symbol == symbol
        ]
        views += [
            conditional_view(specs[o.symbol], o, "NEW")
            for o in self.engine.conditionals.orders_of(account)
            if symbol is None or o.symbol == symbol
        ]
        return sorted(views, key=lambda v: v.order_id)

    def order_book(self, symbol: str, limit: int = 20) -> dict[str, list[tuple[Decimal, Decimal]]]:
        spec = self._spec(symbol)
        bids, asks = self.engine.market(spec.symbol).book.depth(limit)
        return {
            "bids": [(spec.price_to_decimal(p), spec.qty_to_decimal(q)) for p, q in bids],
            "asks": [(spec.price_to_decimal(p), spec.qty_to_decimal(q)) for p, q in asks],
        }

    # -- views ----------------------------------------------------------------------------
    def mark_price(self, symbol: str) -> Decimal:
        spec = self._spec(symbol)
        return spec.price_to_decimal(self.engine.market(spec.symbol).mark_ticks)

    def position(self, account: str, symbol: str) -> Position:
        spec = self._spec(symbol)
        return position_view(self.engine, self._specs, account, spec)

    def account(self, account: str) -> Account:
        return account_view(self.engine, account)

    def insurance_fund(self, symbol: str | None = None) -> Decimal:
        """All insurance funds together (None), or the fund that pays for `symbol`: its own
        (`LiquidationConfig.fund_symbols`) or the common one, which "" also names."""
        if symbol is not None and symbol != "":
            self._spec(symbol)  # -1121 for a symbol that is not listed
        return atoms_to_decimal(self.engine.liquidator.fund_atoms(symbol))

    def insurance_fund_history(self) -> list[InsuranceFundChange]:
        """Every change of the fund, oldest first, read from the event log (after a journal
        recovery the log holds what was replayed since the last snapshot)."""
        d = atoms_to_decimal
        return [
            InsuranceFundChange(
                d(e.delta_atoms), d(e.balance_atoms), e.reason.name, e.account, e.symbol
            )
            for e in self._events
            if isinstance(e, InsuranceFundChanged)
        ]

    def fees_collected(self) -> Decimal:
        return atoms_to_decimal(self.engine.ledger.fees.balance)

    def events(self) -> list[Event]:
        """The event log: every event since start (or since the last `take_events`)."""
        return list(self._events)

    def take_events(self) -> list[Event]:
        """Hand over the events logged since start or the last call, and forget them.

        For a driver that keeps its own record (the simulator streams them to Parquet): the
        facade's log then stays small on a run of millions of events. Reads that come from
        the log (`funding_history`, `insurance_fund_history`, `token_nav_history`) see only
        what was not taken.
        """
        taken = self._events[:]
        self._events.clear()
        self._log_start_ns = self.engine.clock_ns
        return taken

    def state_hash(self) -> str:
        return self.engine.state_hash()

    def check_invariants(self) -> None:
        self.engine.check_invariants()
