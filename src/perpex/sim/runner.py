"""`run(scenario, seed)`: a scenario's path driven through the one engine by its agents.

Per step of the path, in this order (the same in every process, so the same scenario and
seed give the same events and the same state hash):

1. the clock moves to the step's time (funding settles when it passes a funding time, with
   Binance's real rate when the scenario replays them);
2. the makers replace their ladders around the path's target (one `MassQuote` each), or pull
   out during a liquidity gap;
3. the index is published (the mark follows by the exchange's own rule; liquidations,
   auto-deleveraging and triggered stops run in the engine);
4. the other agents act in the scenario's order: leveraged traders, noise and momentum takers,
   the whale, the user's strategy; each agent's commands go in through `Exchange.submit`, the
   strategy's calls through the facade (no side door);
5. every agent observes the step's events; the metrics count them and the writer streams them
   to Parquet; one row of samples is kept.

The index fed to the exchange is the path's `index_ticks` where a shock set them, else the
real mark series where the scenario has one (Binance's mark stays within a basis of its
index, so the exchange's mark formula gives the real mark back), else the path's price.

A scenario with ``[tokens]`` also lists leveraged tokens (MECHANICS.md §6): in the first step,
once the makers have quoted and the index is out, a holder creates each token with `hold` USDT
through `Exchange.submit` (the pools buy their exposure through the book) and a second account
opens the static yardstick position; each step samples every token's NAV
(``tokens.parquet``) and the summary gains a ``tokens`` object. With `frictionless` the
exchange charges no fee and no funding, and a deep book quotes the index one tick either side
before the makers (`_DeepBook`), so the pools rebalance at the mark: the runs reproduce
§6.3's arithmetic. A scenario without ``[tokens]`` runs, and sums up, exactly as before.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import numpy as np

from perpex.core.book import BUY, SELL
from perpex.core.funding_config import FundingConfig
from perpex.core.liquidation_config import LiquidationConfig
from perpex.core.markets import Bracket, Market, MarketSpec
from perpex.core.messages import (
    AdvanceClock,
    Command,
    CreateTokens,
    Deposit,
    Event,
    MassQuote,
    OrderType,
    PlaceOrder,
    RequestRejected,
    SetLeverage,
    TimeInForce,
    TokensCreated,
    UpdateIndex,
)
from perpex.core.tokens import POOL_PREFIX
from perpex.core.units import PPM
from perpex.defaults import brackets_of, default_markets
from perpex.exchange import Exchange, Token
from perpex.history import load_funding_schedule
from perpex.parse import start_time_ns
from perpex.sim import shocks as shock_kinds
from perpex.sim.agents.base import Agent
from perpex.sim.agents.desk import OpeningDesk
from perpex.sim.agents.makers import MarketMakers
from perpex.sim.agents.strategy import Strategy, StrategyAgent, load_strategy
from perpex.sim.agents.takers import MomentumTakers, NoiseTakers
from perpex.sim.agents.traders import LeveragedTraders
from perpex.sim.agents.whale import Whale
from perpex.sim.data import load_candles
from perpex.sim.events_out import (
    ENTRY_COLUMNS,
    SAMPLE_COLUMNS,
    STOP_COLUMNS,
    EventWriter,
    token_columns,
    write_meta,
    write_table,
)
from perpex.sim.metrics import RunMetrics, TokenMetrics, btc, ratio_pct, usdt
from perpex.sim.paths import PricePath, gbm, intrabar_path, merton, pattern, regime_switch
from perpex.sim.scenario_model import Scenario, TokensSection
from perpex.sim.world import MarketWorld

NS_PER_SECOND: Final = 1_000_000_000
ATOMS_PER_UNIT: Final = 1_000_000
DEPTH_BAND_PPM: Final = 10_000  # "book depth within 1 % of the mid"
DEPTH_LEVELS: Final = 1_000  # levels read per side for it (makers quote far fewer)
# Leveraged tokens (`[tokens]`): the accounts the runner adds, and the frictionless setting.
HOLDER_ACCOUNT: Final = "token-holder"  # creates every token at the start and holds it
STATIC_ACCOUNT: Final = "static-position"  # the yardstick: one position, never rebalanced
DEEP_BOOK_ACCOUNT: Final = "deep-book"  # frictionless: quotes the index one tick either side
STATIC_ACCOUNT_LEVERAGE: Final = 20  # its leverage setting: initial margin is never the limit
DEEP_BOOK_MULTIPLE: Final = 4  # the deep book's size per side x all the exposure at the start
# Frictionless funding: no interest and every rate clamped to 0, so no settlement moves money.
ZERO_FUNDING: Final = FundingConfig(interest_rate_e8=0, cap_e8=0, floor_e8=0)


@dataclass(frozen=True)
class SimResult:
    """What a run returns: the summary (deterministic), where its files are, its wall time."""

    summary: dict[str, Any]
    out_dir: Path | None
    events_path: Path | None
    report_path: Path | None
    wall_seconds: float


# -- building the run ----------------------------------------------------------------------------
MAX_SCALED_MMR: Final = Decimal("0.5")


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
        start = d.start or None
        end = d.end or None
        kwargs: dict[str, Any] = {}
        if start is not None:
            kwargs["start"] = start
        if end is not None:
            kwargs["end"] = end
        candles = load_candles(data or d.candles, spec, **kwargs)
        mark = load_candles(d.mark, spec, off_tick="round", **kwargs) if d.mark else None
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
    for shock in scenario.shocks:
        at = _at_ns(shock.at, start_ns)
        if shock.kind == "drop":
            path = shock_kinds.drop(path, at, shock.percent, round(shock.minutes * 60e9))
        elif shock.kind == "pump":
            path = shock_kinds.pump(path, at, shock.percent, round(shock.minutes * 60e9))
        elif shock.kind == "liquidity_gap":
            path = shock_kinds.liquidity_gap(path, at, round(shock.seconds * 1e9))
        else:
            path = shock_kinds.divergence(path, at, round(shock.seconds * 1e9), shock.percent)
    return path


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


def _strategy_instance(
    scenario: Scenario, strategy: Strategy | type[Strategy] | str | None
) -> Strategy | None:
    if strategy is None and scenario.strategy.cls:
        strategy = scenario.strategy.cls
    if strategy is None:
        return None
    if isinstance(strategy, str):
        strategy = load_strategy(strategy)
    if isinstance(strategy, type):
        return strategy()
    return strategy


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


# -- leveraged tokens -----------------------------------------------------------------------------
def _leverage_ppm(leverage: float) -> int:
    return int(Decimal(repr(leverage)).scaleb(6))  # exact: TokenConfig refuses finer


def _exposure_lots(spec: MarketSpec, leverage: float, hold_atoms: int, price_ticks: int) -> int:
    """Whole lots of |leverage| x `hold_atoms` of notional at `price_ticks` (rounded down)."""
    per_lot_ppm = PPM * price_ticks * spec.atoms_per_tick_lot
    return abs(_leverage_ppm(leverage)) * hold_atoms // per_lot_ppm


class _DeepBook:
    """Frictionless liquidity (``[tokens] frictionless``): one account that quotes the step's
    index one tick either side, for far more than any rebalance, before the makers requote.
    A pool's market order then fills within a tick of the mark (1.7e-6 of a 60,000 USDT
    price): §6.3's "trade at the mark" to well inside four decimals."""

    def __init__(self, spec: MarketSpec, tokens: TokensSection, start_ticks: int) -> None:
        self.spec = spec
        hold_atoms = round(tokens.hold * ATOMS_PER_UNIT)
        exposure = sum(_exposure_lots(spec, c.leverage, hold_atoms, start_ticks)
                       for c in tokens.list)  # fmt: skip
        exposure += _exposure_lots(spec, tokens.static_leverage, hold_atoms, start_ticks)
        self.size_lots = min(DEEP_BOOK_MULTIPLE * max(exposure, 1), spec.max_limit_qty_lots)
        # Room for both sides' initial margin at 1x, and for the inventory the pools leave.
        self.deposit_atoms = 4 * self.size_lots * start_ticks * spec.atoms_per_tick_lot

    def _quote(self, index_ticks: int) -> MassQuote:
        size = self.size_lots
        return MassQuote(
            DEEP_BOOK_ACCOUNT,
            self.spec.symbol,
            ((SELL, index_ticks + 1, size), (BUY, max(index_ticks - 1, 1), size)),
        )

    def start(self) -> list[Command]:
        return [
            Deposit(DEEP_BOOK_ACCOUNT, self.deposit_atoms),
            SetLeverage(DEEP_BOOK_ACCOUNT, self.spec.symbol, STATIC_ACCOUNT_LEVERAGE),
        ]

    def step(self, world: MarketWorld) -> list[Command]:
        """The ladder of this step, placed before its index: the mark it will trade at."""
        return [self._quote(world.index_ticks)]


