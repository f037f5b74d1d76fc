"""The user's strategy API (perpex.sim.agents.strategy) and the example `EmaCross`
(perpex.sim.strategies), driven by hand through a real `Exchange(mark_price="index")`, a
`MarketWorld`, a deep ladder maker and a small taker, step by step as the runner does it
(the harness is tests/sim_driver.py).

What a user relies on: the hooks are called (on_start once, on_bar per bar, on_fill per fill,
on_liquidation when a position is liquidated), the context mirrors the facade for one account
with Decimals in and out and refusals as `ExchangeError`, `load_strategy` says what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import ROUND_UP, Decimal
from pathlib import Path

import numpy as np
import pytest

from perpex.core.messages import (
    Command,
    ConditionalKind,
    ConditionalOrderTriggered,
    Deposit,
    Event,
    LiquidationTriggered,
    OrderAccepted,
    OrderType,
    PlaceOrder,
    TimeInForce,
    TradeExecuted,
)
from perpex.errors import ExchangeError
from perpex.exchange import Exchange
from perpex.sim.agents.base import World
from perpex.sim.agents.config import StrategyConfig
from perpex.sim.agents.strategy import (
    STRATEGY_ACCOUNT,
    Bar,
    Fill,
    Liquidation,
    Strategy,
    StrategyAgent,
    StrategyContext,
    load_strategy,
)
from perpex.sim.strategies import EmaCross
from sim_driver import BTC, PRICE_TICKS, STEP_NS, T0, Market


# -- the harness ---------------------------------------------------------------------------------
class Taker:
    """Trades one lot at market every step, buying on even steps and selling on odd ones:
    the last price moves between the bid and the ask, and a bid inside the spread fills."""

    name = "taker"

    def start(self, world: World, rng: np.random.Generator) -> list[Command]:
        return [Deposit("taker", 10**12)]

    def step(self, world: World) -> list[Command]:
        side = 1 if world.step % 2 == 0 else -1
        return [PlaceOrder("taker", BTC, side, OrderType.MARKET, TimeInForce.IOC, 1, 0)]

    def observe(self, events: Sequence[Event]) -> None:
        pass


def with_strategy(
    strategy: Strategy, bar_steps: int = 1, deposit: float = 10_000.0, taker: bool = False
) -> tuple[Market, StrategyAgent]:
    ex = Exchange(mark_price="index")
    agent = StrategyAgent(strategy, StrategyConfig(deposit=deposit), BTC, bar_steps, ex)
    return Market([Taker(), agent] if taker else [agent], ex=ex), agent


# -- hooks ---------------------------------------------------------------------------------------
class Recorder(Strategy):
    """Records every hook; buys 0.01 BTC at market at the first bar and bids one lot inside
    the spread at the second."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.bars: list[Bar] = []
        self.fills: list[Fill] = []
        self.bid_order_id = 0

    def on_start(self, ctx: StrategyContext) -> None:
        self.calls.append("start")
        ctx.set_leverage(10)

    def on_bar(self, ctx: StrategyContext, bar: Bar) -> None:
        self.calls.append("bar")
        self.bars.append(bar)
        if len(self.bars) == 1:
            ctx.place_order("BUY", "MARKET", Decimal("0.01"))
        elif len(self.bars) == 2:
            best_bid = ctx.world.best_bid()
            assert best_bid is not None
            price = ctx.spec.price_to_decimal(best_bid + 1)
            self.bid_order_id = ctx.place_order("BUY", "LIMIT", Decimal("0.001"), price).order_id

    def on_fill(self, ctx: StrategyContext, fill: Fill) -> None:
        self.calls.append("fill")
        self.fills.append(fill)


def wavy(n: int) -> list[int]:
    return [PRICE_TICKS + 60 * ((i * 7) % 11 - 5) for i in range(n)]


@pytest.fixture(scope="module")
def recorded() -> tuple[Market, StrategyAgent, Recorder]:
    strategy = Recorder()
    market, agent = with_strategy(strategy, bar_steps=5, taker=True)
    market.run(wavy(50))
    return market, agent, strategy


