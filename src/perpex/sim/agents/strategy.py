"""The user's strategy API: a `Strategy` subclass with hooks, the `StrategyContext` it trades
through (the `Exchange` facade for its one account, Decimal in and out), and `StrategyAgent`,
which runs it in the simulation as the account ``"strategy"``.

Units: the strategy sees Decimals (USDT, BTC), as a user of the facade does; the agent keeps
integer ticks, lots and atoms internally. Its calls go through the facade at once (the same
engine path as any agent's commands), so `StrategyAgent.step` returns no commands.

Hooks, in the order they run within a step: `on_start` (the first step only), `on_bar` (when a
bar of `bar_steps` steps completes, in `step`), then, in `observe`, `on_fill` for each of the
account's fills and `on_liquidation` for each of its liquidations (after that liquidation's
fills). A refused call raises `perpex.errors.ExchangeError`; a strategy that can be refused
(margin, the price band, a stop the mark has passed) catches it. Whatever a hook lets out stops
the run as a `StrategyError`: one line naming the strategy, the hook, the bar, the time and the
line of the strategy's file that raised (the original exception is its ``__cause__``).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any, Final, cast

import numpy as np

from perpex.core.funding import format_utc
from perpex.core.markets import MarketSpec
from perpex.core.messages import (
    Command,
    Deposit,
    Event,
    LiquidationTriggered,
    PositionChanged,
    TradeExecuted,
)
from perpex.core.units import ATOMS_PER_UNIT, atoms_to_decimal
from perpex.exchange import Exchange
from perpex.sim.agents.base import World
from perpex.sim.agents.config import StrategyConfig
from perpex.views import Account, Order, Position

STRATEGY_ACCOUNT = "strategy"
USER_MODULE_PREFIX = "perpex_user_strategy_"  # a strategy file's module name: this + its stem
HOOKS = ("on_start", "on_bar", "on_fill", "on_liquidation")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The events `StrategyAgent.observe` reads (one set lookup skips the rest).
_SEEN: Final = frozenset({TradeExecuted, PositionChanged, LiquidationTriggered})


def utc_of(time_ns: int) -> datetime:
    """A clock time in ns since the epoch as a UTC datetime (to the microsecond)."""
    return _EPOCH + timedelta(microseconds=time_ns // 1_000)


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar of `bar_steps` steps: OHLC of the last trade price (the path's target in a step
    without trades), and the mark and index at its close."""

    time: datetime  # UTC, of the bar's last step
    time_ns: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    mark: Decimal
    index: Decimal


@dataclass(frozen=True, slots=True)
class Fill:
    """One fill of the strategy's orders (a liquidation's fills included)."""

    order_id: int
    side: str  # "BUY" / "SELL"
    price: Decimal
    quantity: Decimal
    fee: Decimal  # paid (negative: a rebate)
    realized_pnl: Decimal
    maker: bool
    liquidation: bool  # a fill of the liquidation order that closed the position
    time_ns: int


@dataclass(frozen=True, slots=True)
class Liquidation:
    """The strategy's position was liquidated (from the engine's `LiquidationTriggered`)."""

    symbol: str
    side: str  # of the position closed: "LONG" / "SHORT" ("" if it could not be seen)
    quantity: Decimal  # closed by the liquidation's fills (the position, if none were seen)
    margin_balance: Decimal  # at the trigger: isolated margin + uPnL, or cross wallet + uPnL
    maintenance_margin: Decimal
    time_ns: int


class StrategyError(Exception):
    """The user's strategy raised inside a hook (or could not be made): one line naming the
    strategy, the hook, the bar and time, and the line of the strategy's file that raised; the
    original exception is its ``__cause__``."""


def strategy_label(strategy: object) -> str:
    """``module:Class`` of a strategy class or instance (a file's module shows as its file's
    stem)."""
    cls = strategy if isinstance(strategy, type) else type(strategy)
    return f"{cls.__module__.removeprefix(USER_MODULE_PREFIX)}:{cls.__qualname__}"


def _where_in(exc: BaseException, strategy: object) -> str:
    """', at FILE line N' for the deepest frame of the traceback in the strategy's own file
    (where the user should look), or '' when none is (it raised in a base class)."""
    cls = strategy if isinstance(strategy, type) else type(strategy)
    try:
        source = inspect.getsourcefile(cls)
    except TypeError:  # a class defined in the interpreter has no file
        return ""
    if source is None:
        return ""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == source]
    if not frames:
        return ""
    return f", at {Path(source).name} line {frames[-1].lineno}"


