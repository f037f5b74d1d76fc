"""Leveraged tokens: constant-leverage baskets that rebalance through the book (MECHANICS §6).

Each token (say BTCUP3, +3x) is backed by a pool account, named ``#`` + the token's name (a
name the edge refuses, so no user can trade, fund or drain it), that holds a perpetual position
of the token's target leverage times its equity, in cross margin. The pool is an account like
any other: it pays fees, slippage and funding, and it can be liquidated.

- NAV per token = pool equity (wallet + unrealized PnL at the mark) x `TOKEN_UNITS` / supply,
  rounded down; a token quantity is an integer of `TOKEN_UNITS` units (1e-8 token).
- Creation (`CreateTokens`): the account pays `quote_atoms`; the creation fee (rounded up) goes
  to FEES, the rest to the pool's wallet, and units = rest x TOKEN_UNITS / NAV (rounded down:
  the holders already in keep the dust). The first creation is at `initial_nav_atoms`. The pool
  then trades to its target for its new equity.
- Redemption (`RedeemTokens`): refused (`FOK_NOT_FILLABLE`) when the book within the price
  band cannot take the redeemed share of the pool's position; else the pool sells (or buys
  back) that share through the book (the last holder out: all of it), then the account
  receives units x equity / supply as it stands after that sale (rounded down: the redeemer
  bears its exit's slippage) less the redemption fee (rounded up, to FEES). A redemption that
  would pay nothing after the fee (dust) is refused (`INVALID_AMOUNT`, as a creation that buys
  no unit is) before anything moves.
- Rebalancing back to `leverage_ppm` x equity / mark: daily at `rebalance_at_ns` into the UTC
  day (default 00:02, as FTX did), in `slices` market orders `slice_interval_ns` apart (a TWAP;
  1 = at once); at once after a creation or when a mark publication finds the pool's leverage at
  or beyond target x (1 + `threshold_ppm`) (a +3x token at 4x: a fall of 11.1 %, MECHANICS
  §6.1), well before the pool's liquidation price. Every order is a market order of the pool
  through the book, split at the market's max market quantity; rebalances under the min
  notional are skipped.
- Safety: a pool that is liquidated (a gap through its liquidation price) or has no equity
  left halts its token (`TokenHalted`): creation and redemption are refused (`TOKEN_HALTED`)
  until the daily rebalance finds the pool flat: then NAV is known again (`TokenResumed`); a
  pool left with nothing writes its tokens off (burned for a zero payout, `TokensRedeemed`).
  The loss is bounded by the pool: token holders never owe anything.

Units: prices in ticks, sizes in lots, money in atoms, rates in ppm, token quantities in units.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec

from perpex.core.book import BUY, SELL
from perpex.core.messages import (
    CreateTokens,
    Event,
    LiquidationTriggered,
    OrderAccepted,
    OrderType,
    PlaceOrder,
    Reason,
    RedeemTokens,
    RequestRejected,
    TimeInForce,
    TokenHalted,
    TokenRebalanced,
    TokenRebalanceReason,
    TokenResumed,
    TokensCreated,
    TokensRedeemed,
    TradeExecuted,
)
from perpex.core.state import Account, ExchangeState, MarketState
from perpex.core.store import MAX_AMOUNT_ATOMS, EngineError
from perpex.core.units import ATOMS_PER_UNIT, PPM, Rounding, div

TOKEN_UNITS: Final = 10**8  # units per token
NS_PER_DAY: Final = 86_400 * 1_000_000_000
MAX_TOKENS: Final = 64
MAX_LEVERAGE_PPM: Final = 10 * PPM  # |target leverage| <= 10x
MAX_SLICES: Final = 1_440
MAX_TOKEN_UNITS: Final = 2**62  # supply and balances stay far inside int64
POOL_LEVERAGE: Final = 20  # the pool's leverage setting: its initial margin is never the limit
POOL_PREFIX: Final = "#"
MAX_BOOK_LEVELS: Final = 10_000  # levels a redemption's liquidity check reads


class TokenSpec(msgspec.Struct, frozen=True, array_like=True):
    """A leveraged token (part of the engine's configuration and of the state hash)."""

    name: str
    symbol: str
    leverage_ppm: int  # signed target leverage: +3x = 3_000_000, -1x = -1_000_000
    creation_fee_ppm: int = 1_000  # 0.1 %
    redemption_fee_ppm: int = 1_000
    rebalance_at_ns: int = 120 * 1_000_000_000  # 00:02 UTC
    threshold_ppm: int = 333_334  # rebalance at once past target x 1.333 (3x -> 4x)
    slices: int = 1  # market orders of a daily rebalance (a TWAP when > 1)
    slice_interval_ns: int = 60 * 1_000_000_000
    initial_nav_atoms: int = 100 * ATOMS_PER_UNIT  # the first token's NAV: 100 USDT

    def __post_init__(self) -> None:
        if not self.name or not self.name.isalnum() or len(self.name) > 32:
            raise ValueError(f"token name {self.name!r} must be 1-32 letters and digits")
        if self.leverage_ppm == 0 or abs(self.leverage_ppm) > MAX_LEVERAGE_PPM:
            raise ValueError("leverage_ppm must be non-zero and at most 10x either way")
        for fee in (self.creation_fee_ppm, self.redemption_fee_ppm):
            if not 0 <= fee < 100_000:
                raise ValueError("fees must be in [0, 10 %)")
        if not 0 <= self.rebalance_at_ns < NS_PER_DAY:
            raise ValueError("rebalance_at_ns must be within a day")
        if not 0 < self.threshold_ppm <= 10 * PPM:
            raise ValueError("threshold_ppm must be in (0, 10000000]")
        if not 1 <= self.slices <= MAX_SLICES:
            raise ValueError(f"slices must be in [1, {MAX_SLICES}]")
        if not 0 < self.slice_interval_ns <= NS_PER_DAY // self.slices:
            raise ValueError("the slices of a rebalance must fit in a day")
        if not 0 < self.initial_nav_atoms <= MAX_AMOUNT_ATOMS:
            raise ValueError("initial_nav_atoms must be positive")

    @property
    def pool(self) -> str:
        return POOL_PREFIX + self.name


class TokenState:
    """One token's supply, holders and rebalancing schedule."""

    __slots__ = ("balances", "halted", "last_rebalance_ns", "next_rebalance_ns", "spec",
                 "supply_units", "twap")  # fmt: skip

    def __init__(self, spec: TokenSpec, clock_ns: int) -> None:
        self.spec = spec
        self.supply_units = 0
        self.balances: dict[str, int] = {}
        self.halted = False
        self.last_rebalance_ns = 0
        self.next_rebalance_ns = next_daily_ns(spec, clock_ns)
        self.twap: list[int] = []  # [side, lots left, slices left, next slice ns] or []

    def record(self) -> list[Any]:
        return [
            self.spec.name,
            self.supply_units,
            [[name, units] for name, units in sorted(self.balances.items())],
            self.halted,
            self.last_rebalance_ns,
            self.next_rebalance_ns,
            list(self.twap),
        ]


def next_daily_ns(spec: TokenSpec, after_ns: int) -> int:
    """The first daily rebalance time strictly after `after_ns`."""
    day = after_ns - after_ns % NS_PER_DAY
    t = day + spec.rebalance_at_ns
    return t if t > after_ns else t + NS_PER_DAY


class Tokens:
    """The engine's leveraged tokens: commands, the clock and mark passes, views, records."""

    def __init__(self, state: ExchangeState, specs: Sequence[TokenSpec]) -> None:
        if len(specs) > MAX_TOKENS:
            raise EngineError(f"at most {MAX_TOKENS} tokens")
        self.state = state
        self.tokens: dict[str, TokenState] = {}
        for spec in specs:
            if spec.name in self.tokens:
                raise EngineError(f"token {spec.name} listed twice")
            if spec.symbol not in state.markets:
                raise EngineError(f"token {spec.name}: symbol {spec.symbol} is not listed")
            self.tokens[spec.name] = TokenState(spec, state.clock_ns)

    @property
    def specs(self) -> list[TokenSpec]:
        return [t.spec for t in self.tokens.values()]

    # -- figures --------------------------------------------------------------------------------
    def equity_atoms(self, t: TokenState) -> int:
        """The pool's equity: wallet + unrealized PnL at the mark (cross margin)."""
        acct = self.state.accounts.get(t.spec.pool)
        if acct is None:
            return 0
        equity = acct.wallet.balance
        for pos in acct.positions.values():
            if pos.size_lots:
                market = self.state.markets[pos.symbol]
                k = market.spec.atoms_per_tick_lot
                upnl = pos.size_lots * market.mark_ticks * k - pos.cost_atoms
                equity += pos.margin.balance + upnl
        return equity

    def position_lots(self, t: TokenState) -> int:
        acct = self.state.accounts.get(t.spec.pool)
        pos = None if acct is None else acct.positions.get(t.spec.symbol)
        return 0 if pos is None else pos.size_lots

    def nav_atoms(self, t: TokenState) -> int:
        """NAV of one token (rounded down); `initial_nav_atoms` before the first creation."""
        if not t.supply_units:
            return t.spec.initial_nav_atoms
        return max(div(self.equity_atoms(t) * TOKEN_UNITS, t.supply_units, Rounding.FLOOR), 0)

    def leverage_ppm(self, t: TokenState) -> int:
        """The pool's signed leverage now (exposure at the mark / equity), 0 with no equity."""
        equity = self.equity_atoms(t)
        if equity <= 0:
            return 0
        market = self.state.markets[t.spec.symbol]
        exposure = self.position_lots(t) * market.mark_ticks * market.spec.atoms_per_tick_lot
        return div(exposure * PPM, equity, Rounding.TRUNC)

    # -- commands -------------------------------------------------------------------------------
    def create(self, cmd: CreateTokens) -> list[Event]:
        state = self.state
        t = self.tokens.get(cmd.token)
        reason = self._refusal(cmd.account, t, cmd.quote_atoms)
        if reason is None:
            assert t is not None
            acct = state.accounts.get(cmd.account)
            if acct is None or state.available_atoms(acct) < cmd.quote_atoms:
                reason = Reason.INSUFFICIENT_BALANCE
        if reason is not None:
            return [RequestRejected(cmd.account, cmd.token, reason)]
        assert t is not None and acct is not None
        nav = self.nav_atoms(t)
        if t.supply_units and nav <= 0:
            return [RequestRejected(cmd.account, cmd.token, Reason.TOKEN_HALTED)]
        fee = div(cmd.quote_atoms * t.spec.creation_fee_ppm, PPM, Rounding.CEIL)
        net = cmd.quote_atoms - fee
        units = div(net * TOKEN_UNITS, nav, Rounding.FLOOR)
        if units <= 0 or t.supply_units + units > MAX_TOKEN_UNITS:
            return [RequestRejected(cmd.account, cmd.token, Reason.INVALID_AMOUNT)]
        pool = self._pool(t)
        state.transfer(acct.wallet, pool.wallet, net)
        if fee:
            state.transfer(acct.wallet, state.ledger.fees, fee)
        t.supply_units += units
        t.balances[cmd.account] = t.balances.get(cmd.account, 0) + units
        events: list[Event] = [
            TokensCreated(cmd.account, cmd.token, cmd.quote_atoms, fee, units, nav)
        ]
        self._rebalance(t, TokenRebalanceReason.CREATION, events)
        return events

    def redeem(self, cmd: RedeemTokens) -> list[Event]:
        state = self.state
        t = self.tokens.get(cmd.token)
        reason = self._refusal(cmd.account, t, cmd.units)
        if reason is None:
            assert t is not None
            if t.balances.get(cmd.account, 0) < cmd.units:
                reason = Reason.TOKEN_BALANCE_INSUFFICIENT
        if reason is not None:
            return [RequestRejected(cmd.account, cmd.token, reason)]
        assert t is not None
        equity_before = self.equity_atoms(t)
        if equity_before <= 0:
            return [RequestRejected(cmd.account, cmd.token, Reason.TOKEN_HALTED)]
        if self._net_payout_atoms(t, cmd.units, equity_before) <= 0:
            # Dust, refused as a creation that buys no unit is: burning tokens for nothing
            # must not happen, and nothing has moved yet. Judged at the equity before the
            # pool's sale: exact when there is no sale (a share under one lot, as a payout of
            # a few atoms is at any listed leverage).
            return [RequestRejected(cmd.account, cmd.token, Reason.INVALID_AMOUNT)]
        nav = self.nav_atoms(t)
        size = self.position_lots(t)
        share_lots = div(size * cmd.units, t.supply_units, Rounding.TRUNC)
        if cmd.units == t.supply_units:
            share_lots = size  # the last holder out: the pool ends flat
        side = SELL if share_lots > 0 else BUY
        if share_lots and self._book_lots(t, side) < abs(share_lots):
            # Validate before anything moves: a share the book cannot take now would leave
            # the pool paying cash for a position it still holds.
            return [RequestRejected(cmd.account, cmd.token, Reason.FOK_NOT_FILLABLE)]
        events: list[Event] = []
        if share_lots:
            self._trade(t, side, abs(share_lots), TokenRebalanceReason.REDEMPTION, events, True)
        # Paid at the equity after the sale: the redeemer bears its own exit's slippage, and
        # the last holder takes exactly what the flat pool holds.
        equity = max(self.equity_atoms(t), 0)
        payout = div(cmd.units * equity, t.supply_units, Rounding.FLOOR)
        fee = div(payout * t.spec.redemption_fee_ppm, PPM, Rounding.CEIL)
        pool = self._pool(t)
        acct = state.account_for_write(cmd.account)
        state.transfer(pool.wallet, acct.wallet, payout - fee)
        if fee:
            state.transfer(pool.wallet, state.ledger.fees, fee)
        t.supply_units -= cmd.units
        left = t.balances[cmd.account] - cmd.units
        if left:
            t.balances[cmd.account] = left
        else:
            del t.balances[cmd.account]
        if events and type(events[-1]) is TokenRebalanced:  # its figures after the payout
            events[-1] = msgspec.structs.replace(
                events[-1], leverage_ppm_after=self.leverage_ppm(t), nav_atoms=self.nav_atoms(t)
            )
        events.insert(0, TokensRedeemed(cmd.account, cmd.token, cmd.units, payout, fee, nav))
        return events

    def _net_payout_atoms(self, t: TokenState, units: int, equity_atoms: int) -> int:
        """What redeeming `units` pays at the pool's `equity_atoms`: the share rounded down,
        less the redemption fee rounded up."""
        payout_atoms = div(units * equity_atoms, t.supply_units, Rounding.FLOOR)
        return payout_atoms - div(payout_atoms * t.spec.redemption_fee_ppm, PPM, Rounding.CEIL)

    def _book_lots(self, t: TokenState, side: int) -> int:
        """Lots a market order on `side` can take before the price band stops it."""
        market = self.state.markets[t.spec.symbol]
        mark, band = market.mark_ticks, market.price_band_ppm
        bids, asks = market.book.depth(MAX_BOOK_LEVELS)
        if side == SELL:
            floor = div(mark * (PPM - band), PPM, Rounding.CEIL)
            return sum(lots for price, lots in bids if price >= floor)
        cap = div(mark * (PPM + band), PPM, Rounding.FLOOR)
        return sum(lots for price, lots in asks if price <= cap)

    def _refusal(self, account: str, t: TokenState | None, amount: int) -> Reason | None:
        if t is None:
            return Reason.UNKNOWN_TOKEN
        if not self.state.valid_name(account) or account.startswith(POOL_PREFIX):
            return Reason.UNKNOWN_ACCOUNT
        if not 0 < amount <= MAX_AMOUNT_ATOMS:
            return Reason.INVALID_AMOUNT
        if t.halted:
            return Reason.TOKEN_HALTED
        if not self.state.markets[t.spec.symbol].mark_ticks:
            return Reason.NO_MARK_PRICE
        return None

    def _pool(self, t: TokenState) -> Account:
        state = self.state
        acct = state.account_for_write(t.spec.pool)
        if t.spec.symbol not in acct.positions:
            state.position_for_write(acct, t.spec.symbol).leverage = min(
                POOL_LEVERAGE, state.markets[t.spec.symbol].spec.max_leverage
            )
        return acct

    # -- the passes -----------------------------------------------------------------------------
    def due_times(self, after_ns: int, until_ns: int) -> set[int]:
        """The rebalance and slice times in (after_ns, until_ns] the clock must stop at."""
        times: set[int] = set()
        for t in self.tokens.values():
            at = t.next_rebalance_ns
            # no tokens, nothing to rebalance: `on_clock` moves the schedule at the step's end
            while t.supply_units and after_ns < at <= until_ns and len(times) < 10_000:
                times.add(at)
                at += NS_PER_DAY
            if t.twap:
                at = t.twap[3]
                for _ in range(t.twap[2]):
                    if after_ns < at <= until_ns:
                        times.add(at)
                    at += t.spec.slice_interval_ns
        return times

    def on_clock(self, ts_ns: int, events: list[Event]) -> None:
        """At a clock stop: the slices and the daily rebalances due by `ts_ns`."""
        for t in self.tokens.values():
            if t.twap and t.twap[3] <= ts_ns:
                self._slice(t, ts_ns, events)
            if ts_ns >= t.next_rebalance_ns:
                t.next_rebalance_ns = next_daily_ns(t.spec, ts_ns)
                if t.halted and not self.position_lots(t):
                    self._resume(t, events)
                if not t.halted and t.supply_units:
                    t.last_rebalance_ns = ts_ns
                    self._rebalance(t, TokenRebalanceReason.DAILY, events)

    def _resume(self, t: TokenState, events: list[Event]) -> None:
        """A halted token whose pool is flat: its NAV is known again (the pool's wallet over
        the supply). A pool left with nothing writes its tokens off: each holder's are burned
        for nothing (`TokensRedeemed` with a zero payout), and the next creation starts again
        at the initial NAV."""
        equity = self.equity_atoms(t)
        if equity < 0:
            return  # cannot happen to a flat pool (non-recourse); stay halted if it did
        if equity == 0:
            for account, units in sorted(t.balances.items()):
                events.append(TokensRedeemed(account, t.spec.name, units, 0, 0, 0))
            t.balances.clear()
            t.supply_units = 0
        t.halted = False
        events.append(TokenResumed(t.spec.name, self.nav_atoms(t)))

    def on_mark(self, symbol: str, events: list[Event]) -> None:
        """After a mark publication's passes: halt a pool that was liquidated or has no equity
        (its NAV is not known); rebalance at once a pool whose leverage reached the
        threshold."""
        liquidated = {e.account for e in events if type(e) is LiquidationTriggered}
        for t in self.tokens.values():
            if t.spec.symbol != symbol or not t.supply_units or t.halted:
                continue
            equity = self.equity_atoms(t)
            if equity <= 0 or t.spec.pool in liquidated:
                t.halted = True
                t.twap = []
                events.append(TokenHalted(t.spec.name, equity))
                continue
            limit = abs(t.spec.leverage_ppm) * (PPM + t.spec.threshold_ppm)
            if abs(self.leverage_ppm(t)) * PPM >= limit:
                t.last_rebalance_ns = self.state.clock_ns
                self._rebalance(t, TokenRebalanceReason.THRESHOLD, events)

    # -- trading --------------------------------------------------------------------------------
    def _target_lots(self, t: TokenState) -> int:
        market = self.state.markets[t.spec.symbol]
        per_lot = PPM * market.mark_ticks * market.spec.atoms_per_tick_lot
        return div(t.spec.leverage_ppm * max(self.equity_atoms(t), 0), per_lot, Rounding.TRUNC)

    def _rebalance(self, t: TokenState, reason: TokenRebalanceReason, events: list[Event]) -> None:
        delta = self._target_lots(t) - self.position_lots(t)
        if not delta:
            return
        side = BUY if delta > 0 else SELL
        if reason is TokenRebalanceReason.DAILY and t.spec.slices > 1:
            t.twap = [side, abs(delta), t.spec.slices, self.state.clock_ns]
            self._slice(t, self.state.clock_ns, events)
            return
        t.twap = []  # a rebalance at once replaces what a TWAP had left
        self._trade(t, side, abs(delta), reason, events, False)

    def _slice(self, t: TokenState, ts_ns: int, events: list[Event]) -> None:
        side, left, slices, _ = t.twap
        lots = left // slices if slices > 1 else left
        t.twap = [side, left - lots, slices - 1, ts_ns + t.spec.slice_interval_ns]
        if t.twap[2] == 0 or t.twap[1] == 0:
            t.twap = []
        if lots:
            self._trade(t, side, lots, TokenRebalanceReason.DAILY, events, False)

    def _trade(
        self,
        t: TokenState,
        side: int,
        lots: int,
        reason: TokenRebalanceReason,
        events: list[Event],
        reduce_only: bool,
    ) -> None:
        """Market orders of the pool for `lots` (split at the max market quantity); one
        `TokenRebalanced` with what filled, the fees and the slippage against the mark."""
        state = self.state
        market: MarketState = state.markets[t.spec.symbol]
        spec = market.spec
        k = spec.atoms_per_tick_lot
        mark = market.mark_ticks
        if not mark or lots * mark * k < spec.min_notional_atoms:
            return  # too small to trade
        self._pool(t)
        lev_before = self.leverage_ppm(t)
        filled = quote_ticks = fee_atoms = 0
        left = lots
        while left:
            chunk = min(left, spec.max_market_qty_lots)
            left -= chunk
            order = PlaceOrder(
                t.spec.pool, t.spec.symbol, side, OrderType.MARKET, TimeInForce.IOC, chunk, 0,
                reduce_only,
            )  # fmt: skip
            order_events = state.submit_order(order)
            order_id = next((e.order_id for e in order_events if type(e) is OrderAccepted), None)
            for e in order_events:
                if type(e) is TradeExecuted and e.taker_order_id == order_id:
                    assert isinstance(e, TradeExecuted)
                    filled += e.qty_lots
                    quote_ticks += e.price_ticks * e.qty_lots
                    fee_atoms += e.taker_fee_atoms
            events.extend(order_events)
            if order_id is None or not filled:
                break  # refused, or no liquidity: the next rebalance tries again
        slippage = side * (quote_ticks - filled * mark) * k  # > 0: paid over the mark
        lev_after, nav = self.leverage_ppm(t), self.nav_atoms(t)
        rebalanced = TokenRebalanced(
            t.spec.name, reason, side, lots, filled, quote_ticks, mark, fee_atoms, slippage,
            lev_before, lev_after, nav,
        )  # fmt: skip
        events.append(rebalanced)

    # -- records --------------------------------------------------------------------------------
    def record(self) -> list[Any]:
        return [[list(msgspec.to_builtins(t.spec)), t.record()] for t in self.tokens.values()]

    def load(self, record: list[Any]) -> None:
        for _, (name, supply, balances, halted, last_ns, next_ns, twap) in record:
            t = self.tokens[name]
            t.supply_units = supply
            t.balances = {account: units for account, units in balances}
            t.halted = halted
            t.last_rebalance_ns = last_ns
            t.next_rebalance_ns = next_ns
            t.twap = list(twap)

    def check(self) -> None:
        for t in self.tokens.values():
            assert t.supply_units == sum(t.balances.values()), f"{t.spec.name}: supply drifted"
            assert all(units > 0 for units in t.balances.values()), "an empty token balance"
            assert not any(a.startswith(POOL_PREFIX) for a in t.balances), "a pool holds tokens"


def specs_from_record(record: list[Any]) -> list[TokenSpec]:
    return [msgspec.convert(spec, TokenSpec) for spec, _ in record]


__all__ = [
    "POOL_PREFIX",
    "TOKEN_UNITS",
    "TokenSpec",
    "TokenState",
    "Tokens",
    "next_daily_ns",
    "specs_from_record",
]