class _TokenDesk:
    """The tokens' side of a run: the holder's creations and the static position in the first
    step (after the makers' first ladders and the first index), one NAV sample per step and
    token, the summary's ``tokens`` object."""

    def __init__(self, ex: Exchange, scenario: Scenario, n_steps: int) -> None:
        assert scenario.tokens is not None
        self.ex = ex
        self.section = scenario.tokens
        self.symbol = scenario.symbol
        self.spec = ex.engine.state.markets[scenario.symbol].spec
        self.names = [c.name for c in self.section.list]
        self.hold_atoms = round(self.section.hold * ATOMS_PER_UNIT)
        self.metrics = TokenMetrics({POOL_PREFIX + name: name for name in self.names})
        self.columns: dict[str, np.ndarray[Any, np.dtype[np.int64]]] = {
            name: np.zeros(n_steps, dtype=np.int64) for name, _ in token_columns(self.names)
        }

    def setup(self, world: MarketWorld) -> list[Command]:
        """The holder creates every token with `hold` USDT; the static account deposits `hold`
        and opens |static_leverage| x `hold` of notional at the mark with market orders."""
        tokens = self.section
        commands: list[Command] = [Deposit(HOLDER_ACCOUNT, self.hold_atoms * len(self.names))]
        commands += [CreateTokens(HOLDER_ACCOUNT, name, self.hold_atoms) for name in self.names]
        if tokens.static_leverage:
            commands += [
                Deposit(STATIC_ACCOUNT, self.hold_atoms),
                SetLeverage(STATIC_ACCOUNT, self.symbol, STATIC_ACCOUNT_LEVERAGE),
            ]
            side = BUY if tokens.static_leverage > 0 else SELL
            left = _exposure_lots(self.spec, tokens.static_leverage, self.hold_atoms,
                                  world.mark_ticks)  # fmt: skip
            while left > 0:  # a market order is at most the market's max market quantity
                lots = min(left, self.spec.max_market_qty_lots)
                left -= lots
                order = PlaceOrder(
                    STATIC_ACCOUNT, self.symbol, side, OrderType.MARKET, TimeInForce.IOC, lots, 0
                )
                commands.append(order)
        return commands

    def setting(self) -> dict[str, Any]:
        """The scenario's ``[tokens]`` for meta.json (the report reads it)."""
        t = self.section
        return {
            "hold": t.hold,
            "static_leverage": t.static_leverage,
            "frictionless": t.frictionless,
            "list": [{"name": c.name, "leverage": c.leverage} for c in t.list],
        }

    def check_setup(self, events: Sequence[Event]) -> None:
        """Every token was created: a run whose tokens were refused would sum up nothing."""
        created = [e.token for e in events if isinstance(e, TokensCreated)]
        for name in self.names:
            if name not in created:
                refusals = [
                    e.reason.name
                    for e in events
                    if isinstance(e, RequestRejected) and e.symbol == name
                ]
                raise ValueError(f"token {name} could not be created: {refusals or 'no event'}")

    def sample(self, i: int, world: MarketWorld) -> None:
        tokens = self.ex.engine.tokens
        cols = self.columns
        cols["static_equity_atoms"][i] = world.position(STATIC_ACCOUNT).equity_atoms
        for name in self.names:
            t = tokens.tokens[name]
            cols[f"{name}_nav_atoms"][i] = tokens.nav_atoms(t)
            cols[f"{name}_leverage_ppm"][i] = tokens.leverage_ppm(t)
            cols[f"{name}_position_lots"][i] = tokens.position_lots(t)

    def rows(self, samples: _Samples) -> list[tuple[Any, ...]]:
        cols = dict(self.columns)
        cols["step"] = samples.columns["step"]
        cols["time_ns"] = samples.columns["time_ns"]
        names = [name for name, _ in token_columns(self.names)]
        return list(zip(*(cols[name].tolist() for name in names), strict=True))

    def summary(self, samples: _Samples) -> dict[str, Any]:
        """Per token: NAV at creation and at the end (USDT, to the atom), their ratio, the
        rebalancing trades and what they cost the pool (USDT); then the underlying's return
        and the static position's equity return (fractions)."""
        tokens = self.ex.engine.tokens
        m = self.metrics
        out: dict[str, Any] = {}
        for c in self.section.list:
            t = tokens.tokens[c.name]
            nav_start = m.nav_start_atoms.get(c.name, 0)
            nav_end = tokens.nav_atoms(t)
            out[c.name] = {
                "leverage": c.leverage,
                "nav_start": _usdt_exact(nav_start),
                "nav_end": _usdt_exact(nav_end),
                "nav_ratio": round(nav_end / nav_start, 6) if nav_start else 0.0,
                "rebalances": m.rebalances.get(c.name, 0),
                "fees_paid": usdt(m.fees_atoms.get(c.name, 0)),
                "slippage_paid": usdt(m.slippage_atoms.get(c.name, 0)),
                "funding_paid": usdt(m.funding_atoms.get(c.name, 0)),
            }
        marks = samples.columns["mark_ticks"]
        out["underlying_return"] = round(int(marks[-1]) / int(marks[0]) - 1, 6)
        static = self.columns["static_equity_atoms"]
        static_return = int(static[-1]) / self.hold_atoms - 1 if self.section.static_leverage else 0
        out["static_3x_return"] = round(static_return, 6)
        return out


