"""The `Exchange` facade: the engine with a virtual clock, decimals in and out, Binance errors.

This is the edge. Every argument is parsed once, strictly (`perpex.parse`: values off the tick
or step are refused, never rounded), turned into an integer command, applied to the engine
and the engine's refusals mapped to `ExchangeError(code, msg)`. The contract: a call either
succeeds or raises `ExchangeError`, and a call that raises has changed nothing
(`state_hash()` is the same before and after).

Programs that generate orders in bulk use `Exchange.submit(commands)`: typed engine commands
in integer units, checked the same way (`perpex.checks`), journaled the same way, events out.
Views (`Order`, `Position`, ...) are in `perpex.views`, conversions in `perpex.convert`;
leveraged tokens (`Token`, `create_tokens`, ...) in `perpex.exchange_tokens`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal

from perpex import parse
from perpex.checks import Checker
from perpex.convert import MarketEdge
from perpex.core.engine import MARK_MODES, Engine, EngineError
from perpex.core.funding import FundingConfig, FundingRateMissing, FundingSchedule
from perpex.core.liquidation import LiquidationConfig
from perpex.core.markets import Market, MarketSpec, compile_market
from perpex.core.messages import (
    AdjustIsolatedMargin,
    AdvanceClock,
    Command,
    Deposit,
    DepositInsurance,
    Event,
    Reason,
    RequestRejected,
    SetFundingRate,
    SetLeverage,
    SetMarginMode,
    UpdateIndex,
    UpdateSources,
    Withdraw,
)
from perpex.core.oracle import IndexConfig
from perpex.core.tokens import TokenSpec
from perpex.core.units import to_decimal
from perpex.defaults import default_markets
from perpex.errors import ExchangeError, error_for, mandatory
from perpex.exchange_base import internal_error
from perpex.exchange_orders import OrderCalls
from perpex.exchange_reads import ExchangeReads
from perpex.exchange_tokens import Token, TokenCalls, compile_tokens
from perpex.journal import JournaledEngine
from perpex.parse import INT64_LIMIT, NumberError, choice, price_ticks
from perpex.views import (
    Account,
    FundingPayment,
    FundingRate,
    InsuranceFundChange,
    Order,
    Position,
    TokenInfo,
)


class Exchange(OrderCalls, TokenCalls, ExchangeReads):
    """An in-process exchange. See DESIGN.md §7 for the full surface.

    The methods live by job: construction, money, settings, the oracle and the clock, and
    the driver path `submit` here; orders in `perpex.exchange_orders`; leveraged tokens in
    `perpex.exchange_tokens`; views in `perpex.exchange_reads`; the shared plumbing in
    `perpex.exchange_base`. `tokens` lists leveraged tokens (`Token`, MECHANICS.md §6); they
    are part of the configuration a journal records, like the markets.
    """

    def __init__(
        self,
        markets: Sequence[Market] | None = None,
        mark_price: str = "binance",
        start_time: datetime | str | int | None = None,
        journal: str | os.PathLike[str] | None = None,
        snapshot_every: int = 10_000,
        insurance_fund: object = None,
        liquidation: LiquidationConfig | None = None,
        index_sources: Mapping[str, int] | None = None,
        funding: FundingConfig | Mapping[str, FundingConfig] | None = None,
        funding_history: Mapping[str, FundingSchedule | str | os.PathLike[str]] | None = None,
        tokens: Sequence[Token | TokenSpec] | None = None,
    ) -> None:
        # The insurance funds' seeds: an amount for the common fund, or {symbol or "": amount}
        # (a symbol with a fund of its own, `LiquidationConfig.fund_symbols`; "" the common one).
        if isinstance(insurance_fund, Mapping):
            seeds: dict[object, object] = dict(insurance_fund)
        else:
            seeds = {} if insurance_fund is None else {"": insurance_fund}
        fund_atoms: dict[str, int] = {}
        for fund, amount in seeds.items():
            try:
                zero = parse.ATOM_SCALE.units(amount, positive=False, allow_negative=True) == 0
            except NumberError:
                zero = False
            if not zero:
                fund_atoms[str(fund)] = parse.amount_atoms(amount)
        if mark_price not in MARK_MODES:
            raise ValueError(
                f"mark_price={mark_price!r}: use 'binance' (the median of MECHANICS.md §1.6), "
                "'index' (mark = index, for tests) or 'last' (mark = last trade, a debug option)"
            )
        # Weights are relative (Binance weights by volume); the names are what
        # `update_sources` accepts. None: six venues, equal weights.
        index = None if index_sources is None else IndexConfig(dict(index_sources))
        specs = [compile_market(m) for m in (markets if markets is not None else default_markets())]
        self._specs: dict[str, MarketSpec] = {s.symbol: s for s in specs}
        self._markets: dict[str, MarketEdge] = {s.symbol: MarketEdge(s) for s in specs}
        token_specs = compile_tokens(tokens or [], self._specs)  # ValueError for a bad Token
        self._check = Checker(self._markets, [t.name for t in token_specs])
        self._known_accounts = self._check.known_accounts
        for fund in seeds:
            if fund != "":
                self._market(fund)  # -1121 for a symbol that is not listed
        # One config for every market, or one per symbol (Binance's fundingInfo is per symbol).
        funding_configs = (
            dict.fromkeys(self._specs, funding) if isinstance(funding, FundingConfig) else funding
        )
        # Replay: rates from a history (e.g. Binance's published BTCUSDT funding) are fed to the
        # engine as commands before each settlement, so the journal holds them like any input.
        self._funding_history: dict[str, FundingSchedule] = {}
        for symbol, history in (funding_history or {}).items():
            if symbol not in self._specs:
                raise ValueError(f"funding_history for {symbol}, which is not listed")
            if not isinstance(history, FundingSchedule):
                from perpex.history import load_funding_schedule

                history = load_funding_schedule(os.fspath(history))
            self._funding_history[symbol] = history
        self.engine = Engine(
            specs,
            mark_mode=mark_price,
            liquidation=liquidation,
            index=index,
            funding=funding_configs,
            tokens=token_specs,
        )
        self._events: list[Event] = []
        self._log_start_ns = 0  # the clock where the event log begins
        self.journal: JournaledEngine | None = None
        if journal is not None:
            # Startup is recovery: open or create the file, restore, replay (the replayed
            # events rebuild the log), check the invariants. Raises JournalError if it cannot.
            self.journal = JournaledEngine(
                journal,
                specs,
                mark_price,
                snapshot_every=snapshot_every,
                liquidation=liquidation,  # part of the journal's config fingerprint
                index=index,
                funding=funding_configs,
                tokens=token_specs,  # part of the fingerprint too
                on_events=self._events.extend,
            )
            self.engine = self.journal.engine
            self._log_start_ns = self.journal.report.start_clock_ns
        fresh = self.journal is None or self.journal.last_seq == 0
        if start_time is not None and fresh:
            started = self._apply(AdvanceClock(parse.start_time_ns(start_time)))
            if started and isinstance(started[0], RequestRejected):  # never silently at 1970
                self.close()
                reason = started[0].reason.name
                raise ValueError(f"start_time={start_time!r} was refused by the engine: {reason}")
        if fresh:  # the funds' seeds, journaled like deposits: the common one first
            for fund in sorted(fund_atoms):
                self._apply(DepositInsurance(fund_atoms[fund], fund))

    # -- the driver path ------------------------------------------------------------------
    def submit(self, commands: Iterable[Command]) -> list[list[Event]]:
        """Apply a batch of typed engine commands (`perpex.core.messages`, integer units) and
        return each one's events, in order: the path for programs that generate commands in
        bulk (the simulator's agents, the server's sequencer). No Decimal in or out.

        Every command is first checked as the facade checks what it builds (`perpex.checks`:
        names, listed symbols, enum members, positive prices and quantities, 63-bit integers,
        a market order without a price and IOC); one that fails refuses the whole batch before
        anything is applied, with the facade's `ExchangeError` for that mistake, its position
        in `.index`. The engine's own refusals (margin, band, limits, ...) are not raised: they
        are the command's `OrderRejected` / `RequestRejected` event, as in the engine.

        With a journal, the batch is one group commit (one transaction, one fsync) holding
        the same rows, in the same order, as the facade's calls would: a scenario run through
        `submit` or through the facade gives the same journal and the same `state_hash()`.
        `AdvanceClock` brings the rates of `funding_history` due in its step, as
        `advance_time` does; a step the history cannot cover is refused when the batch reaches
        it (`.index` says which; the commands before it stay applied, as separate facade
        calls would). A resent (account, client_order_id) gets its first answer.
        """
        if isinstance(commands, list | tuple):
            batch: Sequence[Command] = commands
        elif isinstance(commands, Iterable) and not isinstance(commands, str | bytes | Mapping):
            batch = list(commands)
        else:
            raise mandatory("commands")
        check = self._check.command
        for i, command in enumerate(batch):
            try:
                check(command)
            except ExchangeError as exc:
                exc.index = i
                raise
        results: list[list[Event]] = []
        if self.journal is None and not self._funding_history:
            apply = self.engine.apply
            log = self._events.extend
            try:
                for command in batch:
                    events = apply(command)
                    log(events)
                    results.append(events)
            except EngineError as exc:
                error = internal_error(exc)
                error.index = len(results)
                raise error from None
            return results
        with self.batch():
            for i, command in enumerate(batch):
                try:
                    if type(command) is AdvanceClock and self._funding_history:
                        for rate in self._replayed_rates(command.ts_ns):
                            self._raise_rejection(self._apply(rate))
                    results.append(self._apply(command))
                except ExchangeError as exc:
                    exc.index = i
                    raise
        return results

    # -- money ----------------------------------------------------------------------------
    def deposit(self, account: str, amount: object) -> Decimal:
        """Credit the account's wallet; returns the new wallet balance."""
        name = self._account(account)
        events = self._apply(Deposit(name, parse.amount_atoms(amount)))
        self._raise_rejection(events)
        return self.account(name).wallet_balance

    def withdraw(self, account: str, amount: object) -> Decimal:
        name = self._account(account)
        events = self._apply(Withdraw(name, parse.amount_atoms(amount)))
        self._raise_rejection(events)
        return self.account(name).wallet_balance

    # -- settings -------------------------------------------------------------------------
    def set_leverage(self, account: str, symbol: str, leverage: int) -> int:
        market = self._market(symbol)
        name = self._account(account)
        value = parse.leverage(leverage)
        events = self._apply(SetLeverage(name, market.symbol, value))
        self._raise_rejection(events, leverage=value)
        return value

    def set_margin_mode(self, account: str, symbol: str, mode: str) -> str:
        market = self._market(symbol)
        name = self._account(account)
        isolated = choice(mode, parse.MARGIN_MODES)
        if isolated is None:
            raise parse.invalid_margin_type()
        events = self._apply(SetMarginMode(name, market.symbol, isolated))
        self._raise_rejection(events)
        return "ISOLATED" if isolated else "CROSSED"

    def add_isolated_margin(self, account: str, symbol: str, amount: object) -> Decimal:
        """Move margin into (amount > 0) or out of (amount < 0) an isolated position."""
        market = self._market(symbol)
        name = self._account(account)
        delta = parse.amount_atoms(amount, allow_negative=True)
        events = self._apply(AdjustIsolatedMargin(name, market.symbol, delta))
        self._raise_rejection(events)
        return self.position(name, market.symbol).isolated_margin

    # -- oracle and clock -----------------------------------------------------------------
    def set_index_price(self, symbol: str, price: object) -> None:
        market = self._market(symbol)
        events = self._apply(UpdateIndex(market.symbol, price_ticks(market.price, price)))
        self._raise_rejection(events)

    def update_sources(self, symbol: str, quotes: Mapping[str, object]) -> Decimal:
        """Spot prices from some index sources (name -> price), stamped now; returns the index.

        The index is their weighted average, a source more than 5 % from the median dropped
        (the median of all when several deviate); a source not quoted within `stale_after`
        (60 s of the virtual clock) no longer counts (MECHANICS.md §1.6).
        """
        market = self._market(symbol)
        if not isinstance(quotes, Mapping) or not quotes:
            raise mandatory("sources")
        if len(quotes) > parse.MAX_SOURCES:
            raise parse.not_valid("sources")
        # Names are checked before anything sorts or looks them up.
        named = [(parse.source_name(name), price) for name, price in quotes.items()]
        named.sort(key=lambda item: item[0])
        parsed = tuple((name, price_ticks(market.price, price)) for name, price in named)
        events = self._apply(UpdateSources(market.symbol, parsed))
        self._raise_rejection(events)
        return self.index_price(market.symbol)

    def advance_time(self, seconds: object = 0) -> int:
        """Move the virtual clock forward; returns the new time in ns since the epoch."""
        target_ns = self.engine.clock_ns + parse.seconds_ns(seconds)
        if target_ns >= INT64_LIMIT:
            raise parse.step_too_large()
        replayed = self._replayed_rates(target_ns)
        with self.batch():
            for command in replayed:
                self._raise_rejection(self._apply(command))
            events = self._apply(AdvanceClock(target_ns))
        self._raise_rejection(events)
        return self.engine.clock_ns

    def _replayed_rates(self, target_ns: int) -> list[SetFundingRate]:
        """The history's rate for every settlement the step to `target_ns` reaches (checked
        whole before anything is sent: a missing one refuses the step)."""
        commands = []
        for symbol, schedule in self._funding_history.items():
            funding = self.engine.markets[symbol].funding
            if funding is None:
                continue  # no price yet: no period has started, nothing settles
            try:
                due = funding.due_settlements(target_ns)
            except ValueError:
                raise error_for(Reason.TIME_STEP_TOO_LARGE) from None
            for funding_ns in due:
                try:
                    rate_e8 = schedule.rate_at(funding_ns)
                except FundingRateMissing as exc:
                    raise ExchangeError(-1130, f"{symbol}: {exc}") from None
                commands.append(SetFundingRate(symbol, funding_ns, rate_e8))
        return commands


__all__ = [
    "Account",
    "Exchange",
    "ExchangeError",
    "FundingPayment",
    "FundingRate",
    "InsuranceFundChange",
    "Order",
    "Position",
    "Token",
    "TokenInfo",
    "to_decimal",
]
