"""Building a run from a scenario: its market, price path, exchange and agents.

`build_market` scales the default market's brackets and sets the scenario's fees; `build_path`
makes the price path (generated or replayed from candles) and applies the shocks in order;
`build_exchange` lists the market (and the leveraged tokens of ``[tokens]``) on a fresh
`Exchange`; `build_agents` makes the agents in the scenario's order. With ``[tokens]
frictionless`` the market charges no fee and the exchange no funding.

The index fed to the exchange (`fed_index`) is the path's `index_ticks` where a shock set them,
else the real mark series where the scenario has one (Binance's mark stays within a basis of
its index, so the exchange's mark formula gives the real mark back), else the path's price.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Final

import numpy as np

from perpex.core.funding import format_utc
from perpex.core.funding_config import FundingConfig
from perpex.core.liquidation_config import LiquidationConfig
from perpex.core.markets import Bracket, Market, MarketSpec
from perpex.core.units import PPM
from perpex.defaults import brackets_of, default_markets
from perpex.exchange import Exchange, Token
from perpex.history import load_funding_schedule
from perpex.parse import start_time_ns
from perpex.sim import shocks as shock_kinds
from perpex.sim.agents.base import Agent, Dist
from perpex.sim.agents.desk import OpeningDesk
from perpex.sim.agents.makers import MarketMakers
from perpex.sim.agents.strategy import Strategy, StrategyAgent, load_strategy, make_strategy
from perpex.sim.agents.takers import MomentumTakers, NoiseTakers
from perpex.sim.agents.traders import LeveragedTraders
from perpex.sim.agents.whale import Whale
from perpex.sim.candles import Candles
from perpex.sim.data import DataError, load_candles
from perpex.sim.paths import PricePath, gbm, intrabar_path, merton, pattern, regime_switch
from perpex.sim.scenario_model import Scenario
from perpex.sim.scenario_schema import ScenarioError

NS_PER_SECOND: Final = 1_000_000_000
MAX_SCALED_MMR: Final = Decimal("0.5")
WINDOW_BOUND_NS: Final = 2**62  # an open end of a scenario's [data] window
# Frictionless funding: no interest and every rate clamped to 0, so no settlement moves money.
ZERO_FUNDING: Final = FundingConfig(interest_rate_e8=0, cap_e8=0, floor_e8=0)


def _scaled_brackets(brackets: Sequence[Bracket], multiplier: float) -> list[Bracket]:
    """Every MMR x `multiplier` (rounded to 1e-6, at most 50 %), the cums recomputed so that MM
    stays continuous across the bracket floors (Binance's cum rule: cum_i = cum_{i-1} + floor_i
    x (mmr_i - mmr_{i-1})), and each bracket's max leverage lowered where its initial margin
    (1 / leverage) would no longer exceed the new MMR: a risk team's "MMR x 2" also takes the
    top leverage away, as an exchange raising its MMR would."""
    if multiplier == 1.0:
        return list(brackets)
    out: list[Bracket] = []
    cum = Decimal(0)
    prev_mmr = Decimal(0)
    for b in brackets:
        mmr = (Decimal(str(b.mmr)) * Decimal(repr(multiplier))).quantize(Decimal("0.000001"))
        mmr = min(mmr, MAX_SCALED_MMR)
        cum += Decimal(str(b.floor)) * (mmr - prev_mmr)
        prev_mmr = mmr
        leverage = b.max_leverage
        while leverage > 1 and Decimal(1) / leverage <= mmr:
            leverage -= 1
        out.append(dataclasses.replace(b, mmr=str(mmr), cum=str(cum), max_leverage=leverage))
    return out


def build_market(scenario: Scenario) -> Market:
    """The scenario's market: the default one of its symbol with its exchange parameters (no
    fees with ``[tokens] frictionless``)."""
    ex = scenario.exchange
    free = _frictionless(scenario)  # no trading fee either side
    for m in default_markets():
        if m.symbol == scenario.symbol:
            return dataclasses.replace(
                m,
                maker_fee="0" if free else repr(ex.maker_fee),
                taker_fee="0" if free else repr(ex.taker_fee),
                price_band=repr(ex.price_band),
                brackets=_scaled_brackets(
                    brackets_of(ex.brackets.removeprefix("binance-"))[m.symbol], ex.mmr_multiplier
                ),
            )
    raise ValueError(f"symbol {scenario.symbol!r}: the simulator knows BTCUSDT and ETHUSDT")


def _at_ns(text: str, start_ns: int) -> int:
    """A time of the scenario: ISO-8601 UTC text, or seconds from the start of the path."""
    try:
        seconds = float(text)
    except ValueError:
        return start_time_ns(text)
    return start_ns + round(seconds * NS_PER_SECOND)


def build_path(scenario: Scenario, seed: int, data: str | None = None) -> PricePath:
    """The scenario's price path in ticks of its market, its shocks applied in order."""
    from perpex.core.markets import compile_market

    spec = compile_market(build_market(scenario))
    if scenario.data is not None:
        d = scenario.data
        start_ns = start_time_ns(d.start) if d.start else -WINDOW_BOUND_NS
        end_ns = start_time_ns(d.end) if d.end else WINDOW_BOUND_NS
        source = data or d.candles
        candles = _window(load_candles(source, spec), source, start_ns, end_ns)
        mark = None
        if d.mark:
            mark = _window(load_candles(d.mark, spec, off_tick="round"), d.mark, start_ns, end_ns)
            _check_mark_matches(candles, mark, source, d.mark)
        path = intrabar_path(
            candles,
            steps_per_candle=d.steps_per_candle,
            order=d.intrabar,
            mark=mark,
            shape=d.shape,
            wick_steps=d.wick_steps,
        )
    else:
        p = scenario.path
        assert p is not None
        step_ns = round(p.step_seconds * NS_PER_SECOND)
        start_ns = start_time_ns(p.start)
        start_ticks = max(1, round(Decimal(repr(p.start_price)) / spec.tick_size))
        common: dict[str, Any] = {"seed": seed, "start_ns": start_ns}
        if p.kind == "gbm":
            path = gbm(start_ticks, p.steps, step_ns, p.sigma, p.drift, **common)
        elif p.kind == "pattern":
            path = pattern(start_ticks, p.steps, step_ns, p.returns, start_ns=start_ns)
        elif p.kind == "merton":
            path = merton(
                start_ticks, p.steps, step_ns, p.sigma, p.jump_intensity, p.jump_mean,
                p.jump_sigma, p.drift, **common,
            )  # fmt: skip
        else:
            path = regime_switch(
                start_ticks, p.steps, step_ns, p.sigma, p.storm_sigma, p.p_calm_to_storm,
                p.p_storm_to_calm, p.drift, **common,
            )  # fmt: skip
    start_ns = path.start_ns
    for i, shock in enumerate(scenario.shocks):
        at = _at_ns(shock.at, start_ns)
        minutes = shock.kind in ("drop", "pump")  # their length is in minutes, the rest seconds
        long_ns = round(shock.minutes * 60e9 if minutes else shock.seconds * 1e9)
        _check_shock_inside(f"{scenario.name}: shocks[{i}]", at, long_ns, path)
        try:
            if shock.kind == "drop":
                path = shock_kinds.drop(path, at, shock.percent, long_ns)
            elif shock.kind == "pump":
                path = shock_kinds.pump(path, at, shock.percent, long_ns)
            elif shock.kind == "liquidity_gap":
                path = shock_kinds.liquidity_gap(path, at, long_ns)
            else:
                path = shock_kinds.divergence(path, at, long_ns, shock.percent)
        except ValueError as exc:  # e.g. a window shorter than one step of the path
            raise ScenarioError(f"{scenario.name}: shocks[{i}]: {exc}") from None
    return path