def make_strategy(cls: type[Strategy]) -> Strategy:
    """An instance of a strategy class made with no arguments, as ``--strategy`` does;
    `StrategyError` when that fails (an __init__ that needs arguments, or raises)."""
    label = strategy_label(cls)
    try:
        return cls()
    except Exception as exc:
        hint = " (give every __init__ argument a default)" if isinstance(exc, TypeError) else ""
        raise StrategyError(
            f"strategy {label}: making one with no arguments failed{_where_in(exc, cls)}: "
            f"{type(exc).__name__}: {exc}{hint}"
        ) from exc


class Strategy:
    """Subclass this and override the hooks you need (each is a no-op here).

    `ctx` is the strategy's `StrategyContext`: trade and read through it. Calls the exchange
    refuses raise `perpex.errors.ExchangeError`; catch it where a refusal is expected.
    """

    def on_start(self, ctx: StrategyContext) -> None:
        """Once, at the first step (the deposit is in the account)."""

    def on_bar(self, ctx: StrategyContext, bar: Bar) -> None:
        """A bar completed."""

    def on_fill(self, ctx: StrategyContext, fill: Fill) -> None:
        """One of the strategy's orders filled (partly)."""

    def on_liquidation(self, ctx: StrategyContext, event: Liquidation) -> None:
        """The strategy's position was liquidated."""