def _usdt_exact(atoms: int) -> float:
    """Atoms as USDT to the atom (1e-6): a NAV ratio to four decimals needs more than cents."""
    return float(Decimal(atoms).scaleb(-6))


# -- the run -------------------------------------------------------------------------------------
class _Samples:
    """One row per step, preallocated (`SAMPLE_COLUMNS`)."""

    def __init__(self, n: int) -> None:
        self.columns: dict[str, np.ndarray[Any, Any]] = {
            name: np.zeros(n, dtype=np.bool_ if name == "makers_away" else np.int64)
            for name, _ in SAMPLE_COLUMNS
        }

    def rows(self) -> list[tuple[Any, ...]]:
        cols = [self.columns[name].tolist() for name, _ in SAMPLE_COLUMNS]
        return list(zip(*cols, strict=True))


def _depth_1pct(world: MarketWorld) -> tuple[int, int]:
    bid, ask = world.best_bid(), world.best_ask()
    mid = world.mark_ticks if bid is None or ask is None else (bid + ask) // 2
    if mid <= 0:
        return 0, 0
    low = mid * (PPM - DEPTH_BAND_PPM) // PPM
    high = -(-mid * (PPM + DEPTH_BAND_PPM) // PPM)
    bids, asks = world.depth(DEPTH_LEVELS)
    bid_lots = sum(q for p, q in bids if p >= low)
    ask_lots = sum(q for p, q in asks if p <= high)
    return bid_lots, ask_lots


def run(
    scenario: Scenario,
    seed: int = 0,
    strategy: Strategy | type[Strategy] | str | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    *,
    data: str | None = None,
    report: bool = True,
    check_invariants: bool = False,
    on_step: Callable[[int, list[Event]], None] | None = None,
) -> SimResult:
    """Run `scenario` with `seed`; write events, samples and the report to `out` (if given).

    `data` replaces a replay's candles with a file of the user's (the CLI's ``--data``).
    `check_invariants` submits the agents' commands one at a time and checks the exchange's
    invariants (conservation, fund >= 0, books) after every command: slow, for tests.
    """
    wall_start = time.perf_counter()
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an integer in [0, 2^63), got {seed!r}")
    path = build_path(scenario, seed, data)
    n = len(path)
    times = path.time_ns.tolist()
    targets = path.price_ticks.tolist()
    indexes = fed_index(path).tolist()
    gaps = path.gaps.tolist()
    ex = build_exchange(scenario, times[0])
    symbol = scenario.symbol
    spec = ex.engine.state.markets[symbol].spec
    world = MarketWorld(ex, symbol, path.step_ns)
    makers, others, strat, traders = build_agents(
        scenario, ex, path, _strategy_instance(scenario, strategy)
    )
    agents: list[Agent] = ([makers] if makers is not None else []) + others
    metrics = RunMetrics(symbol, spec.atoms_per_tick_lot, ex.engine.state.funds.fund_atoms(symbol))
    out_dir = Path(out) if out is not None else None
    writer = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        writer = EventWriter(out_dir)
    samples = _Samples(n)
    market = ex.engine.state.markets[symbol]
    commands = 0
    desk = _TokenDesk(ex, scenario, n) if scenario.tokens is not None else None
    deep = (
        _DeepBook(spec, scenario.tokens, indexes[0])
        if scenario.tokens is not None and scenario.tokens.frictionless
        else None
    )

    submit_all = ex.submit
    if check_invariants:

        def submit_all(batch: Sequence[Command]) -> list[list[Event]]:  # type: ignore[misc]
            results = []
            for command in batch:
                results.extend(ex.submit([command]))
                ex.check_invariants()
            return results

    def submit(batch: list[Command]) -> None:
        nonlocal commands
        if batch:
            commands += len(batch)
            submit_all(batch)

    # before the first step: the first index (a mark exists), then everyone's setup
    seeds = np.random.SeedSequence([seed, 0x5E1A]).spawn(len(agents))
    world.advance(0, times[0], targets[0], indexes[0], gaps[0])
    submit([UpdateIndex(symbol, indexes[0])])
    world.refresh()
    if deep is not None:
        submit(deep.start())
    for agent, child in zip(agents, seeds, strict=True):
        submit(agent.start(world, np.random.default_rng(child)))
    setup_events = ex.take_events()
    for agent in agents:
        agent.observe(setup_events)
    metrics.observe(0, times[0], setup_events)
    if writer is not None:
        writer.write(0, times[0], setup_events)
    event_count = len(setup_events)

    bar = _Progress(n, times[0], times[-1] + path.step_ns) if progress else None
    cols = samples.columns
    fund = ex.engine.state.funds
    strat_equity = 0
    for i in range(n):
        t = times[i]
        if i:
            submit([AdvanceClock(t)])
            world.advance(i, t, targets[i], indexes[i], gaps[i])
        if deep is not None:
            submit(deep.step(world))
        if makers is not None:
            submit(makers.step(world))
        submit([UpdateIndex(symbol, indexes[i])])
        world.refresh()
        if i == 0 and desk is not None:  # on the makers' first ladders: pools trade the book
            submit(desk.setup(world))
            world.refresh()
        for agent in others:
            submit(agent.step(world))
            world.refresh()
        events = ex.take_events()
        for agent in agents:
            agent.observe(events)
        metrics.observe(i, t, events)
        if desk is not None:
            if i == 0:
                desk.check_setup(events)
            desk.metrics.observe(events)
            desk.sample(i, world)
        if writer is not None:
            writer.write(i, t, events)
        if on_step is not None:
            on_step(i, events)
        event_count += len(events)
        # samples
        bid_lots, ask_lots = _depth_1pct(world)
        if strat is not None:
            strat_equity = world.position("strategy").equity_atoms
        cols["step"][i] = i
        cols["time_ns"][i] = t
        cols["target_ticks"][i] = targets[i]
        cols["index_ticks"][i] = indexes[i]
        cols["mark_ticks"][i] = market.mark_ticks
        cols["last_ticks"][i] = market.last_trade_ticks or 0
        cols["open_interest_lots"][i] = metrics.open_interest_lots
        cols["insurance_fund_atoms"][i] = fund.fund_atoms(symbol)
        cols["depth_bid_lots_1pct"][i] = bid_lots
        cols["depth_ask_lots_1pct"][i] = ask_lots
        cols["funding_rate_e8"][i] = market.last_funding_rate_e8 or 0
        cols["funding_paid_cum_atoms"][i] = metrics.funding_paid_atoms
        cols["strategy_equity_atoms"][i] = strat_equity
        cols["makers_away"][i] = gaps[i]
        if bar is not None and (i % 50 == 0 or i == n - 1):
            bar.update(i + 1, t, commands)
    if bar is not None:
        bar.close()
    if check_invariants:
        ex.check_invariants()

    if strat is not None and strat.ctx is not None:
        commands += strat.ctx.commands  # the strategy's facade calls: one command each
    summary = _summary(scenario, seed, ex, metrics, samples, strat, commands, event_count)
    if desk is not None:  # only then: a run without tokens sums up exactly as it always did
        summary["tokens"] = desk.summary(samples)
    report_path = None
    events_path = None
    if out_dir is not None and writer is not None:
        writer.close()
        events_path = writer.dir
        write_table(out_dir / "samples.parquet", SAMPLE_COLUMNS, samples.rows())
        entries = traders.entries if traders is not None else []
        write_table(
            out_dir / "entries.parquet",
            ENTRY_COLUMNS,
            [tuple(getattr(e, name) for name, _ in ENTRY_COLUMNS) for e in entries],
        )
        write_table(out_dir / "stops.parquet", STOP_COLUMNS, metrics.stop_rows)
        if desk is not None:
            write_table(out_dir / "tokens.parquet", token_columns(desk.names), desk.rows(samples))
        meta: dict[str, Any] = {
            "scenario": scenario.name,
            "question": scenario.question,
            "seed": seed,
            "symbol": symbol,
            "tick_size": str(spec.tick_size),
            "step_size": str(spec.step_size),
            "atoms_per_unit": ATOMS_PER_UNIT,
            "atoms_per_tick_lot": spec.atoms_per_tick_lot,
            "start_ns": times[0],
            "end_ns": times[-1] + path.step_ns,
            "step_ns": path.step_ns,
            "mark_price": scenario.exchange.mark_price,
            "has_strategy": strat is not None,
            "strategy_deposit_atoms": round(scenario.strategy.deposit * ATOMS_PER_UNIT)
            if strat is not None
            else 0,
            "summary": summary,
        }
        if desk is not None:  # the report's tokens section reads the setting here
            meta["tokens"] = desk.setting()
        write_meta(out_dir / "meta.json", meta)
        if report:
            from perpex.report import build_report

            report_path = build_report(out_dir)
    return SimResult(
        summary, out_dir, events_path, report_path, time.perf_counter() - wall_start
    )


def _summary(
    scenario: Scenario,
    seed: int,
    ex: Exchange,
    m: RunMetrics,
    samples: _Samples,
    strat: StrategyAgent | None,
    commands: int,
    events: int,
) -> dict[str, Any]:
    state = ex.engine.state
    symbol = scenario.symbol
    spec = state.markets[symbol].spec
    k = spec.atoms_per_tick_lot
    mark = state.markets[symbol].mark_ticks
    # non-recourse: an account whose equity is below zero (its wallet plus what it holds)
    below = 0
    bad_debt = 0
    for acct in state.accounts.values():
        equity = acct.wallet.balance
        for pos in acct.positions.values():
            equity += pos.margin.balance + pos.size_lots * mark * k - pos.cost_atoms
        if equity < 0:
            below += 1
            bad_debt -= equity
    oi = samples.columns["open_interest_lots"]
    last = samples.columns["last_ticks"]
    traded = last[last > 0]
    liq_total = m.long_liquidated_notional_atoms + m.short_liquidated_notional_atoms
    summary: dict[str, Any] = {
        "scenario": scenario.name,
        "seed": seed,
        "steps": len(oi),
        "liquidations": m.liquidations,
        "long_liquidations": m.liquidations_long,
        "short_liquidations": m.liquidations_short,
        "liquidated_notional": usdt(liq_total),
        "long_liquidated_notional": usdt(m.long_liquidated_notional_atoms),
        "short_liquidated_notional": usdt(m.short_liquidated_notional_atoms),
        "long_share_pct": ratio_pct(m.long_liquidated_notional_atoms, liq_total),
        "insurance_fund_start": usdt(m.fund_start_atoms),
        "insurance_fund_min": usdt(m.fund_min_atoms),
        "insurance_fund_end": usdt(m.insurance_fund_atoms),
        "adl_events": m.adl_events,
        "adl_notional": usdt(m.adl_notional_atoms),
        "bad_debt": usdt(bad_debt),
        "funding_paid": usdt(m.funding_paid_atoms),
        "stop_orders_triggered": m.stops_triggered,
        "stop_slippage_mean": round(m.stop_slippage_mean_pct(), 4),
        "open_interest_start": btc(int(oi[0]), spec.step_size) if len(oi) else 0.0,
        "open_interest_min": btc(int(oi.min()), spec.step_size) if len(oi) else 0.0,
        "open_interest_end": btc(int(oi[-1]), spec.step_size) if len(oi) else 0.0,
        "accounts_below_zero": below,
        "last_price_low": float(spec.price_to_decimal(int(traded.min()))) if len(traded) else 0.0,
        "last_price_high": float(spec.price_to_decimal(int(traded.max())))
        if len(traded)
        else 0.0,
        "mark_price_low": float(spec.price_to_decimal(int(samples.columns["mark_ticks"].min()))),
        "traded_notional": usdt(m.traded_notional_atoms),
        "strategy_pnl": 0.0,
        "strategy_max_drawdown": 0.0,
        "strategy_liquidations": m.strategy_liquidations,
        "strategy_stops_triggered": m.strategy_stops,
        "commands": commands,
        "events": events,
        "state_hash": ex.state_hash(),
    }
    if strat is not None:
        curve = samples.columns["strategy_equity_atoms"]
        deposit = round(scenario.strategy.deposit * ATOMS_PER_UNIT)
        summary["strategy_pnl"] = usdt(int(curve[-1]) - deposit)
        peak = np.maximum.accumulate(np.maximum(curve, deposit))
        drawdown = (peak - curve) / peak
        summary["strategy_max_drawdown"] = round(float(drawdown.max()) * 100.0, 4)
    return summary


class _Progress:
    """A rich progress bar on stderr: simulated time, commands per second, ETA."""

    def __init__(self, steps: int, start_ns: int, end_ns: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.start_ns = start_ns
        self.wall = time.perf_counter()
        self.progress = Progress(
            TextColumn("[bold]simulating"),
            BarColumn(),
            TextColumn("{task.fields[sim_time]}"),
            TextColumn("{task.fields[rate]} commands/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self.task = self.progress.add_task("run", total=steps, sim_time="", rate="0")
        self.progress.start()

    def update(self, done: int, time_ns: int, commands: int) -> None:
        from perpex.core.funding import format_utc

        elapsed = max(time.perf_counter() - self.wall, 1e-9)
        self.progress.update(
            self.task,
            completed=done,
            sim_time=format_utc(time_ns)[:16].replace("T", " "),
            rate=f"{commands / elapsed:,.0f}",
        )

    def close(self) -> None:
        self.progress.stop()


def clear_run_dir(path: Path) -> None:
    """Remove a previous run's files from `path` (only the files a run writes)."""
    for name in ("samples.parquet", "entries.parquet", "stops.parquet", "tokens.parquet",
                 "meta.json", "report.html"):  # fmt: skip
        (path / name).unlink(missing_ok=True)
    shutil.rmtree(path / "events", ignore_errors=True)


__all__ = [
    "SimResult",
    "build_exchange",
    "build_market",
    "build_path",
    "fed_index",
    "run",
    "token_listing",
]
