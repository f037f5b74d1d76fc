"""`ScenarioDriver`: the live market of `perpex serve`, a scenario's path on the wall clock with
the simulator's makers quoting around it (a `perpex.server.driver.MarketDriver`).

What it keeps alive, per tick of the server (`step(ex, now_ns)`, in the sequencer's writer
thread, after the sequencer stamped `now_ns` on the engine clock: the driver never moves the
clock itself):

1. the path clock moves on by the wall time elapsed x `speed` (nothing while paused; at most
   `MAX_STEP_WALL_NS` of wall time per tick, so a server that stalled, or a laptop that slept,
   resumes the path where it stopped instead of jumping);
2. the path is read there (`perpex.live.path_clock.LivePath`: the scenario's rows,
   interpolated; looped and rescaled at its end), then the injected shocks are laid over it
   (`perpex.live.shocks`: drop, pump, gap, divergence, as `perpex.sim.shocks` means them);
3. as the simulator's runner does for one step: the makers (`MarketMakers` with the
   scenario's ``[agents.makers]``, or the defaults when it has none) re-quote through their
   `MassQuote`s, the index is published (`UpdateIndex`: the engine's liquidation pass and
   stops run on it), the world is refreshed;
4. the tape (`perpex.live.tape`, account ``tape``) sends the small market orders of the wall
   time elapsed (`tape_per_minute` a minute on average; none while paused or while a gap holds
   the makers out), the world is refreshed again and the makers observe the tick's events (a
   quote the tape filled is re-sent on the next tick, as in the simulator).

A maker re-quotes only when its ladder would change (the simulator's rule; `requote_ticks`
coarsens it), or when its resting quotes changed since it sent them (someone traded against
them or a liquidation did: the driver compares the maker's resting orders with what it left,
since the server's other jobs' events never pass through here). Only the makers and the tape
trade: the scenario's other agents (traders, takers, whale, strategy) and its leveraged tokens
are for `perpex simulate`; on a served market the users are the traders. The tape is there
because a market of makers alone never trades: no tape, no candles, and bots that read
candles never act.

Paused, the market stands still: the path, and the tape with it (a print at the frozen price
would still move the last price, the makers' inventories and the candles, which is what the
admin paused). The tape trades on wall time at any speed, so its journal cost (a market order
and, about as often, a maker's re-sent ladder) does not grow with `speed`.

`start(ex, now_ns)` runs after recovery on every start: the first index, the makers' and the
tape's accounts when new (deposit, leverage), the makers' first ladders. On a restart the path
begins again rescaled so that its index is the journal's (`LivePath.rebase`): the market
carries on from the price it had, not from the scenario's first price.

`exchange_options()` is the scenario's ``[exchange]`` in the facade's words (its market with
its brackets and fees, mark price mode, insurance fund, liquidation settings), the same on
every start (it is part of the journal's configuration). Funding is the engine's own
premium-index rate at the wall clock's funding times: Binance's published rates (a
scenario's ``funding = "binance"``) belong to the scenario's dates, not to today's.

Determinism: the same scenario, seed and sequence of `now_ns` (and of admin calls between
steps) give the same commands; the path is seeded from `seed`, the makers draw nothing, the
tape draws from its own generator seeded from `seed`.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np

from perpex.core.liquidation_config import LiquidationConfig
from perpex.core.markets import MarketSpec
from perpex.core.messages import Command, Deposit, Event, SetLeverage, UpdateIndex
from perpex.core.units import PPM
from perpex.exchange import Exchange
from perpex.live.history import scenario_history
from perpex.live.path_clock import LivePath
from perpex.live.shocks import NS_PER_SECOND, LiveShock, make_shock
from perpex.live.tape import DEFAULT_TAPE_PER_MINUTE, Tape
from perpex.server.backfill import MinuteHistory
from perpex.sim.agents.config import MakerConfig
from perpex.sim.agents.makers import VOL_FLOOR, MarketMakers
from perpex.sim.build import ZERO_FUNDING, build_market, build_path
from perpex.sim.scenario import load_scenario
from perpex.sim.scenario_model import Scenario
from perpex.sim.world import MarketWorld

DEFAULT_SCENARIO: Final = "live"  # sim/scenarios/live.toml: a calm BTCUSDT around 78,000
MAX_SPEED: Final = 10_000.0  # scenario seconds per wall second
MAX_STEP_WALL_NS: Final = 10 * NS_PER_SECOND  # wall time one tick may move the path on
MAX_SHOCKS: Final = 32  # active at once
RECENT_SHOCKS: Final = 16  # finished ones shown in the status
MAKER_SEED: Final = 0x5E1A  # the runner's: the makers' generator is spawned from (seed, this)


def exchange_options(scenario: Scenario) -> dict[str, Any]:
    """`Exchange(**options)` for a served `scenario`: `perpex.sim.build.build_exchange`'s
    settings without its start time, replayed funding and tokens (see the module docstring)."""
    x = scenario.exchange
    frictionless = scenario.tokens is not None and scenario.tokens.frictionless
    return {
        "markets": [build_market(scenario)],
        "mark_price": x.mark_price,
        "insurance_fund": repr(x.insurance_fund),
        "liquidation": LiquidationConfig(
            max_liquidations_per_tick=x.max_liquidations_per_tick,
            clearance_fee_ppm=round(x.clearance_fee * PPM),
            partial_from_bracket=2 if x.partial_liquidation else 0,
            adl=x.adl,
        ),
        "funding": ZERO_FUNDING if frictionless else None,
    }


def check_speed(speed: Any) -> float:
    """A speed as a float in (0, MAX_SPEED]; ValueError otherwise."""
    if isinstance(speed, bool) or not isinstance(speed, int | float):
        raise ValueError(f"speed must be a number, got {speed!r}")
    x = float(speed)
    if not (math.isfinite(x) and 0.0 < x <= MAX_SPEED):
        raise ValueError(f"speed must be in (0, {MAX_SPEED:g}], got {speed!r}")
    return x


def _load(scenario: Scenario | str | os.PathLike[str] | None) -> Scenario:
    if isinstance(scenario, Scenario):
        return scenario
    return load_scenario(DEFAULT_SCENARIO if scenario is None else os.fspath(scenario))


def _utc(ns: int) -> str:
    return datetime.fromtimestamp(ns // NS_PER_SECOND, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ScenarioDriver:
    """The market of a scenario (a shipped name, a .toml path, a `Scenario`; None: ``live``)
    at `speed` scenario seconds per wall second, its path and tape seeded by `seed`, with
    `tape_per_minute` tape trades a wall minute on average (0: none)."""

    def __init__(
        self,
        scenario: Scenario | str | os.PathLike[str] | None = None,
        speed: float = 1.0,
        seed: int = 0,
        tape_per_minute: float = DEFAULT_TAPE_PER_MINUTE,
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise ValueError(f"seed must be an integer in [0, 2^63), got {seed!r}")
        self.scenario = _load(scenario)
        self.name: str = self.scenario.name
        self.symbol = self.scenario.symbol
        self.seed = seed
        self.speed = check_speed(speed)
        self.paused = False
        self.path = LivePath(build_path(self.scenario, seed))
        self.makers = MarketMakers(self.scenario.agents.makers or MakerConfig(), self.symbol)
        self.tape = Tape(self.symbol, tape_per_minute, seed)
        self.clock_ns = 0  # the path clock: scenario ns since this driver began
        self.steps = 0  # ticks published (the makers' world counts them as steps)
        self.index_ticks = 0  # the last index published
        self.target_ticks = 0  # the last target the makers quoted around
        self.makers_away = False
        self._wall_ns: int | None = None  # the engine time of the last tick
        self._spec: MarketSpec | None = None
        self._world: MarketWorld | None = None
        self._shocks: list[LiveShock] = []
        self._recent: deque[LiveShock] = deque(maxlen=RECENT_SHOCKS)
        self._resting: dict[str, tuple[int, int]] = {}  # maker -> (orders, lots) it left

    # -- MarketDriver: configuration ---------------------------------------------------------
    def exchange_options(self) -> Mapping[str, Any]:
        return exchange_options(self.scenario)

    def history(self, symbol: str, minutes: int) -> MinuteHistory | None:
        """The `minutes` one-minute candles before the scenario's start (`perpex.live.history`:
        a replay's data before it, or the path's kind walked back from its start price)."""
        if symbol != self.symbol:
            return None
        return scenario_history(self.scenario, self.seed, minutes, self.tape.per_minute)

    # -- MarketDriver: the market's life -----------------------------------------------------
    def start(self, ex: Exchange, now_ns: int) -> None:
        market = ex.engine.state.markets[self.symbol]
        self._spec = market.spec
        world = MarketWorld(ex, self.symbol, self.path.path.step_ns)
        self._world = world
        self._wall_ns = now_ns
        if market.index_ticks > 0:  # a recovered market: carry on from its index
            self.path.rebase(self.clock_ns, market.index_ticks / self._shock_factor())
        target, index, away = self._prices()
        world.advance(self.steps, now_ns, target, index, away)
        events = self._submit(ex, [UpdateIndex(self.symbol, index)])
        world.refresh()
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, MAKER_SEED]).spawn(1)[0])
        setup = self.makers.start(world, rng) + self.tape.start()
        events += self._submit(ex, self._new_accounts_only(ex, setup))
        self.makers.observe(events)
        self._quote_and_publish(ex, target, index, 0)

    def step(self, ex: Exchange, now_ns: int) -> None:
        if self._world is None or self._wall_ns is None:
            self.start(ex, now_ns)
            return
        elapsed_ns = min(now_ns - self._wall_ns, MAX_STEP_WALL_NS)
        self._wall_ns = max(self._wall_ns, now_ns)
        if elapsed_ns > 0 and not self.paused:
            self.clock_ns += round(elapsed_ns * self.speed)
        target, index, away = self._prices()
        self._world.advance(self.steps, now_ns, target, index, away)
        tape_ns = elapsed_ns if elapsed_ns > 0 and not self.paused else 0
        self._quote_and_publish(ex, target, index, tape_ns)

    # -- MarketDriver: the admin's controls --------------------------------------------------
    def status(self) -> Mapping[str, Any]:
        clock = self.clock_ns
        scenario_ns = self.path.scenario_time_ns(clock)
        return {
            "scenario": self.name,
            "question": self.scenario.question,
            "symbol": self.symbol,
            "seed": self.seed,
            "paused": self.paused,
            "speed": self.speed,
            "pathSeconds": clock / NS_PER_SECOND,
            "scenarioTime": scenario_ns // 1_000_000,
            "scenarioTimeUtc": _utc(scenario_ns),
            "progress": round(self.path.progress(clock), 6),
            "loops": self.path.loops,
            "indexPrice": self._price_text(self.index_ticks),
            "targetPrice": self._price_text(self.target_ticks),
            "makers": len(self.makers.makers),
            "makersAway": self.makers_away,
            "tapePerMinute": self.tape.per_minute,
            "tapeOrders": self.tape.orders,
            "shocks": [s.describe(clock) for s in self._shocks],
            "recentShocks": [s.describe(clock) for s in self._recent],
        }

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def set_speed(self, speed: float) -> None:
        """A new speed from the next tick on. Faster, the makers' calm volatility (per tick)
        grows by sqrt(new / old), the random walk's rule: otherwise the faster market looks
        like a storm to them and they pull their quotes for the minutes it takes them to
        relearn it. Slower, it is left to fall at the makers' own pace: lowered at once, the
        last minute's fast moves (still in their window) would look like a storm instead."""
        new = check_speed(speed)
        if new > self.speed and self.makers.calm_vol > 0.0:  # 0: still learning it
            scaled = self.makers.calm_vol * math.sqrt(new / self.speed)
            self.makers.calm_vol = max(scaled, VOL_FLOOR)
        self.speed = new

    def inject(self, kind: str, params: Mapping[str, Any]) -> Mapping[str, Any]:
        """A shock from the current path time on (it shows from the next tick)."""
        shock = make_shock(kind, params, self.clock_ns)
        self._retire()
        if len(self._shocks) >= MAX_SHOCKS:
            raise ValueError(f"{MAX_SHOCKS} shocks are active already; wait for one to end")
        self._shocks.append(shock)
        return shock.describe(self.clock_ns)

    # -- the path and the shocks -------------------------------------------------------------
    def _retire(self) -> None:
        """Finished drops and pumps become part of the path (their level stays); finished
        gaps and divergences go (both into the recent list)."""
        clock = self.clock_ns
        still: list[LiveShock] = []
        for shock in self._shocks:
            if shock.finished(clock):
                self.path.multiply(shock.price_factor(clock))
                self._recent.append(shock)
            else:
                still.append(shock)
        self._shocks = still

    def _shock_factor(self) -> float:
        factor = 1.0
        for shock in self._shocks:
            factor *= shock.price_factor(self.clock_ns)
        return factor

    def _prices(self) -> tuple[int, int, bool]:
        """(target, index, makers away) in whole ticks at the path clock, shocks included."""
        self._retire()
        clock = self.clock_ns
        target, index, away = self.path.at(clock)
        factor = self._shock_factor()
        target *= factor
        index *= factor
        for shock in self._shocks:
            if not shock.active(clock):
                continue
            if shock.kind == "divergence":  # the local book moves, the index holds
                target *= 1.0 + shock.percent / 100.0
            elif shock.kind == "gap":
                away = True
        return self._ticks(target), self._ticks(index), away

    def _ticks(self, price: float) -> int:
        ticks = max(round(price), 1)
        if self._spec is not None:
            ticks = min(max(ticks, self._spec.min_price_ticks), self._spec.max_price_ticks)
        return ticks

    def _price_text(self, ticks: int) -> str | None:
        if not ticks or self._spec is None:
            return None
        return str(self._spec.price_to_decimal(ticks))

    # -- the makers ----------------------------------------------------------------------------
    def _quote_and_publish(self, ex: Exchange, target: int, index: int, tape_ns: int) -> None:
        """The runner's step after the world moved: the makers' ladders, the index, refresh,
        the tape's orders of `tape_ns` wall time (the runner's other agents), refresh, observe."""
        world = self._world
        assert world is not None
        self._notice_changed_quotes(ex)
        events = self._submit(ex, self.makers.step(world))
        events += self._submit(ex, [UpdateIndex(self.symbol, index)])
        world.refresh()
        tape = self._submit(ex, self.tape.step(world, tape_ns))
        if tape:
            world.refresh()
            events += tape
        self.makers.observe(events)
        self._remember_resting(ex)
        self.target_ticks, self.index_ticks, self.makers_away = target, index, world.makers_away
        self.steps += 1

    def _new_accounts_only(self, ex: Exchange, commands: Sequence[Command]) -> list[Command]:
        """The makers' set-up without what a restart must not repeat: a deposit to an account
        that exists, a leverage it already has."""
        accounts = ex.engine.accounts
        out: list[Command] = []
        for command in commands:
            account = getattr(command, "account", None)
            if account in accounts:
                if isinstance(command, Deposit):
                    continue
                if (
                    isinstance(command, SetLeverage)
                    and ex.position(command.account, command.symbol).leverage == command.leverage
                ):
                    continue
            out.append(command)
        return out

    def _resting_of(self, ex: Exchange, account: str) -> tuple[int, int]:
        acct = ex.engine.accounts.get(account)
        if acct is None:
            return 0, 0
        lots = [o.remaining_lots for o in acct.orders.values() if o.symbol == self.symbol]
        return len(lots), sum(lots)

    def _remember_resting(self, ex: Exchange) -> None:
        for m in self.makers.makers:
            self._resting[m.account] = self._resting_of(ex, m.account)

    def _notice_changed_quotes(self, ex: Exchange) -> None:
        """A maker whose resting quotes changed since its last tick (a fill, a liquidation's
        cancel) sends its ladder again, as the simulator's makers do on their fill events."""
        for m in self.makers.makers:
            if m.quotes is not None and self._resting_of(ex, m.account) != self._resting.get(
                m.account
            ):
                m.stale = True

    @staticmethod
    def _submit(ex: Exchange, commands: Sequence[Command]) -> list[Event]:
        if not commands:
            return []
        return [e for events in ex.submit(commands) for e in events]


__all__ = [
    "DEFAULT_SCENARIO",
    "MAX_SHOCKS",
    "MAX_SPEED",
    "MAX_STEP_WALL_NS",
    "ScenarioDriver",
    "check_speed",
    "exchange_options",
]
