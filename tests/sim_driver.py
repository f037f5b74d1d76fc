"""The simulation harness shared by the agent tests (test_sim_strategy, test_sim_traders): a real
`Exchange(mark_price="index")`, a `MarketWorld` and a deep ladder maker, moved one step at a
time as the runner does it: AdvanceClock, the world advanced, the maker's quotes, UpdateIndex,
the world refreshed, each agent's commands, then `observe` of all the step's events.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from perpex.core.messages import (
    AdvanceClock,
    Command,
    Deposit,
    Event,
    MassQuote,
    SetLeverage,
    UpdateIndex,
)
from perpex.core.units import PPM
from perpex.exchange import Exchange
from perpex.sim.agents.base import Agent
from perpex.sim.agents.strategy import StrategyAgent
from perpex.sim.world import MarketWorld

BTC = "BTCUSDT"
T0 = 1_700_000_000 * 10**9
STEP_NS = 10**9
PRICE_TICKS = 600_000  # 60,000 USDT


class LadderMaker:
    """One market maker quoting `levels` prices a side every `spacing_ppm` of the target,
    `level_lots` each: a book deep enough for every test's population (by default 50 prices a
    side, 2 bps apart, 20 BTC each)."""

    name = "mm"

    def __init__(self, levels: int = 50, spacing_ppm: int = 200, level_lots: int = 20_000):
        self.levels = levels
        self.spacing_ppm = spacing_ppm
        self.level_lots = level_lots

    def start(self) -> list[Command]:
        return [Deposit("mm", 10**16), SetLeverage("mm", BTC, 20)]

    def quotes(self, target_ticks: int) -> list[Command]:
        gap = max(1, target_ticks * self.spacing_ppm // PPM)
        bids = [(1, target_ticks - gap * i, self.level_lots) for i in range(1, self.levels + 1)]
        asks = [(-1, target_ticks + gap * i, self.level_lots) for i in range(1, self.levels + 1)]
        return [MassQuote("mm", BTC, tuple(bids + asks))]


class Market:
    """An exchange, its world and a maker, moved one step at a time as the runner does.

    `ex`: the exchange the agents were built on (a `StrategyAgent` holds one); a new
    `Exchange(mark_price="index")` when not given. `seed`: the agents' generators; `None`
    gives the n-th agent `default_rng(n)`, a number gives them the children of
    `SeedSequence(seed)`. `events` holds every event of the run, `step_events` each step's.
    """

    def __init__(
        self,
        agents: Sequence[Agent],
        *,
        ex: Exchange | None = None,
        seed: int | None = None,
        first_ticks: int = PRICE_TICKS,
    ) -> None:
        self.ex = ex if ex is not None else Exchange(mark_price="index")
        self.world = MarketWorld(self.ex, BTC, STEP_NS)
        self.maker = LadderMaker()
        self.agents = list(agents)
        self.events: list[Event] = []
        self.step_events: list[list[Event]] = []
        self.ex.submit([AdvanceClock(T0)])
        self.world.advance(0, T0, first_ticks, first_ticks, False)
        self.ex.submit([UpdateIndex(BTC, first_ticks), *self.maker.start()])
        self.world.refresh()
        if seed is None:
            rngs = [np.random.default_rng(n) for n in range(len(self.agents))]
        else:
            children = np.random.SeedSequence(seed).spawn(len(self.agents))
            rngs = [np.random.default_rng(child) for child in children]
        for agent, rng in zip(self.agents, rngs, strict=True):
            self.ex.submit(agent.start(self.world, rng))
        self._observe()
        self.step_no = 0

    def _observe(self) -> list[Event]:
        events = self.ex.take_events()
        self.events += events
        for agent in self.agents:
            agent.observe(events)
        return events

    def step(self, target_ticks: int) -> list[Event]:
        i = self.step_no
        t = T0 + i * STEP_NS
        if i:
            self.ex.submit([AdvanceClock(t)])
            self.world.advance(i, t, target_ticks, target_ticks, False)
        self.ex.submit(self.maker.quotes(target_ticks))
        self.ex.submit([UpdateIndex(BTC, target_ticks)])
        self.world.refresh()
        for agent in self.agents:
            commands = agent.step(self.world)
            # The strategy's calls went through the facade already: it returns no commands.
            assert not (isinstance(agent, StrategyAgent) and commands)
            self.ex.submit(commands)
            self.world.refresh()
        self.step_no += 1
        events = self._observe()
        self.step_events.append(events)
        return events

    def run(self, targets: Sequence[int]) -> None:
        for target in targets:
            self.step(target)