class StrategyContext:
    """The facade's calls for one account: the same arguments less the account, Decimal (or
    decimal strings) in and out; `symbol` defaults to the strategy's symbol."""

    def __init__(
        self,
        ex: Exchange,
        account: str,
        symbol: str,
        world: World,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.ex = ex
        self.account_name = account
        self.symbol = symbol
        self.world = world  # the simulation's read-only market view (integer units)
        self.commands = 0  # engine commands the strategy's calls sent (the run's summary)
        # Draws a strategy makes should come from here: the run stays reproducible.
        self.rng = rng if rng is not None else np.random.default_rng(0)

    @property
    def spec(self) -> MarketSpec:
        """The market's tick and step sizes, fees and brackets."""
        return self.world.spec

    @property
    def time_ns(self) -> int:
        """The exchange clock, ns since the epoch."""
        return self.ex.time_ns

    # -- orders ---------------------------------------------------------------------------------
    def place_order(
        self,
        side: str,
        type: str = "LIMIT",
        quantity: object = None,
        price: object = None,
        time_in_force: str = "GTC",
        reduce_only: bool = False,
        client_order_id: str | None = None,
        stop_price: object = None,
        working_type: str = "MARK_PRICE",
        callback_rate: object = None,
        activation_price: object = None,
        take_profit: object = None,
        stop_loss: object = None,
        close_position: bool = False,
        *,
        symbol: str | None = None,
    ) -> Order:
        """`Exchange.place_order` for this account (see it for every argument)."""
        self.commands += 1
        return self.ex.place_order(
            self.account_name, symbol or self.symbol, side, type, quantity, price,
            time_in_force, reduce_only, client_order_id, stop_price, working_type,
            callback_rate, activation_price, take_profit, stop_loss, close_position,
        )  # fmt: skip

    def cancel_order(
        self,
        order_id: int | None = None,
        client_order_id: str | None = None,
        *,
        symbol: str | None = None,
    ) -> Order:
        self.commands += 1
        return self.ex.cancel_order(
            self.account_name, symbol or self.symbol, order_id, client_order_id
        )

    def place_exit_ladder(
        self,
        targets: Sequence[tuple[object, object]],
        stop_loss: object,
        move_stop_to_entry_after: int | None = 1,
        trail_after: int | None = None,
        callback_rate: object = None,
        working_type: str = "MARK_PRICE",
        *,
        symbol: str | None = None,
    ) -> list[Order]:
        """`Exchange.place_exit_ladder` for this account's open position."""
        self.commands += 1
        return self.ex.place_exit_ladder(
            self.account_name, symbol or self.symbol, targets, stop_loss,
            move_stop_to_entry_after, trail_after, callback_rate, working_type,
        )  # fmt: skip

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        """Open orders and open conditional orders in `symbol`."""
        return self.ex.open_orders(self.account_name, symbol or self.symbol)

    # -- settings -------------------------------------------------------------------------------
    def set_leverage(self, leverage: int, *, symbol: str | None = None) -> int:
        self.commands += 1
        return self.ex.set_leverage(self.account_name, symbol or self.symbol, leverage)

    def set_margin_type(self, mode: str, *, symbol: str | None = None) -> str:
        """Set "ISOLATED" or "CROSSED" (`Exchange.set_margin_mode`); returns the mode set."""
        self.commands += 1
        return self.ex.set_margin_mode(self.account_name, symbol or self.symbol, mode)

    # -- reads ----------------------------------------------------------------------------------
    def position(self, symbol: str | None = None) -> Position:
        return self.ex.position(self.account_name, symbol or self.symbol)

    def account(self) -> Account:
        return self.ex.account(self.account_name)

    def mark_price(self, symbol: str | None = None) -> Decimal:
        return self.ex.mark_price(symbol or self.symbol)

    # -- helpers ----------------------------------------------------------------------------------
    def floor_qty(self, quantity: Decimal) -> Decimal:
        """`quantity` rounded down to the market's step size (what `place_order` accepts)."""
        step = self.spec.step_size
        return (quantity / step).to_integral_value(ROUND_FLOOR) * step

    def round_price(self, price: Decimal) -> Decimal:
        """`price` rounded to the nearest tick."""
        tick = self.spec.tick_size
        return (price / tick).to_integral_value(ROUND_HALF_EVEN) * tick


class StrategyAgent:
    """Runs a `Strategy` as the account ``"strategy"`` (see the module docstring).

    Read after a run: `equity_atoms` (the account's equity at each step), `max_drawdown_atoms`
    and `max_drawdown` (a fraction of the peak), `pnl_atoms` (equity less the deposit), and the
    counts `bars`, `fills`, `liquidations`.
    """

    def __init__(
        self,
        strategy: Strategy,
        config: StrategyConfig,
        symbol: str,
        bar_steps: int,
        ex: Exchange,
        *,
        name: str = "strategy",
    ) -> None:
        self.name = name
        self.strategy = strategy
        self.config = config
        self.symbol = symbol
        self.bar_steps = max(1, bar_steps)
        self.ex = ex
        self.account = STRATEGY_ACCOUNT
        self.deposit_atoms = int(
            (Decimal(repr(config.deposit)) * ATOMS_PER_UNIT).to_integral_value(ROUND_DOWN)
        )
        self.ctx: StrategyContext | None = None
        # Hooks looked up once; a duck-typed class (no `Strategy` base) may lack some.
        self._on_start = _hook(strategy, "on_start")
        self._on_bar = _hook(strategy, "on_bar")
        self._on_fill = _hook(strategy, "on_fill")
        self._on_liquidation = _hook(strategy, "on_liquidation")
        self._size_lots = 0  # the account's position as last seen (a liquidation's fallback)
        self.equity_atoms: list[int] = []
        self.peak_equity_atoms = 0
        self.max_drawdown_atoms = 0
        self.max_drawdown = 0.0
        self.bars = 0
        self.fills = 0
        self.liquidations = 0
        self._started = False
        self._spec: MarketSpec | None = None
        # The bar being built, in ticks (0: empty).
        self._steps_in_bar = 0
        self._open_ticks = self._high_ticks = self._low_ticks = self._close_ticks = 0
        # Trades seen in `observe` since the last sample: their range joins the next bar.
        self._traded = False
        self._last_seen_ticks = 0
        self._trade_high_ticks = 0
        self._trade_low_ticks = 0

    @property
    def pnl_atoms(self) -> int:
        """Equity at the last step less the deposit (0 before the first step)."""
        return self.equity_atoms[-1] - self.deposit_atoms if self.equity_atoms else 0

    # -- the agent protocol -------------------------------------------------------------------
    def start(self, world: World, rng: np.random.Generator) -> list[Command]:
        self.ctx = StrategyContext(self.ex, self.account, self.symbol, world, rng)
        self._spec = world.spec
        return [Deposit(self.account, self.deposit_atoms)]

    def step(self, world: World) -> list[Command]:
        ctx = self.ctx
        if ctx is None:
            raise RuntimeError("StrategyAgent.step before start")
        ctx.world = world
        if not self._started:
            self._started = True
            self._call(self._on_start, "on_start", ctx)
        self._sample(world)
        if self._steps_in_bar >= self.bar_steps:
            bar = self._bar(world)
            self.bars += 1
            self._call(self._on_bar, "on_bar", ctx, bar)
            self._size_lots = world.position(self.account).size_lots
        equity_atoms = world.position(self.account).equity_atoms
        self.equity_atoms.append(equity_atoms)
        if equity_atoms > self.peak_equity_atoms:
            self.peak_equity_atoms = equity_atoms
        drawdown_atoms = self.peak_equity_atoms - equity_atoms
        if drawdown_atoms > self.max_drawdown_atoms:
            self.max_drawdown_atoms = drawdown_atoms
            self.max_drawdown = drawdown_atoms / self.peak_equity_atoms
        return []

    def observe(self, events: Sequence[Event]) -> None:
        """Trades of the symbol (bar range), the account's fills and liquidations."""
        ctx = self.ctx
        if ctx is None:
            return
        account = self.account
        symbol = self.symbol
        fills: list[tuple[TradeExecuted, bool]] = []
        liquidations: list[tuple[LiquidationTriggered, list[TradeExecuted], int]] = []
        seen = _SEEN
        for e in events:
            if type(e) not in seen:  # orders, marks, other accounts' bookkeeping
                continue
            if isinstance(e, TradeExecuted):
                if e.symbol == symbol:
                    price = e.price_ticks
                    if not self._traded:
                        self._traded = True
                        self._trade_high_ticks = self._trade_low_ticks = price
                    elif price > self._trade_high_ticks:
                        self._trade_high_ticks = price
                    elif price < self._trade_low_ticks:
                        self._trade_low_ticks = price
                if e.taker_account == account:
                    fills.append((e, False))
                    if e.liquidation and liquidations:
                        liquidations[-1][1].append(e)
                elif e.maker_account == account:
                    fills.append((e, True))
            elif isinstance(e, PositionChanged):
                if e.account == account and e.symbol == symbol:
                    self._size_lots = e.size_lots
            elif isinstance(e, LiquidationTriggered) and e.account == account:
                liquidations.append((e, [], self._size_lots))
        for trade, maker in fills:
            self.fills += 1
            self._call(self._on_fill, "on_fill", ctx, self._fill(trade, maker))
        for trigger, closing, size_lots in liquidations:
            self.liquidations += 1
            liquidation = self._liquidation(trigger, closing, size_lots)
            self._call(self._on_liquidation, "on_liquidation", ctx, liquidation)

    def _call(self, hook: Any, name: str, *args: Any) -> None:
        """A hook of the user's strategy; what it raises becomes a `StrategyError` that says
        which strategy, hook, bar and time, and where in the strategy's file."""
        try:
            hook(*args)
        except Exception as exc:
            when = format_utc(self.ex.time_ns)
            bar = f"bar {self.bars}" if self.bars else "before the first bar"
            raise StrategyError(
                f"strategy {strategy_label(self.strategy)} raised {type(exc).__name__} in "
                f"{name} ({bar}, {when}){_where_in(exc, self.strategy)}: {exc}"
            ) from exc

    # -- bars ---------------------------------------------------------------------------------
    def _sample(self, world: World) -> None:
        """This step's price joins the bar: the last trade if there was one since the last
        sample, else the path's target; trades seen in between widen the range."""
        last_ticks = world.last_ticks
        # A trade since the last sample: one seen in `observe`, or one earlier in this step
        # (the world is refreshed after each agent's commands) that moved the last price.
        traded = self._traded or (last_ticks and last_ticks != self._last_seen_ticks)
        price = last_ticks if traded and last_ticks else world.target_ticks
        price = price or world.mark_ticks
        self._last_seen_ticks = last_ticks
        high = low = price
        if self._traded:
            high = max(high, self._trade_high_ticks)
            low = min(low, self._trade_low_ticks)
            self._traded = False
        if self._steps_in_bar == 0:
            self._open_ticks, self._high_ticks, self._low_ticks = price, high, low
        else:
            self._high_ticks = max(self._high_ticks, high)
            self._low_ticks = min(self._low_ticks, low)
        self._close_ticks = price
        self._steps_in_bar += 1

    def _bar(self, world: World) -> Bar:
        spec = world.spec
        d = spec.price_to_decimal
        self._steps_in_bar = 0
        return Bar(
            time=utc_of(world.time_ns),
            time_ns=world.time_ns,
            open=d(self._open_ticks),
            high=d(self._high_ticks),
            low=d(self._low_ticks),
            close=d(self._close_ticks),
            mark=d(world.mark_ticks),
            index=d(world.index_ticks),
        )

    # -- events as the strategy sees them -----------------------------------------------------
    def _fill(self, e: TradeExecuted, maker: bool) -> Fill:
        spec = self._spec
        assert spec is not None
        side = -e.taker_side if maker else e.taker_side
        return Fill(
            order_id=e.maker_order_id if maker else e.taker_order_id,
            side="BUY" if side > 0 else "SELL",
            price=spec.price_to_decimal(e.price_ticks),
            quantity=spec.qty_to_decimal(e.qty_lots),
            fee=atoms_to_decimal(e.maker_fee_atoms if maker else e.taker_fee_atoms),
            realized_pnl=atoms_to_decimal(
                e.maker_realized_pnl_atoms if maker else e.taker_realized_pnl_atoms
            ),
            maker=maker,
            liquidation=e.liquidation and not maker,
            time_ns=self.ex.time_ns,
        )

    def _liquidation(
        self, e: LiquidationTriggered, closing: list[TradeExecuted], size_lots: int
    ) -> Liquidation:
        spec = self._spec
        assert spec is not None
        lots = sum(t.qty_lots for t in closing)
        if closing:  # the liquidation order sells a long, buys a short
            side = "LONG" if closing[0].taker_side < 0 else "SHORT"
        else:
            lots = abs(size_lots)
            side = "LONG" if size_lots > 0 else "SHORT" if size_lots < 0 else ""
        return Liquidation(
            symbol=e.symbol,
            side=side,
            quantity=spec.qty_to_decimal(lots),
            margin_balance=atoms_to_decimal(e.margin_balance_atoms),
            maintenance_margin=atoms_to_decimal(e.maint_margin_atoms),
            time_ns=self.ex.time_ns,
        )


def _hook(strategy: object, name: str) -> Any:
    method = getattr(strategy, name, None)
    return method if callable(method) else _no_op


def _no_op(*args: object) -> None:
    return None


def load_strategy(spec: str) -> type[Strategy]:
    """The class named by ``module:Class`` or ``path/to/file.py:Class`` (the CLI's
    ``--strategy``). It must be a class with an ``on_bar`` method (subclassing `Strategy` is
    the easy way; a hook a class lacks is a no-op). Raises ValueError naming what is wrong."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"strategy {spec!r}: expected 'module:Class' or 'path/to/file.py:Class'")
    where, _, class_name = spec.rpartition(":")
    if not where or not class_name.isidentifier():
        raise ValueError(f"strategy {spec!r}: expected 'module:Class' or 'path/to/file.py:Class'")
    module = _load_module(where, spec)
    if not hasattr(module, class_name):
        raise ValueError(f"strategy {spec!r}: {where} has no attribute {class_name!r}")
    cls: Any = getattr(module, class_name)
    if not inspect.isclass(cls):
        raise ValueError(f"strategy {spec!r}: {class_name} is a {type(cls).__name__}, not a class")
    if not callable(getattr(cls, "on_bar", None)):
        raise ValueError(
            f"strategy {spec!r}: {class_name} has no on_bar method "
            "(subclass perpex.sim.agents.strategy.Strategy and override the hooks you need)"
        )
    for hook in HOOKS:
        if hasattr(cls, hook) and not callable(getattr(cls, hook)):
            raise ValueError(f"strategy {spec!r}: {class_name}.{hook} is not a method")
    # Duck typing: a class with the hooks passes for a Strategy (`StrategyAgent` needs no more).
    return cast(type[Strategy], cls)


def _load_module(where: str, spec: str) -> Any:
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where)
        if not path.is_file():
            raise ValueError(f"strategy {spec!r}: no file {where}")
        name = f"{USER_MODULE_PREFIX}{path.stem}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise ValueError(f"strategy {spec!r}: cannot import {where} as Python")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # dataclasses and pickling look the module up by name
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise ValueError(
                f"strategy {spec!r}: importing {where} failed: {type(exc).__name__}: {exc}"
            ) from exc
        return module
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as exc:
        raise ValueError(f"strategy {spec!r}: no module named {exc.name!r}") from exc
    except Exception as exc:
        raise ValueError(
            f"strategy {spec!r}: importing {where} failed: {type(exc).__name__}: {exc}"
        ) from exc


__all__ = [
    "HOOKS",
    "STRATEGY_ACCOUNT",
    "Bar",
    "Fill",
    "Liquidation",
    "Strategy",
    "StrategyAgent",
    "StrategyContext",
    "StrategyError",
    "load_strategy",
    "make_strategy",
    "strategy_label",
    "utc_of",
]