def _check_shock_inside(key: str, at_ns: int, long_ns: int, path: PricePath) -> None:
    """A shock starts inside the path and ends by its end: else a ScenarioError naming the
    shock and the times in UTC (a shortened ``path.steps`` or ``data.end`` can cut it off)."""
    span = f"the path runs from {format_utc(path.start_ns)} to {format_utc(path.end_ns)}"
    if not path.start_ns <= at_ns < path.end_ns:
        raise ScenarioError(f"{key}.at: {format_utc(at_ns)} is outside the path: {span}")
    if at_ns + long_ns > path.end_ns:
        raise ScenarioError(
            f"{key}: it ends at {format_utc(at_ns + long_ns)}, after the path: {span} "
            "(shorten the shock or lengthen path.steps / data.end)"
        )


def _window(candles: Candles, source: str, start_ns: int, end_ns: int) -> Candles:
    """The candles opening in [start_ns, end_ns); DataError if none do (a window outside the
    data), saying what the data covers."""
    window = candles.between(start_ns, end_ns)
    if len(window) == 0:
        covers = "no candles"
        if len(candles):
            covers = (
                f"candles from {format_utc(int(candles.time_ns[0]))} to "
                f"{format_utc(int(candles.time_ns[-1]))}"
            )
        start = format_utc(start_ns) if start_ns > -WINDOW_BOUND_NS else "the start"
        end = format_utc(end_ns) if end_ns < WINDOW_BOUND_NS else "the end"
        raise DataError(
            f"{source}: no candle opens in the scenario's window [{start}, {end}) "
            f"(data.start, data.end); it has {covers}"
        )
    return window