def test_hooks_are_called_in_order(recorded: tuple[Market, StrategyAgent, Recorder]) -> None:
    market, agent, strategy = recorded
    assert strategy.calls[0] == "start" and strategy.calls.count("start") == 1
    assert strategy.calls.count("bar") == len(strategy.bars) == agent.bars == 10
    assert strategy.calls.count("fill") == len(strategy.fills) == agent.fills == 2
    assert strategy.calls.index("fill") > strategy.calls.index("bar")
    assert market.ex.position(STRATEGY_ACCOUNT, BTC).leverage == 10


def test_bars_aggregate_bar_steps_steps(recorded: tuple[Market, StrategyAgent, Recorder]) -> None:
    market, _, strategy = recorded
    targets = wavy(50)
    tick = Decimal("0.1")
    for j, bar in enumerate(strategy.bars):
        last_step = 5 * j + 4
        assert bar.time_ns == T0 + last_step * STEP_NS
        assert bar.time == datetime.fromtimestamp(bar.time_ns // 10**9, tz=UTC)
        assert bar.mark == bar.index == targets[last_step] * tick  # mark = index = target
        for price in (bar.open, bar.high, bar.low, bar.close):
            assert isinstance(price, Decimal)
        assert bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
        # The taker trades at the bid and the ask: every trade of the bar's steps is inside
        # its range (trades seen after a bar's last sample join the next bar).
        trades = [
            e.price_ticks * tick
            for events in market.step_events[5 * j : last_step]
            for e in events
            if isinstance(e, TradeExecuted)
        ]
        assert trades and bar.low <= min(trades) and max(trades) <= bar.high
        assert bar.high > bar.low


def fee_of(fill: Fill, rate: Decimal) -> Decimal:
    """The fee on a fill, rounded up to the atom (for the exchange)."""
    return (fill.price * fill.quantity * rate).quantize(Decimal("0.000001"), ROUND_UP)


def test_fills_as_taker_and_maker(recorded: tuple[Market, StrategyAgent, Recorder]) -> None:
    _, _, strategy = recorded
    taker, maker = strategy.fills
    assert (taker.side, taker.quantity, taker.maker, taker.liquidation) == (
        "BUY", Decimal("0.010"), False, False,
    )  # fmt: skip
    # At the best ask: the target of step 4 plus one 2 bps level, on the tick.
    assert taker.price == Decimal("60000.0") + 60 * ((4 * 7) % 11 - 5) * Decimal("0.1") + 12
    assert taker.fee == fee_of(taker, Decimal("0.0005"))
    assert taker.realized_pnl == 0
    assert maker.order_id == strategy.bid_order_id
    assert (maker.side, maker.quantity, maker.maker) == ("BUY", Decimal("0.001"), True)
    assert maker.fee == fee_of(maker, Decimal("0.0002"))
    assert maker.time_ns > taker.time_ns >= T0


def test_equity_is_tracked_every_step(recorded: tuple[Market, StrategyAgent, Recorder]) -> None:
    market, agent, _ = recorded
    assert len(agent.equity_atoms) == 50
    assert agent.equity_atoms[0] == agent.deposit_atoms == 10_000_000_000
    equity = market.world.position(STRATEGY_ACCOUNT).equity_atoms
    assert agent.equity_atoms[-1] == equity and agent.pnl_atoms == equity - 10_000_000_000
    peak = np.maximum.accumulate(agent.equity_atoms)
    assert agent.max_drawdown_atoms == int((peak - agent.equity_atoms).max()) > 0  # fees
    assert agent.peak_equity_atoms == max(agent.equity_atoms)


# -- the context -----------------------------------------------------------------------------------
@pytest.fixture
def ctx() -> StrategyContext:
    market = Market([])
    market.ex.deposit(STRATEGY_ACCOUNT, "10000")
    market.step(PRICE_TICKS)
    return StrategyContext(market.ex, STRATEGY_ACCOUNT, BTC, market.world)


def test_context_calls_take_and_give_decimals(ctx: StrategyContext) -> None:
    assert ctx.set_leverage(25) == 25
    assert ctx.set_margin_type("ISOLATED") == "ISOLATED"
    position = ctx.position()
    assert (position.leverage, position.margin_mode) == (25, "ISOLATED")
    assert position.size == Decimal(0)
    assert ctx.mark_price() == Decimal("60000.0")
    assert ctx.time_ns == T0
    assert ctx.account().wallet_balance == Decimal("10000")
    bid = ctx.place_order("BUY", "LIMIT", Decimal("0.010"), Decimal("59000"))
    assert (bid.status, bid.price, bid.orig_qty) == ("NEW", Decimal("59000"), Decimal("0.010"))
    assert [o.order_id for o in ctx.open_orders()] == [bid.order_id]
    assert ctx.cancel_order(bid.order_id).status == "CANCELED"
    assert ctx.open_orders() == []
    bought = ctx.place_order("BUY", "MARKET", "0.02", stop_loss=Decimal("58000"))
    assert bought.status == "FILLED" and bought.executed_qty == Decimal("0.020")
    assert ctx.position().size == Decimal("0.020")
    [stop] = ctx.open_orders()
    assert (stop.type, stop.stop_price, stop.side) == ("STOP_MARKET", Decimal("58000"), "SELL")
    ladder = ctx.place_exit_ladder(
        [(Decimal("61000"), Decimal("0.5")), (Decimal("62000"), Decimal("0.5"))],
        stop_loss=Decimal("58500"),
    )
    assert [o.type for o in ladder] == ["TAKE_PROFIT_MARKET"] * 2 + ["STOP_MARKET"]
    assert ctx.position(symbol="ETHUSDT").size == 0  # another symbol, by keyword
    assert ctx.floor_qty(Decimal("0.0129")) == Decimal("0.012")
    assert ctx.round_price(Decimal("60000.06")) == Decimal("60000.1")


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (lambda c: c.set_leverage(126), -4028),  # above the market's 125x
        (lambda c: c.place_order("BUY", "MARKET", Decimal("100")), -2019),  # margin
        (lambda c: c.place_order("BUY", "LIMIT", "0.01", "60000.05"), -4014),  # off the tick
        (lambda c: c.place_order("BUY", "MARKET", "0.01", stop_loss="61000"), -2021),  # fires
        (lambda c: c.cancel_order(123456), -2011),  # unknown order
        (lambda c: c.set_margin_type("SOMETIMES"), -4044),
    ],
    ids=["leverage", "margin", "tick", "stop-at-once", "cancel", "margin-type"],
)
def test_refused_calls_raise_exchange_error(
    ctx: StrategyContext, call: Callable[[StrategyContext], object], code: int
) -> None:
    before = ctx.ex.state_hash()
    with pytest.raises(ExchangeError) as refused:
        call(ctx)
    assert refused.value.code == code
    assert ctx.ex.state_hash() == before  # a refused call changed nothing


# -- a liquidation ---------------------------------------------------------------------------------
class Rider(Strategy):
    """Goes long at 100x at the first bar and rides whatever comes."""

    def __init__(self) -> None:
        self.quantity = Decimal(0)
        self.fills: list[Fill] = []
        self.liquidations: list[Liquidation] = []

    def on_start(self, ctx: StrategyContext) -> None:
        ctx.set_leverage(100)

    def on_bar(self, ctx: StrategyContext, bar: Bar) -> None:
        if not self.quantity:
            self.quantity = ctx.floor_qty(
                ctx.account().wallet_balance * 100 * Decimal("0.95") / bar.close
            )
            ctx.place_order("BUY", "MARKET", self.quantity)

    def on_fill(self, ctx: StrategyContext, fill: Fill) -> None:
        self.fills.append(fill)

    def on_liquidation(self, ctx: StrategyContext, event: Liquidation) -> None:
        self.liquidations.append(event)


def test_a_100x_long_is_liquidated_in_a_crash() -> None:
    strategy = Rider()
    market, agent = with_strategy(strategy, deposit=1_000.0)
    crash = [PRICE_TICKS] * 3 + [round(PRICE_TICKS * (1 - 0.003 * i)) for i in range(1, 11)]
    market.run(crash)
    assert strategy.quantity == Decimal("1.583")  # 1,000 x 100 x 0.95 / 60,000
    [event] = strategy.liquidations
    assert (event.symbol, event.side, event.quantity) == (BTC, "LONG", strategy.quantity)
    assert event.margin_balance <= event.maintenance_margin
    [trigger] = [e for e in market.events if isinstance(e, LiquidationTriggered)]
    assert event.maintenance_margin == Decimal(trigger.maint_margin_atoms).scaleb(-6)
    closing = [f for f in strategy.fills if f.liquidation]
    assert closing and all(f.side == "SELL" and not f.maker for f in closing)
    assert sum(f.quantity for f in closing) == strategy.quantity
    assert agent.liquidations == 1
    assert market.world.position(STRATEGY_ACCOUNT).size_lots == 0
    assert agent.max_drawdown > 0.5 and agent.pnl_atoms < -500_000_000