def _check_mark_matches(candles: Candles, mark: Candles, source: str, mark_name: str) -> None:
    """The mark series must have a candle at the time of every price candle in the window (a
    user's ``--data`` at another interval, or a window the mark series does not cover, does
    not): else a DataError that says how to let the exchange compute the mark instead."""
    same = mark.interval_ns == candles.interval_ns and bool(
        np.array_equal(mark.time_ns, candles.time_ns)
    )
    if same:
        return
    where = f"{len(candles)} candles of {candles.interval_ns // NS_PER_SECOND} s"
    theirs = f"{len(mark)} of {mark.interval_ns // NS_PER_SECOND} s"
    raise DataError(
        f"{source}: the scenario's mark series {mark_name} does not line up with these candles "
        f"in the window ({where}, the mark {theirs}); add --set data.mark='' to let the "
        "exchange compute the mark from the index"
    )


def fed_index(path: PricePath) -> np.ndarray[Any, np.dtype[np.int64]]:
    """The index published at each step (see the module docstring)."""
    if path.index_ticks is not None:
        return path.index_ticks
    if path.mark_ticks is not None:
        return path.mark_ticks
    return path.price_ticks


def _frictionless(scenario: Scenario) -> bool:
    return scenario.tokens is not None and scenario.tokens.frictionless


def _decimal_text(x: float) -> str:
    """A float of a scenario as the decimal it was written as ("3.0", "-0.5", "0.001")."""
    return format(Decimal(repr(x)), "f")


def token_listing(scenario: Scenario) -> list[Token]:
    """The scenario's leveraged tokens in the facade's words (no fees when frictionless)."""
    if scenario.tokens is None:
        return []
    free = scenario.tokens.frictionless
    return [
        Token(
            c.name,
            scenario.symbol,
            _decimal_text(c.leverage),
            creation_fee="0" if free else _decimal_text(c.creation_fee),
            redemption_fee="0" if free else _decimal_text(c.redemption_fee),
            slices=c.slices,
        )
        for c in scenario.tokens.list
    ]