# -- load_strategy ---------------------------------------------------------------------------
def test_load_strategy_finds_a_module_class_and_a_file_class(tmp_path: Path) -> None:
    assert load_strategy("perpex.sim.strategies:EmaCross") is EmaCross
    source = tmp_path / "my_strategy.py"
    source.write_text(
        "from perpex.sim.agents.strategy import Strategy\n"
        "class Mine(Strategy):\n"
        "    def on_bar(self, ctx, bar):\n"
        "        pass\n"
        "class Duck:\n"
        "    def on_bar(self, ctx, bar):\n"
        "        pass\n"
    )
    mine = load_strategy(f"{source}:Mine")
    assert mine.__name__ == "Mine" and issubclass(mine, Strategy)
    assert load_strategy(f"{source}:Duck").__name__ == "Duck"  # duck typing: has on_bar


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("EmaCross", "expected 'module:Class' or 'path/to/file.py:Class'"),
        ("perpex.sim.strategies:", "expected 'module:Class'"),
        ("perpex.nothing_here:Thing", "no module named 'perpex.nothing_here'"),
        ("perpex.sim.strategies:Nope", "perpex.sim.strategies has no attribute 'Nope'"),
        ("perpex.sim.strategies:SIZE_ROOM", "SIZE_ROOM is a Decimal, not a class"),
        ("builtins:int", "int has no on_bar method"),
        ("missing/strategy.py:Mine", "no file missing/strategy.py"),
    ],
)
def test_load_strategy_says_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"strategy .*") as err:
        load_strategy(spec)
    assert message in str(err.value)


def test_load_strategy_reports_a_broken_file(tmp_path: Path) -> None:
    source = tmp_path / "broken.py"
    source.write_text("class Mine(:\n")
    with pytest.raises(ValueError, match=r"importing .*broken\.py failed: SyntaxError"):
        load_strategy(f"{source}:Mine")


def test_a_duck_typed_strategy_runs_with_only_on_bar() -> None:
    class Duck:
        def __init__(self) -> None:
            self.bars = 0

        def on_bar(self, ctx: StrategyContext, bar: Bar) -> None:
            self.bars += 1

    duck = Duck()
    market, agent = with_strategy(duck, bar_steps=2, taker=True)  # type: ignore[arg-type]
    market.run([PRICE_TICKS] * 6)
    assert duck.bars == agent.bars == 3


# -- EmaCross ------------------------------------------------------------------------------
def ema_path() -> list[int]:
    """Up 0.05 % a step for 20 steps (long), down 5 % in two (through the 3 % stop; the fast
    EMA falls under the slow one: short), down 0.1 % a step for 30 steps, then up 0.3 % a
    step for 40 (the EMAs cross back: a flip to long)."""
    up = [round(PRICE_TICKS * (1 + 0.0005 * i)) for i in range(20)]
    gap = [round(up[-1] * 0.975), round(up[-1] * 0.95)]
    down = [round(gap[-1] * (1 - 0.001 * i)) for i in range(1, 31)]
    again = [round(down[-1] * (1 + 0.003 * i)) for i in range(1, 41)]
    return up + gap + down + again


def closing_ids(market: Market) -> set[int]:
    """Ids of the strategy's reduce-only orders (its closes when it flips)."""
    return {
        e.order_id
        for e in market.events
        if isinstance(e, OrderAccepted) and e.account == STRATEGY_ACCOUNT and e.reduce_only
    }


def test_ema_cross_trades_and_its_stop_fires() -> None:
    strategy = EmaCross()
    market, agent = with_strategy(strategy)
    market.run(ema_path())
    mine = [
        e for e in market.events if isinstance(e, TradeExecuted) and e.taker_account == "strategy"
    ]
    assert mine[0].taker_side == 1  # long in the rise
    # 10,000 USDT x 10 / 60,000 is 1.666 BTC, capped by what the account can carry at the
    # price of the entry (98 % of equity x 10 / price: the fee and the open loss need room).
    assert 1_600 <= mine[0].qty_lots <= 1_666
    assert mine[0].qty_lots * mine[0].price_ticks * 100 <= 10_000 * 10**6 * 10 * 0.98
    stops = [
        e
        for e in market.events
        if isinstance(e, ConditionalOrderTriggered)
        and e.account == STRATEGY_ACCOUNT
        and e.kind == ConditionalKind.STOP_MARKET
    ]
    assert len(stops) == 1  # the 3 % stop fired in the 5 % fall
    assert strategy.stops_or_liquidations == 1 and agent.liquidations == 0
    # Long, stopped out, short (re-entered at the next bar), flipped back to long.
    opening = [e.taker_side for e in mine if e.taker_order_id not in closing_ids(market)]
    assert opening == [1, -1, 1]
    assert strategy.entries == 3 and strategy.flips == 1 and strategy.refused == 0
    assert market.world.position(STRATEGY_ACCOUNT).size_lots > 0
    # Every fill is the strategy's as taker: its market orders and the one its stop placed.
    assert stops[0].placed_order_id in {e.taker_order_id for e in mine}
    assert agent.fills == strategy.fills == len(mine) == 5


# -- a strategy that raises: one line naming the strategy, hook, bar, time and line ------------
BROKEN = """\
from perpex.sim.agents.strategy import Strategy


class Needs(Strategy):
    def __init__(self, x):
        self.x = x


class Refuses(Strategy):
    def __init__(self):
        raise RuntimeError("no config file")


class OnBar(Strategy):
    def on_bar(self, ctx, bar):
        if bar.time_ns >= 1704067380000000000:  # the fourth minute
            raise ZeroDivisionError("my bug")


class OnStart(Strategy):
    def on_start(self, ctx):
        ctx.place_order("BUY", "MARKET", quantity="1000")  # far above the market's maximum
"""

RAISES = [
    ("Needs", "strategy broken:Needs: making one with no arguments failed: TypeError: "
     "Needs.__init__() missing 1 required positional argument: 'x' (give every __init__ "
     "argument a default)", TypeError),
    ("Refuses", "strategy broken:Refuses: making one with no arguments failed, at broken.py "
     "line 11: RuntimeError: no config file", RuntimeError),
    ("OnBar", "strategy broken:OnBar raised ZeroDivisionError in on_bar (bar 4, "
     "2024-01-01T00:03:00Z), at broken.py line 17: my bug", ZeroDivisionError),
    ("OnStart", "strategy broken:OnStart raised ExchangeError in on_start (before the first "
     "bar, 2024-01-01T00:00:00Z), at broken.py line 22: -4005: Quantity greater than max "
     "quantity.", ExchangeError),
]  # fmt: skip


@pytest.mark.parametrize(("name", "message", "cause"), RAISES, ids=[r[0] for r in RAISES])
def test_a_strategy_that_raises_stops_the_run_with_one_line(
    tmp_path: Path, name: str, message: str, cause: type[Exception]
) -> None:
    from perpex.sim.agents.strategy import StrategyError
    from perpex.sim.runner import run
    from perpex.sim.scenario import load_scenario

    source = tmp_path / "broken.py"
    source.write_text(BROKEN, encoding="utf-8")
    scenario = load_scenario("liquidation-distance").with_overrides(
        {"path.steps": 10, "shocks": None, "agents.traders.count": 5}
    )
    with pytest.raises(StrategyError) as info:
        run(scenario, strategy=f"{source}:{name}", progress=False, report=False)
    assert str(info.value) == message
    assert isinstance(info.value.__cause__, cause)  # the original, for a debugger