def build_exchange(scenario: Scenario, start_ns: int) -> Exchange:
    x = scenario.exchange
    funding = scenario.data.funding if scenario.data is not None else None
    if funding is None and scenario.path is not None:
        funding = scenario.path.funding
    history = {scenario.symbol: load_funding_schedule()} if funding == "binance" else None
    tokens = token_listing(scenario) or None
    free = _frictionless(scenario)
    if free:
        history = None  # frictionless: no funding at all, not even Binance's replayed rates
    ex = Exchange(
        markets=[build_market(scenario)],
        mark_price=x.mark_price,
        start_time=start_ns // NS_PER_SECOND,
        insurance_fund=repr(x.insurance_fund),
        liquidation=LiquidationConfig(
            max_liquidations_per_tick=x.max_liquidations_per_tick,
            clearance_fee_ppm=round(x.clearance_fee * PPM),
            partial_from_bracket=2 if x.partial_liquidation else 0,
            adl=x.adl,
        ),
        funding_history=history,
        funding=ZERO_FUNDING if free else None,
        tokens=tokens,
    )
    start_clock_ns = start_ns // NS_PER_SECOND * NS_PER_SECOND
    if tokens and ex.engine.state.clock_ns != start_clock_ns:
        # A refused first clock step would leave the whole run at the wrong time: say so.
        raise ValueError(
            f"with [tokens], the exchange's clock could not move to the path's start "
            f"({start_clock_ns} ns); it stands at {ex.engine.state.clock_ns} ns"
        )
    return ex


def strategy_instance(
    scenario: Scenario, strategy: Strategy | type[Strategy] | str | None
) -> Strategy | None:
    if strategy is None and scenario.strategy.cls:
        strategy = scenario.strategy.cls
    if strategy is None:
        return None
    if isinstance(strategy, str):
        strategy = load_strategy(strategy)
    if isinstance(strategy, type):
        return make_strategy(strategy)
    return strategy


def _check_leverage_reachable(origin: str, leverage: Dist, spec: MarketSpec) -> None:
    """The traders cap a drawn leverage at what the brackets allow; a distribution whose every
    draw is above the market's top leverage is a mistake (``--set agents.traders.leverage=500``
    would run as 125x without a word), refused naming the key."""
    lowest = leverage.bounds()[0]
    if lowest > spec.max_leverage:
        raise ScenarioError(
            f"{origin}: agents.traders.leverage: every draw ({lowest:g}x or more) is above the "
            f"market's top leverage {spec.max_leverage}x (exchange.brackets, "
            "exchange.mmr_multiplier)"
        )


def build_agents(
    scenario: Scenario,
    ex: Exchange,
    path: PricePath,
    strategy: Strategy | None,
) -> tuple[MarketMakers | None, list[Agent], StrategyAgent | None, LeveragedTraders | None]:
    a = scenario.agents
    symbol = scenario.symbol
    makers = MarketMakers(a.makers, symbol) if a.makers is not None else None
    others: list[Agent] = []
    traders = None
    if a.traders is not None:
        spec = ex.engine.state.markets[symbol].spec
        _check_leverage_reachable(scenario.name, a.traders.leverage, spec)
        traders = LeveragedTraders(a.traders, symbol, len(path))
        if a.traders.opening_desk:
            others.append(OpeningDesk(symbol, traders))  # before the traders: it rests first
        others.append(traders)
    if a.noise is not None:
        others.append(NoiseTakers(a.noise, symbol))
    if a.momentum is not None:
        others.append(MomentumTakers(a.momentum, symbol))
    if a.whale is not None:
        others.append(Whale(a.whale, symbol, path.start_ns))
    strat = None
    if strategy is not None:
        bar_steps = scenario.strategy.bar_steps
        if bar_steps == 0:
            bar_steps = scenario.data.steps_per_candle if scenario.data is not None else 1
        strat = StrategyAgent(strategy, scenario.strategy, symbol, bar_steps, ex)
        others.append(strat)
    return makers, others, strat, traders


__all__ = [
    "MAX_SCALED_MMR",
    "NS_PER_SECOND",
    "ZERO_FUNDING",
    "build_agents",
    "build_exchange",
    "build_market",
    "build_path",
    "fed_index",
    "strategy_instance",
    "token_listing",
]
